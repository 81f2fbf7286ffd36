//! Chain data the manager serves through its caches: confirmed histories,
//! script statuses, block txids and merkle branches, headers with
//! checkpoint proofs, and every host call's timeout and error mapping.
//!
//! The public part is a set of [`SessionHandle`] methods, one per Electrum
//! request, each charging the calling session what ElectrumX charges for it
//! (see [`crate::core::cost`]).

use crate::answers::Answers;
use crate::core::cost;
use crate::core::merkle::{MIN_TXS_FOR_LEVELS, merkle_branch};
use crate::core::status;
use crate::core::subscriptions::parse_scripthash;
use crate::core::sync::lock;
use crate::edge::caches::{BlockKey, CachedHistory, HistorySlot, OutpointSlot};
use crate::edge::manager::SessionManager;
use crate::edge::session::SessionHandle;
use crate::error::{Error, HostError, Result};
use crate::host::{Db, Host, Mempool};
use crate::types::{ConfirmedOutpoint, OutPoint, OutpointSpender, OutpointStatus};
use crate::types::{Cost, HashX, Height, Tip, TxHash};
use crate::types::{HistoryEntry, MempoolEntry};
use std::sync::Arc;

/// Most headers one `blockchain.block.headers` call returns (ElectrumX's
/// `MAX_CHUNK_SIZE`).
pub const MAX_HEADERS_PER_CALL: u32 = 2016;

/// Leaves hashed per step when building a big block's merkle levels (about
/// twice as many hashes, well under a millisecond); the request yields to the
/// executor between steps.
const MERKLE_LEAVES_PER_STEP: usize = 2048;

/// Returns `Pending` once (after waking its task), so a long loop lets the
/// executor run other tasks between its steps, on any executor.
pub(crate) async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Builds a block's merkle levels, yielding between steps of
/// [`MERKLE_LEAVES_PER_STEP`] leaves.
async fn build_merkle_levels(txids: &[TxHash]) -> crate::core::merkle::MerkleLevels {
    let mut builder = crate::core::merkle::MerkleLevels::builder(txids);
    while !builder.step(MERKLE_LEAVES_PER_STEP) {
        yield_now().await;
    }
    builder.finish()
}

/// One transaction of a script's history, as `blockchain.scripthash.get_history`
/// and `get_mempool` return it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryItem {
    /// The transaction.
    pub txid: TxHash,
    /// The confirming block's height; for a mempool transaction −1 when it
    /// spends unconfirmed outputs, else 0.
    pub height: i64,
    /// The fee in satoshis, for mempool transactions only (as Electrum).
    pub fee: Option<u64>,
}

impl HistoryItem {
    fn confirmed(entry: &HistoryEntry) -> Self {
        HistoryItem {
            txid: entry.txid,
            height: i64::from(entry.height.0),
            fee: None,
        }
    }

    fn unconfirmed(entry: &MempoolEntry) -> Self {
        HistoryItem {
            txid: entry.txid,
            height: i64::from(status::mempool_height(entry)),
            fee: Some(entry.fee),
        }
    }
}

/// ElectrumX's checkpoint proof of a header: the merkle branch of its block
/// hash in the tree over the hashes of headers `0..=cp_height`, and that
/// tree's root. Hashes are in internal byte order (their `Display` is the
/// reversed hex Electrum sends); check one with
/// [`crate::core::merkle::root_from_branch`]`(TxHash(block_hash), height, &branch) == root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderProof {
    /// Siblings from the leaves up.
    pub branch: Vec<TxHash>,
    /// The root of the header tree at the checkpoint.
    pub root: TxHash,
}

/// The answer to `blockchain.block.header`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// The raw header.
    pub header: Vec<u8>,
    /// With `cp_height > 0`: the header's checkpoint proof.
    pub proof: Option<HeaderProof>,
}

/// The answer to `blockchain.block.headers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderChunk {
    /// The raw headers, concatenated (Electrum's `hex`).
    pub headers: Vec<u8>,
    /// How many headers `headers` holds (fewer than asked at the tip).
    pub count: u32,
    /// [`MAX_HEADERS_PER_CALL`] (Electrum's `max`).
    pub max: u32,
    /// With `cp_height > 0` and `count > 0`: the checkpoint proof of the
    /// last header returned.
    pub proof: Option<HeaderProof>,
}

/// The answer to `blockchain.transaction.get_merkle`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleProof {
    /// The block's height.
    pub block_height: Height,
    /// The transaction's position in the block.
    pub pos: usize,
    /// Siblings from the leaves up (internal byte order).
    pub branch: Vec<TxHash>,
}

/// The answer to `blockchain.transaction.id_from_pos`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxAtPosition {
    /// The transaction at that position.
    pub txid: TxHash,
    /// Its merkle branch, when asked for.
    pub branch: Option<Vec<TxHash>>,
}

/// The status of a script, computed once and shared by every subscriber.
#[derive(Clone, Debug)]
pub(crate) struct ScriptStatus {
    pub(crate) status: Option<[u8; 32]>,
    /// Whether the status includes mempool transactions.
    pub(crate) mempool: bool,
    /// What computing it cost (history lookup plus status hashing).
    pub(crate) cost: Cost,
}

