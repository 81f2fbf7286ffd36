//! Bitcoin merkle trees over transaction ids, and a middle-row cache that
//! makes repeated branch requests on a big block cheap.
//!
//! All hashes are in internal byte order. A row with an odd number of hashes
//! is paired by hashing its last hash with itself, as Bitcoin does; the root of
//! a single transaction is its txid and its branch is empty.
//!
//! [`merkle_branch`] hashes the whole block, O(n) per request. A
//! [`MerkleLevels`] built once per block keeps one middle row of the tree, so
//! each later branch hashes only the O(√n) leaves of one segment and walks the
//! O(√n) cached row.
//!
//! ```
//! use indexer_sessions::TxHash;
//! use indexer_sessions::merkle::{MerkleLevels, merkle_branch, merkle_root, root_from_branch};
//!
//! let txids: Vec<TxHash> = (0..5u8).map(|i| TxHash([i; 32])).collect();
//! let root = merkle_root(&txids).unwrap();
//! let branch = merkle_branch(&txids, 4).unwrap();
//! assert_eq!(root_from_branch(txids[4], 4, &branch), root);
//! assert_eq!(MerkleLevels::new(&txids).branch(&txids, 4), Some(branch));
//! ```

use crate::TxHash;
use sha2::{Digest, Sha256};

/// Block size (in transactions) from which building a [`MerkleLevels`] pays:
/// below it a naive [`merkle_branch`] costs about as much as one branch from
/// the cache, and the cache's memory is not worth keeping.
pub const MIN_TXS_FOR_LEVELS: usize = 200;

/// SHA-256 applied twice, as Bitcoin hashes transactions, headers and merkle nodes.
///
/// ```
/// use indexer_sessions::merkle::double_sha256;
/// assert_eq!(double_sha256(b"")[..4], [0x5d, 0xf6, 0xe0, 0xe2]);
/// ```
pub fn double_sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// The parent of two merkle nodes: double SHA-256 of `left || right`.
pub(crate) fn hash_pair(left: &TxHash, right: &TxHash) -> TxHash {
    let first = Sha256::new()
        .chain_update(left.0)
        .chain_update(right.0)
        .finalize();
    TxHash(Sha256::digest(first).into())
}

/// The row above `row`, pairing its last hash with itself when the row is odd.
/// A row of one hash yields its hash paired with itself.
fn parent_row(row: &[TxHash]) -> Vec<TxHash> {
    let mut parents = Vec::with_capacity(row.len().div_ceil(2));
    let mut pairs = row.chunks_exact(2);
    for pair in &mut pairs {
        parents.push(hash_pair(&pair[0], &pair[1]));
    }
    if let [last] = pairs.remainder() {
        parents.push(hash_pair(last, last));
    }
    parents
}

/// The sibling of position `pos` in `row`: the node it is paired with, which
/// is itself when it is the last of an odd row.
fn sibling(row: &[TxHash], pos: usize) -> TxHash {
    row.get(pos ^ 1).copied().unwrap_or(row[pos])
}

/// Number of times a row of `len` hashes is halved to reach the root:
/// ⌈log₂ len⌉, 0 for one hash.
fn tree_height(len: usize) -> u32 {
    if len <= 1 {
        0
    } else {
        usize::BITS - (len - 1).leading_zeros()
    }
}

/// The merkle root of a block's txids (in block order); `None` when empty.
pub fn merkle_root(txids: &[TxHash]) -> Option<TxHash> {
    let mut row: Vec<TxHash> = match txids {
        [] => return None,
        [only] => return Some(*only),
        _ => parent_row(txids),
    };
    while row.len() > 1 {
        row = parent_row(&row);
    }
    row.first().copied()
}

