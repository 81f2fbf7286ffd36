//! The script entries of the subscription index, packed.
//!
//! One entry per distinct script lives in a slab of fixed-size chunks (a
//! `u32` slot names it, and sessions list their scripts by slot), and a
//! `hashbrown::HashTable<u32>` of slots, hashed by the entry's hashX, finds
//! it. A distinct script with one subscriber costs its 48-byte entry (the
//! 32-byte scripthash, the status fingerprint, the subscriber) plus a
//! 4-byte bucket and its control byte at the table's load, instead of a
//! 64-byte `HashMap<HashX, _>` bucket (a 48-byte entry beside the hashX).
//! What is rare lives beside the slab, keyed by slot: the subscribers of
//! entries that have several, and which entries have unusual aliases.
//! Whether a status involved the mempool is membership of the index's
//! `mempool_scripts` set, so the entry carries no flag.
//!
//! The slab grows one chunk at a time (no doubling, no copy of every entry
//! under the index lock); freed slots are reused before a new one is taken.

use crate::core::hashing::{HashMap, HashSet, MapHasher};
use crate::core::outbox::StatusPrint;
use crate::types::{HASHX_LEN, HashX, SessionId};
use hashbrown::HashTable;
use std::hash::BuildHasher;

use super::Subscriber;

/// Entries per chunk of the slab (48 KiB with a pointer-sized subscriber;
/// a few under test, so the model tests cross chunks and reuse slots).
const CHUNK: usize = if cfg!(test) { 8 } else { 1024 };

/// One distinct script.
pub(super) struct Entry<S> {
    /// The scripthash, internal byte order: the hashX, then the rest (the
    /// first subscriber's spelling).
    hash: [u8; 32],
    pub(super) status: StatusPrint,
    /// The only subscriber; `None` when there are several (a live entry:
    /// they are in [`Scripts::many`]) or none (a free slot).
    one: Option<S>,
}

impl<S> Entry<S> {
    pub(super) fn hashx(&self) -> HashX {
        HashX::from_scripthash(&self.hash)
    }

    /// The scripthash, internal byte order.
    pub(super) fn scripthash(&self) -> [u8; 32] {
        self.hash
    }

    /// The scripthash bytes after the hashX.
    pub(super) fn rest(&self) -> &[u8] {
        &self.hash[HASHX_LEN..]
    }
}

fn hashx_of(hash: &[u8; 32]) -> &[u8] {
    &hash[..HASHX_LEN]
}

pub(super) struct Scripts<S> {
    /// Slots of the live entries, hashed by hashX.
    table: HashTable<u32>,
    hasher: MapHasher,
    /// Each chunk has capacity [`CHUNK`] exactly.
    chunks: Vec<Vec<Entry<S>>>,
    /// Free slots, reused first.
    free: Vec<u32>,
    /// Subscribers of entries that have more than one.
    many: HashMap<u32, HashMap<SessionId, S>>,
    /// Entries some subscriber of which used a spelling other than the
    /// canonical one, or subscribed by scriptPubKey (only then are
    /// per-session aliases looked up).
    unusual: HashSet<u32>,
}

impl<S> Default for Scripts<S> {
    fn default() -> Self {
        Scripts {
            table: HashTable::new(),
            hasher: MapHasher::default(),
            chunks: Vec::new(),
            free: Vec::new(),
            many: HashMap::default(),
            unusual: HashSet::default(),
        }
    }
}

fn at<S>(chunks: &[Vec<Entry<S>>], slot: u32) -> &Entry<S> {
    &chunks[slot as usize / CHUNK][slot as usize % CHUNK]
}

