//! Structural parsing of Bitcoin transactions and blocks, and the hook that
//! vets a transaction before it is broadcast.
//!
//! [`parse_transaction`] checks what can be checked without the UTXO set:
//! the legacy or segwit (BIP 144) serialisation, canonical compact-size
//! integers, at least one input and one output, output values within the
//! money supply, a size of at most [`MAX_TX_SIZE`] bytes and no trailing
//! bytes. Every count and length is checked against the bytes that remain
//! before anything is allocated, so a few bytes claiming billions of inputs
//! fail at once. Errors name the byte offset where parsing stopped.
//!
//! [`crate::TxValidator`] is the hook the manager calls before handing a raw
//! transaction to the node; [`StructuralValidator`] is the default.
//!
//! ```
//! use indexer_sessions::decode_hex;
//! use indexer_sessions::tx::parse_transaction;
//!
//! let raw = decode_hex("01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff0704ffff001d0104ffffffff0100f2052a010000000000000000").unwrap();
//! let tx = parse_transaction(&raw).unwrap();
//! assert!(tx.is_coinbase());
//! assert_eq!(tx.outputs[0].value, 50 * 100_000_000);
//! assert!(parse_transaction(&raw[..raw.len() - 1]).is_err());
//! ```

use crate::TxHash;
use sha2::{Digest, Sha256};
use std::fmt;

/// Largest transaction accepted, in bytes (the block weight limit: no valid
/// transaction can be larger).
pub const MAX_TX_SIZE: usize = 4_000_000;

/// The money supply in satoshis (21,000,000 coins): no output, nor the sum
/// of a transaction's outputs, may exceed it.
pub const MAX_MONEY: u64 = 21_000_000 * 100_000_000;

/// Length of a serialised block header.
pub const BLOCK_HEADER_LEN: usize = 80;

/// Smallest serialised input: outpoint (36), empty script length (1), sequence (4).
const MIN_INPUT_LEN: usize = 41;
/// Smallest serialised output: value (8), empty script length (1).
const MIN_OUTPUT_LEN: usize = 9;
/// Smallest transaction: version, one input, one output, lock time.
const MIN_TX_LEN: usize = 4 + 1 + MIN_INPUT_LEN + 1 + MIN_OUTPUT_LEN + 4;

/// One input of a transaction.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TxInput {
    /// The transaction whose output is spent (internal byte order).
    pub prev_txid: TxHash,
    /// The index of the spent output in that transaction.
    pub prev_vout: u32,
    /// The unlocking script.
    pub script_sig: Vec<u8>,
    /// The sequence number.
    pub sequence: u32,
    /// The witness stack (empty for a legacy input).
    pub witness: Vec<Vec<u8>>,
}

/// One output of a transaction.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TxOutput {
    /// The amount in satoshis.
    pub value: u64,
    /// The locking script.
    pub script_pubkey: Vec<u8>,
}

/// A structurally valid transaction.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ParsedTransaction {
    /// Double SHA-256 of the serialisation without witness data.
    pub txid: TxHash,
    /// The inputs, at least one.
    pub inputs: Vec<TxInput>,
    /// The outputs, at least one.
    pub outputs: Vec<TxOutput>,
    /// The version field.
    pub version: i32,
    /// The lock time field.
    pub lock_time: u32,
    /// Whether it was serialised with the segwit marker and witness data.
    pub has_witness: bool,
    /// Serialised size in bytes, witness included.
    pub size: usize,
}

impl ParsedTransaction {
    /// Whether this is a coinbase: a single input spending the null outpoint
    /// (all-zero txid, index `0xffffffff`).
    pub fn is_coinbase(&self) -> bool {
        match self.inputs.as_slice() {
            [only] => only.prev_txid == TxHash([0; 32]) && only.prev_vout == u32::MAX,
            _ => false,
        }
    }
}