/// The merkle branch of the transaction at `index`: its sibling at each level,
/// from the leaves up (empty for a single transaction). `None` when `index` is
/// out of range. Hashes the whole tree: O(n).
pub fn merkle_branch(txids: &[TxHash], index: usize) -> Option<Vec<TxHash>> {
    if index >= txids.len() {
        return None;
    }
    Some(branch_in_row(txids, index))
}

/// The branch of `pos` in `row` up to the root of the tree over `row`.
/// `pos` must be in range.
fn branch_in_row(row: &[TxHash], mut pos: usize) -> Vec<TxHash> {
    let mut branch = Vec::with_capacity(tree_height(row.len()) as usize);
    if row.len() <= 1 {
        return branch;
    }
    branch.push(sibling(row, pos));
    let mut current = parent_row(row);
    pos >>= 1;
    while current.len() > 1 {
        branch.push(sibling(&current, pos));
        current = parent_row(&current);
        pos >>= 1;
    }
    branch
}

/// Hashes `leaf` up through `branch` (siblings from the leaves up): at level
/// `i`, bit `i` of `index` set means the running hash is the right child.
/// Returns the merkle root the branch proves; bits of `index` beyond the
/// branch length are ignored.
pub fn root_from_branch(leaf: TxHash, index: usize, branch: &[TxHash]) -> TxHash {
    let mut hash = leaf;
    for (level, sib) in branch.iter().enumerate() {
        let is_right = u32::try_from(level)
            .ok()
            .and_then(|shift| index.checked_shr(shift))
            .is_some_and(|bits| bits & 1 == 1);
        hash = if is_right {
            hash_pair(sib, &hash)
        } else {
            hash_pair(&hash, sib)
        };
    }
    hash
}

/// A middle row of a block's merkle tree, built once so that each branch
/// afterwards costs O(√n) hashes instead of O(n).
///
/// The row sits `depth` levels above the leaves, `depth` being half the tree
/// height: each of its hashes covers a segment of 2^`depth` ≈ √n leaves, and
/// the row has about √n hashes. A branch hashes the one segment holding the
/// leaf (the lower `depth` siblings) and walks the cached row for the rest.
/// Results equal [`merkle_branch`] exactly, odd rows and the last, partial
/// segment included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleLevels {
    /// Number of transactions the row was built from.
    tx_count: usize,
    /// Levels between the leaves and `row`.
    depth: u32,
    /// The tree's row at `depth` (level 0 being the txids).
    row: Vec<TxHash>,
}

impl MerkleLevels {
    /// Builds the cache from all txids of a block, in block order (O(n) hashes).
    pub fn new(txids: &[TxHash]) -> Self {
        Self::with_depth(txids, tree_height(txids.len()) / 2)
    }

    /// Builds the row `depth` levels above the leaves (at most the tree height).
    fn with_depth(txids: &[TxHash], depth: u32) -> Self {
        let depth = depth.min(tree_height(txids.len()));
        let mut row = txids.to_vec();
        for _ in 0..depth {
            row = parent_row(&row);
        }
        row.shrink_to_fit();
        MerkleLevels {
            tx_count: txids.len(),
            depth,
            row,
        }
    }