impl ScriptStatus {
    pub(crate) fn print(&self) -> crate::core::outbox::StatusPrint {
        status_print(&self.status)
    }

    pub(crate) fn hex(&self) -> Option<String> {
        self.status.as_ref().map(status::status_hex)
    }
}

/// The status of an outpoint, computed once and shared by every subscriber.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ComputedOutpoint {
    pub(crate) status: OutpointStatus,
    /// What computing it cost.
    pub(crate) cost: Cost,
}

impl ComputedOutpoint {
    pub(crate) fn print(&self) -> crate::core::outbox::StatusPrint {
        status::outpoint_print(&self.status)
    }

    /// Whether the status involves the mempool (rechecked on a tip change).
    pub(crate) fn mempool(&self) -> bool {
        self.status.involves_mempool()
    }
}

/// The height Electrum shows for an unconfirmed transaction.
fn unconfirmed_height(has_unconfirmed_inputs: bool) -> i64 {
    if has_unconfirmed_inputs { -1 } else { 0 }
}

/// Mempool entries minus those already in `history`, in status order
/// ([`status::sort_mempool`]).
fn unconfirmed_of(history: &[HistoryEntry], mut mempool: Vec<MempoolEntry>) -> Vec<MempoolEntry> {
    let kept = keep_unconfirmed(history, &mut mempool);
    mempool.truncate(kept);
    mempool
}

/// Moves the entries of `mempool` not already in `history` to its front,
/// sorted in status order ([`status::sort_mempool`]), and returns how many
/// there are.
fn keep_unconfirmed(history: &[HistoryEntry], mempool: &mut [MempoolEntry]) -> usize {
    let mut kept = mempool.len();
    if !mempool.is_empty() && !history.is_empty() {
        // A short history is scanned; a set is built only for a long one.
        let confirmed: Option<crate::core::hashing::HashSet<_>> =
            (history.len().saturating_mul(mempool.len()) > 256)
                .then(|| history.iter().map(|e| e.txid).collect());
        let is_confirmed = |entry: &MempoolEntry| match &confirmed {
            Some(confirmed) => confirmed.contains(&entry.txid),
            None => history.iter().any(|e| e.txid == entry.txid),
        };
        kept = 0;
        for at in 0..mempool.len() {
            if !is_confirmed(&mempool[at]) {
                mempool.swap(kept, at);
                kept += 1;
            }
        }
    }
    status::sort_mempool(&mut mempool[..kept]);
    kept
}

/// The status of a script from its history and its unconfirmed entries
/// ([`keep_unconfirmed`]); `cost`: what reading them cost.
fn status_of(history: &[HistoryEntry], mempool: &[MempoolEntry], mut cost: Cost) -> ScriptStatus {
    let preimage_len = (history.len() + mempool.len()) * 68;
    cost += cost::status(preimage_len);
    ScriptStatus {
        status: status::electrum_status(history, mempool),
        mempool: !mempool.is_empty(),
        cost,
    }
}

/// The error of a batch whose host call gave `answered` answers for
/// `asked` scripts (none when they match).
fn answer_count(operation: &'static str, method: &str, answered: usize, asked: usize) -> Result<()> {
    if answered == asked {
        return Ok(());
    }
    let error = Error::host(
        operation,
        format!("{method} returned {answered} results for {asked} scripts").into(),
    );
    crate::edge::observe::host_error(operation, &error);
    Err(error)
}

/// A batch answer's error for one script, observed.
fn host_answer_error(operation: &'static str, source: HostError) -> Error {
    let error = Error::host(operation, source);
    crate::edge::observe::host_error(operation, &error);
    error
}

/// A 64-bit fingerprint of a status (0 for none).
pub(crate) fn status_print(status: &Option<[u8; 32]>) -> crate::core::outbox::StatusPrint {
    match status {
        None => 0,
        Some(hash) => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&hash[..8]);
            u64::from_le_bytes(bytes) | 1
        }
    }
}

/// The error of a cache load, taken back from the `Arc` moka shares it in.
pub(crate) fn unshare(shared: Arc<Error>) -> Error {
    Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone())
}

/// Refuses a height above the tip.
pub(crate) fn check_height(height: Height, tip: Tip) -> Result<()> {
    if height > tip.height {
        Err(Error::HeightOutOfRange {
            height,
            tip: tip.height,
        })
    } else {
        Ok(())
    }
}

fn parse_alias(alias: &str) -> Result<HashX> {
    parse_scripthash(alias)
        .map(|(hashx, _)| hashx)
        .ok_or_else(|| Error::BadRequest(format!("invalid scripthash {alias:?}")))
}

