//! Transactions: `blockchain.transaction.broadcast` through the builder's
//! [`crate::TxValidator`] and then the node, and `blockchain.transaction.get`.

use crate::core::cost;
use crate::core::sync::lock;
use crate::core::tx::StructuralValidator;
use crate::edge::session::SessionHandle;
use crate::error::{Error, Result};
use crate::host::BroadcastFailure;
use crate::host::{Daemon, Host, TxValidator};
use crate::types::TxHash;
use async_trait::async_trait;

#[async_trait]
impl TxValidator for StructuralValidator {
    async fn validate(&self, raw: &[u8]) -> Result<(), String> {
        self.check(raw)
    }
}

impl<H: Host> SessionHandle<H> {
    /// `blockchain.transaction.broadcast` of the raw transaction `raw` (the
    /// host decodes the client's hex; malformed hex is its error to give).
    ///
    /// The manager's [`crate::TxValidator`] runs first (default
    /// [`crate::StructuralValidator`]: a structural parse, so malformed,
    /// truncated or trailing-garbage bytes are refused with the parser's
    /// message); a refused transaction never reaches the node. Then
    /// [`crate::Daemon::broadcast_transaction`]. Each call runs within
    /// `host_timeout`. On success the session's `txs_sent` counter (and so
    /// its group's and the manager's totals) goes up by one.
    ///
    /// **Cost:** `0.25 + hex_len / 5000` (`hex_len` = 2 × `raw.len()`),
    /// charged before validation, as ElectrumX does.
    ///
    /// # Errors
    /// - [`Error::TxRejected`] with the validator's message;
    /// - [`Error::DaemonRejected`] with the node's message;
    /// - [`Error::Host`] when the node cannot be asked
    ///   ([`BroadcastFailure::Unavailable`]), [`Error::HostTimeout`] when it
    ///   or the validator does not answer in time.
    ///
    /// # Cancel safety
    /// The cost is charged at the first poll and stays. Dropped before the
    /// node answered, the transaction may or may not have reached it, and
    /// `txs_sent` is not counted; nothing else changes.
    pub async fn broadcast_transaction(&self, raw: &[u8]) -> Result<TxHash> {
        self.session
            .add_cost(cost::broadcast(raw.len().saturating_mul(2)));
        let manager = &self.manager;
        let validator = manager.inner.validator();
        let verdict = manager
            .host_call("validate transaction", async {
                Ok(validator.validate(raw).await)
            })
            .await?;
        verdict.map_err(Error::TxRejected)?;
        let daemon = manager.inner.daemon();
        let sent = manager
            .host_call("broadcast", async { Ok(daemon.broadcast_transaction(raw).await) })
            .await?;
        let txid = match sent {
            Ok(txid) => txid,
            Err(BroadcastFailure::Rejected(message)) => return Err(Error::DaemonRejected(message)),
            Err(BroadcastFailure::Unavailable(source)) => return Err(Error::host("broadcast", source)),
        };
        lock(&self.session.state).rare_mut().txs_sent += 1;
        Ok(txid)
    }

    /// `blockchain.transaction.get` (non-verbose): the raw transaction
    /// `txid`, confirmed or in the mempool, from the node. Not cached.
    ///
    /// **Cost:** 1.0.
    ///
    /// # Errors
    /// [`Error::BadRequest`] naming `txid` when the node does not know it;
    /// [`Error::Host`] / [`Error::HostTimeout`] when the `Daemon` fails.
    ///
    /// # Cancel safety
    /// Cancel-safe: only the cost, charged at the first poll, stays.
    pub async fn transaction_get(&self, txid: TxHash) -> Result<Vec<u8>> {
        self.session.add_cost(cost::TRANSACTION_GET);
        let daemon = self.manager.inner.daemon();
        self.manager
            .host_call("getrawtransaction", daemon.raw_transaction(txid))
            .await?
            .ok_or_else(|| Error::BadRequest(format!("no such transaction {txid}")))
    }
}
