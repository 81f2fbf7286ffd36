//! What each Electrum request costs, as ElectrumX charges it, so a host that
//! charges through [`crate::SessionHandle::charge`] or [`crate::Permit::charge`]
//! throttles clients exactly as ElectrumX would. Lookups the manager performs
//! itself (history, block txids, merkle branches, fee estimates) are charged
//! by the manager and need no constant here.
//!
//! # Checkpoint proofs
//!
//! A header request with `cp_height > 0` costs, besides ElectrumX's flat
//! charge ([`block_header`], [`block_headers`]), what its proof made the
//! manager read and hash:
//!
//! `proof cost = checkpoint_headers(r)` with `r` = headers read into the
//! header merkle levels (`r / 1000`).
//!
//! `r` is 0 whenever the levels already reach `cp_height` and agree with the
//! index there (one header read and ⌈log₂(cp_height + 1)⌉ hashes, covered by
//! the flat charge). Otherwise `r` counts the headers between the levels' end
//! and `cp_height` (read once, for every later request to share: the request
//! that grows the levels pays for them, requests waiting for it pay nothing)
//! plus, after a reorg, the O(log depth) headers read to find the fork. The
//! levels are only ever grown up to the tip, so all sessions together can
//! make the manager hash each header once per chain (again after a reorg
//! from the fork).

use crate::types::Cost;

/// `server.ping`.
pub const PING: Cost = Cost::constant(0.1);
/// `server.version`.
pub const SERVER_VERSION: Cost = Cost::constant(0.5);
/// `server.banner`.
pub const BANNER: Cost = Cost::constant(0.5);
/// `server.donation_address`.
pub const DONATION_ADDRESS: Cost = Cost::constant(0.1);
/// `server.features`.
pub const FEATURES: Cost = Cost::constant(1.0);
/// `server.peers.subscribe`.
pub const PEERS_SUBSCRIBE: Cost = Cost::constant(1.0);
/// `blockchain.headers.subscribe`.
pub const HEADERS_SUBSCRIBE: Cost = Cost::constant(0.25);
/// `blockchain.relayfee`.
pub const RELAY_FEE: Cost = Cost::constant(1.0);
/// `blockchain.estimatefee`, always (a daemon call adds [`ESTIMATE_FEE_MISS`]).
pub const ESTIMATE_FEE: Cost = Cost::constant(0.1);
/// `blockchain.estimatefee` when the estimate was not cached.
pub const ESTIMATE_FEE_MISS: Cost = Cost::constant(2.0);
/// `blockchain.scripthash.unsubscribe`.
pub const UNSUBSCRIBE: Cost = Cost::constant(0.1);
/// `blockchain.transaction.get`.
pub const TRANSACTION_GET: Cost = Cost::constant(1.0);
/// `mempool.get_fee_histogram`.
pub const FEE_HISTOGRAM: Cost = Cost::constant(1.0);
/// `blockchain.outpoint.subscribe` and `get_status`, always: 0.1 per status
/// (a cache miss adds [`outpoint_lookup`], a mempool read
/// [`OUTPOINT_MEMPOOL`]).
pub const OUTPOINT_STATUS: Cost = Cost::constant(0.1);
/// An outpoint status that had to consult the mempool (the output has no
/// confirmed spender).
pub const OUTPOINT_MEMPOOL: Cost = Cost::constant(0.1);
/// `blockchain.outpoint.unsubscribe`.
pub const OUTPOINT_UNSUBSCRIBE: Cost = Cost::constant(0.1);

/// The confirmed part of an outpoint status read from the index (a cache
/// miss): 1 for the existence lookup, plus 1 for the spender lookup when
/// the output exists (ElectrumX asks its node twice).
pub fn outpoint_lookup(exists: bool) -> Cost {
    Cost::saturating(if exists { 2.0 } else { 1.0 })
}

