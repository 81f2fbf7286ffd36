//! The traits a host implements: one client connection ([`Transport`]), the
//! node ([`Daemon`]), the index ([`Db`]) and the mempool ([`Mempool`]).
//!
//! All are `#[async_trait]`, `Send + Sync + 'static` and dyn-compatible.
//! The manager is generic over a [`Host`] that bundles the node, index,
//! mempool, clock, validator and ledger (static dispatch); each trait is
//! also implemented for `Arc<T>`, so `Arc<dyn Db>` and friends are valid
//! parts. A failing call returns a
//! [`HostError`]; the manager turns it into [`crate::Error::Host`] and never
//! caches or records anything from a failed call.

use crate::answers::Answers;
use crate::error::{HostError, Unsupported};
use crate::ledger::GroupLedger;
use crate::timer::Timer;
use crate::types::{
    ConfirmedOutpoint, DisconnectReason, ExtendedNotification, HashX, Height, HistoryEntry, MempoolEntry,
    MempoolOutpoint, Notification, OutPoint, PeerInfo, Tip, TxHash,
};
use async_trait::async_trait;
use std::sync::Arc;

/// One client connection, owned by the host.
///
/// The manager calls [`Transport::send`] only from the session's delivery
/// future ([`crate::SessionHandle::deliver`]), one notification at a time and
/// in order, and [`Transport::close`] once when it ends the session.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// The peer's address and the kind of transport.
    fn peer(&self) -> PeerInfo;
    /// Writes one notification to the client. May wait while the client is
    /// slow to read; the manager disconnects it after `max_send_delay`.
    async fn send(&self, notification: Notification) -> Result<(), HostError>;
    /// Writes one notification of protocol 1.7 to the client: a script
    /// status by scriptPubKey, an outpoint status or a noise ping. As
    /// [`Transport::send`] otherwise (same ordering, same timeout).
    ///
    /// The manager only sends these to a session that used
    /// [`crate::SessionHandle::subscribe_scriptpubkey`] or
    /// [`crate::SessionHandle::subscribe_outpoint`], or turned noise on
    /// ([`crate::SessionHandle::set_noise`]). The default fails with
    /// [`Unsupported`], which closes the session as a transport error: a
    /// host that offers those methods implements this one.
    async fn send_extended(&self, notification: ExtendedNotification) -> Result<(), HostError> {
        let _ = notification;
        Err(Box::new(Unsupported {
            operation: "send_extended",
        }))
    }
    /// Closes the connection; the host's read loop should end.
    async fn close(&self, reason: DisconnectReason);
}

/// Fee estimation mode passed to the node (`estimatesmartfee`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FeeMode {
    /// `ECONOMICAL`.
    Economical,
    /// `CONSERVATIVE`.
    Conservative,
}

impl FeeMode {
    /// Parses an Electrum `estimatefee` mode argument (case-insensitive
    /// `ECONOMICAL` / `CONSERVATIVE`); anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("economical") {
            Some(FeeMode::Economical)
        } else if text.eq_ignore_ascii_case("conservative") {
            Some(FeeMode::Conservative)
        } else {
            None
        }
    }
}

/// Why the daemon did not broadcast a transaction.
#[derive(Debug)]
pub enum BroadcastFailure {
    /// The node refused the transaction; the message is shown to the client.
    Rejected(String),
    /// The node could not be asked.
    Unavailable(HostError),
}

/// The node.
#[async_trait]
pub trait Daemon: Send + Sync + 'static {
    /// Broadcasts a raw transaction, returning its txid.
    async fn broadcast_transaction(&self, raw: &[u8]) -> Result<TxHash, BroadcastFailure>;
    /// Fee rate estimate in coin units per kilobyte for confirmation within
    /// `blocks`, or `None` when the node cannot estimate.
    async fn estimate_fee(&self, blocks: u32, mode: Option<FeeMode>) -> Result<Option<f64>, HostError>;
    /// The node's minimum relay fee in coin units per kilobyte.
    async fn relay_fee(&self) -> Result<f64, HostError>;
    /// A raw transaction by txid (confirmed or in the mempool), `None` if unknown.
    async fn raw_transaction(&self, txid: TxHash) -> Result<Option<Vec<u8>>, HostError>;
}

