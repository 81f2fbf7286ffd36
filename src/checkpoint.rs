//! Checkpoint proofs of headers (`cp_height` in `blockchain.block.header`
//! and `blockchain.block.headers`), as ElectrumX computes them: the merkle
//! branch of a block hash in the tree over the hashes of headers
//! `0..=cp_height` (Bitcoin's rule: an odd row pairs its last hash with
//! itself), and that tree's root.
//!
//! Reading every header up to the checkpoint for each request would cost
//! O(chain length) host reads. Instead the first request for a checkpoint
//! builds a [`HeaderLevels`] (one middle row of the tree, about √n hashes),
//! kept in the checkpoint cache until a reorg; each proof afterwards reads
//! only the ≈ √n headers of one segment.

use crate::caches::BlockKey;
use crate::chain::{HeaderProof, MAX_HEADERS_PER_CALL};
use crate::error::{Error, Result};
use crate::manager::SessionManager;
use crate::merkle::{double_sha256, merkle_branch, merkle_root, root_from_branch};
use crate::types::{Height, TxHash};
use std::sync::Arc;

/// ⌈log₂ len⌉, 0 for one hash: the levels of a tree over `len` leaves.
fn tree_height(len: usize) -> u32 {
    if len <= 1 {
        0
    } else {
        usize::BITS - (len - 1).leading_zeros()
    }
}

/// A node paired with itself (the last node of an odd row).
fn pair_with_itself(node: TxHash) -> TxHash {
    root_from_branch(node, 0, &[node])
}

/// The node `depth` levels above a segment of leaves that starts at an even
/// position: the segment's root, paired with itself up to `depth` when the
/// segment is short (only the last one can be, and it is the odd tail of
/// every row it reaches).
fn segment_node(leaves: &[TxHash], depth: u32) -> Option<TxHash> {
    let mut node = merkle_root(leaves)?;
    for _ in tree_height(leaves.len())..depth {
        node = pair_with_itself(node);
    }
    Some(node)
}

/// The middle row of the merkle tree over the first `count` header hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeaderLevels {
    count: usize,
    depth: u32,
    row: Vec<TxHash>,
}

impl HeaderLevels {
    /// The depth of the cached row for a tree of `count` leaves (half the
    /// tree height), and so the segment length 2^depth.
    fn segment_len(count: usize) -> (u32, usize) {
        let depth = tree_height(count) / 2;
        (depth, 1usize << depth)
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.row.capacity() * std::mem::size_of::<TxHash>()
    }

    /// The proof of the leaf at `index` given the leaves of its segment
    /// (starting at `index >> depth << depth`); `None` when they do not hash
    /// to the cached row.
    fn proof(&self, index: usize, segment: &[TxHash]) -> Option<HeaderProof> {
        let seg = index >> self.depth;
        let pos = index - (seg << self.depth);
        let mut branch = merkle_branch(segment, pos)?;
        let mut node = root_from_branch(segment[pos], pos, &branch);
        for _ in tree_height(segment.len())..self.depth {
            branch.push(node);
            node = pair_with_itself(node);
        }
        if self.row.get(seg) != Some(&node) {
            return None;
        }
        branch.extend(merkle_branch(&self.row, seg)?);
        Some(HeaderProof {
            branch,
            root: merkle_root(&self.row)?,
        })
    }
}

impl SessionManager {
    /// Hashes of the `len` headers from `start`, read in chunks.
    async fn header_hashes(&self, start: usize, len: usize) -> Result<Vec<TxHash>> {
        let mut hashes = Vec::with_capacity(len);
        while hashes.len() < len {
            let from = start + hashes.len();
            let want = (len - hashes.len()).min(MAX_HEADERS_PER_CALL as usize);
            let from_height = Height(u32::try_from(from).unwrap_or(u32::MAX));
            let db = self.inner.db.clone();
            let headers = self
                .host_call("headers", db.headers(from_height, want as u32))
                .await?;
            if headers.is_empty() {
                return Err(Error::host(
                    "headers",
                    format!("the index has no header at height {from_height}").into(),
                ));
            }
            hashes.extend(headers.iter().take(want).map(|h| TxHash(double_sha256(h))));
        }
        Ok(hashes)
    }

