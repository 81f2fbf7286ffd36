//! The manager's caches, each a `moka` cache bounded by a byte budget (a
//! weigher), not only by entry count, with hit / miss counters.
//!
//! Invalidation follows the tip *hash*: touched scripts leave the history
//! cache on every event, and a reorg (the new tip does not extend the old
//! one, even at the same height) clears the block caches.

use crate::config::Config;
use crate::host::HistoryEntry;
use crate::types::HashX;
use moka::future::Cache;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Statistics of every cache, shown in [`crate::admin::Info`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CacheReport {
    /// Confirmed histories.
    pub history: CacheStats,
    /// Block txids.
    pub txids: CacheStats,
    /// Merkle middle levels.
    pub merkle: CacheStats,
    /// Fee estimates.
    pub fees: CacheStats,
}

#[derive(Default)]
pub(crate) struct Counter {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Counter {
    pub(crate) fn record(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
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

fn weight(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

pub(crate) struct Caches {
    pub(crate) history: Cache<HashX, CachedHistory>,
    pub(crate) history_counter: Counter,
    pub(crate) history_budget: u64,
}

impl Caches {
    pub(crate) fn new(config: &Config) -> Self {
        const ENTRY_OVERHEAD: usize = 64;
        Caches {
            history: Cache::builder()
                .max_capacity(config.history_cache_bytes)
                .weigher(|_, value: &CachedHistory| {
                    weight(
                        ENTRY_OVERHEAD
                            + match value {
                                CachedHistory::Entries(entries) => {
                                    entries.len() * std::mem::size_of::<HistoryEntry>()
                                }
                                CachedHistory::TooLarge { .. } => 0,
                            },
                    )
                })
                .build(),
            history_counter: Counter::default(),
            history_budget: config.history_cache_bytes,
        }
    }

    pub(crate) fn report(&self) -> CacheReport {
        CacheReport {
            history: self.history_counter.stats(&self.history, self.history_budget),
            ..CacheReport::default()
        }
    }
}

impl crate::manager::SessionManager {
    /// Statistics of every cache.
    pub(crate) fn cache_report(&self) -> CacheReport {
        self.inner.caches.report()
    }

    /// A reorg: every history may have changed, and block caches are stale.
    pub(crate) async fn on_reorg(&self) {
        self.inner.caches.history.invalidate_all();
    }
}