/// The index.
#[async_trait]
pub trait Db: Send + Sync + 'static {
    /// The current tip. Its hash is the double SHA-256 of its header (as
    /// [`Db::header`] returns it): the manager checks a header against it.
    async fn tip(&self) -> Result<Tip, HostError>;
    /// The 80-byte raw header at `height`, `None` above the tip.
    async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, HostError>;
    /// Up to `count` consecutive raw headers from `start`, fewer at the tip.
    async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, HostError>;
    /// Confirmed history of a script ordered by (height, position in block),
    /// at most `limit` entries (a host may stop reading at `limit`).
    async fn history(&self, hashx: HashX, limit: usize) -> Result<Vec<HistoryEntry>, HostError>;
    /// The txids of the block at `height`, in block order; `None` above the tip.
    async fn block_txids(&self, height: Height) -> Result<Option<Vec<TxHash>>, HostError>;
    /// The confirmed state of an outpoint: `None` when the output never
    /// existed in the chain (no such transaction confirmed, or no output at
    /// that index); else the height of the block that confirmed its
    /// transaction and, if a confirmed transaction spent it, that spender
    /// and its height. Mempool transactions are left out (see
    /// [`Mempool::outpoint`]).
    ///
    /// The manager caches the answer until a `notify` touches the outpoint
    /// or the tip hash changes, and charges a cache miss as ElectrumX
    /// charges its node lookups: 1 for the existence lookup, 1 more for
    /// the spender lookup when the output exists.
    ///
    /// The default fails with [`Unsupported`]: outpoint requests are then
    /// answered with [`crate::Error::Unsupported`].
    async fn outpoint(&self, outpoint: OutPoint) -> Result<Option<ConfirmedOutpoint>, HostError> {
        let _ = outpoint;
        Err(Box::new(Unsupported {
            operation: "outpoint",
        }))
    }
    /// The confirmed histories of several scripts, each as [`Db::history`]
    /// returns it, written into `answers` (which arrives empty): one
    /// answer per script, in the order given ([`Answers::answer`], or
    /// [`Answers::fail`] to fail that script alone). A notification pass
    /// asks for the scripts it must recompute in batches of up to 256, and
    /// hands the same `answers` back for each batch, so an index answering
    /// from memory, or decoding rows straight into it, allocates nothing per
    /// script. An `Err` for the whole call, or a count of answers other than
    /// the scripts', fails every script of the batch (they are retried by
    /// the next `notify`).
    ///
    /// The default calls [`Db::history`] for each script, up to 32 calls
    /// at a time, so the calls overlap but do not flood the index; an index
    /// that can answer many scripts in one round trip (one query, one disk
    /// pass) should override it.
    ///
    /// ```
    /// use async_trait::async_trait;
    /// use indexer_sessions::{Answers, HashX, HistoryEntry, HostError};
    /// # use indexer_sessions::{Db, Height, Tip, TxHash};
    ///
    /// struct Index(std::collections::HashMap<HashX, Vec<HistoryEntry>>);
    ///
    /// #[async_trait]
    /// impl Db for Index {
    ///     async fn histories(
    ///         &self,
    ///         hashxs: &[HashX],
    ///         limit: usize,
    ///         answers: &mut Answers<HistoryEntry>,
    ///     ) -> Result<(), HostError> {
    ///         for hashx in hashxs {
    ///             let history = self.0.get(hashx).map_or(&[][..], |h| &h[..h.len().min(limit)]);
    ///             answers.answer(history.iter().copied());
    ///         }
    ///         Ok(())
    ///     }
    ///     // …
    /// #   async fn tip(&self) -> Result<Tip, HostError> { Ok(Tip::default()) }
    /// #   async fn header(&self, _: Height) -> Result<Option<Vec<u8>>, HostError> { Ok(None) }
    /// #   async fn headers(&self, _: Height, _: u32) -> Result<Vec<Vec<u8>>, HostError> { Ok(vec![]) }
    /// #   async fn history(&self, hashx: HashX, limit: usize) -> Result<Vec<HistoryEntry>, HostError> {
    /// #       Ok(self.0.get(&hashx).map_or(vec![], |h| h[..h.len().min(limit)].to_vec()))
    /// #   }
    /// #   async fn block_txids(&self, _: Height) -> Result<Option<Vec<TxHash>>, HostError> { Ok(None) }
    /// }
    /// ```
    ///
    /// # Cancel safety
    /// The manager may drop the future (its pass dropped, or past
    /// `host_timeout`): the default then drops the `history` calls under
    /// way. The manager records nothing from an unfinished call and
    /// recomputes those scripts at the next `notify`, so an override must
    /// not rely on running to completion.
    async fn histories(
        &self,
        hashxs: &[HashX],
        limit: usize,
        answers: &mut Answers<HistoryEntry>,
    ) -> Result<(), HostError> {
        one_by_one(hashxs, |hashx| self.history(hashx, limit), answers).await;
        Ok(())
    }
}

