//! The manager's caches, each a `moka` cache bounded by a byte budget (a
//! weigher), not only by entry count, with hit / miss counters.
//!
//! | cache | key | value | budget |
//! | --- | --- | --- | --- |
//! | history | hashX | confirmed history, or "too large" | `history_cache_bytes` |
//! | txids | height | the block's txids | `txids_cache_bytes` |
//! | merkle | height | [`crate::core::merkle::MerkleLevels`] of blocks with ≥ [`crate::core::merkle::MIN_TXS_FOR_LEVELS`] txs | `merkle_cache_bytes` |
//! | fees | (bucketed target, mode) | the node's estimate | [`FEE_CACHE_BYTES`] |
//! | outpoints | outpoint | its confirmed state ([`crate::Db::outpoint`]) | `outpoint_cache_bytes` |
//!
//! Invalidation follows the tip *hash*: touched scripts leave the history
//! cache and touched outpoints the outpoint cache on every event, fee
//! estimates and every outpoint are dropped whenever the tip hash
//! changes, and a reorg (the new tip does not extend the old one, even at
//! the same height) clears the block caches (txids and merkle) and every
//! history. Block and fee keys carry an *epoch* bumped at each such
//! clear, so a lookup that was already talking to the host when the chain
//! moved cannot leave its stale answer behind for later requests. Nothing
//! that failed is cached; the only cached refusal is a history too large to
//! send (ElectrumX's error code 10001).
//!
//! Entries are weighed in bytes, and `moka` applies evictions in batches: call
//! [`crate::SessionManager::run_pending_cache_tasks`] to apply them at once
//! (then [`CacheStats::bytes`] ≤ [`CacheStats::budget`] holds exactly).
//!
//! Beside the caches, the manager keeps the header merkle levels behind
//! checkpoint proofs (about 64 B per header, never evicted; see
//! [`CacheReport::checkpoints`]). They need no invalidation: every proof
//! checks them against the index's header at its checkpoint and repairs them
//! from the fork on a reorg.

use crate::config::Config;
use crate::core::merkle::MerkleLevels;
use crate::host::FeeMode;
use crate::host::Host;
use crate::types::{ConfirmedOutpoint, HistoryEntry, OutPoint};
use crate::types::{HashX, TxHash};
use moka::future::Cache;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Byte budget of the fee-estimate cache: a few hundred (target, mode) keys.
pub const FEE_CACHE_BYTES: u64 = 64 << 10;

/// What an entry costs beyond its payload: key, value header and moka's
/// own bookkeeping (measured at about 270 bytes per history entry with an
/// empty history; see BENCHMARKS.md).
const ENTRY_OVERHEAD: usize = 256;

/// Slots of the history touch stamps (8 bytes each, 2 MiB in all). Scripts
/// share a slot by hashX prefix, so a touch also ages the other cached
/// histories of its slot: with 1,000 touched scripts per event, a cached
/// history survives about 260 events on average before a neighbour's touch
/// sends it back to the `Db` once.
const STAMP_SLOTS: usize = 1 << 18;

/// Slots of the outpoint touch stamps (512 KiB).
const OUTPOINT_STAMP_SLOTS: usize = 1 << 16;

/// Touch stamps: which cached entries are stale, without a cache operation
/// per touched key.
///
/// Entries are not invalidated one by one when a block or mempool refresh
/// touches them (that costs a cache operation per touched key on every
/// event). Instead each event moves the generation and stamps the touched
/// keys' slots with it; an entry loaded before its slot's stamp is stale
/// and is read again on its next lookup. This also catches a load that
/// overlapped the event (it began before the stamp), which would otherwise
/// cache what the host said before the event. Keys share a slot by a few
/// bits of the key, so a touch also ages the other entries of its slot.
struct Stamps {
    /// Moved by every event.
    generation: AtomicU64,
    /// Per slot, the generation of the last touch (a power of two of
    /// them, so a key's slot is a mask of its bits, not a division).
    slots: Box<[AtomicU64]>,
    /// Entries loaded before this generation are all stale.
    floor: AtomicU64,
    /// A touch is running (checks that touches never overlap).
    #[cfg(debug_assertions)]
    touching: std::sync::atomic::AtomicBool,
}