    async fn build_header_levels(&self, count: usize) -> Result<HeaderLevels> {
        let (depth, seg_len) = HeaderLevels::segment_len(count);
        let mut row = Vec::with_capacity(count.div_ceil(seg_len));
        for start in (0..count).step_by(seg_len) {
            let leaves = self.header_hashes(start, seg_len.min(count - start)).await?;
            row.extend(segment_node(&leaves, depth));
        }
        Ok(HeaderLevels { count, depth, row })
    }

    /// The checkpoint proof of the header at `height` against the tree of
    /// headers `0..=cp_height` (`height ≤ cp_height`, both checked by the
    /// caller against the tip).
    pub(crate) async fn header_proof(&self, height: Height, cp_height: Height) -> Result<HeaderProof> {
        let caches = &self.inner.caches;
        let count = cp_height.0 as usize + 1;
        let index = height.0 as usize;
        for _attempt in 0..2 {
            let epoch = caches.block_epoch();
            let key = BlockKey {
                height: cp_height.0,
                epoch,
            };
            let (levels, _) = crate::caches::block_cached(
                caches,
                &caches.checkpoints,
                &caches.checkpoints_counter,
                key,
                async { self.build_header_levels(count).await.map(Arc::new) },
            )
            .await?;
            debug_assert_eq!(levels.count, count);
            let seg_len = 1usize << levels.depth;
            let start = index / seg_len * seg_len;
            let segment = self.header_hashes(start, seg_len.min(count - start)).await?;
            if let Some(proof) = levels.proof(index, &segment) {
                return Ok(proof);
            }
            // The headers changed under the cached row (the index moved on
            // without `notify`): rebuild once.
            caches.checkpoints.invalidate(&key).await;
        }
        Err(Error::host(
            "headers",
            "the headers changed while a checkpoint proof was built".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<TxHash> {
        (0..n)
            .map(|i| TxHash(double_sha256(&(i as u64).to_le_bytes())))
            .collect()
    }

    fn levels(all: &[TxHash]) -> HeaderLevels {
        let (depth, seg_len) = HeaderLevels::segment_len(all.len());
        HeaderLevels {
            count: all.len(),
            depth,
            row: all
                .chunks(seg_len)
                .map(|s| segment_node(s, depth).unwrap())
                .collect(),
        }
    }

    #[test]
    fn proofs_equal_the_naive_branch_and_root() {
        for n in (1..=70).chain([255, 256, 257, 1000, 2017]) {
            let all = leaves(n);
            let root = merkle_root(&all).unwrap();
            let levels = levels(&all);
            let seg_len = 1usize << levels.depth;
            let indices: Vec<usize> = if n <= 70 {
                (0..n).collect()
            } else {
                (0..n)
                    .step_by(37)
                    .chain([1, seg_len - 1, seg_len, n - 2, n - 1])
                    .collect()
            };
            for index in indices {
                let start = index / seg_len * seg_len;
                let segment = &all[start..(start + seg_len).min(n)];
                let proof = levels.proof(index, segment).unwrap();
                assert_eq!(proof.root, root, "n {n} index {index}");
                assert_eq!(
                    Some(proof.branch.clone()),
                    merkle_branch(&all, index),
                    "n {n} index {index}"
                );
                assert_eq!(root_from_branch(all[index], index, &proof.branch), root);
            }
        }
    }

    #[test]
    fn other_leaves_are_refused() {
        let mut all = leaves(100);
        let levels = levels(&all);
        all[3].0[0] ^= 1;
        let seg_len = 1usize << levels.depth;
        assert_eq!(levels.proof(3, &all[..seg_len]), None);
        assert!(levels.approx_bytes() >= levels.row.len() * 32);
    }
}