impl<H: Host> SessionManager<H> {
    /// Runs one host call within `host_timeout`, mapping its failure.
    pub(crate) async fn host_call<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, HostError>>,
    ) -> Result<T> {
        let timer = self.inner.ctx.timer();
        let limit = self.inner.config.host_timeout;
        let error = match crate::edge::deadline::within(timer, limit, call).await {
            Some(Ok(value)) => return Ok(value),
            Some(Err(source)) => Error::host(operation, source),
            None => Error::HostTimeout {
                operation,
                after: limit,
            },
        };
        crate::edge::observe::host_error(operation, &error);
        Err(error)
    }

    /// Confirmed history of `hashx` through the history cache, and what the
    /// lookup cost — charged by ElectrumX even when the history is too large.
    /// A history at or over the limit is cached as too large; a failed
    /// lookup is not cached.
    async fn history_lookup(&self, hashx: HashX) -> (Result<Arc<[HistoryEntry]>>, Cost) {
        let caches = &self.inner.caches;
        let limit = self.inner.config.max_history_len();
        let mut loaded = false;
        // A history loaded before its script was last touched (cached from an
        // earlier event, or a load that overlapped the event) is dropped and
        // read again; a third overlap in a row is served (it is at most one
        // event old).
        let mut attempts = 0;
        let cached = loop {
            attempts += 1;
            let slot = caches
                .history
                .try_get_with(hashx, async {
                    loaded = true;
                    let generation = caches.history_generation();
                    let db = self.inner.db();
                    let entries = self.host_call("history", db.history(hashx, limit)).await?;
                    let history = if entries.len() >= limit {
                        CachedHistory::TooLarge { len: entries.len() }
                    } else {
                        CachedHistory::Entries(entries.into())
                    };
                    Ok::<_, Error>(HistorySlot {
                        history,
                        loaded_at: generation,
                    })
                })
                .await;
            match slot {
                Ok(slot) if attempts == 3 || caches.history_is_current(&hashx, slot.loaded_at) => {
                    break slot.history;
                }
                Ok(_) => caches.history.invalidate(&hashx).await,
                Err(shared) => return (Err(unshare(shared)), Cost::ZERO),
            }
        };
        caches.history_counter.record(!loaded);
        match cached {
            CachedHistory::Entries(entries) => {
                let cost = cost::history(!loaded, entries.len());
                (Ok(entries), cost)
            }
            CachedHistory::TooLarge { len } => (
                Err(Error::HistoryTooLarge { len, limit }),
                cost::history(!loaded, len),
            ),
        }
    }

    /// Confirmed history of `hashx` through the history cache, and its cost.
    /// A history at or over the limit is cached as too large; a failed
    /// lookup is not cached.
    pub(crate) async fn confirmed_history(&self, hashx: HashX) -> Result<(Arc<[HistoryEntry]>, Cost)> {
        let (history, cost) = self.history_lookup(hashx).await;
        Ok((history?, cost))
    }

    /// Unconfirmed entries of `hashx`.
    pub(crate) async fn mempool_entries(&self, hashx: HashX) -> Result<Vec<MempoolEntry>> {
        let mempool = self.inner.mempool();
        self.host_call("mempool entries", mempool.entries(hashx)).await
    }

    /// Mempool entries of `hashx` minus those already in `history`, in
    /// status order ([`status::sort_mempool`]).
    async fn unconfirmed(&self, hashx: HashX, history: &[HistoryEntry]) -> Result<Vec<MempoolEntry>> {
        let mempool = self.mempool_entries(hashx).await?;
        Ok(unconfirmed_of(history, mempool))
    }

    /// The Electrum status of `hashx`. Mempool entries already confirmed in
    /// the history are left out, so a transaction that confirms while the
    /// mempool lags is announced once, not twice.
    pub(crate) async fn script_status(&self, hashx: HashX) -> Result<ScriptStatus> {
        let (history, cost) = self.confirmed_history(hashx).await?;
        self.status_from(hashx, &history, cost).await
    }

    /// The confirmed histories of scripts a `notify` found touched, read
    /// from the `Db` directly into `answers` in one [`Db::histories`] call:
    /// their cached histories (if any) are stale, and filling the cache on
    /// every event would cost a cache insertion per changed script. The
    /// next client lookup reloads a history into the cache (and pays for
    /// the miss). On return `answers` holds one answer per script, in order
    /// (read each with [`Self::fresh_history`]); an `Err` fails the whole
    /// batch.
    pub(crate) async fn fresh_histories(
        &self,
        hashxs: &[HashX],
        answers: &mut Answers<HistoryEntry>,
    ) -> Result<()> {
        answers.clear();
        let limit = self.inner.config.max_history_len();
        let db = self.inner.db();
        self.host_call("history", db.histories(hashxs, limit, answers))
            .await?;
        answer_count("history", "histories", answers.len(), hashxs.len())
    }

    /// The answer [`Self::fresh_histories`] read for its `at`th script.
    pub(crate) fn fresh_history<'a>(
        &self,
        answers: &'a mut Answers<HistoryEntry>,
        at: usize,
    ) -> Result<&'a [HistoryEntry]> {
        let limit = self.inner.config.max_history_len();
        match answers.take(at) {
            Some(Ok(entries)) if entries.len() >= limit => Err(Error::HistoryTooLarge {
                len: entries.len(),
                limit,
            }),
            Some(Ok(entries)) => Ok(entries),
            Some(Err(source)) => Err(host_answer_error("history", source)),
            None => Err(host_answer_error("history", "no answer".into())),
        }
    }

    /// The unconfirmed entries of scripts a `notify` pass recomputes, read
    /// into `answers` in one
    /// [`Mempool::entries_batch`](crate::Mempool::entries_batch) call, as
    /// [`Self::fresh_histories`].
    pub(crate) async fn fresh_mempool_entries(
        &self,
        hashxs: &[HashX],
        answers: &mut Answers<MempoolEntry>,
    ) -> Result<()> {
        let operation = "mempool entries";
        answers.clear();
        let mempool = self.inner.mempool();
        self.host_call(operation, mempool.entries_batch(hashxs, answers))
            .await?;
        answer_count(operation, "entries_batch", answers.len(), hashxs.len())
    }

    /// The status of a script from its history [`Self::fresh_history`] read
    /// and its `at`th answer of [`Self::fresh_mempool_entries`] (left out of
    /// the status if already confirmed, and sorted, in place).
    pub(crate) fn fresh_status(
        &self,
        history: &[HistoryEntry],
        mempool: &mut Answers<MempoolEntry>,
        at: usize,
    ) -> Result<ScriptStatus> {
        match mempool.take(at) {
            Some(Ok(entries)) => {
                let kept = keep_unconfirmed(history, entries);
                Ok(status_of(history, &entries[..kept], Cost::ZERO))
            }
            Some(Err(source)) => Err(host_answer_error("mempool entries", source)),
            None => Err(host_answer_error("mempool entries", "no answer".into())),
        }
    }

    async fn status_from(&self, hashx: HashX, history: &[HistoryEntry], cost: Cost) -> Result<ScriptStatus> {
        let mempool = self.unconfirmed(hashx, history).await?;
        Ok(status_of(history, &mempool, cost))
    }

    /// The confirmed state of `outpoint` through the outpoint cache, and
    /// what the lookup cost (nothing on a hit, [`cost::outpoint_lookup`] on
    /// a miss). A failed lookup is not cached.
    async fn confirmed_outpoint(&self, outpoint: OutPoint) -> Result<(Option<ConfirmedOutpoint>, Cost)> {
        let caches = &self.inner.caches;
        let mut loaded = false;
        // As for histories: a state loaded before the outpoint was last
        // touched (or before the tip changed) is read again; a third
        // overlap in a row is served.
        let mut attempts = 0;
        let confirmed = loop {
            attempts += 1;
            let slot = caches
                .outpoints
                .try_get_with(outpoint, async {
                    loaded = true;
                    let generation = caches.outpoint_generation();
                    let db = self.inner.db();
                    let confirmed = self.host_call("outpoint", db.outpoint(outpoint)).await?;
                    Ok::<_, Error>(OutpointSlot {
                        confirmed,
                        loaded_at: generation,
                    })
                })
                .await;
            match slot {
                Ok(slot) if attempts == 3 || caches.outpoint_is_current(&outpoint, slot.loaded_at) => {
                    break slot.confirmed;
                }
                Ok(_) => caches.outpoints.invalidate(&outpoint).await,
                Err(shared) => return Err(unshare(shared)),
            }
        };
        caches.outpoints_counter.record(!loaded);
        let cost = if loaded {
            cost::outpoint_lookup(confirmed.is_some())
        } else {
            Cost::ZERO
        };
        Ok((confirmed, cost))
    }

    /// The status of `outpoint`: its confirmed state (cached), then, unless
    /// a confirmed transaction spent it, the mempool's. Confirmed facts win
    /// over the mempool's (a transaction that confirmed while the mempool
    /// lags is shown confirmed), and a spender is shown only for an output
    /// known to exist.
    ///
    /// Cost: [`cost::OUTPOINT_STATUS`], plus [`cost::outpoint_lookup`] on a
    /// cache miss, plus [`cost::OUTPOINT_MEMPOOL`] when the mempool is read.
    pub(crate) async fn outpoint_status(&self, outpoint: OutPoint) -> Result<ComputedOutpoint> {
        let (confirmed, cost) = self.confirmed_outpoint(outpoint).await?;
        self.outpoint_status_from(outpoint, confirmed, cost).await
    }

    /// The status of an outpoint a `notify` found touched, its confirmed
    /// state read from the `Db` directly: the cached one (if any) is stale,
    /// and filling the cache on every event would cost a cache insertion
    /// per changed outpoint. The next request reloads it into the cache
    /// (and pays for the miss).
    pub(crate) async fn fresh_outpoint_status(&self, outpoint: OutPoint) -> Result<ComputedOutpoint> {
        let db = self.inner.db();
        let confirmed = self.host_call("outpoint", db.outpoint(outpoint)).await?;
        self.outpoint_status_from(outpoint, confirmed, Cost::ZERO).await
    }

    async fn outpoint_status_from(
        &self,
        outpoint: OutPoint,
        confirmed: Option<ConfirmedOutpoint>,
        mut cost: Cost,
    ) -> Result<ComputedOutpoint> {
        cost += cost::OUTPOINT_STATUS;
        let mut status = OutpointStatus {
            funder_height: confirmed.map(|c| i64::from(c.height.0)),
            spender: confirmed.and_then(|c| c.spender).map(|s| OutpointSpender {
                txid: s.txid,
                height: i64::from(s.height.0),
            }),
        };
        if status.spender.is_none() {
            cost += cost::OUTPOINT_MEMPOOL;
            let mempool = self.inner.mempool();
            let unconfirmed = self
                .host_call("mempool outpoint", mempool.outpoint(outpoint))
                .await?;
            if status.funder_height.is_none() {
                status.funder_height = unconfirmed
                    .funder
                    .map(|f| unconfirmed_height(f.has_unconfirmed_inputs));
            }
            if status.funder_height.is_some() {
                status.spender = unconfirmed.spender.map(|s| OutpointSpender {
                    txid: s.txid,
                    height: unconfirmed_height(s.has_unconfirmed_inputs),
                });
            }
        }
        Ok(ComputedOutpoint { status, cost })
    }

    /// The tip requests are checked against: the last one given to
    /// `notify`, or the `Db`'s before the first.
    pub(crate) async fn known_tip(&self) -> Result<Tip> {
        let known = lock(&self.inner.last_tip).tip;
        match known {
            Some(tip) => Ok(tip),
            None => {
                let db = self.inner.db();
                self.host_call("tip", db.tip()).await
            }
        }
    }

    /// The txids of the block at `height` (checked against `tip`) through
    /// the txids cache, whether they were cached, and the lookup's cost.
    pub(crate) async fn block_txids(
        &self,
        height: Height,
        tip: Tip,
        epoch: u64,
    ) -> Result<(Arc<[TxHash]>, bool, Cost)> {
        check_height(height, tip)?;
        let caches = &self.inner.caches;
        let key = BlockKey {
            height: height.0,
            epoch,
        };
        let (txids, hit) =
            crate::edge::caches::block_cached(caches, &caches.txids, &caches.txids_counter, key, async {
                let db = self.inner.db();
                match self.host_call("block txids", db.block_txids(height)).await? {
                    Some(txids) => Ok(Arc::<[TxHash]>::from(txids)),
                    None => Err(Error::HeightOutOfRange {
                        height,
                        tip: tip.height,
                    }),
                }
            })
            .await?;
        let cost = cost::block_txids(hit, txids.len());
        Ok((txids, hit, cost))
    }

    /// The merkle branch of position `pos` in `txids` (the block at
    /// `height`), through the merkle cache for blocks of at least
    /// [`MIN_TXS_FOR_LEVELS`] transactions, and its cost. `pos` must be in range.
    pub(crate) async fn branch_at(
        &self,
        txids: &[TxHash],
        pos: usize,
        height: Height,
        epoch: u64,
    ) -> (Vec<TxHash>, Cost) {
        let n = txids.len();
        if n < MIN_TXS_FOR_LEVELS {
            let branch = merkle_branch(txids, pos).unwrap_or_default();
            return (branch, cost::merkle(n, false));
        }
        let caches = &self.inner.caches;
        let key = BlockKey {
            height: height.0,
            epoch,
        };
        let built =
            crate::edge::caches::block_cached(caches, &caches.merkle, &caches.merkle_counter, key, async {
                Ok(Arc::new(build_merkle_levels(txids).await))
            })
            .await;
        if let Ok((levels, hit)) = built {
            if let Some(branch) = levels.branch(txids, pos) {
                return (branch, cost::merkle(n, hit));
            }
            // Levels of other txids (cannot happen within one epoch): drop
            // them and answer from levels built for this request.
            caches.merkle.invalidate(&key).await;
        }
        let levels = build_merkle_levels(txids).await;
        (
            levels.branch(txids, pos).unwrap_or_default(),
            cost::merkle(n, false),
        )
    }

    /// Records a new tip. Touched scripts leave the history cache and
    /// touched outpoints the outpoint cache; a changed tip hash drops the
    /// shared header result, the fee estimates and every cached outpoint. Returns the tip it replaces (`Some(None)` for the first)
    /// if the tip changed: the caller then settles the block caches with
    /// [`SessionManager::settle_tip_change`].
    pub(crate) fn record_tip(&self, tip: Tip, touched: &crate::edge::notify::Changes) -> Option<Option<Tip>> {
        let caches = &self.inner.caches;
        caches.touch_histories(touched.scripts.iter());
        caches.touch_outpoints(touched.outpoints.iter());
        let previous = lock(&self.inner.last_tip).record(tip)?;
        *lock(&self.inner.tip_header) = None;
        caches.clear_fees();
        crate::edge::observe::cache_cleared("fees", "tip");
        caches.invalidate_all_outpoints();
        crate::edge::observe::cache_cleared("outpoints", "tip");
        Some(previous)
    }

    /// Settles the block caches after the tip changed from `previous` to
    /// `tip`: a tip that does not extend the previous one (a reorg, even to
    /// the same height) clears the block caches and every history. The
    /// first tip recorded clears the block caches too (what was read before
    /// it cannot be checked).
    pub(crate) async fn settle_tip_change(&self, previous: Option<Tip>, tip: Tip) {
        match previous {
            Some(previous) => {
                if !self.extends(previous, tip).await {
                    self.on_reorg().await;
                }
            }
            None => {
                self.inner.caches.clear_block_caches();
                crate::edge::observe::cache_cleared("txids", "first_tip");
                crate::edge::observe::cache_cleared("merkle", "first_tip");
            }
        }
    }

    /// Whether `tip` extends `previous`: it is higher and the header at the
    /// previous height still hashes to the previous tip's hash.
    async fn extends(&self, previous: Tip, tip: Tip) -> bool {
        if tip.height <= previous.height {
            return false;
        }
        let db = self.inner.db();
        match self.host_call("header", db.header(previous.height)).await {
            Ok(Some(header)) => crate::core::merkle::double_sha256(&header) == previous.hash.0,
            _ => false,
        }
    }

    /// The shared `blockchain.headers.subscribe` result: the tip, its
    /// generation and its raw header, read once per tip.
    pub(crate) async fn tip_header(&self) -> Result<crate::core::tip::TipHeader> {
        if let Some(cached) = lock(&self.inner.tip_header).clone() {
            return Ok(cached);
        }
        let known = *lock(&self.inner.last_tip);
        let mut tip = match known.tip {
            Some(tip) => tip,
            None => {
                let db = self.inner.db();
                self.host_call("tip", db.tip()).await?
            }
        };
        let mut attempts = 0;
        let header = loop {
            attempts += 1;
            let db = self.inner.db();
            let header =
                self.host_call("header", db.header(tip.height))
                    .await?
                    .ok_or(Error::HeightOutOfRange {
                        height: tip.height,
                        tip: tip.height,
                    })?;
            // The `Db` moved past the recorded tip (its block at that height
            // is another now): tell of the `Db`'s tip instead, a real tip
            // whose own `notify` will then send nothing more.
            if crate::core::merkle::double_sha256(&header) == tip.hash.0 {
                break header;
            }
            if attempts == 3 {
                // Not a header that was ever known to be the tip: tell no one.
                return Err(Error::host(
                    "header",
                    "the Db's tip kept changing while its header was read".into(),
                ));
            }
            let db = self.inner.db();
            tip = self.host_call("tip", db.tip()).await?;
        };
        let result = crate::core::tip::TipHeader {
            tip,
            generation: known.generation,
            hash: crate::types::BlockHash(crate::core::merkle::double_sha256(&header)),
            header,
        };
        let mut cached = lock(&self.inner.tip_header);
        if *lock(&self.inner.last_tip) == known {
            // One header per generation: a read that finished first (the
            // `Db` may have moved between the two) is what everyone is told.
            if let Some(first) = cached.as_ref() {
                return Ok(first.clone());
            }
            *cached = Some(result.clone());
        }
        Ok(result)
    }

    /// The raw header at `height` (checked against `tip`).
    async fn header_at(&self, height: Height, tip: Tip) -> Result<Vec<u8>> {
        check_height(height, tip)?;
        let db = self.inner.db();
        self.host_call("header", db.header(height))
            .await?
            .ok_or(Error::HeightOutOfRange {
                height,
                tip: tip.height,
            })
    }

    /// Checks `height ≤ cp_height ≤ tip` and builds the checkpoint proof
    /// (`cp_header`: the raw header at `cp_height`, when already read),
    /// charging `session` for the headers it reads into the levels.
    async fn checkpoint_proof(
        &self,
        height: Height,
        cp_height: u32,
        tip: Tip,
        cp_header: Option<Vec<u8>>,
        session: &crate::edge::session::SessionShared<H>,
    ) -> Result<HeaderProof> {
        if cp_height < height.0 {
            return Err(Error::BadRequest(format!(
                "header height {height} is above checkpoint height {cp_height}"
            )));
        }
        check_height(Height(cp_height), tip)?;
        self.header_proof(height, Height(cp_height), cp_header, session)
            .await
    }
}