/// The part of a transaction or block being read when parsing failed.
/// Inputs, outputs and witness items are numbered from 0.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum TxField {
    /// The version.
    Version,
    /// The segwit flag after the marker.
    SegwitFlag,
    /// The input count.
    InputCount,
    /// An input's previous txid and output index.
    InputPrevout(usize),
    /// An input's script length.
    InputScriptLength(usize),
    /// An input's script.
    InputScript(usize),
    /// An input's sequence number.
    InputSequence(usize),
    /// The output count.
    OutputCount,
    /// An output's value.
    OutputValue(usize),
    /// An output's script length.
    OutputScriptLength(usize),
    /// An output's script.
    OutputScript(usize),
    /// The number of witness items of an input.
    WitnessItemCount(usize),
    /// The length of one witness item.
    WitnessItemLength {
        /// The input.
        input: usize,
        /// The item.
        item: usize,
    },
    /// One witness item.
    WitnessItem {
        /// The input.
        input: usize,
        /// The item.
        item: usize,
    },
    /// The lock time.
    LockTime,
    /// A block's 80-byte header.
    BlockHeader,
    /// A block's transaction count.
    TransactionCount,
}

impl fmt::Display for TxField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxField::Version => f.write_str("version"),
            TxField::SegwitFlag => f.write_str("segwit flag"),
            TxField::InputCount => f.write_str("input count"),
            TxField::InputPrevout(i) => write!(f, "input {i} previous output"),
            TxField::InputScriptLength(i) => write!(f, "input {i} script length"),
            TxField::InputScript(i) => write!(f, "input {i} script"),
            TxField::InputSequence(i) => write!(f, "input {i} sequence"),
            TxField::OutputCount => f.write_str("output count"),
            TxField::OutputValue(i) => write!(f, "output {i} value"),
            TxField::OutputScriptLength(i) => write!(f, "output {i} script length"),
            TxField::OutputScript(i) => write!(f, "output {i} script"),
            TxField::WitnessItemCount(i) => write!(f, "input {i} witness item count"),
            TxField::WitnessItemLength { input, item } => {
                write!(f, "input {input} witness item {item} length")
            }
            TxField::WitnessItem { input, item } => write!(f, "input {input} witness item {item}"),
            TxField::LockTime => f.write_str("lock time"),
            TxField::BlockHeader => f.write_str("block header"),
            TxField::TransactionCount => f.write_str("transaction count"),
        }
    }
}

/// Why bytes are not a structurally valid transaction (or block).
/// Offsets count from the start of the bytes given to the parser.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TxParseError {
    /// The data ends inside a field.
    #[error("truncated at byte {offset} while reading {field} ({needed} bytes needed, {available} left)")]
    Truncated {
        /// Where the field starts.
        offset: usize,
        /// The field.
        field: TxField,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left from `offset`.
        available: usize,
    },
    /// A compact-size integer uses a longer encoding than its value needs.
    #[error("non-canonical compact size at byte {offset} for {field}")]
    NonCanonicalCompactSize {
        /// Where the integer starts.
        offset: usize,
        /// The field it encodes.
        field: TxField,
    },
    /// A count claims more items than the remaining bytes could hold.
    #[error("{field} {count} at byte {offset} is more than the {available} bytes left can hold")]
    CountTooLarge {
        /// Where the count starts.
        offset: usize,
        /// The count.
        field: TxField,
        /// Its value.
        count: u64,
        /// Bytes left after the count.
        available: usize,
    },
    /// The transaction has no inputs.
    #[error("no inputs (input count at byte {offset})")]
    NoInputs {
        /// Where the input count starts.
        offset: usize,
    },
    /// The transaction has no outputs.
    #[error("no outputs (output count at byte {offset})")]
    NoOutputs {
        /// Where the output count starts.
        offset: usize,
    },
    /// The segwit marker is followed by a flag other than 1.
    #[error("unknown segwit flag 0x{flag:02x} at byte {offset}")]
    UnknownSegwitFlag {
        /// Where the flag is.
        offset: usize,
        /// Its value.
        flag: u8,
    },
    /// The segwit marker is set but every input's witness is empty.
    #[error("segwit marker set but every witness is empty (witnesses at byte {offset})")]
    SuperfluousWitness {
        /// Where the witnesses start.
        offset: usize,
    },
    /// An output's value, or the running total, exceeds [`MAX_MONEY`].
    #[error(
        "output {output} at byte {offset} brings the total output value to {total} satoshis, above the 21,000,000-coin maximum"
    )]
    ValueTooLarge {
        /// The output.
        output: usize,
        /// Where its value starts.
        offset: usize,
        /// The total so far, this output included (saturating).
        total: u64,
    },
    /// The transaction is larger than [`MAX_TX_SIZE`].
    #[error("transaction of {size} bytes exceeds the 4,000,000-byte limit")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
    },
    /// Bytes follow the end of the transaction (or a block's last transaction).
    #[error("{count} trailing bytes after the transaction (from byte {offset})")]
    TrailingBytes {
        /// How many.
        count: usize,
        /// Where they start.
        offset: usize,
    },
    /// A block with a transaction count of zero.
    #[error("block has no transactions")]
    EmptyBlock,
}