impl Stamps {
    fn new(slots: usize) -> Self {
        assert!(slots.is_power_of_two(), "stamp slots must be a power of two");
        Stamps {
            generation: AtomicU64::new(0),
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            floor: AtomicU64::new(0),
            #[cfg(debug_assertions)]
            touching: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn slot(&self, bits: usize) -> &AtomicU64 {
        &self.slots[bits & (self.slots.len() - 1)]
    }

    /// Stamps the slots of `touched` (a few key bits each) with a new generation.
    ///
    /// One caller at a time: only a notify pass touches (`record_tip`), and
    /// passes run one after another. So each slot is stamped with a plain
    /// store, not a read-modify-write: no other stamp can land between the
    /// generation taken here and the store, and the generation only grows
    /// (checked under test).
    fn touch(&self, touched: impl Iterator<Item = usize> + Clone) {
        #[cfg(debug_assertions)]
        assert!(
            !self.touching.swap(true, Ordering::AcqRel),
            "Stamps::touch called concurrently"
        );
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        // The slots are read first (plain loads): their cache misses then
        // overlap, where each store would wait in the store buffer for its own.
        for bits in touched.clone() {
            std::hint::black_box(self.slot(bits).load(Ordering::Relaxed));
        }
        for bits in touched {
            let slot = self.slot(bits);
            debug_assert!(slot.load(Ordering::Relaxed) <= generation);
            slot.store(generation, Ordering::Release);
        }
        #[cfg(debug_assertions)]
        self.touching.store(false, Ordering::Release);
    }

    fn is_current(&self, bits: usize, loaded_at: u64) -> bool {
        loaded_at >= self.slot(bits).load(Ordering::Acquire)
            && loaded_at >= self.floor.load(Ordering::Acquire)
    }

    /// Marks every entry stale.
    fn touch_all(&self) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.floor.fetch_max(generation, Ordering::AcqRel);
    }
}

fn hashx_bits(hashx: &HashX) -> usize {
    let [a, b, c, ..] = hashx.0;
    u32::from_le_bytes([a, b, c, 0]) as usize
}

fn outpoint_bits(outpoint: &OutPoint) -> usize {
    let [a, b, c, d, ..] = outpoint.txid.0;
    (u32::from_le_bytes([a, b, c, d]) ^ outpoint.vout.rotate_left(16)) as usize
}

/// Hit and miss counts of one cache, and its size.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to the host.
    pub misses: u64,
    /// Entries held.
    pub entries: u64,
    /// Bytes held (as weighed).
    pub bytes: u64,
    /// The byte budget.
    pub budget: u64,
}

/// Statistics of every cache, shown in [`crate::edge::admin::Info`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CacheReport {
    /// Confirmed histories.
    pub history: CacheStats,
    /// Block txids.
    pub txids: CacheStats,
    /// Merkle middle levels of big blocks.
    pub merkle: CacheStats,
    /// The header merkle levels behind checkpoint proofs: a hit is a proof
    /// that read no header beyond its checkpoint's, a miss one that grew or
    /// repaired the levels; `entries` counts the headers held and `bytes`
    /// their levels (about 64 B per header). `budget` is 0: the levels are
    /// not evicted (they follow the chain).
    pub checkpoints: CacheStats,
    /// Fee estimates.
    pub fees: CacheStats,
    /// The confirmed part of outpoint statuses.
    pub outpoints: CacheStats,
}

pub(crate) struct Counter {
    hits: AtomicU64,
    misses: AtomicU64,
    /// The cache's name in metrics.
    name: &'static str,
}

impl Counter {
    fn new(name: &'static str) -> Self {
        Counter {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            name,
        }
    }

    pub(crate) fn record(&self, hit: bool) {
        crate::edge::observe::cache_lookup(self.name, hit);
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn stats<K, V>(&self, cache: &Cache<K, V>, budget: u64) -> CacheStats
    where
        K: std::hash::Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: cache.entry_count(),
            bytes: cache.weighted_size(),
            budget,
        }
    }
}

/// A cached confirmed history, or the cached refusal of one too large to send.
#[derive(Clone, Debug)]
pub(crate) enum CachedHistory {
    Entries(Arc<[HistoryEntry]>),
    TooLarge { len: usize },
}

/// A cached history and the history generation when its load began.
///
/// Histories are not invalidated one by one when a block or mempool refresh
/// touches them (that costs a cache operation per touched script on every
/// event). Instead each event moves the generation and stamps the touched
/// scripts' slots with it; a cached history loaded before its slot's stamp
/// is stale and is read again on its next lookup. This also catches a load
/// that overlapped the event (it began before the stamp), which would
/// otherwise cache what the `Db` said before the block.
#[derive(Clone, Debug)]
pub(crate) struct HistorySlot {
    pub(crate) history: CachedHistory,
    pub(crate) loaded_at: u64,
}