impl<H: Host> SessionHandle<H> {
    /// `blockchain.scripthash.get_history`: the confirmed history of the
    /// script with scripthash `alias`, in block order, then its mempool
    /// transactions (height −1 with unconfirmed inputs, else 0, with their
    /// fee) in status order ([`status::sort_mempool`]), leaving out any
    /// already confirmed — the list a client hashes into the status.
    ///
    /// **Cost:** the history lookup (0.1, plus 0.1 + 0.001 × entries on a
    /// cache miss, charged even when the history is too large) plus
    /// `0.25 + mempool entries / 50`.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a malformed scripthash;
    /// [`Error::HistoryTooLarge`] (code 10001) for a history of at least
    /// `(max_send − 100) / 99` entries; [`Error::Host`] /
    /// [`Error::HostTimeout`] when the `Db` or `Mempool` fails.
    ///
    /// # Cancel safety
    /// Cancel-safe: read-only. What was charged before the drop stays; a
    /// history being loaded into the cache is finished by the next caller.
    pub async fn history(&self, alias: &str) -> Result<Vec<HistoryItem>> {
        let hashx = parse_alias(alias)?;
        let manager = &self.manager;
        let (history, cost) = manager.history_lookup(hashx).await;
        self.session.add_cost(cost);
        let history = history?;
        let mempool = manager.unconfirmed(hashx, &history).await?;
        self.session.add_cost(cost::mempool_lookup(mempool.len()));
        let mut items = Vec::with_capacity(history.len() + mempool.len());
        items.extend(history.iter().map(HistoryItem::confirmed));
        items.extend(mempool.iter().map(HistoryItem::unconfirmed));
        Ok(items)
    }

