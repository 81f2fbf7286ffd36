//! Properties of the parsers that a client's bytes and strings reach,
//! shared by the bounded run in `tests/fuzz_parsers.rs` and the `cargo fuzz`
//! targets in `fuzz/` (which include this file by path).
//!
//! Every `check_*` function takes any input, runs the library's parser on
//! it, and panics when a property fails; none panics on an input the parser
//! handles correctly. They use the public API only.
#![allow(dead_code)]

use indexer_sessions::admin::Selector;
use indexer_sessions::fees::{MAX_FEE_TARGET, bucket_fee_target, parse_fee_mode};
use indexer_sessions::merkle::double_sha256;
use indexer_sessions::tx::{
    BLOCK_HEADER_LEN, MAX_MONEY, MAX_TX_SIZE, ParsedTransaction, TxField, TxInput, TxOutput, TxParseError,
    parse_block_transactions, parse_transaction,
};
use indexer_sessions::{
    BlockHash, Error, FeeMode, HASHX_LEN, HashX, StructuralValidator, TxHash, TxValidator, decode_hex,
    encode_hex,
};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Smallest serialised input: outpoint 36, script length 1, sequence 4.
pub const MIN_INPUT_LEN: usize = 36 + 1 + 4;
/// Smallest serialised output: value 8, script length 1.
pub const MIN_OUTPUT_LEN: usize = 8 + 1;
/// Smallest transaction: version, one input, one output, lock time.
pub const MIN_TX_LEN: usize = 4 + 1 + MIN_INPUT_LEN + 1 + MIN_OUTPUT_LEN + 4;

