//! The Electrum status of a script: a hash of its history, sent to clients
//! subscribed with `blockchain.scripthash.subscribe`.
//!
//! The status is the SHA-256 of a text *preimage*, shown as lowercase hex
//! (not reversed). The preimage concatenates `"{txid}:{height}:"`, with the
//! txid in display (reversed) hex:
//!
//! 1. for each confirmed transaction, in history order (height, then position
//!    in the block), with its block height;
//! 2. then for each mempool transaction, with height `-1` when it spends
//!    outputs of other unconfirmed transactions and `0` otherwise; mempool
//!    transactions are ordered by [`sort_mempool`]: height-0 ones first,
//!    then height −1, each group by txid in internal byte order.
//!
//! A script with neither confirmed nor mempool transactions has no status
//! (`null` to the client). `blockchain.scripthash.get_history` lists the
//! mempool in the same order, so a client can recompute the status.
//!
//! ```
//! use indexer_sessions::status::{electrum_status, status_hex};
//! use indexer_sessions::{HistoryEntry, Height, TxHash};
//!
//! assert_eq!(electrum_status(&[], &[]), None);
//! let entry = HistoryEntry { txid: TxHash([0; 32]), height: Height(1) };
//! let status = electrum_status(&[entry], &[]).unwrap();
//! assert_eq!(status_hex(&status).len(), 64);
//! ```

use crate::{HistoryEntry, MempoolEntry, OutpointStatus};
use sha2::{Digest, Sha256};

/// A 64-bit fingerprint of an outpoint status, as the subscription index
/// and outboxes compare statuses: 0 for `{}` (the output never existed),
/// else the first 8 bytes of a SHA-256 of its fields, with the low bit set.
pub(crate) fn outpoint_print(status: &OutpointStatus) -> crate::core::outbox::StatusPrint {
    let Some(funder) = status.funder_height else {
        return 0;
    };
    let mut hasher = Sha256::new();
    hasher.update(funder.to_le_bytes());
    if let Some(spender) = status.spender {
        hasher.update(spender.txid.0);
        hasher.update(spender.height.to_le_bytes());
    }
    let hash = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(bytes) | 1
}

/// The height Electrum reports for a mempool transaction: `-1` when it has
/// unconfirmed inputs, `0` otherwise.
pub fn mempool_height(entry: &MempoolEntry) -> i32 {
    if entry.has_unconfirmed_inputs { -1 } else { 0 }
}

/// Sorts mempool entries into status order: entries without unconfirmed
/// inputs (height 0) first, then those with (height −1), each group by txid
/// in internal byte order. Equal keys keep their relative order.
pub fn sort_mempool(entries: &mut [MempoolEntry]) {
    entries.sort_by_key(status_order);
}

/// The key [`sort_mempool`] sorts by.
fn status_order(entry: &MempoolEntry) -> (bool, [u8; 32]) {
    (entry.has_unconfirmed_inputs, entry.txid.0)
}

/// The status preimage: `"{txid}:{height}:"` for each confirmed entry in the
/// order given, then for each mempool entry in [`sort_mempool`] order with
/// its [`mempool_height`]. The mempool slice need not be sorted.
pub fn status_preimage(confirmed: &[HistoryEntry], mempool: &[MempoolEntry]) -> String {
    let mut out = Vec::with_capacity((confirmed.len() + mempool.len()) * 76);
    write_preimage(&mut out, confirmed, mempool);
    // Only ASCII hex digits, digits, '-' and ':' were written.
    String::from_utf8(out).unwrap_or_default()
}

/// The longest item: 64 hex digits, ':', an optional '-', up to 20 digits, ':'.
const MAX_ITEM: usize = 87;

/// Writes `"{display hex}:{height}:"` into `item` and returns its length
/// (no formatting machinery: this runs once per history entry of every
/// status computed).
fn write_item(item: &mut [u8; MAX_ITEM], txid: &crate::TxHash, height: i64) -> usize {
    // The txid in display order: its bytes reversed, four at a time.
    for (eight, word) in item[..64].chunks_exact_mut(8).zip(txid.0.rchunks_exact(4)) {
        eight.copy_from_slice(&crate::types::hex_of_word([word[3], word[2], word[1], word[0]]));
    }
    item[64] = b':';
    let mut len = 65;
    if height < 0 {
        item[len] = b'-';
        len += 1;
    }
    let mut digits = [0u8; 20];
    let mut value = height.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    let count = digits.len() - at;
    item[len..len + count].copy_from_slice(&digits[at..]);
    len += count;
    item[len] = b':';
    len + 1
}

/// Writes the preimage, item by item, to `out`: each item is written in
/// place on the stack and handed over whole (the hasher buffers its own
/// blocks). Nothing allocates unless the mempool is out of
/// [`sort_mempool`] order (the manager passes it sorted): it is then
/// copied and sorted.
fn write_items(confirmed: &[HistoryEntry], mempool: &[MempoolEntry], mut out: impl FnMut(&[u8])) {
    let sorted;
    let mempool = if mempool.is_sorted_by_key(status_order) {
        mempool
    } else {
        let mut copy = mempool.to_vec();
        sort_mempool(&mut copy);
        sorted = copy;
        &sorted[..]
    };
    let confirmed = confirmed
        .iter()
        .map(|entry| (&entry.txid, i64::from(entry.height.0)));
    let unconfirmed = mempool
        .iter()
        .map(|entry| (&entry.txid, i64::from(mempool_height(entry))));
    let mut item = [0u8; MAX_ITEM];
    for (txid, height) in confirmed.chain(unconfirmed) {
        let len = write_item(&mut item, txid, height);
        out(&item[..len]);
    }
}

