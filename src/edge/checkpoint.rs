//! Checkpoint proofs of headers (`cp_height` in `blockchain.block.header`
//! and `blockchain.block.headers`), as ElectrumX computes them: the merkle
//! branch of a block hash in the tree over the hashes of headers
//! `0..=cp_height` (Bitcoin's rule: an odd row pairs its last hash with
//! itself), and that tree's root.
//!
//! # Header levels
//!
//! The manager keeps one [`HeaderLevels`] for the whole chain: level 0 holds
//! the hash of every header from genesis, and level `k + 1` holds the parent
//! of each *complete* pair of level `k` — so `levels[k][j]` is the root of the
//! full subtree over headers `j·2^k .. (j+1)·2^k`. That is about 2n hashes for
//! n headers: **64 B per header** (6.4 MB at 100,000 headers, 58 MB at
//! 900,000), plus up to as much again of `Vec` growth slack.
//!
//! The tree over any prefix `0..=cp_height` is made of those complete
//! subtrees plus one partial node per level (its right edge). A proof walks
//! the levels once: each sibling is a stored complete node or the edge node
//! of its level, and the edge of the next level is one hash (its left
//! neighbour and itself, or itself twice when the row is odd). So a proof
//! for **any** `cp_height` the levels cover costs ⌈log₂(cp_height + 1)⌉
//! hashes and one header read (the check below).
//!
//! # Growing, checking and repairing
//!
//! The levels grow only when a request needs a checkpoint beyond them, by
//! the headers between their end and that checkpoint, read in chunks of at
//! most [`LEVELS_CHUNK`] headers with a yield between chunks. One request
//! grows them at a time (others wait for it, then find the work done); each
//! chunk is committed as a whole, so a dropped request keeps what it
//! finished. The request that grows them is charged
//! [`crate::core::cost::checkpoint_headers`] for the headers it read; a host may
//! grow them beforehand, uncharged, with
//! [`SessionManager::prepare_checkpoint_proofs`].
//!
//! Every proof first reads the header at `cp_height` (one `Db::header` call)
//! and compares its hash with the stored leaf. A header holds its parent's
//! hash, so a match vouches for every header below it: the proof is of the
//! index's chain as it is now, whatever `notify` has or has not been told.
//! On a mismatch (a reorg) the levels are cut back to the first header that
//! differs, found by comparing stored hashes with the `Db`'s headers going
//! down from the checkpoint in doubling steps, then halving (O(log depth)
//! single-header reads), and regrown from there. Each chunk read while
//! growing starts one header early, at the last stored one, so a chain that
//! changed under a build is noticed there too and repaired the same way.

use crate::core::cost;
use crate::core::merkle::{double_sha256, hash_pair};
use crate::core::sync::lock;
use crate::edge::chain::HeaderProof;
use crate::edge::manager::SessionManager;
use crate::edge::session::SessionShared;
use crate::error::{Error, Result};
use crate::host::{Db, Host};
use crate::types::{Height, TxHash};

/// Most headers read and hashed into the levels per `Db::headers` call;
/// the request yields to the executor between two chunks.
pub(crate) const LEVELS_CHUNK: u32 = 2016;

/// How many times a proof re-reads the checkpoint header when the chain
/// keeps changing under it before it gives up.
const PROOF_ATTEMPTS: usize = 3;

/// The header merkle levels (see the [module documentation](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeaderLevels {
    /// `levels[0]`: header hashes from genesis; `levels[k][j]`: the root of
    /// the complete subtree over leaves `j·2^k .. (j+1)·2^k`. Invariant:
    /// `levels[k + 1].len() == levels[k].len() / 2`, and no empty level
    /// follows another.
    levels: Vec<Vec<TxHash>>,
}

/// The nodes a batch of leaves adds to each level, computed from the
/// levels' right edge without holding them (see [`HeaderLevels::growth`]).
#[derive(Debug)]
pub(crate) struct Growth {
    /// The leaf count the growth was computed for.
    from: usize,
    /// New nodes per level, level 0 first.
    added: Vec<Vec<TxHash>>,
}