/// Appends `n` as a canonical Bitcoin compact-size integer.
pub fn put_compact_size(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xfc => out.push(n as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// Reads the compact-size integer at the start of `bytes` without checking
/// that it is canonical: its value and encoded length.
pub fn read_compact_size(bytes: &[u8]) -> Option<(u64, usize)> {
    let (&first, rest) = bytes.split_first()?;
    let le = |n: usize| -> Option<u64> {
        let digits = rest.get(..n)?;
        Some(
            digits
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        )
    };
    match first {
        0xfd => Some((le(2)?, 3)),
        0xfe => Some((le(4)?, 5)),
        0xff => Some((le(8)?, 9)),
        small => Some((u64::from(small), 1)),
    }
}

/// A compact-size integer written by [`serialize`]: where, which field, its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactSizeAt {
    /// Offset of its first byte.
    pub offset: usize,
    /// The field it encodes.
    pub field: TxField,
    /// Its value.
    pub value: u64,
    /// Encoded length (1, 3, 5 or 9).
    pub len: usize,
}

/// Serialises `tx` (with the segwit marker, flag and witnesses when
/// `witness`), recording every compact-size integer written.
pub fn serialize_with_layout(tx: &ParsedTransaction, witness: bool) -> (Vec<u8>, Vec<CompactSizeAt>) {
    let mut out = Vec::with_capacity(tx.size);
    let mut layout = Vec::new();
    let mut compact = |out: &mut Vec<u8>, field: TxField, value: u64| {
        let offset = out.len();
        put_compact_size(out, value);
        layout.push(CompactSizeAt {
            offset,
            field,
            value,
            len: out.len() - offset,
        });
    };
    out.extend_from_slice(&tx.version.to_le_bytes());
    if witness {
        out.extend_from_slice(&[0, 1]);
    }
    compact(&mut out, TxField::InputCount, tx.inputs.len() as u64);
    for (i, input) in tx.inputs.iter().enumerate() {
        out.extend_from_slice(&input.prev_txid.0);
        out.extend_from_slice(&input.prev_vout.to_le_bytes());
        compact(
            &mut out,
            TxField::InputScriptLength(i),
            input.script_sig.len() as u64,
        );
        out.extend_from_slice(&input.script_sig);
        out.extend_from_slice(&input.sequence.to_le_bytes());
    }
    compact(&mut out, TxField::OutputCount, tx.outputs.len() as u64);
    for (o, output) in tx.outputs.iter().enumerate() {
        out.extend_from_slice(&output.value.to_le_bytes());
        compact(
            &mut out,
            TxField::OutputScriptLength(o),
            output.script_pubkey.len() as u64,
        );
        out.extend_from_slice(&output.script_pubkey);
    }
    if witness {
        for (i, input) in tx.inputs.iter().enumerate() {
            compact(&mut out, TxField::WitnessItemCount(i), input.witness.len() as u64);
            for (item, data) in input.witness.iter().enumerate() {
                compact(
                    &mut out,
                    TxField::WitnessItemLength { input: i, item },
                    data.len() as u64,
                );
                out.extend_from_slice(data);
            }
        }
    }
    out.extend_from_slice(&tx.lock_time.to_le_bytes());
    (out, layout)
}

/// Serialises `tx`, with witness data when `witness`.
pub fn serialize(tx: &ParsedTransaction, witness: bool) -> Vec<u8> {
    serialize_with_layout(tx, witness).0
}

/// The txid of `tx` computed from its re-serialisation without witness data.
pub fn txid_of(tx: &ParsedTransaction) -> TxHash {
    TxHash(double_sha256(&serialize(tx, false)))
}

/// The smallest serialised item a count field counts (`None` for a field that is not a count).
pub fn min_item_len(field: TxField) -> Option<usize> {
    match field {
        TxField::InputCount => Some(MIN_INPUT_LEN),
        TxField::OutputCount => Some(MIN_OUTPUT_LEN),
        TxField::WitnessItemCount(_) => Some(1),
        TxField::TransactionCount => Some(MIN_TX_LEN),
        _ => None,
    }
}

/// Checks what an accepted transaction must satisfy: it re-serialises to
/// exactly `raw`, its txid is the double SHA-256 of the witness-free
/// serialisation, and its fields respect the documented rules.
pub fn check_accepted(raw: &[u8], tx: &ParsedTransaction) {
    assert_eq!(tx.size, raw.len(), "size is the byte length");
    assert!(tx.size <= MAX_TX_SIZE);
    assert!(!tx.inputs.is_empty() && !tx.outputs.is_empty());
    assert_eq!(
        serialize(tx, tx.has_witness),
        raw,
        "an accepted transaction re-serialises to its bytes"
    );
    assert_eq!(tx.txid, txid_of(tx), "txid excludes the witness");
    if tx.has_witness {
        assert!(
            tx.inputs.iter().any(|i| !i.witness.is_empty()),
            "a segwit serialisation has a witness"
        );
    } else {
        assert!(tx.inputs.iter().all(|i| i.witness.is_empty()));
        assert_eq!(tx.txid, TxHash(double_sha256(raw)));
    }
    let total = tx
        .outputs
        .iter()
        .try_fold(0u64, |sum, o| sum.checked_add(o.value));
    assert!(
        total.is_some_and(|t| t <= MAX_MONEY),
        "output total within the money supply"
    );
}

/// Checks a parse error of `bytes` against the bytes themselves.
/// `block`: the error came from [`parse_block_transactions`].
pub fn check_error(bytes: &[u8], error: &TxParseError, block: bool) {
    let len = bytes.len();
    let message = error.to_string();
    assert!(!message.is_empty());
    match *error {
        TxParseError::Truncated {
            offset,
            needed,
            available,
            ..
        } => {
            assert_eq!(offset + available, len, "{error}");
            assert!(needed > available as u64, "{error}");
            assert!(message.contains(&format!("byte {offset}")), "{message}");
        }
        TxParseError::NonCanonicalCompactSize { offset, .. } => {
            let (value, width) = read_compact_size(&bytes[offset..]).expect("the integer was read");
            let min = match width {
                3 => 0xfd,
                5 => 0x1_0000,
                9 => 0x1_0000_0000,
                _ => panic!("a one-byte integer is canonical: {error}"),
            };
            assert!(value < min, "{error}: {value} needs no {width} bytes");
        }
        TxParseError::CountTooLarge {
            offset,
            field,
            count,
            available,
        } => {
            let (value, width) = read_compact_size(&bytes[offset..]).expect("the count was read");
            assert_eq!(value, count, "{error}");
            assert_eq!(offset + width + available, len, "{error}");
            let min = min_item_len(field).unwrap_or_else(|| panic!("{field} is not a count"));
            assert!(count > (available / min) as u64, "{error}: {count} items fit");
        }
        TxParseError::NoInputs { offset } => {
            assert_eq!(bytes[offset], 0, "{error}");
            if !block {
                assert!(offset == 4 || offset == 6, "{error}");
            }
        }
        TxParseError::NoOutputs { offset } => assert_eq!(bytes[offset], 0, "{error}"),
        TxParseError::UnknownSegwitFlag { offset, flag } => {
            assert_eq!(bytes[offset - 1], 0, "{error}: the marker precedes the flag");
            assert_eq!(bytes[offset], flag, "{error}");
            assert!(flag > 1, "{error}");
            if !block {
                assert_eq!(offset, 5, "{error}");
            }
        }
        TxParseError::SuperfluousWitness { offset } => assert_eq!(bytes[offset], 0, "{error}"),
        TxParseError::ValueTooLarge { offset, total, .. } => {
            let value = u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"));
            assert!(total > MAX_MONEY, "{error}");
            assert!(value <= total, "{error}");
        }
        TxParseError::TooLarge { size } => assert!(size > MAX_TX_SIZE, "{error}"),
        TxParseError::TrailingBytes { count, offset } => {
            assert!(count > 0, "{error}");
            assert_eq!(offset + count, len, "{error}");
            let prefix = &bytes[..offset];
            if block {
                assert!(
                    parse_block_transactions(prefix).is_ok(),
                    "{error}: the prefix is a block"
                );
            } else {
                let tx =
                    parse_transaction(prefix).expect("the prefix before trailing bytes is a transaction");
                check_accepted(prefix, &tx);
            }
        }
        TxParseError::EmptyBlock => {
            assert!(block, "a transaction parse never reports an empty block");
            assert_eq!(bytes.get(BLOCK_HEADER_LEN), Some(&0));
        }
        ref other => panic!("an error variant these checks do not know: {other:?}"),
    }
}

/// Parses `raw` as one transaction and checks the outcome; returns it.
pub fn check_transaction(raw: &[u8]) -> Result<ParsedTransaction, TxParseError> {
    let result = parse_transaction(raw);
    match &result {
        Ok(tx) => check_accepted(raw, tx),
        Err(error) => check_error(raw, error, false),
    }
    assert_eq!(parse_transaction(raw), result, "parsing is deterministic");
    result
}

/// What the `bitcoin` crate's consensus decoder makes of `raw` once the
/// rules the library adds are applied (at least one input and one output,
/// total output value within the money supply, at most `MAX_TX_SIZE`
/// bytes), in the library's types; `None` when either refuses.
pub fn bitcoin_model(raw: &[u8]) -> Option<ParsedTransaction> {
    use bitcoin::hashes::Hash;
    let tx: bitcoin::Transaction = bitcoin::consensus::deserialize(raw).ok()?;
    let total = tx
        .output
        .iter()
        .try_fold(0u64, |sum, o| sum.checked_add(o.value.to_sat()))?;
    if tx.input.is_empty() || tx.output.is_empty() || total > MAX_MONEY || raw.len() > MAX_TX_SIZE {
        return None;
    }
    Some(ParsedTransaction {
        txid: TxHash(tx.compute_txid().to_byte_array()),
        inputs: tx
            .input
            .iter()
            .map(|input| TxInput {
                prev_txid: TxHash(input.previous_output.txid.to_byte_array()),
                prev_vout: input.previous_output.vout,
                script_sig: input.script_sig.as_bytes().to_vec(),
                sequence: input.sequence.0,
                witness: input.witness.to_vec(),
            })
            .collect(),
        outputs: tx
            .output
            .iter()
            .map(|output| TxOutput {
                value: output.value.to_sat(),
                script_pubkey: output.script_pubkey.as_bytes().to_vec(),
            })
            .collect(),
        version: tx.version.0,
        lock_time: tx.lock_time.to_consensus_u32(),
        has_witness: tx.input.iter().any(|input| !input.witness.is_empty()),
        size: raw.len(),
    })
}

/// [`check_transaction`], and the parser agrees with [`bitcoin_model`] on
/// acceptance and on every field.
pub fn check_against_bitcoin(raw: &[u8]) -> Result<ParsedTransaction, TxParseError> {
    let ours = check_transaction(raw);
    assert_eq!(
        ours.as_ref().ok(),
        bitcoin_model(raw).as_ref(),
        "parser and bitcoin differ on {raw:02x?}"
    );
    ours
}

/// Parses `raw` as a block and checks the outcome: an accepted block's
/// transactions are the transactions found back to back after the header
/// and count, each accepted alone.
pub fn check_block(raw: &[u8]) -> Result<(Vec<u8>, Vec<ParsedTransaction>), TxParseError> {
    let result = parse_block_transactions(raw);
    match &result {
        Ok((header, txs)) => {
            assert_eq!(header.as_slice(), &raw[..BLOCK_HEADER_LEN]);
            let (count, width) = read_compact_size(&raw[BLOCK_HEADER_LEN..]).expect("count");
            assert_eq!(count, txs.len() as u64);
            let mut at = BLOCK_HEADER_LEN + width;
            for tx in txs {
                let slice = &raw[at..at + tx.size];
                assert_eq!(
                    parse_transaction(slice).as_ref(),
                    Ok(tx),
                    "each transaction parses alone"
                );
                check_accepted(slice, tx);
                at += tx.size;
            }
            assert_eq!(at, raw.len(), "nothing follows the last transaction");
        }
        Err(error) => check_error(raw, error, true),
    }
    result
}

/// Polls a future once; it must be ready.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the future waits on nothing and must be ready"),
    }
}