/// A cursor over the bytes being parsed; every read is bounds-checked.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn take(&mut self, len: u64, field: TxField) -> Result<&'a [u8], TxParseError> {
        let slice = usize::try_from(len)
            .ok()
            .and_then(|n| self.data.get(self.pos..self.pos.checked_add(n)?));
        match slice {
            Some(bytes) => {
                self.pos += bytes.len();
                Ok(bytes)
            }
            None => Err(TxParseError::Truncated {
                offset: self.pos,
                field,
                needed: len,
                available: self.remaining(),
            }),
        }
    }

    fn array<const N: usize>(&mut self, field: TxField) -> Result<[u8; N], TxParseError> {
        let bytes = self.take(N as u64, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, field: TxField) -> Result<u32, TxParseError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: TxField) -> Result<u64, TxParseError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A Bitcoin compact-size integer, refusing non-minimal encodings.
    fn compact_size(&mut self, field: TxField) -> Result<u64, TxParseError> {
        let offset = self.pos;
        let [first] = self.array::<1>(field)?;
        let (value, min) = match first {
            0xfd => (u64::from(u16::from_le_bytes(self.array(field)?)), 0xfd),
            0xfe => (u64::from(u32::from_le_bytes(self.array(field)?)), 0x1_0000),
            0xff => (u64::from_le_bytes(self.array(field)?), 0x1_0000_0000),
            small => return Ok(u64::from(small)),
        };
        if value < min {
            return Err(TxParseError::NonCanonicalCompactSize { offset, field });
        }
        Ok(value)
    }

    /// A count of items each at least `min_item_len` bytes long, refused
    /// unless that many items fit in the remaining bytes.
    fn count(&mut self, field: TxField, min_item_len: usize) -> Result<usize, TxParseError> {
        let offset = self.pos;
        let count = self.compact_size(field)?;
        let available = self.remaining();
        let fits = (available / min_item_len.max(1)) as u64;
        if count > fits {
            return Err(TxParseError::CountTooLarge {
                offset,
                field,
                count,
                available,
            });
        }
        // `count <= fits <= available`, a usize.
        Ok(count as usize)
    }
}

