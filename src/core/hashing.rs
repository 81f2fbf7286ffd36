//! The hash builder of the crate's maps.
//!
//! Seeded at random per process, so clients cannot aim hash collisions at
//! a table keyed by what they send (scripts, addresses). A deterministic
//! simulation needs the same iteration orders on every run:
//! `testing::deterministic_hashing` switches maps created afterwards to a
//! fixed seed.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};

static FIXED_SEED: AtomicBool = AtomicBool::new(false);

/// Uses a fixed seed for maps created from now on (test support).
#[cfg(feature = "test-util")]
pub(crate) fn use_fixed_seed() {
    FIXED_SEED.store(true, Ordering::SeqCst);
}

/// A randomly seeded hash builder, or a fixed one under simulation.
#[derive(Clone, Debug)]
pub(crate) struct MapHasher(foldhash::fast::SeedableRandomState);

impl Default for MapHasher {
    fn default() -> Self {
        MapHasher(if FIXED_SEED.load(Ordering::Relaxed) {
            foldhash::fast::SeedableRandomState::fixed()
        } else {
            foldhash::fast::SeedableRandomState::random()
        })
    }
}

impl BuildHasher for MapHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    #[inline(always)]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// A hash map with the crate's hash builder.
pub(crate) type HashMap<K, V> = hashbrown::HashMap<K, V, MapHasher>;
/// A hash set with the crate's hash builder.
pub(crate) type HashSet<K> = hashbrown::HashSet<K, MapHasher>;