/// A cached confirmed outpoint state and the outpoint generation when its
/// load began (see [`Stamps`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutpointSlot {
    pub(crate) confirmed: Option<ConfirmedOutpoint>,
    pub(crate) loaded_at: u64,
}

/// Key of the block caches: a height within one reorg epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct BlockKey {
    pub(crate) height: u32,
    pub(crate) epoch: u64,
}

/// Key of the fee cache: bucketed target and mode within one tip epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct FeeKey {
    pub(crate) blocks: u32,
    pub(crate) mode: Option<FeeMode>,
    pub(crate) epoch: u64,
}

fn weight(bytes: usize) -> u32 {
    u32::try_from(ENTRY_OVERHEAD.saturating_add(bytes)).unwrap_or(u32::MAX)
}

/// A cache of `budget` bytes, each entry weighed by `size`; `name` is its
/// name in metrics.
fn byte_cache<K, V>(
    name: &'static str,
    budget: u64,
    size: impl Fn(&V) -> usize + Send + Sync + 'static,
) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let builder = Cache::builder()
        .max_capacity(budget)
        .weigher(move |_, value: &V| weight(size(value)));
    crate::edge::observe::count_evictions(builder, name).build()
}

pub(crate) struct Caches {
    pub(crate) history: Cache<HashX, HistorySlot>,
    pub(crate) history_counter: Counter,
    pub(crate) history_budget: u64,
    pub(crate) txids: Cache<BlockKey, Arc<[TxHash]>>,
    pub(crate) txids_counter: Counter,
    pub(crate) txids_budget: u64,
    pub(crate) merkle: Cache<BlockKey, Arc<MerkleLevels>>,
    pub(crate) merkle_counter: Counter,
    pub(crate) merkle_budget: u64,
    /// The header merkle levels (changed only under `header_builder`).
    pub(crate) header_levels: std::sync::Mutex<crate::edge::checkpoint::HeaderLevels>,
    /// Held by the one request growing or repairing `header_levels`.
    pub(crate) header_builder: futures::lock::Mutex<()>,
    pub(crate) checkpoints_counter: Counter,
    pub(crate) fees: Cache<FeeKey, Option<f64>>,
    pub(crate) fees_counter: Counter,
    /// Bumped whenever the block caches are cleared (a reorg).
    block_epoch: AtomicU64,
    /// Bumped whenever the tip hash changes.
    fee_epoch: AtomicU64,
    /// Which histories are stale (slots by hashX prefix; a reorg makes
    /// them all stale).
    history_stamps: Stamps,
    pub(crate) outpoints: Cache<OutPoint, OutpointSlot>,
    pub(crate) outpoints_counter: Counter,
    pub(crate) outpoints_budget: u64,
    /// Which outpoint states are stale (a tip change makes them all stale).
    outpoint_stamps: Stamps,
}

impl Caches {
    pub(crate) fn new(config: &Config) -> Self {
        Caches {
            history: byte_cache(
                "history",
                config.history_cache_bytes,
                |slot: &HistorySlot| match &slot.history {
                    CachedHistory::Entries(entries) => std::mem::size_of_val::<[HistoryEntry]>(entries),
                    CachedHistory::TooLarge { .. } => 0,
                },
            ),
            history_counter: Counter::new("history"),
            history_budget: config.history_cache_bytes,
            txids: byte_cache("txids", config.txids_cache_bytes, |txids: &Arc<[TxHash]>| {
                std::mem::size_of_val::<[TxHash]>(txids)
            }),
            txids_counter: Counter::new("txids"),
            txids_budget: config.txids_cache_bytes,
            merkle: byte_cache(
                "merkle",
                config.merkle_cache_bytes,
                |levels: &Arc<MerkleLevels>| levels.approx_bytes(),
            ),
            merkle_counter: Counter::new("merkle"),
            merkle_budget: config.merkle_cache_bytes,
            header_levels: std::sync::Mutex::default(),
            header_builder: futures::lock::Mutex::new(()),
            checkpoints_counter: Counter::new("checkpoints"),
            fees: byte_cache("fees", FEE_CACHE_BYTES, |_: &Option<f64>| {
                std::mem::size_of::<f64>()
            }),
            fees_counter: Counter::new("fees"),
            block_epoch: AtomicU64::new(0),
            fee_epoch: AtomicU64::new(0),
            history_stamps: Stamps::new(STAMP_SLOTS),
            outpoints: byte_cache("outpoints", config.outpoint_cache_bytes, |_: &OutpointSlot| {
                std::mem::size_of::<(OutPoint, OutpointSlot)>()
            }),
            outpoints_counter: Counter::new("outpoints"),
            outpoints_budget: config.outpoint_cache_bytes,
            outpoint_stamps: Stamps::new(OUTPOINT_STAMP_SLOTS),
        }
    }