/// The default validator accepts exactly the parsable, non-coinbase
/// transactions, refuses with the parse error's message, and never accepts
/// trailing bytes.
pub fn check_validator(raw: &[u8]) {
    let verdict = ready(StructuralValidator.validate(raw));
    match parse_transaction(raw) {
        Ok(tx) if tx.is_coinbase() => {
            let message = verdict.as_ref().expect_err("a coinbase is refused");
            assert!(message.contains("coinbase"), "{message}");
        }
        Ok(_) => assert_eq!(verdict.as_ref(), Ok(&())),
        Err(error) => assert_eq!(verdict.as_ref(), Err(&error.to_string())),
    }
    for tail in [&[0u8][..], &[0, 0, 0, 0], raw] {
        if raw.is_empty() && tail.is_empty() {
            continue;
        }
        let mut longer = raw.to_vec();
        longer.extend_from_slice(tail);
        if verdict.is_ok() && longer.len() <= MAX_TX_SIZE {
            assert_eq!(
                ready(StructuralValidator.validate(&longer)),
                Err(TxParseError::TrailingBytes {
                    count: tail.len(),
                    offset: raw.len()
                }
                .to_string()),
                "trailing bytes are refused"
            );
        }
    }
}

/// Whether `text` is hex as the library reads it: ASCII digits and letters `a`–`f` in either case.
fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Hex decoding accepts exactly even-length ASCII hex (either case) and
/// round-trips through encoding; the 32-byte hashes and the scripthash
/// accept exactly 64 such digits, reversed, and agree with each other.
pub fn check_hex(text: &str) {
    let decoded = decode_hex(text);
    let valid = text.len() % 2 == 0 && is_hex(text);
    assert_eq!(decoded.is_some(), valid, "decode_hex({text:?})");
    if let Some(bytes) = &decoded {
        assert_eq!(bytes.len(), text.len() / 2);
        assert_eq!(encode_hex(bytes), text.to_ascii_lowercase());
    }

    let is_hash = text.len() == 64 && is_hex(text);
    let reversed = decoded.filter(|_| is_hash).map(|bytes| {
        let mut array: [u8; 32] = bytes.try_into().expect("32 bytes");
        array.reverse();
        array
    });
    let txid = TxHash::from_hex(text);
    let block = BlockHash::from_hex(text);
    let hashx = HashX::from_scripthash_hex(text);
    assert_eq!(txid.map(|h| h.0), reversed, "TxHash::from_hex({text:?})");
    assert_eq!(block.map(|h| h.0), reversed, "BlockHash::from_hex({text:?})");
    assert_eq!(
        hashx,
        reversed.map(|b| HashX::from_scripthash(&b)),
        "scripthash {text:?}"
    );
    if let (Some(txid), Some(block), Some(hashx)) = (txid, block, hashx) {
        let lower = text.to_ascii_lowercase();
        assert_eq!(txid.to_hex(), lower);
        assert_eq!(txid.to_string(), lower);
        assert_eq!(block.to_hex(), lower);
        assert_eq!(TxHash::from_hex(&txid.to_hex()), Some(txid));
        assert_eq!(hashx.as_bytes()[..], txid.0[..HASHX_LEN]);
    }
}

