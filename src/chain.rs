//! Chain data the manager serves through its caches: confirmed histories,
//! script statuses, and every host call's timeout and error mapping.

use crate::caches::CachedHistory;
use crate::cost;
use crate::error::{Error, HostError, Result};
use crate::host::{HistoryEntry, MempoolEntry};
use crate::manager::SessionManager;
use crate::status;
use crate::types::HashX;
use std::sync::Arc;

/// The status of a script, computed once and shared by every subscriber.
#[derive(Clone, Debug)]
pub(crate) struct ScriptStatus {
    pub(crate) status: Option<[u8; 32]>,
    /// Whether the status includes mempool transactions.
    pub(crate) mempool: bool,
    /// What computing it cost (history lookup plus status hashing).
    pub(crate) cost: f64,
}

impl ScriptStatus {
    pub(crate) fn print(&self) -> crate::outbox::StatusPrint {
        status_print(&self.status)
    }

    pub(crate) fn hex(&self) -> Option<String> {
        self.status.as_ref().map(status::status_hex)
    }
}

/// A 64-bit fingerprint of a status (0 for none).
pub(crate) fn status_print(status: &Option<[u8; 32]>) -> crate::outbox::StatusPrint {
    match status {
        None => 0,
        Some(hash) => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&hash[..8]);
            u64::from_le_bytes(bytes) | 1
        }
    }
}

impl SessionManager {
    /// Runs one host call within `host_timeout`, mapping its failure.
    pub(crate) async fn host_call<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, HostError>>,
    ) -> Result<T> {
        let timer = self.inner.ctx.timer.clone();
        let limit = self.inner.config.host_timeout;
        match crate::timer::within(&*timer, limit, call).await {
            Some(Ok(value)) => Ok(value),
            Some(Err(source)) => Err(Error::host(operation, source)),
            None => Err(Error::HostTimeout {
                operation,
                after: limit,
            }),
        }
    }

    /// Confirmed history of `hashx` through the history cache, and its cost.
    /// A history at or over the limit is cached as too large; a failed
    /// lookup is not cached.
    pub(crate) async fn confirmed_history(&self, hashx: HashX) -> Result<(Arc<[HistoryEntry]>, f64)> {
        let caches = &self.inner.caches;
        let limit = self.inner.config.max_history_len();
        let mut loaded = false;
        let cached = caches
            .history
            .try_get_with(hashx, async {
                loaded = true;
                let db = self.inner.db.clone();
                let entries = self.host_call("history", db.history(hashx, limit)).await?;
                Ok::<_, Error>(if entries.len() >= limit {
                    CachedHistory::TooLarge { len: entries.len() }
                } else {
                    CachedHistory::Entries(entries.into())
                })
            })
            .await
            .map_err(|shared: Arc<Error>| Arc::try_unwrap(shared).unwrap_or_else(|e| clone_error(&e)))?;
        caches.history_counter.record(!loaded);
        match cached {
            CachedHistory::Entries(entries) => {
                let cost = cost::history(!loaded, entries.len());
                Ok((entries, cost))
            }
            CachedHistory::TooLarge { len } => Err(Error::HistoryTooLarge { len, limit }),
        }
    }

    /// Unconfirmed entries of `hashx`.
    pub(crate) async fn mempool_entries(&self, hashx: HashX) -> Result<Vec<MempoolEntry>> {
        let mempool = self.inner.mempool.clone();
        self.host_call("mempool entries", mempool.entries(hashx)).await
    }

    /// The Electrum status of `hashx`. Mempool entries already confirmed in
    /// the history are left out, so a transaction that confirms while the
    /// mempool lags is announced once, not twice.
    pub(crate) async fn script_status(&self, hashx: HashX) -> Result<ScriptStatus> {
        let (history, mut cost) = self.confirmed_history(hashx).await?;
        let mut mempool = self.mempool_entries(hashx).await?;
        if !mempool.is_empty() && !history.is_empty() {
            let confirmed: hashbrown::HashSet<_> = history.iter().map(|e| e.txid).collect();
            mempool.retain(|entry| !confirmed.contains(&entry.txid));
        }
        let preimage_len = (history.len() + mempool.len()) * 68;
        cost += cost::status(preimage_len);
        Ok(ScriptStatus {
            status: status::electrum_status(&history, &mempool),
            mempool: !mempool.is_empty(),
            cost,
        })
    }
}

/// Rebuilds an error shared by concurrent waiters of one cache load.
pub(crate) fn clone_error(error: &Error) -> Error {
    match error {
        Error::Host { operation, source } => Error::Host {
            operation,
            source: source.to_string().into(),
        },
        Error::HostTimeout { operation, after } => Error::HostTimeout {
            operation,
            after: *after,
        },
        Error::HistoryTooLarge { len, limit } => Error::HistoryTooLarge { len: *len, limit: *limit },
        Error::DaemonRejected(message) => Error::DaemonRejected(message.clone()),
        other => Error::BadRequest(other.to_string()),
    }
}

impl SessionManager {
    /// Records a new tip. Touched scripts leave the history cache; a
    /// changed tip hash drops the shared header result, and a tip that does
    /// not extend the previous one (a reorg, even to the same height) also
    /// clears the block caches. Returns whether the tip hash changed.
    pub(crate) async fn advance_tip(&self, tip: crate::types::Tip, touched: &hashbrown::HashSet<HashX>) -> bool {
        let caches = &self.inner.caches;
        for hashx in touched {
            caches.history.invalidate(hashx).await;
        }
        let previous = {
            let mut last = crate::sync::lock(&self.inner.last_tip);
            if *last == Some(tip) {
                return false;
            }
            last.replace(tip)
        };
        *crate::sync::lock(&self.inner.tip_header) = None;
        if let Some(previous) = previous
            && !self.extends(previous, tip).await
        {
            self.on_reorg().await;
        }
        true
    }

    /// Whether `tip` extends `previous`: it is higher and the header at the
    /// previous height still hashes to the previous tip's hash.
    async fn extends(&self, previous: crate::types::Tip, tip: crate::types::Tip) -> bool {
        if tip.height <= previous.height {
            return false;
        }
        let db = self.inner.db.clone();
        match self.host_call("header", db.header(previous.height)).await {
            Ok(Some(header)) => crate::merkle::double_sha256(&header) == previous.hash.0,
            _ => false,
        }
    }

    /// The shared `blockchain.headers.subscribe` result: the tip height and
    /// raw header, read once per tip.
    pub(crate) async fn tip_header(&self) -> Result<(crate::types::Height, Vec<u8>)> {
        if let Some((_, height, header)) = crate::sync::lock(&self.inner.tip_header).clone() {
            return Ok((height, header));
        }
        let known = *crate::sync::lock(&self.inner.last_tip);
        let tip = match known {
            Some(tip) => tip,
            None => {
                let db = self.inner.db.clone();
                self.host_call("tip", db.tip()).await?
            }
        };
        let db = self.inner.db.clone();
        let header = self
            .host_call("header", db.header(tip.height))
            .await?
            .ok_or(Error::HeightOutOfRange {
                height: tip.height,
                tip: tip.height,
            })?;
        let mut cached = crate::sync::lock(&self.inner.tip_header);
        if *crate::sync::lock(&self.inner.last_tip) == known {
            *cached = Some((tip, tip.height, header.clone()));
        }
        Ok((tip.height, header))
    }
}