/// Parses one transaction starting at `start` in `data`; returns it and the
/// offset just past it. Does not check what follows.
fn parse_at(data: &[u8], start: usize) -> Result<(ParsedTransaction, usize), TxParseError> {
    let mut r = Reader { data, pos: start };
    let version = i32::from_le_bytes(r.array(TxField::Version)?);
    let after_version = r.pos;

    // BIP 144: an input count of zero followed by flag 1 marks witness data.
    let mut has_witness = false;
    if data.get(r.pos) == Some(&0) {
        match data.get(r.pos + 1) {
            Some(1) => {
                has_witness = true;
                r.pos += 2;
            }
            Some(&flag) if flag != 0 => {
                return Err(TxParseError::UnknownSegwitFlag {
                    offset: r.pos + 1,
                    flag,
                });
            }
            // A legacy transaction with no inputs: refused below.
            _ => {}
        }
    }

    let body_start = r.pos;
    let input_count_at = r.pos;
    let input_count = r.count(TxField::InputCount, MIN_INPUT_LEN)?;
    if input_count == 0 {
        return Err(TxParseError::NoInputs {
            offset: input_count_at,
        });
    }
    let mut inputs = Vec::with_capacity(input_count);
    for i in 0..input_count {
        let prev_txid = TxHash(r.array(TxField::InputPrevout(i))?);
        let prev_vout = r.u32(TxField::InputPrevout(i))?;
        let script_len = r.compact_size(TxField::InputScriptLength(i))?;
        let script_sig = r.take(script_len, TxField::InputScript(i))?.to_vec();
        let sequence = r.u32(TxField::InputSequence(i))?;
        inputs.push(TxInput {
            prev_txid,
            prev_vout,
            script_sig,
            sequence,
            witness: Vec::new(),
        });
    }

    let output_count_at = r.pos;
    let output_count = r.count(TxField::OutputCount, MIN_OUTPUT_LEN)?;
    if output_count == 0 {
        return Err(TxParseError::NoOutputs {
            offset: output_count_at,
        });
    }
    let mut outputs = Vec::with_capacity(output_count);
    let mut total: u64 = 0;
    for o in 0..output_count {
        let value_at = r.pos;
        let value = r.u64(TxField::OutputValue(o))?;
        total = total.saturating_add(value);
        if total > MAX_MONEY {
            return Err(TxParseError::ValueTooLarge {
                output: o,
                offset: value_at,
                total,
            });
        }
        let script_len = r.compact_size(TxField::OutputScriptLength(o))?;
        let script_pubkey = r.take(script_len, TxField::OutputScript(o))?.to_vec();
        outputs.push(TxOutput { value, script_pubkey });
    }
    let body_end = r.pos;

    if has_witness {
        let witnesses_at = r.pos;
        let mut any_witness = false;
        for (i, input) in inputs.iter_mut().enumerate() {
            let items = r.count(TxField::WitnessItemCount(i), 1)?;
            let mut stack = Vec::with_capacity(items);
            for item in 0..items {
                let len = r.compact_size(TxField::WitnessItemLength { input: i, item })?;
                stack.push(r.take(len, TxField::WitnessItem { input: i, item })?.to_vec());
            }
            any_witness |= !stack.is_empty();
            input.witness = stack;
        }
        if !any_witness {
            return Err(TxParseError::SuperfluousWitness { offset: witnesses_at });
        }
    }

    let lock_time_at = r.pos;
    let lock_time = r.u32(TxField::LockTime)?;
    let end = r.pos;
    let size = end - start;
    if size > MAX_TX_SIZE {
        return Err(TxParseError::TooLarge { size });
    }

    // The txid hashes the serialisation without marker, flag and witnesses:
    // version, inputs and outputs, lock time. All ranges were read above.
    let first = if has_witness {
        Sha256::new()
            .chain_update(&data[start..after_version])
            .chain_update(&data[body_start..body_end])
            .chain_update(&data[lock_time_at..end])
            .finalize()
    } else {
        Sha256::digest(&data[start..end])
    };
    let txid = TxHash(Sha256::digest(first).into());

    let tx = ParsedTransaction {
        txid,
        inputs,
        outputs,
        version,
        lock_time,
        has_witness,
        size,
    };
    Ok((tx, end))
}