impl HeaderLevels {
    /// Headers held (level 0).
    pub(crate) fn len(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    /// The hash of the header at `index`.
    pub(crate) fn leaf(&self, index: usize) -> Option<TxHash> {
        self.levels.first()?.get(index).copied()
    }

    /// For each level, its last node when it has an odd length (the node
    /// waiting for a right sibling).
    pub(crate) fn frontier(&self) -> Vec<Option<TxHash>> {
        self.levels
            .iter()
            .map(|level| {
                if level.len() % 2 == 1 {
                    level.last().copied()
                } else {
                    None
                }
            })
            .collect()
    }

    /// The nodes that appending `leaves` to levels of `from` leaves with
    /// right edge `frontier` adds: O(leaves) hashes, no access to the levels.
    pub(crate) fn growth(from: usize, frontier: &[Option<TxHash>], leaves: Vec<TxHash>) -> Growth {
        let mut added = vec![leaves];
        let mut len = from;
        loop {
            let level = added.len() - 1;
            let below = &added[level];
            let mut parents = Vec::with_capacity(below.len().div_ceil(2));
            let mut rest = &below[..];
            if len % 2 == 1
                && let (Some(Some(left)), Some(right)) = (frontier.get(level), rest.first())
            {
                parents.push(hash_pair(left, right));
                rest = &rest[1..];
            }
            for pair in rest.chunks_exact(2) {
                parents.push(hash_pair(&pair[0], &pair[1]));
            }
            if parents.is_empty() {
                break;
            }
            len /= 2;
            added.push(parents);
        }
        Growth { from, added }
    }

    /// Appends a [`Growth`]; false (and nothing changed) when it was
    /// computed for another length.
    pub(crate) fn commit(&mut self, growth: Growth) -> bool {
        if growth.from != self.len() {
            return false;
        }
        for (k, nodes) in growth.added.into_iter().enumerate() {
            if nodes.is_empty() {
                break;
            }
            if self.levels.len() == k {
                self.levels.push(Vec::new());
            }
            self.levels[k].extend(nodes);
        }
        true
    }

    /// Appends header hashes (hashing under the caller's borrow).
    #[cfg(test)]
    pub(crate) fn extend(&mut self, leaves: &[TxHash]) {
        let growth = Self::growth(self.len(), &self.frontier(), leaves.to_vec());
        assert!(self.commit(growth));
    }

    /// Keeps the first `len` headers (and every node over them only).
    pub(crate) fn truncate(&mut self, len: usize) {
        for (k, level) in self.levels.iter_mut().enumerate() {
            level.truncate(len.checked_shr(k as u32).unwrap_or(0));
        }
        while self.levels.last().is_some_and(Vec::is_empty) {
            self.levels.pop();
        }
    }

    /// The proof of leaf `index` in the tree over the first `count` leaves,
    /// hashing one node per level; `None` unless `index < count ≤ len`.
    pub(crate) fn proof(&self, index: usize, count: usize) -> Option<HeaderProof> {
        if index >= count || count > self.len() {
            return None;
        }
        let mut branch = Vec::with_capacity(usize::BITS as usize);
        let mut edge = self.leaf(count - 1)?;
        let mut pos = index;
        let mut row_len = count;
        let mut level = 0;
        while row_len > 1 {
            let last = row_len - 1;
            let sibling = pos ^ 1;
            // A sibling past the end is the node itself (the last of an odd
            // row); the last node of a row is the edge; any other is complete.
            branch.push(if sibling >= last {
                edge
            } else {
                *self.levels.get(level)?.get(sibling)?
            });
            edge = if row_len % 2 == 1 {
                hash_pair(&edge, &edge)
            } else {
                hash_pair(self.levels.get(level)?.get(last - 1)?, &edge)
            };
            pos >>= 1;
            row_len = row_len.div_ceil(2);
            level += 1;
        }
        Some(HeaderProof { branch, root: edge })
    }

    /// Bytes held, capacity included.
    pub(crate) fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .levels
                .iter()
                .map(|level| {
                    std::mem::size_of::<Vec<TxHash>>() + level.capacity() * std::mem::size_of::<TxHash>()
                })
                .sum::<usize>()
    }
}

