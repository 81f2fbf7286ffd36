//! Bounded fuzzing, on the stable toolchain, of everything a client's bytes
//! or strings reach in the library: the transaction and block parsers, the
//! broadcast validator, hex, txid, block hash and scripthash parsing, fee
//! modes and targets, and admin selectors. Inputs are arbitrary bytes and
//! strings, transactions generated from a model, and structure-aware
//! mutations of the real transactions in `tests/data` (compact sizes
//! rewritten, non-canonical or huge; segwit marker added or stripped;
//! truncation, extension, byte edits). The properties, a differential check
//! against the `bitcoin` crate among them, are in `tests/fuzz_checks`
//! (shared with the `cargo fuzz` targets in `fuzz/`); this file adds exact
//! errors for targeted mutations, a heap bound, the session-level requests,
//! and the saved inputs in `tests/data/fuzz-regressions/`.
//!
//! Long runs: `cargo +nightly fuzz run TARGET` in `fuzz/` (see the README).

mod common;
mod fuzz_checks;

use common::{BLOCK_9, BLOCK_2500, BLOCK_SEGWIT, Fixture, load_vector};
use futures::executor::block_on;
use fuzz_checks::{
    CompactSizeAt, bitcoin_model, check_against_bitcoin, check_block, check_error, check_fee_mode,
    check_fee_target, check_hex, check_hex_bytes, check_selector, check_transaction, check_validator,
    min_item_len, put_compact_size, read_compact_size, serialize, serialize_with_layout,
};
use indexer_sessions::admin::Selector;
use indexer_sessions::fees::bucket_fee_target;
use indexer_sessions::tx::{
    MAX_MONEY, MAX_TX_SIZE, ParsedTransaction, TxField, TxInput, TxOutput, TxParseError,
    parse_block_transactions, parse_transaction,
};
use indexer_sessions::{Config, Error, HashX, Height, HistoryEntry, SessionId, TxHash};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;
use std::sync::OnceLock;

// ---------------------------------------------------------------------------
// Heap accounting: bytes held by the current thread.

/// The system allocator, counting the bytes each thread holds and its peak.
struct CountingAllocator;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only
// observe sizes and never touch the memory.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with this layout.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f`; returns its result and the most heap bytes this thread held at
/// once during the call beyond what it held before (the result included).
fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, (peak - base).max(0) as usize)
}

/// The heap a parse may use: proportional to the bytes given (each byte of
/// input yields at most one 24-byte empty witness item, or less per byte of
/// an input, output or script), never to a count the bytes claim.
fn heap_bound(input_len: usize) -> usize {
    32 * input_len + 1024
}

// ---------------------------------------------------------------------------
// The corpus: real transactions cut out of the blocks in tests/data.

/// Real transactions: all of the 9- and 15-transaction blocks (legacy and
/// segwit, coinbases included) and every 50th of the 2,500-transaction block.
fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut txs = Vec::new();
        for (name, step) in [(BLOCK_9, 1), (BLOCK_SEGWIT, 1), (BLOCK_2500, 50)] {
            let vector = load_vector(name);
            let (_, parsed) = parse_block_transactions(&vector.raw).expect("a real block parses");
            let txids: Vec<TxHash> = parsed.iter().map(|tx| tx.txid).collect();
            assert_eq!(txids, vector.txids, "{name}");
            let (_, width) = read_compact_size(&vector.raw[80..]).expect("transaction count");
            let mut at = 80 + width;
            for (i, tx) in parsed.iter().enumerate() {
                if i % step == 0 {
                    txs.push(vector.raw[at..at + tx.size].to_vec());
                }
                at += tx.size;
            }
        }
        txs
    })
}

fn corpus_tx(index: &Index) -> (&'static [u8], ParsedTransaction) {
    let raw = index.get(corpus()).as_slice();
    (raw, parse_transaction(raw).expect("corpus transactions parse"))
}

// ---------------------------------------------------------------------------
// Strategies.