/// The mempool.
#[async_trait]
pub trait Mempool: Send + Sync + 'static {
    /// Unconfirmed transactions touching a script.
    async fn entries(&self, hashx: HashX) -> Result<Vec<MempoolEntry>, HostError>;
    /// The fee histogram: `(fee rate sat/vB, cumulative vsize)` pairs, highest rate first.
    async fn fee_histogram(&self) -> Result<Vec<(f64, u64)>, HostError>;
    /// An outpoint's state in the mempool: whether the transaction creating
    /// it is unconfirmed, and which unconfirmed transaction spends it.
    /// Consulted only for outpoints with no confirmed spender.
    ///
    /// The default fails with [`Unsupported`]: outpoint requests are then
    /// answered with [`crate::Error::Unsupported`].
    async fn outpoint(&self, outpoint: OutPoint) -> Result<MempoolOutpoint, HostError> {
        let _ = outpoint;
        Err(Box::new(Unsupported {
            operation: "mempool outpoint",
        }))
    }
    /// The unconfirmed entries of several scripts, each as
    /// [`Mempool::entries`] returns it, written into `answers` (which
    /// arrives empty) as [`Db::histories`] writes histories: one answer per
    /// script, in the order given. A notification pass asks for the scripts
    /// it must recompute in batches of up to 256, each right after their
    /// [`Db::histories`] batch. An `Err` for the whole call, or a count of
    /// answers other than the scripts', fails every script of the batch
    /// (they are retried by the next `notify`).
    ///
    /// The default calls [`Mempool::entries`] for each script, up to 32
    /// calls at a time; a mempool that can answer many scripts at once (one
    /// lock, one round trip) should override it.
    ///
    /// # Cancel safety
    /// The manager may drop the future (its pass dropped, or past
    /// `host_timeout`): the default then drops the `entries` calls under
    /// way. The manager records nothing from an unfinished call and
    /// recomputes those scripts at the next `notify`, so an override must
    /// not rely on running to completion.
    async fn entries_batch(
        &self,
        hashxs: &[HashX],
        answers: &mut Answers<MempoolEntry>,
    ) -> Result<(), HostError> {
        one_by_one(hashxs, |hashx| self.entries(hashx), answers).await;
        Ok(())
    }
}

/// Vets a raw transaction before the manager hands it to the node.
///
/// A refusal's message is shown to the client (inside
/// [`crate::Error::TxRejected`]). Hosts plug in stricter validators than
/// [`crate::StructuralValidator`]: for example a token-protocol check that refuses
/// transfers which would burn the tokens carried by the spent outputs — a
/// transaction the node would happily relay.
#[async_trait]
pub trait TxValidator: Send + Sync + 'static {
    /// `Ok` to broadcast; `Err(message)` to refuse with `message`.
    async fn validate(&self, raw: &[u8]) -> Result<(), String>;
}

/// Everything the manager calls besides the connections, as one type: the
/// index, the node, the mempool, the clock, the transaction check and the
/// group ledger. A [`crate::SessionManager`] is generic over it, so every
/// call is statically dispatched and its handles carry one type parameter.
///
/// The builder assembles one ([`crate::HostParts`]) from the parts it is
/// given; a host can also implement it on its own type and pass that to
/// [`crate::SessionManager::new`]. Every part trait is implemented for
/// `Arc<T>` (including `Arc<dyn Trait>`); for parts picked at run time,
/// [`crate::DynHost`] holds each behind an `Arc<dyn …>` in a named wrapper
/// ([`crate::DynDb`] and so on), which keeps every future spawnable.
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool};
/// use indexer_sessions::{Host, InProcessLedger, StructuralValidator};
///
/// /// One process's parts, named once.
/// struct Regtest {
///     db: MemoryDb,
///     daemon: MemoryDaemon,
///     mempool: MemoryMempool,
///     timer: ManualTimer,
///     ledger: InProcessLedger,
/// }
///
/// impl Host for Regtest {
///     type Db = MemoryDb;
///     type Daemon = MemoryDaemon;
///     type Mempool = MemoryMempool;
///     type Timer = ManualTimer;
///     type Validator = StructuralValidator;
///     type Ledger = InProcessLedger;
///     fn db(&self) -> &MemoryDb { &self.db }
///     fn daemon(&self) -> &MemoryDaemon { &self.daemon }
///     fn mempool(&self) -> &MemoryMempool { &self.mempool }
///     fn timer(&self) -> &ManualTimer { &self.timer }
///     fn validator(&self) -> &StructuralValidator { &StructuralValidator }
///     fn ledger(&self) -> &InProcessLedger { &self.ledger }
/// }
/// # }
/// ```
pub trait Host: Send + Sync + 'static {
    /// The index.
    type Db: Db;
    /// The node.
    type Daemon: Daemon;
    /// The mempool.
    type Mempool: Mempool;
    /// The clock and sleeps.
    type Timer: Timer;
    /// The check a transaction passes before the node sees it.
    type Validator: TxValidator;
    /// Where group costs and membership are kept.
    type Ledger: GroupLedger;
    /// The index.
    fn db(&self) -> &Self::Db;
    /// The node.
    fn daemon(&self) -> &Self::Daemon;
    /// The mempool.
    fn mempool(&self) -> &Self::Mempool;
    /// The clock and sleeps.
    fn timer(&self) -> &Self::Timer;
    /// The transaction check.
    fn validator(&self) -> &Self::Validator;
    /// The group ledger.
    fn ledger(&self) -> &Self::Ledger;
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn peer(&self) -> PeerInfo {
        (**self).peer()
    }
    async fn send(&self, notification: Notification) -> Result<(), HostError> {
        (**self).send(notification).await
    }
    async fn send_extended(&self, notification: ExtendedNotification) -> Result<(), HostError> {
        (**self).send_extended(notification).await
    }
    async fn close(&self, reason: DisconnectReason) {
        (**self).close(reason).await
    }
}