    pub(crate) fn report(&self) -> CacheReport {
        CacheReport {
            history: self.history_counter.stats(&self.history, self.history_budget),
            txids: self.txids_counter.stats(&self.txids, self.txids_budget),
            merkle: self.merkle_counter.stats(&self.merkle, self.merkle_budget),
            checkpoints: self.checkpoint_stats(),
            fees: self.fees_counter.stats(&self.fees, FEE_CACHE_BYTES),
            outpoints: self
                .outpoints_counter
                .stats(&self.outpoints, self.outpoints_budget),
        }
    }

    fn checkpoint_stats(&self) -> CacheStats {
        let (hits, misses) = self.checkpoints_counter.counts();
        let (entries, bytes) = {
            let levels = crate::core::sync::lock(&self.header_levels);
            (levels.len(), levels.approx_bytes())
        };
        CacheStats {
            hits,
            misses,
            entries: entries as u64,
            bytes: bytes as u64,
            budget: 0,
        }
    }

    /// The current reorg epoch of the block caches.
    pub(crate) fn block_epoch(&self) -> u64 {
        self.block_epoch.load(Ordering::Acquire)
    }

    /// The history generation now (a load records it before reading the `Db`).
    pub(crate) fn history_generation(&self) -> u64 {
        self.history_stamps.generation()
    }

    /// Marks the histories of `touched` stale: O(1) per script, no cache operation.
    pub(crate) fn touch_histories<'a>(&self, touched: impl Iterator<Item = &'a HashX> + Clone) {
        self.history_stamps.touch(touched.map(hashx_bits));
    }

    /// Whether a history of `hashx` loaded at generation `loaded_at` is still current.
    pub(crate) fn history_is_current(&self, hashx: &HashX, loaded_at: u64) -> bool {
        self.history_stamps.is_current(hashx_bits(hashx), loaded_at)
    }

    /// Marks every history stale and drops them all (a reorg).
    pub(crate) fn invalidate_all_histories(&self) {
        self.history_stamps.touch_all();
        self.history.invalidate_all();
    }

    /// The outpoint generation now (a load records it before reading the `Db`).
    pub(crate) fn outpoint_generation(&self) -> u64 {
        self.outpoint_stamps.generation()
    }

    /// Marks the cached states of `touched` stale: O(1) per outpoint, no cache operation.
    pub(crate) fn touch_outpoints<'a>(&self, touched: impl Iterator<Item = &'a OutPoint> + Clone) {
        self.outpoint_stamps.touch(touched.map(outpoint_bits));
    }

    /// Whether the state of `outpoint` loaded at generation `loaded_at` is still current.
    pub(crate) fn outpoint_is_current(&self, outpoint: &OutPoint, loaded_at: u64) -> bool {
        self.outpoint_stamps
            .is_current(outpoint_bits(outpoint), loaded_at)
    }

    /// Marks every outpoint state stale and drops them all (the tip hash changed).
    pub(crate) fn invalidate_all_outpoints(&self) {
        self.outpoint_stamps.touch_all();
        self.outpoints.invalidate_all();
    }

    /// The current tip epoch of the fee cache.
    pub(crate) fn fee_epoch(&self) -> u64 {
        self.fee_epoch.load(Ordering::Acquire)
    }

    /// Drops every txids and merkle entry, and moves later
    /// lookups to a new epoch (so loads already in flight cannot serve their
    /// answer to them).
    pub(crate) fn clear_block_caches(&self) {
        self.block_epoch.fetch_add(1, Ordering::AcqRel);
        self.txids.invalidate_all();
        self.merkle.invalidate_all();
    }

    /// Drops every fee estimate (the tip hash changed).
    pub(crate) fn clear_fees(&self) {
        self.fee_epoch.fetch_add(1, Ordering::AcqRel);
        self.fees.invalidate_all();
    }

    async fn run_pending_tasks(&self) {
        self.history.run_pending_tasks().await;
        self.txids.run_pending_tasks().await;
        self.merkle.run_pending_tasks().await;
        self.fees.run_pending_tasks().await;
        self.outpoints.run_pending_tasks().await;
    }
}