/// `blockchain.block.header`: 0.25, or 1.25 with a checkpoint proof (`cp_height > 0`).
pub fn block_header(cp_height: u32) -> Cost {
    if cp_height == 0 {
        Cost::constant(0.25)
    } else {
        Cost::constant(1.25)
    }
}

/// `blockchain.block.headers`: `count / 50`, plus 1.0 with a checkpoint proof.
pub fn block_headers(count: u32, cp_height: u32) -> Cost {
    Cost::saturating(f64::from(count) / 50.0 + if cp_height == 0 { 0.0 } else { 1.0 })
}

/// Headers read and hashed into the header merkle levels for a checkpoint
/// proof: `headers / 1000` (see [the module docs](self#checkpoint-proofs)).
/// About twice a merkle branch's rate per leaf ([`merkle`]): each header is
/// hashed, then paired.
pub fn checkpoint_headers(headers: usize) -> Cost {
    Cost::saturating(headers as f64 / 1000.0)
}

/// `blockchain.scripthash.get_balance` and `listunspent`: `1 + utxos / 50`.
pub fn utxo_lookup(utxos: usize) -> Cost {
    Cost::saturating(1.0 + utxos as f64 / 50.0)
}

/// The unconfirmed part of `get_history` and `get_mempool`: `0.25 + entries / 50`.
pub fn mempool_lookup(entries: usize) -> Cost {
    Cost::saturating(0.25 + entries as f64 / 50.0)
}

/// `blockchain.transaction.broadcast`: `0.25 + hex_len / 5000`.
pub fn broadcast(hex_len: usize) -> Cost {
    Cost::saturating(0.25 + hex_len as f64 / 5000.0)
}

/// Status computation of a subscription (on top of the history lookup):
/// `0.1 + preimage_len × 0.00002`.
pub fn status(preimage_len: usize) -> Cost {
    Cost::saturating(0.1 + preimage_len as f64 * 0.00002)
}

/// A confirmed-history lookup: 0.1, plus `0.1 + 0.001 × len` on a cache miss.
pub fn history(cached: bool, len: usize) -> Cost {
    Cost::saturating(if cached { 0.1 } else { 0.2 + len as f64 * 0.001 })
}

/// A block-txids lookup: 0.1 on a hit, `0.25 + 0.0001 × n` on a miss.
pub fn block_txids(cached: bool, count: usize) -> Cost {
    Cost::saturating(if cached { 0.1 } else { 0.25 + count as f64 * 0.0001 })
}

/// A merkle branch in a block of `count` transactions: `count / 2500`, or
/// `10·√count / 2500` when the block's middle level was already cached.
pub fn merkle(count: usize, cached_levels: bool) -> Cost {
    Cost::saturating(if cached_levels {
        10.0 * (count as f64).sqrt() / 2500.0
    } else {
        count as f64 / 2500.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_match_the_reference_formulas() {
        assert_eq!(block_header(0).get(), 0.25);
        assert_eq!(block_header(7).get(), 1.25);
        assert_eq!(block_headers(2016, 0).get(), 40.32);
        assert_eq!(checkpoint_headers(0).get(), 0.0);
        assert_eq!(checkpoint_headers(2016).get(), 2.016);
        assert_eq!(utxo_lookup(100).get(), 3.0);
        assert_eq!(mempool_lookup(50).get(), 1.25);
        assert_eq!(broadcast(5000).get(), 1.25);
        assert!((status(50_000).get() - 1.1).abs() < 1e-12);
        assert_eq!(history(true, 1000).get(), 0.1);
        assert!((history(false, 1000).get() - 1.2).abs() < 1e-12);
        assert_eq!(block_txids(true, 2500).get(), 0.1);
        assert!((block_txids(false, 2500).get() - 0.5).abs() < 1e-12);
        assert_eq!(merkle(2500, false).get(), 1.0);
        assert!((merkle(2500, true).get() - 0.2).abs() < 1e-12);
    }
}