/// One byte-level edit.
#[derive(Clone, Debug)]
enum Edit {
    Set(Index, u8),
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
    Append(Vec<u8>),
    Repeat(Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<Index>(), 1usize..16).prop_map(|(at, n)| Edit::Remove(at, n)),
        any::<Index>().prop_map(Edit::Truncate),
        prop::collection::vec(any::<u8>(), 1..12).prop_map(Edit::Append),
        (any::<Index>(), 1usize..64).prop_map(|(at, n)| Edit::Repeat(at, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let len = bytes.len();
    let at = |index: &Index| if len == 0 { 0 } else { index.index(len) };
    match edit {
        Edit::Set(i, b) if len > 0 => bytes[at(i)] = *b,
        Edit::Flip(i, bit) if len > 0 => bytes[at(i)] ^= 1 << bit,
        Edit::Insert(i, new) => {
            let i = at(i);
            bytes.splice(i..i, new.iter().copied());
        }
        Edit::Remove(i, n) if len > 0 => {
            let i = at(i);
            bytes.drain(i..(i + n).min(len));
        }
        Edit::Truncate(i) => bytes.truncate(at(i)),
        Edit::Append(new) => bytes.extend_from_slice(new),
        Edit::Repeat(i, n) if len > 0 => {
            let i = at(i);
            let copy = bytes[i..(i + n).min(len)].to_vec();
            bytes.splice(i..i, copy);
        }
        _ => {}
    }
}

/// A new value for a compact-size field: near the old one, or anywhere.
#[derive(Clone, Debug)]
enum NewValue {
    Delta(i8),
    Set(u64),
}

fn new_value() -> impl Strategy<Value = NewValue> {
    prop_oneof![
        any::<i8>().prop_map(NewValue::Delta),
        prop_oneof![
            Just(0u64),
            0u64..0xfd,
            0xfdu64..0x1_0000,
            Just(u64::from(u32::MAX)),
            Just(1u64 << 32),
            Just(u64::MAX),
            any::<u64>(),
        ]
        .prop_map(NewValue::Set),
    ]
}

/// `raw` with the compact size `at` rewritten canonically to `value`.
fn rewrite(raw: &[u8], at: &CompactSizeAt, value: u64) -> Vec<u8> {
    let mut out = raw[..at.offset].to_vec();
    put_compact_size(&mut out, value);
    out.extend_from_slice(&raw[at.offset + at.len..]);
    out
}

/// A model transaction that satisfies every rule.
fn valid_transaction() -> impl Strategy<Value = ParsedTransaction> {
    let script = || {
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..40),
            1 => prop::collection::vec(any::<u8>(), 250..300),
        ]
    };
    let input = (
        any::<[u8; 32]>(),
        any::<u32>(),
        script(),
        any::<u32>(),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..4),
    )
        .prop_map(|(prev, vout, script_sig, sequence, witness)| TxInput {
            prev_txid: TxHash(prev),
            prev_vout: vout,
            script_sig,
            sequence,
            witness,
        });
    let output =
        (0..=MAX_MONEY / 4, script()).prop_map(|(value, script_pubkey)| TxOutput { value, script_pubkey });
    (
        any::<i32>(),
        prop::collection::vec(input, 1..5),
        prop::collection::vec(output, 1..5),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(|(version, mut inputs, outputs, lock_time, segwit)| {
            if segwit {
                if inputs.iter().all(|i| i.witness.is_empty()) {
                    inputs[0].witness.push(Vec::new());
                }
            } else {
                inputs.iter_mut().for_each(|i| i.witness.clear());
            }
            let mut tx = ParsedTransaction {
                txid: TxHash::default(),
                inputs,
                outputs,
                version,
                lock_time,
                has_witness: segwit,
                size: 0,
            };
            tx.size = serialize(&tx, segwit).len();
            tx.txid = fuzz_checks::txid_of(&tx);
            tx
        })
}

/// Text near the shapes the parsers accept, and arbitrary text.
fn hex_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{64}",
        "[0-9a-fA-F]{64}",
        "[0-9a-fA-F]{0,70}",
        "[0-9a-fA-FgGxX +-]{62,66}",
        ("[0-9a-fA-F]{64}", any::<Index>(), any::<char>()).prop_map(|(text, at, c)| {
            let mut chars: Vec<char> = text.chars().collect();
            chars[at.index(64)] = c;
            chars.into_iter().collect()
        }),
        any::<String>(),
        "\\PC{0,80}",
    ]
}

// ---------------------------------------------------------------------------
// Transactions.