/// Parses one raw transaction, legacy or segwit; the bytes must hold exactly
/// one transaction.
pub fn parse_transaction(raw: &[u8]) -> Result<ParsedTransaction, TxParseError> {
    if raw.len() > MAX_TX_SIZE {
        return Err(TxParseError::TooLarge { size: raw.len() });
    }
    let (tx, end) = parse_at(raw, 0)?;
    if end != raw.len() {
        return Err(TxParseError::TrailingBytes {
            count: raw.len() - end,
            offset: end,
        });
    }
    Ok(tx)
}

/// Parses a raw block: returns its 80-byte header and its transactions in
/// block order. Each transaction is checked as by [`parse_transaction`];
/// error offsets count from the start of the block. Nothing may follow the
/// last transaction.
pub fn parse_block_transactions(raw_block: &[u8]) -> Result<(Vec<u8>, Vec<ParsedTransaction>), TxParseError> {
    let mut r = Reader {
        data: raw_block,
        pos: 0,
    };
    let header = r.take(BLOCK_HEADER_LEN as u64, TxField::BlockHeader)?.to_vec();
    let count = r.count(TxField::TransactionCount, MIN_TX_LEN)?;
    if count == 0 {
        return Err(TxParseError::EmptyBlock);
    }
    let mut txs = Vec::with_capacity(count);
    let mut pos = r.pos;
    for _ in 0..count {
        let (tx, end) = parse_at(raw_block, pos)?;
        txs.push(tx);
        pos = end;
    }
    if pos != raw_block.len() {
        return Err(TxParseError::TrailingBytes {
            count: raw_block.len() - pos,
            offset: pos,
        });
    }
    Ok((header, txs))
}

/// The default validator: refuses bytes that [`parse_transaction`] rejects
/// (the message is the parse error) and coinbase transactions.
#[derive(Clone, Copy, Debug, Default)]
pub struct StructuralValidator;