/// Encoding any bytes gives lowercase hex that decodes back to them.
pub fn check_hex_bytes(bytes: &[u8]) {
    let text = encode_hex(bytes);
    assert_eq!(text.len(), 2 * bytes.len());
    assert!(text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    assert_eq!(decode_hex(&text).as_deref(), Some(bytes));
    assert_eq!(decode_hex(&text.to_ascii_uppercase()).as_deref(), Some(bytes));
}

/// Fee modes: exactly `ECONOMICAL` and `CONSERVATIVE` in any ASCII case;
/// anything else is a bad request naming the mode.
pub fn check_fee_mode(text: &str) {
    let expected = if text.eq_ignore_ascii_case("ECONOMICAL") {
        Some(FeeMode::Economical)
    } else if text.eq_ignore_ascii_case("CONSERVATIVE") {
        Some(FeeMode::Conservative)
    } else {
        None
    };
    assert_eq!(FeeMode::parse(text), expected, "{text:?}");
    match parse_fee_mode(Some(text)) {
        Ok(mode) => assert_eq!(mode, expected),
        Err(Error::BadRequest(message)) => {
            assert_eq!(expected, None);
            assert!(message.contains(&format!("{text:?}")), "{message}");
        }
        Err(other) => panic!("{text:?}: {other}"),
    }
}

/// Fee targets land in a bucket that is a fixed point, at most the target
/// (or 1) and at most [`MAX_FEE_TARGET`].
pub fn check_fee_target(blocks: u32) {
    let bucket = bucket_fee_target(blocks);
    assert!((1..=MAX_FEE_TARGET).contains(&bucket));
    assert!(bucket <= blocks.max(1));
    assert_eq!(bucket_fee_target(bucket), bucket);
}

/// Admin selectors: any text is a selector or a bad request; a group is
/// always stored as its network address.
pub fn check_selector(text: &str) {
    match text.parse::<Selector>() {
        Ok(Selector::Group(net)) => {
            assert_eq!(net.ip(), net.network(), "{text:?} -> {net}");
            assert!(text.contains('/'));
        }
        Ok(Selector::All) => assert!(text.trim().eq_ignore_ascii_case("all")),
        Ok(Selector::Session(id)) => assert_eq!(text.trim().parse::<u64>().ok(), Some(id.0)),
        Ok(Selector::Address(addr)) => assert_eq!(text.trim().parse().ok(), Some(addr)),
        Err(Error::BadRequest(message)) => assert!(!message.is_empty()),
        Err(other) => panic!("{text:?}: {other}"),
    }
}