fn header_hash(header: &[u8]) -> TxHash {
    TxHash(double_sha256(header))
}

fn height_of(index: usize) -> Height {
    Height(u32::try_from(index).unwrap_or(u32::MAX))
}

impl<H: Host> SessionManager<H> {
    /// Grows the header merkle levels behind checkpoint proofs to the tip
    /// last given to [`SessionManager::notify`] (the `Db`'s tip before the
    /// first), repairing them first after a reorg. Returns the headers read.
    ///
    /// Optional: without it the first request for a checkpoint beyond the
    /// levels grows them and pays for it (see [`crate::core::cost`]). A host that
    /// calls it at start-up, and after each block if it likes, spares its
    /// clients that cost. It reads the headers in chunks of 2016 with a
    /// yield between two, like a request.
    ///
    /// **Cost:** none (no session is charged).
    ///
    /// # Errors
    /// [`Error::Host`] / [`Error::HostTimeout`] when the `Db` fails, or keeps
    /// changing its headers while they are read.
    ///
    /// # Cancel safety
    /// Dropping the future keeps every chunk already added; the next call or
    /// request continues from there.
    pub async fn prepare_checkpoint_proofs(&self) -> Result<usize> {
        let tip = self.known_tip().await?;
        let (_, read) = self.levels_proof(tip.height, tip.height, None, None).await?;
        Ok(read)
    }

    /// The checkpoint proof of the header at `height` against the tree of
    /// headers `0..=cp_height` (`height ≤ cp_height`, both checked by the
    /// caller against the tip). `cp_header` is the raw header at
    /// `cp_height` when the caller has already read it. Repairing and
    /// growing the levels is charged to `session`.
    pub(crate) async fn header_proof(
        &self,
        height: Height,
        cp_height: Height,
        cp_header: Option<Vec<u8>>,
        session: &SessionShared<H>,
    ) -> Result<HeaderProof> {
        let (proof, read) = self
            .levels_proof(height, cp_height, cp_header, Some(session))
            .await?;
        self.inner.caches.checkpoints_counter.record(read == 0);
        Ok(proof)
    }

    /// The proof from the levels, repaired and grown to `cp_height` first
    /// when needed (charged to `session`, if any), and the headers that read.
    async fn levels_proof(
        &self,
        height: Height,
        cp_height: Height,
        mut cp_header: Option<Vec<u8>>,
        session: Option<&SessionShared<H>>,
    ) -> Result<(HeaderProof, usize)> {
        let caches = &self.inner.caches;
        let (index, cp) = (height.0 as usize, cp_height.0 as usize);
        let mut read = 0;
        for _attempt in 0..PROOF_ATTEMPTS {
            let cp_hash = match cp_header.take() {
                Some(header) => header_hash(&header),
                None => header_hash(&self.db_header(cp).await?),
            };
            if let Some(proof) = Self::proof_if_current(caches, index, cp, cp_hash) {
                return Ok((proof, read));
            }
            let _builder = caches.header_builder.lock().await;
            // Another request may have done the work meanwhile.
            if let Some(proof) = Self::proof_if_current(caches, index, cp, cp_hash) {
                return Ok((proof, read));
            }
            if lock(&caches.header_levels).len() > cp {
                // The stored chain differs from the index's at or below `cp`.
                read += self.cut_back_to_fork(cp, session).await?;
            }
            read += self.grow_header_levels(cp, session).await?;
            if let Some(proof) = Self::proof_if_current(caches, index, cp, cp_hash) {
                return Ok((proof, read));
            }
            // The checkpoint header changed while the levels grew: read it again.
        }
        Err(Error::host(
            "headers",
            "the headers changed while a checkpoint proof was built".into(),
        ))
    }

    /// The proof, when the levels hold `cp_hash` at `cp`.
    fn proof_if_current(
        caches: &crate::edge::caches::Caches,
        index: usize,
        cp: usize,
        cp_hash: TxHash,
    ) -> Option<HeaderProof> {
        let levels = lock(&caches.header_levels);
        if levels.leaf(cp) != Some(cp_hash) {
            return None;
        }
        levels.proof(index, cp + 1)
    }