    /// `blockchain.scripthash.get_mempool`: the mempool transactions of the
    /// script with scripthash `alias` (height −1 with unconfirmed inputs,
    /// else 0, with their fee), in status order ([`status::sort_mempool`]).
    ///
    /// **Cost:** `0.25 + entries / 50`.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a malformed scripthash; [`Error::Host`] /
    /// [`Error::HostTimeout`] when the `Mempool` fails.
    ///
    /// # Cancel safety
    /// Cancel-safe: read-only; nothing is charged before the answer.
    pub async fn mempool(&self, alias: &str) -> Result<Vec<HistoryItem>> {
        let hashx = parse_alias(alias)?;
        let mut mempool = self.manager.mempool_entries(hashx).await?;
        status::sort_mempool(&mut mempool);
        self.session.add_cost(cost::mempool_lookup(mempool.len()));
        Ok(mempool.iter().map(HistoryItem::unconfirmed).collect())
    }

    /// `blockchain.block.header`: the raw header at `height` and, with
    /// `cp_height > 0`, its checkpoint proof against the tree of headers
    /// `0..=cp_height` (see [`HeaderProof`]). Heights are checked against
    /// the tip last given to [`SessionManager::notify`] (the `Db`'s tip
    /// before the first).
    ///
    /// **Cost:** 0.25, or 1.25 with a checkpoint (charged once the header is
    /// read), plus [`cost::checkpoint_headers`] of the headers the proof read
    /// into the header merkle levels (none once they reach `cp_height`; see
    /// [`crate::core::cost`]). A proof for any `cp_height` the levels reach reads
    /// one header and hashes ⌈log₂(cp_height + 1)⌉ nodes.
    ///
    /// # Cancel safety
    /// Dropping the future loses nothing shared: the levels grow in whole
    /// chunks, and what a dropped request charged matches the chunks it
    /// read.
    ///
    /// # Errors
    /// [`Error::HeightOutOfRange`] for `height` or `cp_height` above the tip;
    /// [`Error::BadRequest`] for `0 < cp_height < height`; [`Error::Host`] /
    /// [`Error::HostTimeout`] when the `Db` fails.
    pub async fn block_header(&self, height: Height, cp_height: u32) -> Result<BlockHeader> {
        let manager = &self.manager;
        let tip = manager.known_tip().await?;
        let header = manager.header_at(height, tip).await?;
        self.session.add_cost(cost::block_header(cp_height));
        let proof = match cp_height {
            0 => None,
            cp_height => {
                let cp_header = (cp_height == height.0).then(|| header.clone());
                Some(
                    manager
                        .checkpoint_proof(height, cp_height, tip, cp_header, &self.session)
                        .await?,
                )
            }
        };
        Ok(BlockHeader { header, proof })
    }