#[test]
fn corpus_round_trips_and_agrees_with_bitcoin() {
    let corpus = corpus();
    assert!(corpus.len() > 60, "{} transactions", corpus.len());
    assert!(
        corpus
            .iter()
            .any(|raw| parse_transaction(raw).unwrap().has_witness)
    );
    assert!(
        corpus
            .iter()
            .any(|raw| parse_transaction(raw).unwrap().is_coinbase())
    );
    for raw in corpus {
        check_against_bitcoin(raw).expect("a real transaction parses");
        check_validator(raw);
    }
}

#[test]
fn every_prefix_of_a_real_transaction_is_refused_as_short() {
    for raw in corpus().iter().filter(|raw| raw.len() <= 2000) {
        let segwit = raw[4] == 0;
        for len in 0..raw.len() {
            let prefix = &raw[..len];
            let error = check_transaction(prefix).expect_err("a strict prefix is not a transaction");
            match error {
                TxParseError::Truncated { .. } | TxParseError::CountTooLarge { .. } => {}
                // Version and marker only: the flag is missing, so it reads as no inputs.
                TxParseError::NoInputs { offset: 4 } if segwit && len == 5 => {}
                other => panic!("prefix of {len} bytes: {other}"),
            }
        }
    }
}

#[test]
fn a_huge_claimed_count_fails_fast_without_allocating() {
    let coinbase = &corpus()[0][..];
    let (_, coinbase_layout) = serialize_with_layout(&parse_transaction(coinbase).unwrap(), false);
    let output_count_at = coinbase_layout
        .iter()
        .find(|c| c.field == TxField::OutputCount)
        .expect("an output count")
        .offset;
    let segwit = corpus()
        .iter()
        .find(|raw| raw[4] == 0)
        .expect("a segwit transaction");
    let cases: Vec<(Vec<u8>, TxField)> = vec![
        // Ten bytes: version, then 2^32 - 1 inputs claimed.
        (
            vec![1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0],
            TxField::InputCount,
        ),
        // 2^32 inputs, then 2^64 - 1.
        (
            vec![1, 0, 0, 0, 0xff, 0, 0, 0, 0, 1, 0, 0, 0],
            TxField::InputCount,
        ),
        (
            vec![2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            TxField::InputCount,
        ),
        // Segwit marker, then 2^32 - 1 inputs.
        (
            vec![2, 0, 0, 0, 0, 1, 0xfe, 0xff, 0xff, 0xff, 0xff],
            TxField::InputCount,
        ),
        // One real input, then 2^32 - 1 outputs.
        (
            [&coinbase[..output_count_at], &[0xfe, 0xff, 0xff, 0xff, 0xff]].concat(),
            TxField::OutputCount,
        ),
    ];
    for (bytes, field) in cases {
        let (result, peak) = peak_heap(|| parse_transaction(&bytes));
        match result {
            Err(TxParseError::CountTooLarge { field: f, count, .. }) => {
                assert_eq!(f, field);
                assert!(count >= u64::from(u32::MAX));
            }
            other => panic!("{bytes:02x?}: {other:?}"),
        }
        assert!(
            peak <= 32 * bytes.len(),
            "{peak} heap bytes for {} input bytes",
            bytes.len()
        );
    }
    // A real segwit transaction whose first witness claims 2^32 - 1 items.
    let tx = parse_transaction(segwit).unwrap();
    let (_, layout) = serialize_with_layout(&tx, true);
    let at = layout
        .iter()
        .find(|c| c.field == TxField::WitnessItemCount(0))
        .unwrap();
    let bytes = rewrite(segwit, at, u64::from(u32::MAX));
    let (result, peak) = peak_heap(|| parse_transaction(&bytes));
    assert!(
        matches!(
            result,
            Err(TxParseError::CountTooLarge {
                field: TxField::WitnessItemCount(0),
                ..
            })
        ),
        "{result:?}"
    );
    assert!(peak <= heap_bound(bytes.len()), "{peak}");
    // A block of 2^32 - 1 transactions in 90 bytes.
    let mut block = vec![0u8; 80];
    block.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 1]);
    let (result, peak) = peak_heap(|| parse_block_transactions(&block));
    assert!(
        matches!(
            result,
            Err(TxParseError::CountTooLarge {
                field: TxField::TransactionCount,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(peak <= 80 + 32 * block.len(), "{peak}");
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let mut big = corpus()[1].clone();
    big.resize(MAX_TX_SIZE + 1, 0);
    let (result, peak) = peak_heap(|| parse_transaction(&big));
    assert_eq!(
        result,
        Err(TxParseError::TooLarge {
            size: MAX_TX_SIZE + 1
        })
    );
    assert_eq!(peak, 0);
    check_validator(&big);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes: a checked value or a checked typed error, the same as
    /// `bitcoin` decides, within the heap bound.
    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let (_, peak) = peak_heap(|| parse_transaction(&bytes));
        prop_assert!(peak <= heap_bound(bytes.len()), "{} heap bytes", peak);
        check_against_bitcoin(&bytes).ok();
        check_validator(&bytes);
    }

    /// Arbitrary bytes after a plausible start (version, optional segwit
    /// marker, small counts), so parsing gets past the first fields.
    #[test]
    fn arbitrary_bytes_after_a_plausible_start(
        segwit in any::<bool>(),
        inputs in 1u8..4,
        body in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut bytes = vec![1, 0, 0, 0];
        if segwit {
            bytes.extend_from_slice(&[0, 1]);
        }
        bytes.push(inputs);
        bytes.extend_from_slice(&body);
        let (_, peak) = peak_heap(|| parse_transaction(&bytes));
        prop_assert!(peak <= heap_bound(bytes.len()), "{} heap bytes", peak);
        check_against_bitcoin(&bytes).ok();
    }

    /// Real transactions under byte edits.
    #[test]
    fn edited_real_transactions(index in any::<Index>(), edits in prop::collection::vec(edit(), 1..5)) {
        let (raw, _) = corpus_tx(&index);
        let mut bytes = raw.to_vec();
        for e in &edits {
            apply(&mut bytes, e);
        }
        let (_, peak) = peak_heap(|| parse_transaction(&bytes));
        prop_assert!(peak <= heap_bound(bytes.len()), "{} heap bytes", peak);
        check_against_bitcoin(&bytes).ok();
        check_validator(&bytes);
    }

    /// Real transactions with one compact size (count or length) rewritten,
    /// then possibly edited further.
    #[test]
    fn real_transactions_with_a_compact_size_rewritten(
        index in any::<Index>(),
        which in any::<Index>(),
        value in new_value(),
        edits in prop::collection::vec(edit(), 0..2),
    ) {
        let (raw, tx) = corpus_tx(&index);
        let (_, layout) = serialize_with_layout(&tx, tx.has_witness);
        let at = which.get(&layout);
        let value = match value {
            NewValue::Delta(d) => at.value.saturating_add_signed(i64::from(d)),
            NewValue::Set(v) => v,
        };
        let mut bytes = rewrite(raw, at, value);
        for e in &edits {
            apply(&mut bytes, e);
        }
        let (_, peak) = peak_heap(|| parse_transaction(&bytes));
        prop_assert!(peak <= heap_bound(bytes.len()), "{} heap bytes", peak);
        let result = check_against_bitcoin(&bytes);
        if edits.is_empty() && value == at.value {
            prop_assert_eq!(result, Ok(tx));
        }
    }

    /// A compact size written longer than needed is refused exactly there,
    /// naming its field.
    #[test]
    fn non_canonical_compact_sizes_are_refused_where_they_are(
        index in any::<Index>(),
        which in any::<Index>(),
        width in 0usize..3,
    ) {
        let (raw, tx) = corpus_tx(&index);
        let (_, layout) = serialize_with_layout(&tx, tx.has_witness);
        let at = which.get(&layout);
        // Wider encodings than the canonical one only.
        let widths: Vec<(u8, usize)> = [(0xfd, 2), (0xfe, 4), (0xff, 8)]
            .into_iter()
            .filter(|&(_, digits)| 1 + digits > at.len)
            .collect();
        prop_assume!(!widths.is_empty());
        let (prefix, digits) = widths[width % widths.len()];
        let mut bytes = raw[..at.offset].to_vec();
        bytes.push(prefix);
        bytes.extend_from_slice(&at.value.to_le_bytes()[..digits]);
        bytes.extend_from_slice(&raw[at.offset + at.len..]);
        let result = check_against_bitcoin(&bytes);
        prop_assert_eq!(
            result,
            Err(TxParseError::NonCanonicalCompactSize { offset: at.offset, field: at.field })
        );
    }

    /// A count or length larger than the rest of the bytes can hold is
    /// refused where it is read, before anything is allocated for it.
    #[test]
    fn impossible_counts_and_lengths_are_refused_where_they_are(
        index in any::<Index>(),
        which in any::<Index>(),
        extra in prop_oneof![0u64..1000, any::<u64>()],
    ) {
        let (raw, tx) = corpus_tx(&index);
        let (_, layout) = serialize_with_layout(&tx, tx.has_witness);
        let at = *which.get(&layout);
        let expected_field = |field: TxField| match field {
            TxField::InputScriptLength(i) => TxField::InputScript(i),
            TxField::OutputScriptLength(o) => TxField::OutputScript(o),
            TxField::WitnessItemLength { input, item } => TxField::WitnessItem { input, item },
            other => other,
        };
        // Smallest impossible value: a width's worth of bytes more than fit, then `extra` more.
        let min = min_item_len(at.field);
        let mut value = match min {
            Some(min) => (raw.len() / min) as u64 + 1,
            None => raw.len() as u64 + 1,
        };
        value = value.saturating_add(extra);
        let bytes = rewrite(raw, &at, value);
        let (_, width) = read_compact_size(&bytes[at.offset..]).expect("rewritten");
        let available = bytes.len() - at.offset - width;
        let (result, peak) = peak_heap(|| parse_transaction(&bytes));
        prop_assert!(peak <= heap_bound(bytes.len()), "{} heap bytes", peak);
        let expected = match min {
            Some(_) => TxParseError::CountTooLarge { offset: at.offset, field: at.field, count: value, available },
            None => TxParseError::Truncated {
                offset: bytes.len() - available,
                field: expected_field(at.field),
                needed: value,
                available,
            },
        };
        prop_assert_eq!(result, Err(expected));
        check_against_bitcoin(&bytes).ok();
    }

    /// Bytes after a valid transaction are always refused, and named.
    #[test]
    fn trailing_bytes_are_refused(index in any::<Index>(), tail in prop::collection::vec(any::<u8>(), 1..64)) {
        let (raw, _) = corpus_tx(&index);
        let mut bytes = raw.to_vec();
        bytes.extend_from_slice(&tail);
        let result = check_against_bitcoin(&bytes);
        prop_assert_eq!(result, Err(TxParseError::TrailingBytes { count: tail.len(), offset: raw.len() }));
        check_validator(&bytes);
    }

    /// Model transactions serialise to bytes the parser reads back field by
    /// field, with the txid `bitcoin` computes.
    #[test]
    fn generated_transactions_parse_back(tx in valid_transaction()) {
        let bytes = serialize(&tx, tx.has_witness);
        prop_assert_eq!(check_against_bitcoin(&bytes), Ok(tx.clone()));
        check_validator(&bytes);
        // The segwit marker changes neither the txid nor anything else.
        let (bytes, stripped) = if tx.has_witness {
            let mut legacy = tx.clone();
            legacy.inputs.iter_mut().for_each(|i| i.witness.clear());
            legacy.has_witness = false;
            let bytes = serialize(&legacy, false);
            legacy.size = bytes.len();
            (bytes, legacy)
        } else {
            (bytes, tx.clone())
        };
        let legacy = check_against_bitcoin(&bytes).expect("stripped of its witness, still a transaction");
        prop_assert_eq!(legacy.txid, tx.txid);
        prop_assert_eq!(&legacy, &stripped);
        // The marker with only empty witnesses is refused where the witnesses start.
        let marked = serialize(&stripped, true);
        let witnesses_at = marked.len() - 4 - stripped.inputs.len();
        prop_assert_eq!(
            check_against_bitcoin(&marked),
            Err(TxParseError::SuperfluousWitness { offset: witnesses_at })
        );
    }

    /// Model transactions under byte edits.
    #[test]
    fn edited_generated_transactions(tx in valid_transaction(), edits in prop::collection::vec(edit(), 1..4)) {
        let mut bytes = serialize(&tx, tx.has_witness);
        for e in &edits {
            apply(&mut bytes, e);
        }
        check_against_bitcoin(&bytes).ok();
    }
}

// ---------------------------------------------------------------------------
// Blocks.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The small real blocks under byte edits: a checked block or a checked error.
    #[test]
    fn edited_real_blocks(segwit in any::<bool>(), edits in prop::collection::vec(edit(), 1..4)) {
        static BLOCKS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
        let blocks = BLOCKS.get_or_init(|| [load_vector(BLOCK_9).raw, load_vector(BLOCK_SEGWIT).raw]);
        let mut bytes = blocks[usize::from(segwit)].clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        let (_, peak) = peak_heap(|| parse_block_transactions(&bytes));
        prop_assert!(peak <= heap_bound(bytes.len()), "{} heap bytes", peak);
        check_block(&bytes).ok();
    }

    /// Arbitrary bytes after a header.
    #[test]
    fn arbitrary_blocks(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut bytes = vec![0u8; 80];
        bytes.extend_from_slice(&body);
        let (_, peak) = peak_heap(|| parse_block_transactions(&bytes));
        prop_assert!(peak <= heap_bound(bytes.len()), "{} heap bytes", peak);
        check_block(&bytes).ok();
        check_block(&body).ok();
    }
}

#[test]
fn real_blocks_parse_and_every_prefix_is_refused() {
    for name in [BLOCK_9, BLOCK_SEGWIT, BLOCK_2500] {
        let raw = load_vector(name).raw;
        check_block(&raw).expect("a real block parses");
        if raw.len() < 5000 {
            for len in 0..raw.len() {
                let error = check_block(&raw[..len]).expect_err("a strict prefix is not a block");
                assert!(
                    matches!(
                        error,
                        TxParseError::Truncated { .. } | TxParseError::CountTooLarge { .. }
                    ),
                    "{name} prefix {len}: {error}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Broadcast through a session.

fn unlimited() -> Config {
    let mut config = Config::default();
    config.limits.cost_soft_limit = 0.0;
    config.limits.cost_hard_limit = 0.0;
    config
}

#[test]
fn broadcast_forwards_exactly_what_the_validator_accepts() {
    let fixture = Fixture::new(unlimited());
    let (session, _log) = fixture.connect("203.0.113.9:50001");
    let mut runner = TestRunner::new(ProptestConfig::with_cases(96));
    let strategy = (any::<Index>(), prop::collection::vec(edit(), 0..3));
    runner
        .run(&strategy, |(index, edits)| {
            let (raw, _) = corpus_tx(&index);
            let mut bytes = raw.to_vec();
            for e in &edits {
                apply(&mut bytes, e);
            }
            let before = fixture.daemon.broadcasts().len();
            let result = block_on(session.broadcast_transaction(&bytes));
            let sent = fixture.daemon.broadcasts();
            match (parse_transaction(&bytes), result) {
                (Ok(tx), Ok(txid)) if !tx.is_coinbase() => {
                    prop_assert_eq!(txid, bitcoin_model(&bytes).expect("bitcoin agrees").txid);
                    prop_assert_eq!(sent.len(), before + 1);
                    prop_assert_eq!(sent.last(), Some(&bytes));
                }
                (Ok(tx), Err(Error::TxRejected(message))) if tx.is_coinbase() => {
                    prop_assert!(message.contains("coinbase"));
                    prop_assert_eq!(sent.len(), before);
                }
                (Err(error), Err(Error::TxRejected(message))) => {
                    prop_assert_eq!(message, error.to_string());
                    prop_assert_eq!(sent.len(), before, "a refused transaction never reaches the node");
                }
                (parsed, result) => prop_assert!(false, "{:?} -> {:?}", parsed.map(|t| t.txid), result),
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Hex, hashes and scripthashes.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn hex_text(text in hex_like()) {
        check_hex(&text);
        check_hex(&text.to_ascii_uppercase());
        check_selector(&text);
        check_fee_mode(&text);
    }

    #[test]
    fn hex_bytes(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        check_hex_bytes(&bytes);
        let text = indexer_sessions::encode_hex(&bytes);
        check_hex(&text);
    }

    /// A 32-byte hash in either case parses to the same reversed bytes.
    #[test]
    fn hashes_parse_in_either_case(bytes in any::<[u8; 32]>(), upper in prop::collection::vec(any::<bool>(), 64)) {
        let mut reversed = bytes;
        reversed.reverse();
        let text: String = indexer_sessions::encode_hex(&reversed)
            .chars()
            .zip(&upper)
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        prop_assert_eq!(TxHash::from_hex(&text), Some(TxHash(bytes)));
        prop_assert_eq!(HashX::from_scripthash_hex(&text), Some(HashX::from_scripthash(&bytes)));
        check_hex(&text);
    }
}

/// The history the test index holds for a script: one entry derived from its hashX.
fn entry_for(hashx: &HashX) -> HistoryEntry {
    HistoryEntry {
        txid: TxHash([hashx.as_bytes()[0]; 32]),
        height: Height(1 + u32::from(hashx.as_bytes()[1])),
    }
}

/// A refusal of a malformed scripthash.
fn bad_scripthash<T>(result: &Result<T, Error>) -> bool {
    matches!(result, Err(Error::BadRequest(m)) if m.contains("scripthash"))
}

#[test]
fn scripthash_requests_accept_exactly_64_hex_digits() {
    let fixture = Fixture::new(unlimited());
    let (session, _log) = fixture.connect("198.51.100.3:50001");
    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    runner
        .run(&hex_like(), |alias| {
            let valid = alias.len() == 64 && alias.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                prop_assert!(bad_scripthash(&block_on(session.subscribe(&alias))));
                prop_assert!(bad_scripthash(&session.unsubscribe(&alias)));
                prop_assert!(bad_scripthash(&block_on(session.history(&alias))));
                prop_assert!(bad_scripthash(&block_on(session.mempool(&alias))));
                return Ok(());
            }
            let hashx = HashX::from_scripthash_hex(&alias).expect("valid");
            fixture.db.set_history(hashx, vec![entry_for(&hashx)]);
            let history = block_on(session.history(&alias)).expect("history");
            prop_assert_eq!(history.len(), 1);
            prop_assert_eq!(history[0].txid, entry_for(&hashx).txid);
            prop_assert!(block_on(session.mempool(&alias)).expect("mempool").is_empty());
            prop_assert!(block_on(session.subscribe(&alias)).expect("subscribe").is_some());
            prop_assert!(matches!(session.unsubscribe(&alias), Ok(true)));
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Fee modes and targets, admin selectors.

/// Mode-like text: the two modes in mixed case, near misses, anything.
fn mode_like() -> impl Strategy<Value = String> {
    let cased = |word: &'static str| {
        prop::collection::vec(any::<bool>(), word.len()).prop_map(move |upper| {
            word.chars()
                .zip(upper)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect::<String>()
        })
    };
    prop_oneof![
        cased("economical"),
        cased("conservative"),
        (cased("conservative"), "[ \t\n]{1,2}").prop_map(|(w, s)| format!("{s}{w}")),
        "(ECONOMICA|CONSERVATIV|UNSET|economicaL|ECONOMICAL\\x00|CONSERVATİVE|ECONOMİCAL)",
        any::<String>(),
    ]
}

#[test]
fn estimate_fee_accepts_the_two_modes_and_charges_nothing_for_others() {
    let fixture = Fixture::new(unlimited());
    let buckets: std::collections::BTreeSet<u32> = (0..=2000).map(bucket_fee_target).collect();
    for &bucket in &buckets {
        fixture.daemon.set_fee(bucket, f64::from(bucket));
    }
    let (session, _log) = fixture.connect("192.0.2.44:50001");
    let mut runner = TestRunner::new(ProptestConfig::with_cases(128));
    let strategy = (any::<u32>(), prop_oneof![Just(None), mode_like().prop_map(Some)]);
    runner
        .run(&strategy, |(blocks, mode)| {
            check_fee_target(blocks);
            if let Some(mode) = &mode {
                check_fee_mode(mode);
            }
            let valid = mode
                .as_deref()
                .is_none_or(|m| indexer_sessions::FeeMode::parse(m).is_some());
            let before = session.cost().own;
            let result = block_on(session.estimate_fee(blocks, mode.as_deref()));
            let after = session.cost().own;
            if valid {
                prop_assert_eq!(
                    result.expect("estimate"),
                    Some(f64::from(bucket_fee_target(blocks)))
                );
                prop_assert!(after > before);
            } else {
                prop_assert!(matches!(result, Err(Error::BadRequest(_))), "{:?}", result);
                prop_assert_eq!(after, before, "a refused mode costs nothing");
            }
            Ok(())
        })
        .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fee_modes(mode in mode_like()) {
        check_fee_mode(&mode);
    }

    #[test]
    fn selectors(text in prop_oneof![
        any::<String>(),
        "[0-9a-fA-F:./ ]{0,45}",
        " ?(all|ALL|aLl) ?",
    ]) {
        check_selector(&text);
    }

    /// Every address, network and id the selector prints reads back as itself.
    #[test]
    fn selectors_read_back(id in any::<u64>(), addr in any::<IpAddr>(), prefix in 0u8..=128) {
        prop_assert_eq!(id.to_string().parse::<Selector>().unwrap(), Selector::Session(SessionId(id)));
        prop_assert_eq!(format!(" {addr} ").parse::<Selector>().unwrap(), Selector::Address(addr));
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let text = format!("{addr}/{prefix}");
        check_selector(&text);
        match text.parse::<Selector>() {
            Ok(Selector::Group(net)) => {
                prop_assert!(prefix <= max);
                prop_assert_eq!(net.prefix(), prefix);
                prop_assert!(net.contains(addr));
            }
            Err(Error::BadRequest(_)) => prop_assert!(prefix > max),
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

// ---------------------------------------------------------------------------
// Saved regressions.

/// The name of a parse outcome, as the saved inputs are named.
fn outcome<T>(result: &Result<T, TxParseError>, segwit: impl Fn(&T) -> bool) -> &'static str {
    match result {
        Ok(value) if segwit(value) => "OkSegwit",
        Ok(_) => "Ok",
        Err(TxParseError::Truncated { .. }) => "Truncated",
        Err(TxParseError::NonCanonicalCompactSize { .. }) => "NonCanonicalCompactSize",
        Err(TxParseError::CountTooLarge { .. }) => "CountTooLarge",
        Err(TxParseError::NoInputs { .. }) => "NoInputs",
        Err(TxParseError::NoOutputs { .. }) => "NoOutputs",
        Err(TxParseError::UnknownSegwitFlag { .. }) => "UnknownSegwitFlag",
        Err(TxParseError::SuperfluousWitness { .. }) => "SuperfluousWitness",
        Err(TxParseError::ValueTooLarge { .. }) => "ValueTooLarge",
        Err(TxParseError::TooLarge { .. }) => "TooLarge",
        Err(TxParseError::TrailingBytes { .. }) => "TrailingBytes",
        Err(TxParseError::EmptyBlock) => "EmptyBlock",
        Err(_) => "unknown",
    }
}

/// Replays `tests/data/fuzz-regressions/<target>/*` (see its README): each
/// file runs through that target's checks; under `tx_parse` and
/// `block_parse` the file's name is the outcome it must have.
#[test]
fn saved_fuzz_inputs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions");
    let mut replayed = 0;
    for target in std::fs::read_dir(&dir).expect("regressions directory") {
        let target = target.expect("entry").path();
        if !target.is_dir() {
            continue;
        }
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        for file in std::fs::read_dir(&target).expect("target directory") {
            let path = file.expect("entry").path();
            let stem = path.file_stem().and_then(|n| n.to_str()).expect("file name");
            let expected = stem.split('-').next().unwrap_or(stem);
            let bytes = std::fs::read(&path).expect("read");
            let text = String::from_utf8_lossy(&bytes);
            match name.as_str() {
                "tx_parse" => {
                    let result = check_against_bitcoin(&bytes);
                    check_validator(&bytes);
                    assert_eq!(
                        outcome(&result, |tx| tx.has_witness),
                        expected,
                        "{}",
                        path.display()
                    );
                }
                "tx_validate" => check_validator(&bytes),
                "block_parse" => {
                    let result = check_block(&bytes);
                    assert_eq!(outcome(&result, |_| false), expected, "{}", path.display());
                }
                "hex_and_scripthash" => {
                    check_hex(&text);
                    check_hex_bytes(&bytes);
                }
                "requests" => {
                    check_fee_mode(&text);
                    check_selector(&text);
                }
                other => panic!("no checks for target {other} ({})", path.display()),
            }
            replayed += 1;
        }
    }
    assert!(
        replayed >= 20,
        "only {replayed} saved inputs in {}",
        dir.display()
    );
}

#[test]
fn errors_are_checked_against_their_bytes() {
    // The checks themselves must catch a wrong error: a made-up offset fails.
    let bytes = [1u8, 0, 0, 0, 0xfd, 0x10, 0];
    let real = parse_transaction(&bytes).unwrap_err();
    assert!(matches!(
        real,
        TxParseError::NonCanonicalCompactSize { offset: 4, .. }
    ));
    check_error(&bytes, &real, false);
    let wrong = TxParseError::Truncated {
        offset: 2,
        field: TxField::Version,
        needed: 4,
        available: 1,
    };
    assert!(std::panic::catch_unwind(|| check_error(&bytes, &wrong, false)).is_err());
}