    /// The raw header at `index`, an error when the index has none.
    async fn db_header(&self, index: usize) -> Result<Vec<u8>> {
        let height = height_of(index);
        let db = self.inner.db();
        self.host_call("header", db.header(height)).await?.ok_or_else(|| {
            Error::host(
                "header",
                format!("the index has no header at height {height}").into(),
            )
        })
    }

    /// Whether the stored leaf at `index` is the hash of the `Db`'s header
    /// there (false when the `Db` has none).
    async fn leaf_matches(&self, index: usize) -> Result<bool> {
        let db = self.inner.db();
        let header = self.host_call("header", db.header(height_of(index))).await?;
        let stored = lock(&self.inner.caches.header_levels).leaf(index);
        Ok(header.is_some_and(|header| Some(header_hash(&header)) == stored))
    }

    /// Cuts the levels back to the first stored leaf that differs from the
    /// `Db`, `top` being known to differ: going down in doubling steps to a
    /// match, then halving. Must run under `header_builder`. Charges
    /// `session` for the headers read and returns how many.
    async fn cut_back_to_fork(&self, top: usize, session: Option<&SessionShared<H>>) -> Result<usize> {
        let (mut bad, mut step, mut read) = (top, 1usize, 0);
        let found = loop {
            if bad == 0 {
                break None;
            }
            let probe = bad.saturating_sub(step);
            read += 1;
            if self.leaf_matches(probe).await? {
                break Some(probe);
            }
            bad = probe;
            step = step.saturating_mul(2);
        };
        if let Some(mut good) = found {
            while bad - good > 1 {
                let mid = good + (bad - good) / 2;
                read += 1;
                if self.leaf_matches(mid).await? {
                    good = mid;
                } else {
                    bad = mid;
                }
            }
        }
        if let Some(session) = session {
            session.add_cost(cost::checkpoint_headers(read));
        }
        lock(&self.inner.caches.header_levels).truncate(bad);
        Ok(read)
    }