    /// Starts building the cache of `txids` a bounded step at a time (see
    /// [`LevelsBuilder`]); the result equals [`MerkleLevels::new`].
    pub(crate) fn builder(txids: &[TxHash]) -> LevelsBuilder<'_> {
        let depth = tree_height(txids.len()) / 2;
        LevelsBuilder {
            txids,
            depth,
            row: Vec::with_capacity(txids.len().div_ceil(1 << depth)),
            next: 0,
        }
    }

    /// Number of transactions the cache was built from.
    pub fn tx_count(&self) -> usize {
        self.tx_count
    }

    /// Levels between the leaves and the cached row; a branch hashes
    /// 2^depth leaves.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The branch of the transaction at `index`, equal to
    /// [`merkle_branch`]`(txids, index)`.
    ///
    /// `txids` must be the block's txids the cache was built from. `None` when
    /// `index` is out of range, when `txids` has another length, or when the
    /// segment holding `index` does not hash to the cached row (other txids).
    pub fn branch(&self, txids: &[TxHash], index: usize) -> Option<Vec<TxHash>> {
        if txids.len() != self.tx_count || index >= txids.len() {
            return None;
        }
        let seg_len = 1usize << self.depth;
        let seg_index = index >> self.depth;
        let start = seg_index * seg_len;
        let end = start.saturating_add(seg_len).min(txids.len());
        let mut current = txids.get(start..end)?.to_vec();
        let mut pos = index - start;
        let mut branch = Vec::with_capacity(tree_height(txids.len()) as usize);
        // The segment starts at an even position of every row below the cached
        // one, so its part of a row is odd exactly when the row is odd and the
        // segment is the last: pairing its last hash with itself (even a lone
        // one) is the naive tree's rule.
        for _ in 0..self.depth {
            branch.push(sibling(&current, pos));
            current = parent_row(&current);
            pos >>= 1;
        }
        if current.first() != self.row.get(seg_index) {
            return None;
        }
        branch.extend(branch_in_row(&self.row, seg_index));
        Some(branch)
    }

    /// Approximate heap and inline size in bytes, for a byte-weighted cache.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.row.capacity() * std::mem::size_of::<TxHash>()
    }
}

/// Builds a [`MerkleLevels`] one segment of 2^depth leaves at a time, so
/// an async caller can yield between steps on a big block.
pub(crate) struct LevelsBuilder<'a> {
    txids: &'a [TxHash],
    depth: u32,
    row: Vec<TxHash>,
    /// The first leaf not yet hashed.
    next: usize,
}