#[async_trait]
impl<T: Daemon + ?Sized> Daemon for Arc<T> {
    async fn broadcast_transaction(&self, raw: &[u8]) -> Result<TxHash, BroadcastFailure> {
        (**self).broadcast_transaction(raw).await
    }
    async fn estimate_fee(&self, blocks: u32, mode: Option<FeeMode>) -> Result<Option<f64>, HostError> {
        (**self).estimate_fee(blocks, mode).await
    }
    async fn relay_fee(&self) -> Result<f64, HostError> {
        (**self).relay_fee().await
    }
    async fn raw_transaction(&self, txid: TxHash) -> Result<Option<Vec<u8>>, HostError> {
        (**self).raw_transaction(txid).await
    }
}

#[async_trait]
impl<T: Db + ?Sized> Db for Arc<T> {
    async fn tip(&self) -> Result<Tip, HostError> {
        (**self).tip().await
    }
    async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, HostError> {
        (**self).header(height).await
    }
    async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, HostError> {
        (**self).headers(start, count).await
    }
    async fn history(&self, hashx: HashX, limit: usize) -> Result<Vec<HistoryEntry>, HostError> {
        (**self).history(hashx, limit).await
    }
    async fn block_txids(&self, height: Height) -> Result<Option<Vec<TxHash>>, HostError> {
        (**self).block_txids(height).await
    }
    async fn outpoint(&self, outpoint: OutPoint) -> Result<Option<ConfirmedOutpoint>, HostError> {
        (**self).outpoint(outpoint).await
    }
    async fn histories(
        &self,
        hashxs: &[HashX],
        limit: usize,
        answers: &mut Answers<HistoryEntry>,
    ) -> Result<(), HostError> {
        (**self).histories(hashxs, limit, answers).await
    }
}

#[async_trait]
impl<T: Mempool + ?Sized> Mempool for Arc<T> {
    async fn entries(&self, hashx: HashX) -> Result<Vec<MempoolEntry>, HostError> {
        (**self).entries(hashx).await
    }
    async fn fee_histogram(&self) -> Result<Vec<(f64, u64)>, HostError> {
        (**self).fee_histogram().await
    }
    async fn outpoint(&self, outpoint: OutPoint) -> Result<MempoolOutpoint, HostError> {
        (**self).outpoint(outpoint).await
    }
    async fn entries_batch(
        &self,
        hashxs: &[HashX],
        answers: &mut Answers<MempoolEntry>,
    ) -> Result<(), HostError> {
        (**self).entries_batch(hashxs, answers).await
    }
}

#[async_trait]
impl<T: TxValidator + ?Sized> TxValidator for Arc<T> {
    async fn validate(&self, raw: &[u8]) -> Result<(), String> {
        (**self).validate(raw).await
    }
}

/// How many single calls the default batch methods ([`Db::histories`],
/// [`Mempool::entries_batch`]) keep running at once.
const CALLS_AT_ONCE: usize = 32;

/// `call` for each script, up to [`CALLS_AT_ONCE`] at a time, each answer
/// written into `answers` in the scripts' order: the default of the batch
/// methods (and what the test hosts do when told to misbehave).
pub(crate) async fn one_by_one<T, F>(hashxs: &[HashX], call: impl Fn(HashX) -> F, answers: &mut Answers<T>)
where
    F: std::future::Future<Output = Result<Vec<T>, HostError>>,
{
    use futures::StreamExt;
    let mut running = futures::stream::FuturesOrdered::new();
    for hashx in hashxs {
        if running.len() == CALLS_AT_ONCE
            && let Some(answer) = running.next().await
        {
            answers.push(answer);
        }
        running.push_back(call(*hashx));
    }
    while let Some(answer) = running.next().await {
        answers.push(answer);
    }
}
