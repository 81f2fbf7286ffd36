//! Merkle roots and branches, and the block parser, on real Bitcoin blocks
//! (see `tests/data/README.md`).

use indexer_sessions::merkle::{
    MIN_TXS_FOR_LEVELS, MerkleLevels, double_sha256, merkle_branch, merkle_root, root_from_branch,
};
use indexer_sessions::tx::parse_block_transactions;
use indexer_sessions::{BlockHash, TxHash, decode_hex};
mod common;

use common::{BLOCK_9, BLOCK_2500, BLOCK_SEGWIT, Vector, load_vector as load};

/// The Bitcoin mainnet genesis block, 285 bytes.
const GENESIS: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c0101000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000";
const GENESIS_HASH: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
const GENESIS_TXID: &str = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b";

/// The merkle root field of an 80-byte header (bytes 36..68, internal order).
fn header_root(header: &[u8]) -> TxHash {
    TxHash(header[36..68].try_into().expect("32 bytes"))
}

fn block_hash(header: &[u8]) -> String {
    BlockHash(double_sha256(header)).to_hex()
}

/// Parses the block and checks its txids, block hash and merkle root against
/// the vector; returns the txids from the parser.
fn check_block(v: &Vector) -> Vec<TxHash> {
    let (header, txs) = parse_block_transactions(&v.raw).expect("block parses");
    assert_eq!(header.len(), 80);
    assert_eq!(block_hash(&header), v.block_hash);
    let txids: Vec<TxHash> = txs.iter().map(|tx| tx.txid).collect();
    assert_eq!(txids, v.txids);
    assert!(txs[0].is_coinbase());
    assert!(txs[1..].iter().all(|tx| !tx.is_coinbase()));
    assert_eq!(
        txs.iter().map(|tx| tx.size).sum::<usize>() + 80 + 1 + usize::from(txs.len() >= 253) * 2,
        v.raw.len()
    );
    assert_eq!(merkle_root(&txids), Some(v.merkle_root));
    assert_eq!(header_root(&header), v.merkle_root);
    txids
}

fn check_branches(txids: &[TxHash], root: TxHash, positions: impl IntoIterator<Item = usize>) {
    let levels = MerkleLevels::new(txids);
    for i in positions {
        let naive = merkle_branch(txids, i).expect("index in range");
        assert_eq!(root_from_branch(txids[i], i, &naive), root, "naive branch {i}");
        assert_eq!(
            levels.branch(txids, i).as_ref(),
            Some(&naive),
            "cached branch {i}"
        );
    }
    assert_eq!(merkle_branch(txids, txids.len()), None);
    assert_eq!(levels.branch(txids, txids.len()), None);
}

#[test]
fn block_with_2500_transactions() {
    let v = load(BLOCK_2500);
    let txids = check_block(&v);
    assert_eq!(txids.len(), 2500);
    assert!(txids.len() >= MIN_TXS_FOR_LEVELS);
    let levels = MerkleLevels::new(&txids);
    // Tree height 12: 64-leaf segments under a cached row of 40 hashes.
    assert_eq!(levels.depth(), 6);
    assert!(levels.approx_bytes() >= 40 * 32);
    let positions = (0..txids.len()).step_by(50).chain([1, txids.len() - 1]);
    check_branches(&txids, v.merkle_root, positions);
}

#[test]
fn block_with_segwit_transactions() {
    let v = load(BLOCK_2500);
    let (_, txs) = parse_block_transactions(&v.raw).expect("block parses");
    // The txid of a segwit transaction excludes its witness.
    let segwit = txs.iter().filter(|tx| tx.has_witness).count();
    assert!(segwit > 1000, "{segwit} segwit transactions");
    let v = load(BLOCK_SEGWIT);
    let txids = check_block(&v);
    assert_eq!(txids.len(), 15);
    check_branches(&txids, v.merkle_root, 0..txids.len());
}

#[test]
fn block_with_odd_count() {
    let v = load(BLOCK_9);
    let txids = check_block(&v);
    assert_eq!(txids.len(), 9);
    check_branches(&txids, v.merkle_root, 0..txids.len());
}

#[test]
fn genesis_block_single_transaction() {
    let raw = decode_hex(GENESIS).expect("hex");
    assert_eq!(raw.len(), 285);
    let (header, txs) = parse_block_transactions(&raw).expect("genesis parses");
    assert_eq!(block_hash(&header), GENESIS_HASH);
    assert_eq!(txs.len(), 1);
    let txid = txs[0].txid;
    assert_eq!(txid.to_hex(), GENESIS_TXID);
    assert!(txs[0].is_coinbase());
    assert_eq!(merkle_root(&[txid]), Some(txid));
    assert_eq!(header_root(&header), txid);
    assert_eq!(merkle_branch(&[txid], 0), Some(vec![]));
    assert_eq!(MerkleLevels::new(&[txid]).branch(&[txid], 0), Some(vec![]));
    assert_eq!(root_from_branch(txid, 0, &[]), txid);
}

#[test]
fn truncated_block_is_refused() {
    let v = load(BLOCK_9);
    for len in [0, 79, 80, 81, v.raw.len() / 2, v.raw.len() - 1] {
        assert!(parse_block_transactions(&v.raw[..len]).is_err(), "prefix {len}");
    }
}