impl<S: Subscriber> Scripts<S> {
    /// Distinct scripts.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    fn hash(&self, hashx: &HashX) -> u64 {
        self.hasher.hash_one(hashx.as_bytes())
    }

    /// The slot of `hashx`'s entry.
    pub(super) fn find(&self, hashx: &HashX) -> Option<u32> {
        self.find_hashed(hashx, self.hash(hashx))
    }

    /// [`Self::find`] with the hash [`Self::hash_of`] gave.
    pub(super) fn find_hashed(&self, hashx: &HashX, hash: u64) -> Option<u32> {
        let chunks = &self.chunks;
        self.table
            .find(hash, |&slot| hashx_of(&at(chunks, slot).hash) == hashx.as_bytes())
            .copied()
    }

    /// The hash [`Self::find_hashed`] and [`Self::warm_find`] take.
    pub(super) fn hash_of(&self, hashx: &HashX) -> u64 {
        self.hash(hashx)
    }

    /// Reads what [`Self::find_hashed`] reads for `hash` (the table's
    /// control bytes and buckets, and the entry of each candidate slot),
    /// changing nothing: called for several scripts before finding them,
    /// so that their cache misses overlap.
    pub(super) fn warm_find(&self, hash: u64) {
        let chunks = &self.chunks;
        let _ = self.table.find(hash, |&slot| {
            std::hint::black_box(at(chunks, slot).hash[0]);
            false
        });
    }

    /// `slot`, if it holds the live entry of `hashx` (a slot found
    /// earlier, checked again: the entry may have gone, its slot reused).
    pub(super) fn check(&self, slot: u32, hashx: &HashX) -> Option<u32> {
        let entry = self
            .chunks
            .get(slot as usize / CHUNK)?
            .get(slot as usize % CHUNK)?;
        let live = entry.one.is_some() || self.many.contains_key(&slot);
        (live && hashx_of(&entry.hash) == hashx.as_bytes()).then_some(slot)
    }

    /// [`Subscriber::warm`] for the only subscriber of the entry at `slot`
    /// (entries with several are left alone).
    pub(super) fn warm(&self, slot: u32) {
        if let Some(one) = &self.get(slot).one {
            one.warm();
        }
    }

    pub(super) fn get(&self, slot: u32) -> &Entry<S> {
        at(&self.chunks, slot)
    }

    pub(super) fn get_mut(&mut self, slot: u32) -> &mut Entry<S> {
        &mut self.chunks[slot as usize / CHUNK][slot as usize % CHUNK]
    }

    /// Adds the entry of a script not in the table, with one subscriber.
    pub(super) fn insert(
        &mut self,
        hashx: HashX,
        rest: [u8; 32 - HASHX_LEN],
        status: StatusPrint,
        subscriber: S,
    ) -> u32 {
        debug_assert!(self.find(&hashx).is_none());
        let mut hash = [0u8; 32];
        hash[..HASHX_LEN].copy_from_slice(hashx.as_bytes());
        hash[HASHX_LEN..].copy_from_slice(&rest);
        let entry = Entry {
            hash,
            status,
            one: Some(subscriber),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                *self.get_mut(slot) = entry;
                slot
            }
            None => {
                if self.chunks.last().is_none_or(|chunk| chunk.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let slot = (self.chunks.len() - 1) * CHUNK + self.chunks.last().map_or(0, Vec::len);
                // Cannot fail: the index refuses a subscription past `u32::MAX` in all
                // (`check_new`), so there are fewer distinct scripts than that.
                let slot = u32::try_from(slot).expect("fewer than 2^32 distinct scripts");
                if let Some(chunk) = self.chunks.last_mut() {
                    chunk.push(entry);
                }
                slot
            }
        };
        let hash = self.hash(&hashx);
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.table.insert_unique(hash, slot, |&slot| {
            hasher.hash_one(hashx_of(&at(chunks, slot).hash))
        });
        slot
    }

    /// Frees the entry at `slot` (its subscribers already gone).
    fn remove(&mut self, slot: u32) {
        let hashx = self.get(slot).hashx();
        let hash = self.hash(&hashx);
        if let Ok(found) = self.table.find_entry(hash, |&s| s == slot) {
            found.remove();
        }
        self.get_mut(slot).one = None;
        self.many.remove(&slot);
        self.unusual.remove(&slot);
        self.free.push(slot);
    }

    /// Every live slot.
    pub(super) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.table.iter().copied()
    }

    /// Whether some subscriber of the live entry at `slot` used an unusual alias.
    pub(super) fn unusual(&self, slot: u32) -> bool {
        !self.unusual.is_empty() && self.unusual.contains(&slot)
    }

    pub(super) fn mark_unusual(&mut self, slot: u32) {
        self.unusual.insert(slot);
    }

    pub(super) fn contains_subscriber(&self, slot: u32, id: SessionId) -> bool {
        match &self.get(slot).one {
            Some(one) => one.id() == id,
            None => self.many.get(&slot).is_some_and(|m| m.contains_key(&id)),
        }
    }

    pub(super) fn insert_subscriber(&mut self, slot: u32, subscriber: S) {
        let entry = &mut self.chunks[slot as usize / CHUNK][slot as usize % CHUNK];
        match entry.one.take() {
            Some(existing) if existing.id() == subscriber.id() => entry.one = Some(existing),
            Some(existing) => {
                let mut map = HashMap::with_capacity_and_hasher(2, Default::default());
                map.insert(existing.id(), existing);
                map.insert(subscriber.id(), subscriber);
                self.many.insert(slot, map);
            }
            None => match self.many.get_mut(&slot) {
                Some(map) => {
                    map.insert(subscriber.id(), subscriber);
                }
                None => entry.one = Some(subscriber),
            },
        }
    }

    /// Removes subscriber `id` of the entry at `slot`, and the entry if it
    /// has none left. Returns whether the entry was removed.
    pub(super) fn remove_subscriber(&mut self, slot: u32, id: SessionId) -> bool {
        let entry = &mut self.chunks[slot as usize / CHUNK][slot as usize % CHUNK];
        match &entry.one {
            Some(one) if one.id() == id => {
                self.remove(slot);
                true
            }
            Some(_) => false,
            None => {
                if let Some(map) = self.many.get_mut(&slot) {
                    map.remove(&id);
                    if map.len() == 1 {
                        entry.one = self.many.remove(&slot).and_then(|m| m.into_values().next());
                    }
                }
                false
            }
        }
    }

    pub(super) fn for_each_subscriber(&self, slot: u32, mut f: impl FnMut(&S)) {
        match &self.get(slot).one {
            Some(one) => f(one),
            None => {
                if let Some(map) = self.many.get(&slot) {
                    map.values().for_each(f);
                }
            }
        }
    }

    #[cfg(test)]
    pub(super) fn subscriber_count(&self, slot: u32) -> usize {
        match &self.get(slot).one {
            Some(_) => 1,
            None => self.many.get(&slot).map_or(0, HashMap::len),
        }
    }

    /// Checks the slab, the table and the side map against each other
    /// (test support).
    #[cfg(test)]
    pub(super) fn check_consistency(&self) {
        let mut live = 0;
        for (c, chunk) in self.chunks.iter().enumerate() {
            assert_eq!(chunk.capacity(), CHUNK);
            for (i, entry) in chunk.iter().enumerate() {
                let slot = (c * CHUNK + i) as u32;
                let many = self.many.get(&slot);
                assert!(entry.one.is_none() || many.is_none());
                if entry.one.is_none() && many.is_none() {
                    assert!(self.free.contains(&slot));
                    assert!(!self.unusual.contains(&slot));
                } else {
                    live += 1;
                    assert_eq!(self.find(&entry.hashx()), Some(slot));
                    assert!(many.is_none_or(|m| m.len() > 1));
                }
            }
        }
        assert_eq!(live, self.table.len());
        assert!(
            self.many
                .keys()
                .chain(&self.unusual)
                .all(|s| self.table.iter().any(|t| t == s))
        );
        assert_eq!(
            self.free.len() + live,
            self.chunks.iter().map(Vec::len).sum::<usize>()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_packed() {
        // The scripthash, the status, one pointer-sized subscriber.
        assert_eq!(std::mem::size_of::<Entry<std::sync::Arc<u8>>>(), 48);
    }
}