    /// `blockchain.block.headers`: up to `count` consecutive raw headers
    /// from `start` (at most [`MAX_HEADERS_PER_CALL`]; fewer, possibly none,
    /// at the tip — as ElectrumX, a start above the tip is not an error)
    /// and, with `cp_height > 0` and at least one header, the checkpoint
    /// proof of the last one.
    ///
    /// **Cost:** `count / 50` (the count asked for), plus 1.0 with a proof
    /// and [`cost::checkpoint_headers`] of the headers the proof read into
    /// the header merkle levels (as [`SessionHandle::block_header`]).
    ///
    /// # Cancel safety
    /// As [`SessionHandle::block_header`].
    ///
    /// # Errors
    /// With a proof: [`Error::HeightOutOfRange`] for `cp_height` above the
    /// tip, [`Error::BadRequest`] for `cp_height` below the last header.
    /// [`Error::Host`] / [`Error::HostTimeout`] when the `Db` fails.
    pub async fn block_headers(&self, start: Height, count: u32, cp_height: u32) -> Result<HeaderChunk> {
        let manager = &self.manager;
        let tip = manager.known_tip().await?;
        let wanted = count.min(MAX_HEADERS_PER_CALL);
        let available = if start > tip.height {
            0
        } else {
            wanted.min(tip.height.0 - start.0 + 1)
        };
        let mut raw = Vec::new();
        if available > 0 {
            let db = manager.inner.db();
            raw = manager.host_call("headers", db.headers(start, available)).await?;
            raw.truncate(available as usize);
        }
        // At most MAX_HEADERS_PER_CALL.
        let returned = raw.len() as u32;
        let with_proof = cp_height > 0 && returned > 0;
        self.session
            .add_cost(cost::block_headers(count, if with_proof { cp_height } else { 0 }));
        let proof = if with_proof {
            let last = Height(start.0 + returned - 1);
            let cp_header = (cp_height == last.0).then(|| raw[raw.len() - 1].clone());
            Some(
                manager
                    .checkpoint_proof(last, cp_height, tip, cp_header, &self.session)
                    .await?,
            )
        } else {
            None
        };
        Ok(HeaderChunk {
            headers: raw.concat(),
            count: returned,
            max: MAX_HEADERS_PER_CALL,
            proof,
        })
    }