impl<H: Host> crate::edge::manager::SessionManager<H> {
    /// Statistics of every cache.
    pub(crate) fn cache_report(&self) -> CacheReport {
        self.inner.caches.report()
    }

    /// Applies every cache's pending evictions and invalidations now.
    ///
    /// `moka` applies them in batches as the caches are used, so between
    /// batches a cache may briefly hold more than its budget and the entry
    /// and byte counts in [`crate::SessionManager::info`] lag. After this
    /// call each cache is within its byte budget and its counts are exact.
    /// Cheap when nothing is pending; a host may call it from its own
    /// periodic task.
    ///
    /// # Cancel safety
    /// Cancel-safe: evictions not applied are applied by the next call.
    pub async fn run_pending_cache_tasks(&self) {
        self.inner.caches.run_pending_tasks().await;
    }

    /// A reorg: every history may have changed, and block caches are stale.
    pub(crate) async fn on_reorg(&self) {
        self.inner.caches.invalidate_all_histories();
        self.inner.caches.clear_block_caches();
        for cache in ["history", "txids", "merkle"] {
            crate::edge::observe::cache_cleared(cache, "reorg");
        }
    }
}

/// Looks `key` up in one of the block caches (keyed by reorg epoch),
/// loading it with `load` on a miss. Returns the value and whether it was
/// a hit. A value loaded while a reorg moved the epoch is served to this
/// caller but not left for others; failed loads are not cached.
pub(crate) async fn block_cached<V>(
    caches: &Caches,
    cache: &Cache<BlockKey, V>,
    counter: &Counter,
    key: BlockKey,
    load: impl std::future::Future<Output = crate::error::Result<V>>,
) -> crate::error::Result<(V, bool)>
where
    V: Clone + Send + Sync + 'static,
{
    let mut loaded = false;
    let value = cache
        .try_get_with(key, async {
            loaded = true;
            load.await
        })
        .await
        .map_err(crate::edge::chain::unshare)?;
    if loaded && caches.block_epoch() != key.epoch {
        cache.invalidate(&key).await;
    }
    counter.record(!loaded);
    Ok((value, !loaded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Height;

    fn entries(n: usize) -> CachedHistory {
        let entry = HistoryEntry {
            txid: TxHash([1; 32]),
            height: Height(1),
        };
        CachedHistory::Entries(vec![entry; n].into())
    }

    #[test]
    fn history_cache_holds_its_byte_budget() {
        let config = Config {
            history_cache_bytes: 100_000,
            ..Config::default()
        };
        let caches = Caches::new(&config);
        futures::executor::block_on(async {
            for i in 0..10u8 {
                // About 36 KB each: ten of them are more than three times the budget.
                caches
                    .history
                    .insert(
                        HashX([i; 11]),
                        HistorySlot {
                            history: entries(1000),
                            loaded_at: 0,
                        },
                    )
                    .await;
            }
            caches.run_pending_tasks().await;
        });
        let report = caches.report();
        assert!(report.history.bytes <= 100_000, "{:?}", report.history);
        assert!(report.history.entries >= 1 && report.history.entries <= 2);
        assert_eq!(report.history.budget, 100_000);
    }

    #[test]
    fn clearing_block_caches_moves_the_epoch() {
        let caches = Caches::new(&Config::default());
        let key = BlockKey {
            height: 7,
            epoch: caches.block_epoch(),
        };
        futures::executor::block_on(async {
            caches.txids.insert(key, Arc::from(vec![TxHash([2; 32])])).await;
            assert!(caches.txids.get(&key).await.is_some());
            caches.clear_block_caches();
            assert!(caches.txids.get(&key).await.is_none());
        });
        assert_eq!(caches.block_epoch(), key.epoch + 1);
        let fee_epoch = caches.fee_epoch();
        caches.clear_fees();
        assert_eq!(caches.fee_epoch(), fee_epoch + 1);
        assert_eq!(caches.block_epoch(), key.epoch + 1);
    }

    #[test]
    fn entries_are_weighed_in_bytes() {
        assert_eq!(weight(0), ENTRY_OVERHEAD as u32);
        assert_eq!(weight(usize::MAX), u32::MAX);
    }
}