fn write_preimage(out: &mut Vec<u8>, confirmed: &[HistoryEntry], mempool: &[MempoolEntry]) {
    write_items(confirmed, mempool, |item| out.extend_from_slice(item));
}

/// The status: SHA-256 of [`status_preimage`], `None` when both lists are
/// empty. The preimage is hashed as it is written, never held whole.
pub fn electrum_status(confirmed: &[HistoryEntry], mempool: &[MempoolEntry]) -> Option<[u8; 32]> {
    if confirmed.is_empty() && mempool.is_empty() {
        return None;
    }
    let mut hasher = Sha256::new();
    write_items(confirmed, mempool, |item| hasher.update(item));
    Some(hasher.finalize().into())
}

/// A status as clients see it: lowercase hex in hash order (not reversed).
pub fn status_hex(status: &[u8; 32]) -> String {
    crate::encode_hex(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Height, TxHash};

    const A: &str = "71b3dbaca67e9f9189dad3617138c19725ab541ef0b49c05a94913e9f28e3f4e";
    const B: &str = "f7a5b68109e39b62054c0cde9db95066ac9f3e53680435e1d6e7fdc33d01d8e9";

    fn confirmed(hex: &str, height: u32) -> HistoryEntry {
        HistoryEntry {
            txid: TxHash::from_hex(hex).unwrap(),
            height: Height(height),
        }
    }

    /// A txid whose internal bytes are `first`, thirty 0x11 bytes, `last`:
    /// internal order follows `first`, display order follows `last`.
    fn mempool(first: u8, last: u8, has_unconfirmed_inputs: bool) -> MempoolEntry {
        let mut txid = [0x11u8; 32];
        txid[0] = first;
        txid[31] = last;
        MempoolEntry {
            txid: TxHash(txid),
            fee: 1000,
            has_unconfirmed_inputs,
        }
    }

    #[test]
    fn empty_has_no_status() {
        assert_eq!(electrum_status(&[], &[]), None);
        assert_eq!(status_preimage(&[], &[]), "");
    }

    #[test]
    fn one_confirmed() {
        let history = [confirmed(A, 100)];
        assert_eq!(status_preimage(&history, &[]), format!("{A}:100:"));
        let status = electrum_status(&history, &[]).unwrap();
        // python3: hashlib.sha256(b"71b3...3f4e:100:").hexdigest()
        assert_eq!(
            status_hex(&status),
            "a03954713ec65952ff027a1cc31a35eed20f3d4234431b827bfc94f843ebbb51"
        );
    }

    #[test]
    fn mempool_sorted_by_flag_then_internal_txid() {
        let ma = mempool(2, 0x00, false);
        let mb = mempool(1, 0xff, false);
        let mc = mempool(0, 0xee, true);
        let mut entries = [mc, ma, mb];
        sort_mempool(&mut entries);
        assert_eq!(entries, [mb, ma, mc]);
        assert_eq!(mempool_height(&mc), -1);
        assert_eq!(mempool_height(&ma), 0);

        let history = [confirmed(A, 100), confirmed(B, 101)];
        let unsorted = [mc, ma, mb];
        let preimage = status_preimage(&history, &unsorted);
        let expect = format!(
            "{A}:100:{B}:101:\
             ff11111111111111111111111111111111111111111111111111111111111101:0:\
             0011111111111111111111111111111111111111111111111111111111111102:0:\
             ee11111111111111111111111111111111111111111111111111111111111100:-1:"
        );
        assert_eq!(preimage, expect);
        assert_eq!(
            status_hex(&electrum_status(&history, &unsorted).unwrap()),
            "021ebbc802209beaeba9804a57d2aa1b8bf1ee8598adbda7117d864f4c5b4936"
        );
    }

    #[test]
    fn mempool_only() {
        let entries = [mempool(0, 0xee, true), mempool(1, 0xff, false)];
        assert_eq!(
            status_hex(&electrum_status(&[], &entries).unwrap()),
            "b031df98ec3d0ee3efbaaaf04d43d8dc17f7fe2516a823ca09476c1db1e7dda3"
        );
    }

    #[test]
    fn the_status_hashes_its_preimage_text_however_long() {
        for confirmed_len in [1usize, 5, 6, 7, 20, 100] {
            let history: Vec<HistoryEntry> = (0..confirmed_len)
                .map(|i| HistoryEntry {
                    txid: TxHash([i as u8; 32]),
                    height: Height(u32::MAX - i as u32),
                })
                .collect();
            let unsorted = [
                mempool(2, 0x00, true),
                mempool(1, 0xff, false),
                mempool(3, 1, false),
            ];
            let preimage = status_preimage(&history, &unsorted);
            let expect: [u8; 32] = Sha256::digest(preimage.as_bytes()).into();
            assert_eq!(electrum_status(&history, &unsorted), Some(expect));
            let mut sorted = unsorted;
            sort_mempool(&mut sorted);
            assert_eq!(electrum_status(&history, &sorted), Some(expect));
        }
    }

    #[test]
    fn status_hex_is_not_reversed() {
        let mut status = [0u8; 32];
        status[0] = 0xab;
        assert!(status_hex(&status).starts_with("ab00"));
    }
}