    /// `blockchain.transaction.get_merkle`: the merkle branch of `txid` in
    /// the block at `height`. The block's txids come through the txids
    /// cache; in a block of at least [`MIN_TXS_FOR_LEVELS`] transactions the
    /// branch comes from the block's cached middle level (built on the
    /// first request), otherwise it is computed from all txids.
    ///
    /// **Cost:** the txids lookup (0.1 cached, else `0.25 + 0.0001 × n`)
    /// plus the branch (`n / 2500`, or `10·√n / 2500` with the block's
    /// middle level already cached).
    ///
    /// # Errors
    /// [`Error::HeightOutOfRange`] above the tip; [`Error::BadRequest`]
    /// naming `txid` when it is not in that block; [`Error::Host`] /
    /// [`Error::HostTimeout`] when the `Db` fails.
    ///
    /// # Cancel safety
    /// Cancel-safe: read-only. What was charged before the drop stays; block
    /// txids or merkle levels being loaded are loaded again by the next caller.
    pub async fn merkle_branch(&self, txid: TxHash, height: Height) -> Result<MerkleProof> {
        let manager = &self.manager;
        let epoch = manager.inner.caches.block_epoch();
        let tip = manager.known_tip().await?;
        let (txids, _, txids_cost) = manager.block_txids(height, tip, epoch).await?;
        let Some(pos) = txids.iter().position(|t| *t == txid) else {
            self.session.add_cost(txids_cost);
            return Err(Error::BadRequest(format!(
                "tx {txid} not in block at height {height}"
            )));
        };
        let (branch, merkle_cost) = manager.branch_at(&txids, pos, height, epoch).await;
        self.session.add_cost(txids_cost + merkle_cost);
        Ok(MerkleProof {
            block_height: height,
            pos,
            branch,
        })
    }