impl LevelsBuilder<'_> {
    /// Hashes whole segments until at least `leaves` leaves (or all) are
    /// done: about `2 × leaves` hashes. Returns whether the row is complete.
    pub(crate) fn step(&mut self, leaves: usize) -> bool {
        let seg_len = 1usize << self.depth;
        let stop = self.next.saturating_add(leaves.max(1)).min(self.txids.len());
        while self.next < stop {
            let end = (self.next + seg_len).min(self.txids.len());
            let mut node = self.txids[self.next..end].to_vec();
            // A short (last) segment's node is the last of an odd row at each
            // level it lacks: paired with itself, as the naive tree does.
            for _ in 0..self.depth {
                node = parent_row(&node);
            }
            self.row.extend(node.first());
            self.next = end;
        }
        self.next >= self.txids.len()
    }

    /// The cache, once [`LevelsBuilder::step`] returned true.
    pub(crate) fn finish(self) -> MerkleLevels {
        debug_assert!(self.next >= self.txids.len());
        MerkleLevels {
            tx_count: self.txids.len(),
            depth: self.depth,
            row: self.row,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn txids(n: usize) -> Vec<TxHash> {
        (0..n)
            .map(|i| {
                let mut h = [0u8; 32];
                h[..8].copy_from_slice(&(i as u64).to_le_bytes());
                h[31] = 0x5a;
                TxHash(h)
            })
            .collect()
    }

    #[test]
    fn double_sha256_of_empty_input() {
        let expect = "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456";
        assert_eq!(crate::encode_hex(&double_sha256(b"")), expect);
    }

    #[test]
    fn tree_height_is_ceil_log2() {
        let cases = [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (2500, 12),
        ];
        for (n, h) in cases {
            assert_eq!(tree_height(n), h, "n = {n}");
        }
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(merkle_root(&[]), None);
        assert_eq!(merkle_branch(&[], 0), None);
        let one = txids(1);
        assert_eq!(merkle_root(&one), Some(one[0]));
        assert_eq!(merkle_branch(&one, 0), Some(vec![]));
        assert_eq!(merkle_branch(&one, 1), None);
        assert_eq!(root_from_branch(one[0], 0, &[]), one[0]);
        let levels = MerkleLevels::new(&one);
        assert_eq!(levels.branch(&one, 0), Some(vec![]));
        assert_eq!(levels.branch(&one, 1), None);
        assert_eq!(MerkleLevels::new(&[]).branch(&[], 0), None);
    }

    #[test]
    fn three_leaves_duplicate_the_last() {
        let t = txids(3);
        let left = hash_pair(&t[0], &t[1]);
        let right = hash_pair(&t[2], &t[2]);
        assert_eq!(merkle_root(&t), Some(hash_pair(&left, &right)));
        assert_eq!(merkle_branch(&t, 2), Some(vec![t[2], left]));
        assert_eq!(merkle_branch(&t, 1), Some(vec![t[0], right]));
    }

    #[test]
    fn levels_match_naive_at_every_depth_and_position() {
        for n in (1..=40).chain([64, 65]) {
            let t = txids(n);
            let root = merkle_root(&t).unwrap();
            let naive: Vec<Vec<TxHash>> = (0..n).map(|i| merkle_branch(&t, i).unwrap()).collect();
            for (i, branch) in naive.iter().enumerate() {
                assert_eq!(branch.len(), tree_height(n) as usize);
                assert_eq!(root_from_branch(t[i], i, branch), root, "n {n} i {i}");
            }
            for depth in 0..=tree_height(n) {
                let levels = MerkleLevels::with_depth(&t, depth);
                for (i, branch) in naive.iter().enumerate() {
                    assert_eq!(
                        levels.branch(&t, i).as_ref(),
                        Some(branch),
                        "n {n} depth {depth} i {i}"
                    );
                }
                assert_eq!(levels.branch(&t, n), None);
            }
        }
    }

    #[test]
    fn built_in_steps_equals_built_at_once() {
        for n in (0..=70).chain([199, 200, 255, 256, 257, 1000, 2500, 4097]) {
            let t = txids(n);
            for step in [1, 7, 64, 1000, usize::MAX] {
                let mut builder = MerkleLevels::builder(&t);
                let mut steps = 1;
                while !builder.step(step) {
                    steps += 1;
                }
                assert!(
                    steps <= n.div_ceil(step.min(n.max(1))).max(1),
                    "n {n} step {step}"
                );
                assert_eq!(builder.finish(), MerkleLevels::new(&t), "n {n} step {step}");
            }
        }
    }

    #[test]
    fn levels_refuse_other_txids() {
        let t = txids(300);
        let levels = MerkleLevels::new(&t);
        assert_eq!(levels.tx_count(), 300);
        assert_eq!(levels.depth(), 4);
        assert!(levels.approx_bytes() >= 19 * 32);
        assert_eq!(levels.branch(&t[..299], 0), None);
        let mut other = t.clone();
        other[17].0[0] ^= 1;
        assert_eq!(levels.branch(&other, 16), None);
        assert!(levels.branch(&other, 200).is_some());
    }

    #[test]
    fn root_from_branch_ignores_high_index_bits() {
        let t = txids(4);
        let branch = merkle_branch(&t, 3).unwrap();
        let root = merkle_root(&t).unwrap();
        assert_eq!(root_from_branch(t[3], 3 | (1 << 40), &branch), root);
        assert_eq!(root_from_branch(t[3], usize::MAX, &branch), root);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn levels_branch_equals_naive(
            n in 1usize..3000,
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..4),
        ) {
            let t = txids(n);
            let root = merkle_root(&t).unwrap();
            let levels = MerkleLevels::new(&t);
            let mut positions: Vec<usize> = picks.iter().map(|p| p.index(n)).collect();
            positions.push(n - 1);
            for i in positions {
                let naive = merkle_branch(&t, i).unwrap();
                prop_assert_eq!(levels.branch(&t, i), Some(naive.clone()));
                prop_assert_eq!(root_from_branch(t[i], i, &naive), root);
            }
        }
    }
}