    /// Grows the levels to hold the `Db`'s headers up to `cp`, in chunks of
    /// [`LEVELS_CHUNK`] with a yield between two. Each chunk starts at the
    /// last stored header; when that one changed, the levels are first cut
    /// back to the fork. Must run under `header_builder`. Charges `session`
    /// for the headers read and returns how many.
    async fn grow_header_levels(&self, cp: usize, session: Option<&SessionShared<H>>) -> Result<usize> {
        let caches = &self.inner.caches;
        let mut read = 0;
        let mut repairs = 0;
        loop {
            let (len, last) = {
                let levels = lock(&caches.header_levels);
                let len = levels.len();
                (len, len.checked_sub(1).and_then(|i| levels.leaf(i)))
            };
            if len > cp {
                return Ok(read);
            }
            let skip = usize::from(len > 0);
            let from = len - skip;
            let want = (cp + 1 - from).min(LEVELS_CHUNK as usize + skip);
            let db = self.inner.db();
            let headers = self
                .host_call("headers", db.headers(height_of(from), want as u32))
                .await?;
            let headers = &headers[..headers.len().min(want)];
            if let Some(session) = session {
                session.add_cost(cost::checkpoint_headers(headers.len()));
            }
            read += headers.len();
            if skip == 1 && headers.first().map(|h| header_hash(h)) != last {
                repairs += 1;
                if repairs > PROOF_ATTEMPTS {
                    return Err(Error::host(
                        "headers",
                        "the headers changed while a checkpoint proof was built".into(),
                    ));
                }
                if headers.is_empty() {
                    return Err(Error::host(
                        "headers",
                        format!("the index has no header at height {}", height_of(from)).into(),
                    ));
                }
                read += self.cut_back_to_fork(from, session).await?;
                continue;
            }
            let leaves: Vec<TxHash> = headers[skip..].iter().map(|h| header_hash(h)).collect();
            if leaves.is_empty() {
                return Err(Error::host(
                    "headers",
                    format!("the index has no header at height {}", height_of(len)).into(),
                ));
            }
            let grown = len + leaves.len();
            // Hash the nodes without holding the levels: only the holder of
            // `header_builder` changes them.
            let frontier = lock(&caches.header_levels).frontier();
            let growth = HeaderLevels::growth(len, &frontier, leaves);
            lock(&caches.header_levels).commit(growth);
            if grown <= cp {
                crate::edge::chain::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::merkle::{merkle_branch, merkle_root, root_from_branch};
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<TxHash> {
        (0..n)
            .map(|i| TxHash(double_sha256(&(i as u64).to_le_bytes())))
            .collect()
    }

    fn built(all: &[TxHash]) -> HeaderLevels {
        let mut levels = HeaderLevels::default();
        levels.extend(all);
        levels
    }

    fn check(levels: &HeaderLevels, all: &[TxHash], index: usize, count: usize) {
        let proof = levels.proof(index, count).expect("in range");
        let prefix = &all[..count];
        assert_eq!(
            Some(proof.root),
            merkle_root(prefix),
            "count {count} index {index}"
        );
        assert_eq!(
            Some(proof.branch.clone()),
            merkle_branch(prefix, index),
            "count {count} index {index}"
        );
        assert_eq!(root_from_branch(all[index], index, &proof.branch), proof.root);
    }

    #[test]
    fn every_prefix_and_index_equals_the_naive_tree() {
        let all = leaves(70);
        let levels = built(&all);
        for count in 1..=70 {
            for index in 0..count {
                check(&levels, &all, index, count);
            }
        }
        assert_eq!(levels.proof(0, 71), None);
        assert_eq!(levels.proof(5, 5), None);
        assert_eq!(levels.proof(0, 0), None);
    }

    #[test]
    fn levels_hold_complete_pairs_only() {
        let levels = built(&leaves(11));
        let lens: Vec<usize> = levels.levels.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![11, 5, 2, 1]);
        assert!(levels.approx_bytes() >= 19 * 32);
        assert_eq!(HeaderLevels::default().proof(0, 1), None);
    }

    #[test]
    fn growing_in_pieces_equals_growing_at_once() {
        let all = leaves(1000);
        let whole = built(&all);
        let mut pieces = HeaderLevels::default();
        let mut at = 0;
        for size in [1, 1, 3, 2, 7, 64, 1, 100, 821] {
            pieces.extend(&all[at..at + size]);
            at += size;
        }
        assert_eq!(at, 1000);
        assert_eq!(pieces, whole);
        let stale = HeaderLevels::growth(3, &pieces.frontier(), vec![all[0]]);
        assert!(!pieces.commit(stale));
        assert_eq!(pieces, whole);
    }

    #[test]
    fn truncating_equals_building_the_prefix() {
        let all = leaves(300);
        for keep in [0, 1, 2, 3, 128, 255, 256, 257, 299, 300] {
            let mut levels = built(&all);
            levels.truncate(keep);
            assert_eq!(levels, built(&all[..keep]), "keep {keep}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random chains grown in random pieces, cut back by random reorgs
        /// and regrown with other headers: every proof equals the
        /// from-scratch tree over the prefix.
        #[test]
        fn proofs_equal_the_reference_after_growth_and_reorgs(
            steps in proptest::collection::vec((1usize..600, 0usize..300, 0u64..1000), 1..6),
            picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..8),
        ) {
            let mut chain: Vec<TxHash> = Vec::new();
            let mut levels = HeaderLevels::default();
            for (grow, cut, salt) in steps {
                let keep = chain.len().saturating_sub(cut);
                chain.truncate(keep);
                levels.truncate(keep);
                let new: Vec<TxHash> = (0..grow)
                    .map(|i| TxHash(double_sha256(&[(keep + i) as u64, salt].map(u64::to_le_bytes).concat())))
                    .collect();
                levels.extend(&new);
                chain.extend(new);
                prop_assert_eq!(&levels, &built(&chain));
                for (count, index) in &picks {
                    let count = count.index(chain.len()) + 1;
                    let index = index.index(count);
                    check(&levels, &chain, index, count);
                }
            }
        }
    }
}