    /// `blockchain.transaction.id_from_pos`: the txid at position `pos` of
    /// the block at `height` and, when `merkle` is true, its merkle branch
    /// (as [`SessionHandle::merkle_branch`]).
    ///
    /// **Cost:** the txids lookup (0.1 cached, else `0.25 + 0.0001 × n`),
    /// plus with `merkle` the branch (`n / 2500`, or `10·√n / 2500` with
    /// the block's middle level cached).
    ///
    /// # Errors
    /// [`Error::HeightOutOfRange`] above the tip; [`Error::BadRequest`]
    /// when the block has no transaction at `pos`; [`Error::Host`] /
    /// [`Error::HostTimeout`] when the `Db` fails.
    ///
    /// # Cancel safety
    /// Cancel-safe: read-only. What was charged before the drop stays; block
    /// txids or merkle levels being loaded are loaded again by the next caller.
    pub async fn id_from_pos(&self, height: Height, pos: usize, merkle: bool) -> Result<TxAtPosition> {
        let manager = &self.manager;
        let epoch = manager.inner.caches.block_epoch();
        let tip = manager.known_tip().await?;
        let (txids, _, txids_cost) = manager.block_txids(height, tip, epoch).await?;
        let Some(&txid) = txids.get(pos) else {
            self.session.add_cost(txids_cost);
            return Err(Error::BadRequest(format!(
                "no tx at position {pos} in block at height {height}"
            )));
        };
        let (branch, merkle_cost) = if merkle {
            let (branch, cost) = manager.branch_at(&txids, pos, height, epoch).await;
            (Some(branch), cost)
        } else {
            (None, Cost::ZERO)
        };
        self.session.add_cost(txids_cost + merkle_cost);
        Ok(TxAtPosition { txid, branch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn txid(n: u8) -> TxHash {
        TxHash([n; 32])
    }

    proptest! {
        /// The entries kept are those of the mempool not in the history, in
        /// status order, whether the history is scanned (short) or put in a
        /// set (long).
        #[test]
        fn the_unconfirmed_entries_are_kept_in_status_order(
            history in proptest::collection::vec(0u8..40, 0..60),
            mempool in proptest::collection::vec((0u8..40, any::<bool>()), 0..20),
        ) {
            let history: Vec<HistoryEntry> = history
                .into_iter()
                .map(|n| HistoryEntry { txid: txid(n), height: Height(1) })
                .collect();
            let mut entries: Vec<MempoolEntry> = mempool
                .into_iter()
                .map(|(n, has_unconfirmed_inputs)| MempoolEntry { txid: txid(n), fee: u64::from(n), has_unconfirmed_inputs })
                .collect();
            let mut expected: Vec<MempoolEntry> = entries
                .iter()
                .filter(|entry| !history.iter().any(|e| e.txid == entry.txid))
                .copied()
                .collect();
            status::sort_mempool(&mut expected);
            let kept = keep_unconfirmed(&history, &mut entries);
            prop_assert_eq!(&entries[..kept], &expected[..]);
        }
    }
}