impl StructuralValidator {
    /// The check [`crate::TxValidator::validate`] runs for this validator:
    /// `Err(message)` for bytes [`parse_transaction`] rejects or a coinbase.
    pub fn check(&self, raw: &[u8]) -> Result<(), String> {
        let tx = parse_transaction(raw).map_err(|e| e.to_string())?;
        if tx.is_coinbase() {
            return Err("a coinbase transaction cannot be broadcast".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode_hex;

    /// A legacy mainnet transaction: one input, two outputs.
    const LEGACY: &str = "0100000001cdaf2f758e91c514655e2dc50633d1e4c84989f8aa90a0dbc883f0d23ed5c2fa010000008b48304502207ab51be6f12a1962ba0aaaf24a20e0b69b27a94fac5adf45aa7d2d18ffd9236102210086ae728b370e5329eead9accd880d0cb070aea0c96255fae6c4f1ddcce1fd56e014104462e76fd4067b3a0aa42070082dcb0bf2f388b6495cf33d789904f07d0f55c40fbd4b82963c69b3dc31895d0c772c812b1d5fbcade15312ef1c0e8ebbb12dcd4ffffffff02404b4c00000000001976a9142b6ba7c9d796b75eef7942fc9288edd37c32f5c388ac002d3101000000001976a9141befba0cdc1ad56529371864d9f6cb042faa06b588ac00000000";
    const LEGACY_TXID: &str = "71b3dbaca67e9f9189dad3617138c19725ab541ef0b49c05a94913e9f28e3f4e";

    /// A segwit (P2WPKH) mainnet transaction: one input, two outputs.
    const SEGWIT: &str = "0100000000010104369f5c54d0c8a60448e76ed47ec250a2dee5158d3a6b3598156c8af6e4faae0000000000ffffffff02201d9a0000000000160014a2ead2bb6f97ae26be95ea389cd72306cce9db198038010000000000160014028cf61a8dbeea74108326ca2524a0009e970574024730440220039f5cb0b5416c048e2d4d68ee514d633e3c1007efa55ca6671c8a91fe9a7fb302203fa8cbca1ff88295101f233a30e23c749d6945e4c510c911b8bb632236713ff40121032992c08b3e98a7346b2d6e9df43e0c1f14f05027085d2920e5136c84a2faaacf00000000";
    const SEGWIT_TXID: &str = "f7a5b68109e39b62054c0cde9db95066ac9f3e53680435e1d6e7fdc33d01d8e9";

    fn raw(hex: &str) -> Vec<u8> {
        decode_hex(hex).expect("test vector is hex")
    }

    /// Minimal legacy transaction: `inputs` empty-script inputs, one output of `value`.
    fn minimal(inputs: usize, value: u64) -> Vec<u8> {
        let mut tx = vec![1, 0, 0, 0, inputs as u8];
        for i in 0..inputs {
            tx.extend_from_slice(&[i as u8 + 1; 32]);
            tx.extend_from_slice(&[0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        }
        tx.push(1);
        tx.extend_from_slice(&value.to_le_bytes());
        tx.push(0);
        tx.extend_from_slice(&[0, 0, 0, 0]);
        tx
    }

    #[test]
    fn parses_legacy() {
        let bytes = raw(LEGACY);
        let tx = parse_transaction(&bytes).unwrap();
        assert_eq!(tx.txid.to_hex(), LEGACY_TXID);
        assert!(!tx.has_witness);
        assert!(!tx.is_coinbase());
        assert_eq!(tx.size, bytes.len());
        assert_eq!(tx.version, 1);
        assert_eq!(tx.lock_time, 0);
        assert_eq!(tx.inputs.len(), 1);
        assert_eq!(tx.inputs[0].prev_vout, 1);
        assert_eq!(tx.inputs[0].script_sig.len(), 0x8b);
        assert_eq!(tx.inputs[0].sequence, u32::MAX);
        assert_eq!(tx.outputs.len(), 2);
        assert_eq!(tx.outputs[0].value, 5_000_000);
        assert_eq!(tx.outputs[1].script_pubkey.len(), 25);
    }

    #[test]
    fn parses_segwit_with_txid_excluding_witness() {
        let bytes = raw(SEGWIT);
        let tx = parse_transaction(&bytes).unwrap();
        assert_eq!(tx.txid.to_hex(), SEGWIT_TXID);
        assert!(tx.has_witness);
        assert_eq!(tx.inputs[0].witness.len(), 2);
        assert_eq!(tx.inputs[0].witness[1].len(), 33);
        assert_eq!(tx.inputs[0].script_sig.len(), 0);
        assert_eq!(tx.outputs.len(), 2);
        assert_eq!(tx.size, 222);
    }

    #[test]
    fn every_truncation_fails_without_panicking() {
        for hex in [LEGACY, SEGWIT] {
            let bytes = raw(hex);
            for len in 0..bytes.len() {
                assert!(parse_transaction(&bytes[..len]).is_err(), "prefix of {len} bytes");
            }
        }
    }

    #[test]
    fn truncation_names_offset_and_field() {
        let bytes = raw(LEGACY);
        // Inside the second output's script, which starts at byte 229.
        let err = parse_transaction(&bytes[..240]).unwrap_err();
        assert_eq!(
            err,
            TxParseError::Truncated {
                offset: 229,
                field: TxField::OutputScript(1),
                needed: 25,
                available: 11,
            }
        );
        assert_eq!(
            err.to_string(),
            "truncated at byte 229 while reading output 1 script (25 bytes needed, 11 left)"
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = raw(LEGACY);
        let len = bytes.len();
        bytes.extend_from_slice(&[0xde, 0xad, 0xbe]);
        let err = parse_transaction(&bytes).unwrap_err();
        assert_eq!(
            err,
            TxParseError::TrailingBytes {
                count: 3,
                offset: len
            }
        );
        assert!(
            err.to_string()
                .starts_with("3 trailing bytes after the transaction")
        );
    }

    #[test]
    fn huge_counts_fail_before_allocating() {
        // Version, then an input count of 2^32 - 1.
        let tx = [1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff];
        let err = parse_transaction(&tx).unwrap_err();
        assert_eq!(
            err,
            TxParseError::CountTooLarge {
                offset: 4,
                field: TxField::InputCount,
                count: u64::from(u32::MAX),
                available: 0,
            }
        );
        let tx = [1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            parse_transaction(&tx),
            Err(TxParseError::CountTooLarge { count: u64::MAX, .. })
        ));
        // Five bytes: the count's own bytes are missing.
        assert!(matches!(
            parse_transaction(&[1, 0, 0, 0, 0xfe]),
            Err(TxParseError::Truncated { offset: 5, .. })
        ));
        // An output count far above what is left.
        let mut tx = minimal(1, 1);
        tx.truncate(4 + 1 + 41);
        tx.extend_from_slice(&[0xfd, 0xff, 0xff]);
        tx.extend_from_slice(&[0; 20]);
        assert!(matches!(
            parse_transaction(&tx),
            Err(TxParseError::CountTooLarge {
                field: TxField::OutputCount,
                ..
            })
        ));
        // A script length claiming 2^64 - 1 bytes.
        let mut tx = minimal(1, 1);
        tx.truncate(4 + 1 + 36);
        tx.extend_from_slice(&[0xff; 9]);
        tx.extend_from_slice(&[0; 40]);
        assert!(matches!(
            parse_transaction(&tx),
            Err(TxParseError::Truncated {
                field: TxField::InputScript(0),
                needed: u64::MAX,
                ..
            })
        ));
    }

    #[test]
    fn non_canonical_compact_size_is_refused() {
        let canonical = minimal(1, 1);
        assert!(parse_transaction(&canonical).is_ok());
        // The input count 1 written as 0xfd 0x01 0x00.
        let mut tx = canonical[..4].to_vec();
        tx.extend_from_slice(&[0xfd, 1, 0]);
        tx.extend_from_slice(&canonical[5..]);
        assert_eq!(
            parse_transaction(&tx),
            Err(TxParseError::NonCanonicalCompactSize {
                offset: 4,
                field: TxField::InputCount,
            })
        );
        for prefix in [&[0xfe, 1, 0, 0, 0][..], &[0xff, 1, 0, 0, 0, 0, 0, 0, 0][..]] {
            let mut tx = canonical[..4].to_vec();
            tx.extend_from_slice(prefix);
            tx.extend_from_slice(&canonical[5..]);
            assert!(matches!(
                parse_transaction(&tx),
                Err(TxParseError::NonCanonicalCompactSize { offset: 4, .. })
            ));
        }
    }

    #[test]
    fn segwit_flag_with_empty_witnesses_is_refused() {
        let legacy = minimal(2, 1);
        let body_end = legacy.len() - 4;
        let mut tx = legacy[..4].to_vec();
        tx.extend_from_slice(&[0, 1]);
        tx.extend_from_slice(&legacy[4..body_end]);
        let witnesses_at = tx.len();
        tx.extend_from_slice(&[0, 0]);
        tx.extend_from_slice(&legacy[body_end..]);
        assert_eq!(
            parse_transaction(&tx),
            Err(TxParseError::SuperfluousWitness { offset: witnesses_at })
        );
        // One empty witness item is a witness: accepted, and the txid is the legacy one.
        tx[witnesses_at + 1] = 1;
        tx.insert(witnesses_at + 2, 0);
        let with_witness = parse_transaction(&tx).unwrap();
        assert!(with_witness.has_witness);
        assert_eq!(with_witness.inputs[1].witness, vec![Vec::<u8>::new()]);
        assert_eq!(with_witness.txid, parse_transaction(&legacy).unwrap().txid);
    }

    #[test]
    fn unknown_flag_and_empty_lists_are_refused() {
        let legacy = minimal(1, 1);
        let mut tx = legacy[..4].to_vec();
        tx.extend_from_slice(&[0, 2]);
        tx.extend_from_slice(&legacy[4..]);
        assert_eq!(
            parse_transaction(&tx),
            Err(TxParseError::UnknownSegwitFlag { offset: 5, flag: 2 })
        );
        // No inputs (legacy form).
        let tx = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_transaction(&tx), Err(TxParseError::NoInputs { offset: 4 }));
        // No outputs.
        let mut tx = legacy[..4 + 1 + 41].to_vec();
        tx.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert_eq!(
            parse_transaction(&tx),
            Err(TxParseError::NoOutputs { offset: 46 })
        );
    }

    #[test]
    fn output_values_are_bounded() {
        assert!(parse_transaction(&minimal(1, MAX_MONEY)).is_ok());
        assert!(matches!(
            parse_transaction(&minimal(1, MAX_MONEY + 1)),
            Err(TxParseError::ValueTooLarge {
                output: 0,
                offset: 47,
                ..
            })
        ));
        assert!(matches!(
            parse_transaction(&minimal(1, u64::MAX)),
            Err(TxParseError::ValueTooLarge { .. })
        ));
        // Two outputs of MAX_MONEY each: the total is too large.
        let one = minimal(1, MAX_MONEY);
        let mut tx = one[..46].to_vec();
        tx.push(2);
        for _ in 0..2 {
            tx.extend_from_slice(&MAX_MONEY.to_le_bytes());
            tx.push(0);
        }
        tx.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            parse_transaction(&tx),
            Err(TxParseError::ValueTooLarge { output: 1, total, .. }) if total == 2 * MAX_MONEY
        ));
    }

    #[test]
    fn oversized_input_is_refused_at_once() {
        let big = vec![0u8; MAX_TX_SIZE + 1];
        assert_eq!(
            parse_transaction(&big),
            Err(TxParseError::TooLarge {
                size: MAX_TX_SIZE + 1
            })
        );
    }

    #[test]
    fn block_parser_splits_transactions() {
        let header = [7u8; 80];
        let mut block = header.to_vec();
        block.push(2);
        block.extend_from_slice(&raw(LEGACY));
        block.extend_from_slice(&raw(SEGWIT));
        let (h, txs) = parse_block_transactions(&block).unwrap();
        assert_eq!(h, header);
        assert_eq!(txs.len(), 2);
        assert_eq!(txs[0].txid.to_hex(), LEGACY_TXID);
        assert_eq!(txs[1].txid.to_hex(), SEGWIT_TXID);

        block.push(0);
        assert!(matches!(
            parse_block_transactions(&block),
            Err(TxParseError::TrailingBytes { count: 1, .. })
        ));
        for len in 0..block.len() - 1 {
            assert!(parse_block_transactions(&block[..len]).is_err(), "prefix {len}");
        }
        let mut empty = header.to_vec();
        empty.push(0);
        assert_eq!(parse_block_transactions(&empty), Err(TxParseError::EmptyBlock));
        let mut huge = header.to_vec();
        huge.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            parse_block_transactions(&huge),
            Err(TxParseError::CountTooLarge {
                field: TxField::TransactionCount,
                ..
            })
        ));
    }

    #[test]
    fn structural_validator() {
        let v = StructuralValidator;
        assert_eq!(v.check(&raw(SEGWIT)), Ok(()));
        assert_eq!(v.check(&raw(LEGACY)), Ok(()));
        let err = v.check(&[1, 0, 0]).unwrap_err();
        assert!(
            err.starts_with("truncated at byte 0 while reading version"),
            "{err}"
        );
        let coinbase = raw(
            "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff0704ffff001d0104ffffffff0100f2052a010000000000000000",
        );
        assert!(v.check(&coinbase).unwrap_err().contains("coinbase"));
    }
}
