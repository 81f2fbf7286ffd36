//! The in-process regtest chain served by the example Electrum server.
//!
//! Everything here is real Bitcoin data on the regtest network:
//!
//! * the chain starts at the regtest genesis block and every later header links
//!   to its predecessor, carries bits `0x207fffff` and has a nonce searched until
//!   its hash meets that target;
//! * blocks hold serialised transactions whose merkle root is in the header; the
//!   coinbase carries its height (BIP34) and, when the block holds witness
//!   transactions, the BIP141 witness commitment;
//! * coinbases pay the subsidy (50 BTC, halving every 150 blocks as on regtest)
//!   plus the block's fees to the chain's own P2WPKH key, derived from the fixed
//!   [`CHAIN_KEY_SEED`], so two runs with the same arguments build identical chains
//!   (block times are also fixed: genesis time + 10 minutes per block).
//!
//! [`Chain`] is plain synchronous state; the server wraps it in a mutex. It keeps
//! an index by Electrum scripthash (history, unspent outputs) and a mempool that
//! [`Chain::accept_transaction`] fills and [`Chain::mine_block`] empties.
//!
//! Byte order: txids, block hashes and scripthashes are `[u8; 32]` in internal
//! byte order, the order they are hashed in. Electrum's hex strings are reversed.

use std::collections::{BTreeMap, HashMap, HashSet};

use bitcoin::address::NetworkUnchecked;
use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::blockdata::constants::genesis_block;
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::{Hash, HashEngine, hash160, sha256, sha256d};
use bitcoin::opcodes::OP_0;
use bitcoin::opcodes::all::OP_RETURN;
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::{Message, Secp256k1, VerifyOnly};
use bitcoin::sighash::SighashCache;
use bitcoin::transaction::Version;
use bitcoin::{
    Address, AddressType, Amount, Block, CompactTarget, CompressedPublicKey, Network, OutPoint, ScriptBuf,
    Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness, absolute, ecdsa,
};

use crate::wallet::TestKey;

/// Electrum scripthash: `sha256(script_pubkey)` in internal byte order (Electrum's
/// hex form is this reversed).
pub type ScriptHash = [u8; 32];

/// Seed of the key that receives every coinbase and signs the `--pay-to` payments.
pub const CHAIN_KEY_SEED: [u8; 32] = *b"indexer-sessions regtest chain!!";
/// Blocks a coinbase output must wait before it can be spent: a coinbase of block
/// `h` can be spent by a transaction in block `h + 100` or later.
pub const COINBASE_MATURITY: u32 = 100;
/// Regtest halves the subsidy every 150 blocks.
pub const HALVING_INTERVAL: u32 = 150;
/// Subsidy of the first blocks: 50 BTC.
pub const INITIAL_SUBSIDY: u64 = 50 * COIN;
/// Compact target of every block (the regtest proof-of-work limit).
pub const REGTEST_BITS: u32 = 0x207f_ffff;
/// Minimum relay fee reported by [`Chain::relay_fee`], in BTC/kvB.
pub const RELAY_FEE_BTC_PER_KVB: f64 = 0.000_01;
/// Fee rate of the `--pay-to` payments, in sat/vB.
pub const PAYMENT_FEE_RATE: u64 = 2;
/// The relay fee in sat/vB: a transaction paying less is refused.
pub const MIN_RELAY_FEE_RATE: u64 = 1;

const COIN: u64 = 100_000_000;
const MAX_MONEY: u64 = 21_000_000 * COIN;
/// Seconds between consecutive block timestamps.
const BLOCK_SPACING: u32 = 600;
/// Change below this many sats is left to the fee instead of creating an output.
const MIN_CHANGE: u64 = 1_000;
/// ElectrumX's first fee-histogram bin size, in vbytes.
const HISTOGRAM_BIN_SIZE: f64 = 100_000.0;
/// [`Chain::estimate_fee`] answers `FEE_ESTIMATE_BASE / blocks` sat/vB (floored at the relay fee).
const FEE_ESTIMATE_BASE: f64 = 20.0;
/// Largest confirmation target [`Chain::estimate_fee`] answers (as bitcoind).
const MAX_ESTIMATE_TARGET: u32 = 1_008;
/// Bytes a BIP141 witness commitment output script starts with.
const WITNESS_COMMITMENT_HEADER: [u8; 4] = [0xaa, 0x21, 0xa9, 0xed];

/// Why the chain refused a transaction or could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The bytes are not one consensus-encoded transaction.
    #[error("transaction could not be decoded: {0}")]
    Malformed(String),
    /// A transaction without inputs.
    #[error("transaction has no inputs")]
    NoInputs,
    /// A transaction without outputs.
    #[error("transaction has no outputs")]
    NoOutputs,
    /// Coinbases are made by the miner, never relayed.
    #[error("a coinbase transaction cannot be broadcast")]
    Coinbase,
    /// The transaction is already in the chain or in the mempool.
    #[error(
        "transaction {txid} is already {}",
        if *.in_mempool { "in the mempool" } else { "in the chain" }
    )]
    AlreadyKnown {
        /// Its txid.
        txid: Txid,
        /// Whether it is in the mempool (else it is confirmed).
        in_mempool: bool,
    },
    /// An output value, or the sum of them, is above 21 million BTC.
    #[error(
        "{} out of range (above 21,000,000 BTC)",
        match .output { Some(n) => format!("the value of output {n} is"), None => "the output values total".to_owned() }
    )]
    ValueOutOfRange {
        /// The output whose own value is too large; `None` when only their sum is.
        output: Option<usize>,
    },
    /// Two inputs of the transaction spend the same output.
    #[error("input {input} spends {outpoint}, which an earlier input already spends")]
    DuplicateInput {
        /// Index of the second input.
        input: usize,
        /// The output spent twice.
        outpoint: OutPoint,
    },
    /// The spent output was never created (or is unspendable).
    #[error("input {input} spends {outpoint}, which does not exist")]
    MissingInput {
        /// Index of the offending input.
        input: usize,
        /// The output it names.
        outpoint: OutPoint,
    },
    /// The spent output is spent by a confirmed or mempool transaction.
    #[error(
        "input {input} spends {outpoint}, which is already spent by {spender} {}",
        match .spent_at { Some(h) => format!("in block {h}"), None => "in the mempool".to_owned() }
    )]
    AlreadySpent {
        /// Index of the offending input.
        input: usize,
        /// The output it names.
        outpoint: OutPoint,
        /// The transaction that spends it.
        spender: Txid,
        /// Height of the block holding `spender`, `None` when it is in the mempool.
        spent_at: Option<u32>,
    },
    /// The spent output is a coinbase output younger than [`COINBASE_MATURITY`].
    #[error(
        "input {input} spends coinbase output {outpoint} of block {coinbase_height}, \
         which can be spent from block {mature_at} on (the next block is {next_height})"
    )]
    ImmatureCoinbase {
        /// Index of the offending input.
        input: usize,
        /// The coinbase output it names.
        outpoint: OutPoint,
        /// Height of the block holding the coinbase.
        coinbase_height: u32,
        /// First height at which the output can be spent.
        mature_at: u32,
        /// Height of the block the transaction would confirm in.
        next_height: u32,
    },
    /// The outputs pay more than the inputs hold.
    #[error("outputs total {outputs} sat but the inputs hold only {inputs} sat")]
    OutputsExceedInputs {
        /// Sum of the spent outputs' values.
        inputs: u64,
        /// Sum of the transaction's output values.
        outputs: u64,
    },
    /// A P2WPKH input whose witness does not hold a valid signature by the output's key.
    #[error("input {input} has an invalid P2WPKH witness: {reason}")]
    BadSignature {
        /// Index of the offending input.
        input: usize,
        /// What is wrong with it.
        reason: String,
        /// Bitcoin Core's reject reason for it, e.g.
        /// `mandatory-script-verify-flag-failed (Script failed an OP_EQUALVERIFY operation)`.
        core_reason: &'static str,
    },
    /// The fee is below the minimum relay fee for the transaction's size.
    #[error(
        "{fee} < {minimum}: the transaction pays {fee} sat for {vsize} vB, \
         below the relay fee of 1 sat/vB"
    )]
    FeeBelowMinimum {
        /// The fee paid, in sats.
        fee: u64,
        /// The least fee relayed for its size, in sats.
        minimum: u64,
        /// Its virtual size.
        vsize: u64,
    },
    /// A `--pay-to` address that does not parse.
    #[error("invalid address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A valid address of another network.
    #[error(
        "{address} is a {network} address, but this chain is regtest \
         (use bcrt1… or a base58 m…/n…/2… address)"
    )]
    WrongNetwork {
        /// The address as given.
        address: String,
        /// The network it belongs to.
        network: &'static str,
    },
    /// A regtest address of a type the chain does not pay to.
    #[error("{address}: only P2PKH, P2SH, P2WPKH, P2WSH and P2TR addresses are supported")]
    UnsupportedAddress {
        /// The address as given.
        address: String,
    },
    /// A `--pay-to` amount of zero.
    #[error("payment to {address} has amount 0")]
    ZeroAmount {
        /// The address as given.
        address: String,
    },
    /// The `--pay-to` payments need more blocks than asked for.
    #[error(
        "{blocks} blocks are too few for the payments: they spend coinbases, which mature \
         after {COINBASE_MATURITY} blocks, so at least {needed} blocks are needed"
    )]
    TooFewBlocks {
        /// Blocks asked for.
        blocks: u32,
        /// Fewest blocks that can hold the payments.
        needed: u32,
    },
    /// The `--pay-to` payments total more than the chain's coinbases will ever hold.
    #[error("the payments total {total} sat, more than this chain can ever mine")]
    PaymentsTooLarge {
        /// Sum of the payments (saturated at `u64::MAX`).
        total: u64,
    },
    /// The chain key cannot fund a payment from its mature coins.
    #[error("the chain key holds only {available} sat of spendable coins, {needed} sat needed")]
    InsufficientFunds {
        /// Sats the key can spend in the next block.
        available: u64,
        /// Sats the payment needs, fee included.
        needed: u64,
    },
}

impl ChainError {
    /// The reason Bitcoin Core gives when it refuses such a transaction
    /// (`sendrawtransaction`'s message starts with it), for a refusal by
    /// [`Chain::accept_transaction`]; `None` for the errors of building the
    /// chain. Wallets recognise these words: Electrum shows a refusal's reason
    /// only when the server's message holds one of them.
    pub fn core_reason(&self) -> Option<&'static str> {
        Some(match self {
            ChainError::Malformed(_) => "TX decode failed",
            ChainError::NoInputs => "bad-txns-vin-empty",
            ChainError::NoOutputs => "bad-txns-vout-empty",
            ChainError::Coinbase => "coinbase",
            ChainError::AlreadyKnown { in_mempool: true, .. } => "txn-already-in-mempool",
            ChainError::AlreadyKnown {
                in_mempool: false, ..
            } => "txn-already-known",
            ChainError::ValueOutOfRange { output: Some(_) } => "bad-txns-vout-toolarge",
            ChainError::ValueOutOfRange { output: None } => "bad-txns-txouttotal-toolarge",
            ChainError::DuplicateInput { .. } => "bad-txns-inputs-duplicate",
            ChainError::MissingInput { .. } => "bad-txns-inputs-missingorspent",
            ChainError::AlreadySpent { spent_at: None, .. } => "txn-mempool-conflict",
            ChainError::AlreadySpent {
                spent_at: Some(_), ..
            } => "bad-txns-inputs-missingorspent",
            ChainError::ImmatureCoinbase { .. } => "bad-txns-premature-spend-of-coinbase",
            ChainError::OutputsExceedInputs { .. } => "bad-txns-in-belowout",
            ChainError::FeeBelowMinimum { .. } => "min relay fee not met",
            ChainError::BadSignature { core_reason, .. } => core_reason,
            ChainError::InvalidAddress { .. }
            | ChainError::WrongNetwork { .. }
            | ChainError::UnsupportedAddress { .. }
            | ChainError::ZeroAmount { .. }
            | ChainError::TooFewBlocks { .. }
            | ChainError::PaymentsTooLarge { .. }
            | ChainError::InsufficientFunds { .. } => return None,
        })
    }

    /// The refusal as a node words it: Bitcoin Core's reason, then this
    /// chain's explanation (`bad-txns-in-belowout, outputs total …`).
    pub fn rejection(&self) -> String {
        match self.core_reason() {
            Some(reason) => format!("{reason}, {self}"),
            None => self.to_string(),
        }
    }
}

/// A mempool transaction touching a scripthash, as `blockchain.scripthash.get_mempool` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolTx {
    /// Txid, internal byte order.
    pub txid: [u8; 32],
    /// Fee in sats.
    pub fee: u64,
    /// Whether it spends an output of another mempool transaction (Electrum height −1,
    /// otherwise 0).
    pub has_unconfirmed_inputs: bool,
}

/// An unspent output, as `blockchain.scripthash.listunspent` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utxo {
    /// Txid of the transaction creating it, internal byte order.
    pub txid: [u8; 32],
    /// Output index.
    pub vout: u32,
    /// Height of its block, 0 when it is in the mempool.
    pub height: u32,
    /// Value in sats.
    pub value: u64,
}

/// What [`Chain::mine_block`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinedBlock {
    /// Height of the new block (the new tip).
    pub height: u32,
    /// Its hash, internal byte order.
    pub hash: [u8; 32],
    /// Its transactions' txids, coinbase first, internal byte order.
    pub txids: Vec<[u8; 32]>,
    /// Every scripthash an output or a spent output of the block pays to, coinbase
    /// included, each once, in block order.
    pub touched: Vec<ScriptHash>,
}

/// An unspent confirmed output.
#[derive(Debug, Clone)]
struct Coin {
    value: u64,
    script_pubkey: ScriptBuf,
    height: u32,
    position: u32,
    coinbase: bool,
}

impl Coin {
    /// Index key of the coin within its scripthash: chain order.
    fn order(&self, vout: u32) -> (u32, u32, u32) {
        (self.height, self.position, vout)
    }
}

#[derive(Debug)]
struct ConfirmedTx {
    tx: Transaction,
    raw: Vec<u8>,
    height: u32,
    position: u32,
}

#[derive(Debug)]
struct MempoolEntry {
    tx: Transaction,
    raw: Vec<u8>,
    fee: u64,
    vsize: u64,
    /// The outputs its inputs spend, in input order.
    prevouts: Vec<TxOut>,
    has_unconfirmed_inputs: bool,
}

impl MempoolEntry {
    /// Whether an output or a spent output of the transaction pays to `sh`.
    fn touches(&self, sh: &ScriptHash) -> bool {
        self.prevouts
            .iter()
            .chain(&self.tx.output)
            .any(|out| indexed(&out.script_pubkey) && script_hash(out.script_pubkey.as_bytes()) == *sh)
    }
}

#[derive(Debug)]
struct StoredBlock {
    header: Header,
    txids: Vec<Txid>,
}

/// Scripthashes in first-seen order, each once.
#[derive(Debug, Default)]
struct Touched {
    seen: HashSet<ScriptHash>,
    list: Vec<ScriptHash>,
}

impl Touched {
    fn add(&mut self, sh: ScriptHash) {
        if self.seen.insert(sh) {
            self.list.push(sh);
        }
    }
}

/// A regtest block chain with a mempool, indexed by Electrum scripthash.
#[derive(Debug)]
pub struct Chain {
    key: TestKey,
    key_script: ScriptBuf,
    secp: Secp256k1<VerifyOnly>,
    blocks: Vec<StoredBlock>,
    /// Every confirmed transaction.
    txs: HashMap<Txid, ConfirmedTx>,
    /// Confirmed unspent outputs.
    coins: HashMap<OutPoint, Coin>,
    /// Confirmed spent outputs → spending txid and its height.
    spent: HashMap<OutPoint, (Txid, u32)>,
    /// Confirmed history per scripthash, in chain order.
    history: HashMap<ScriptHash, Vec<(Txid, u32)>>,
    /// Confirmed unspent outputs per scripthash, in chain order.
    unspent: HashMap<ScriptHash, BTreeMap<(u32, u32, u32), OutPoint>>,
    /// Mempool transactions in arrival order (parents before children).
    mempool_order: Vec<Txid>,
    mempool: HashMap<Txid, MempoolEntry>,
    /// Outputs (confirmed or not) spent by mempool transactions → spender.
    mempool_spends: HashMap<OutPoint, Txid>,
}

impl Chain {
    /// Builds the genesis block plus `blocks` mined blocks (the tip is at height `blocks`).
    ///
    /// Each `pay_to` entry (address, amount in sats) becomes one ordinary signed
    /// payment from the chain key, spending its mature coinbases (change back to the
    /// key, [`PAYMENT_FEE_RATE`] sat/vB fee). The chain is mined until enough
    /// coinbase value has matured — block 100 when the payments fit in the first
    /// 50 BTC — the payments are confirmed in the next block, and the rest of the
    /// blocks are mined on top.
    ///
    /// Addresses are regtest ones: bech32 `bcrt1…` (P2WPKH, P2WSH, P2TR) and base58
    /// P2PKH (`m…`/`n…`) or P2SH (`2…`).
    ///
    /// # Errors
    ///
    /// [`ChainError::InvalidAddress`], [`ChainError::WrongNetwork`],
    /// [`ChainError::UnsupportedAddress`], [`ChainError::ZeroAmount`] for a bad
    /// payment; [`ChainError::TooFewBlocks`] when `blocks` ends before the payments
    /// can confirm; [`ChainError::PaymentsTooLarge`] when no chain could fund them.
    pub fn new(blocks: u32, pay_to: &[(String, u64)]) -> Result<Chain, ChainError> {
        let mut payments = Vec::with_capacity(pay_to.len());
        for (address, amount) in pay_to {
            let script = address_script(address)?;
            if *amount == 0 {
                return Err(ChainError::ZeroAmount {
                    address: address.clone(),
                });
            }
            payments.push((script, *amount));
        }

        let mut chain = Chain::genesis();
        if payments.is_empty() {
            for _ in 0..blocks {
                chain.mine_block();
            }
            return Ok(chain);
        }

        let total = payments
            .iter()
            .try_fold(0u64, |sum, (_, amount)| sum.checked_add(*amount))
            .filter(|total| *total <= MAX_MONEY)
            .ok_or(ChainError::PaymentsTooLarge { total: u64::MAX })?;
        let first = first_funding_height(total).ok_or(ChainError::PaymentsTooLarge { total })?;
        if blocks < first {
            return Err(ChainError::TooFewBlocks {
                blocks,
                needed: first,
            });
        }
        while chain.height() + 1 < first {
            chain.mine_block();
        }
        // Fees may need one more matured coinbase than the bare amounts.
        loop {
            match chain.send_payments(&payments) {
                Ok(()) => break,
                Err(ChainError::InsufficientFunds { .. }) => {
                    chain.clear_mempool();
                    if chain.height() + 1 >= blocks {
                        return Err(ChainError::TooFewBlocks {
                            blocks,
                            needed: chain.height() + 2,
                        });
                    }
                    chain.mine_block();
                }
                Err(other) => return Err(other),
            }
        }
        while chain.height() < blocks {
            chain.mine_block();
        }
        Ok(chain)
    }

    /// Height and hash (internal byte order) of the tip.
    pub fn tip(&self) -> (u32, [u8; 32]) {
        let block = self.blocks.last().expect("the chain holds genesis");
        (self.height(), block.header.block_hash().to_byte_array())
    }

    /// The 80-byte serialised header at `height`.
    pub fn header(&self, height: u32) -> Option<[u8; 80]> {
        let header = &self.blocks.get(height as usize)?.header;
        Some(
            serialize(header)
                .try_into()
                .expect("a header serialises to 80 bytes"),
        )
    }

    /// Txids (internal byte order) of the block at `height`, coinbase first.
    pub fn block_txids(&self, height: u32) -> Option<Vec<[u8; 32]>> {
        let block = self.blocks.get(height as usize)?;
        Some(block.txids.iter().map(|t| t.to_byte_array()).collect())
    }

    /// Merkle branch of the transaction at `position` in block `height`: the sibling
    /// hashes (internal byte order) from the leaf up, as `blockchain.transaction.get_merkle`
    /// returns them (reversed to hex).
    pub fn merkle_branch(&self, height: u32, position: usize) -> Option<Vec<[u8; 32]>> {
        let block = self.blocks.get(height as usize)?;
        if position >= block.txids.len() {
            return None;
        }
        let mut level: Vec<[u8; 32]> = block.txids.iter().map(|t| t.to_byte_array()).collect();
        let mut index = position;
        let mut branch = Vec::new();
        while level.len() > 1 {
            if level.len() % 2 == 1 {
                level.push(*level.last().expect("level is not empty"));
            }
            branch.push(level[index ^ 1]);
            level = level
                .chunks(2)
                .map(|pair| {
                    let mut engine = sha256d::Hash::engine();
                    engine.input(&pair[0]);
                    engine.input(&pair[1]);
                    sha256d::Hash::from_engine(engine).to_byte_array()
                })
                .collect();
            index /= 2;
        }
        Some(branch)
    }

    /// Confirmed history of `sh`: every transaction with an output to it or spending
    /// one of its outputs, as `(txid, height)` in chain order (height, then position).
    pub fn history(&self, sh: &ScriptHash) -> Vec<([u8; 32], u32)> {
        self.history.get(sh).map_or_else(Vec::new, |entries| {
            entries
                .iter()
                .map(|(txid, height)| (txid.to_byte_array(), *height))
                .collect()
        })
    }

    /// Mempool transactions touching `sh`, in arrival order (a parent always comes
    /// before its children).
    pub fn mempool_entries(&self, sh: &ScriptHash) -> Vec<MempoolTx> {
        self.mempool_order
            .iter()
            .filter_map(|txid| {
                let entry = &self.mempool[txid];
                entry.touches(sh).then(|| MempoolTx {
                    txid: txid.to_byte_array(),
                    fee: entry.fee,
                    has_unconfirmed_inputs: entry.has_unconfirmed_inputs,
                })
            })
            .collect()
    }

    /// Unspent outputs paying to `sh`: confirmed ones in chain order, then mempool
    /// ones (height 0) in arrival order, leaving out those a mempool transaction spends.
    pub fn utxos(&self, sh: &ScriptHash) -> Vec<Utxo> {
        let mut utxos = Vec::new();
        for outpoint in self.unspent.get(sh).into_iter().flat_map(BTreeMap::values) {
            if self.mempool_spends.contains_key(outpoint) {
                continue;
            }
            let coin = &self.coins[outpoint];
            utxos.push(Utxo {
                txid: outpoint.txid.to_byte_array(),
                vout: outpoint.vout,
                height: coin.height,
                value: coin.value,
            });
        }
        for txid in &self.mempool_order {
            for (vout, out) in self.mempool[txid].tx.output.iter().enumerate() {
                let outpoint = OutPoint::new(*txid, vout as u32);
                if indexed(&out.script_pubkey)
                    && script_hash(out.script_pubkey.as_bytes()) == *sh
                    && !self.mempool_spends.contains_key(&outpoint)
                {
                    utxos.push(Utxo {
                        txid: txid.to_byte_array(),
                        vout: outpoint.vout,
                        height: 0,
                        value: out.value.to_sat(),
                    });
                }
            }
        }
        utxos
    }

    /// Balance of `sh` as `blockchain.scripthash.get_balance` reports it: the value
    /// of its confirmed unspent outputs (including those a mempool transaction
    /// spends), and the mempool's net effect on it (outputs received minus outputs
    /// spent by mempool transactions).
    pub fn balance(&self, sh: &ScriptHash) -> (u64, i64) {
        let confirmed = self
            .unspent
            .get(sh)
            .into_iter()
            .flat_map(BTreeMap::values)
            .map(|outpoint| self.coins[outpoint].value)
            .sum();
        let mut unconfirmed: i64 = 0;
        for entry in self.mempool.values() {
            for out in &entry.tx.output {
                if indexed(&out.script_pubkey) && script_hash(out.script_pubkey.as_bytes()) == *sh {
                    unconfirmed += sats_i64(out.value);
                }
            }
            for prevout in &entry.prevouts {
                if script_hash(prevout.script_pubkey.as_bytes()) == *sh {
                    unconfirmed -= sats_i64(prevout.value);
                }
            }
        }
        (confirmed, unconfirmed)
    }

    /// The serialised transaction `txid` (internal byte order), confirmed or in the mempool.
    pub fn raw_transaction(&self, txid: &[u8; 32]) -> Option<Vec<u8>> {
        let txid = Txid::from_byte_array(*txid);
        self.txs
            .get(&txid)
            .map(|tx| tx.raw.clone())
            .or_else(|| self.mempool.get(&txid).map(|entry| entry.raw.clone()))
    }

    /// Height of the block confirming `txid`; `None` for mempool and unknown transactions.
    pub fn tx_height(&self, txid: &[u8; 32]) -> Option<u32> {
        self.txs.get(&Txid::from_byte_array(*txid)).map(|tx| tx.height)
    }

    /// Height and position in its block of the confirmed transaction `txid`.
    pub fn tx_position(&self, txid: &[u8; 32]) -> Option<(u32, u32)> {
        self.txs
            .get(&Txid::from_byte_array(*txid))
            .map(|tx| (tx.height, tx.position))
    }

    /// Whether `txid` is waiting in the mempool.
    pub fn in_mempool(&self, txid: &[u8; 32]) -> bool {
        self.mempool.contains_key(&Txid::from_byte_array(*txid))
    }

    /// Number of transactions in the mempool.
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// The regtest address receiving the coinbases.
    pub fn mining_address(&self) -> String {
        self.key.address()
    }

    /// Validates `raw` and adds it to the mempool.
    ///
    /// Checks: it decodes as exactly one transaction (`bitcoin::consensus::deserialize`),
    /// is not a coinbase, has inputs and outputs, is not already known, values are in
    /// range; every input spends an output that exists in the chain or the mempool and
    /// that nothing (confirmed, in the mempool, or an earlier input) spends yet; coinbase
    /// outputs are mature for the next block; the inputs hold at least the outputs'
    /// value, and the difference pays at least [`MIN_RELAY_FEE_RATE`] sat/vB; an input
    /// spending a P2WPKH output carries a valid BIP143 signature by that output's key.
    /// Other script types are not executed, and lock times and standardness are not
    /// checked. A refused transaction leaves the mempool unchanged; its error's
    /// [`ChainError::rejection`] words it as Bitcoin Core would.
    ///
    /// Returns the txid (internal byte order) and the scripthashes it touches: those
    /// of its outputs, then those of the outputs it spends, each once.
    pub fn accept_transaction(&mut self, raw: &[u8]) -> Result<([u8; 32], Vec<ScriptHash>), ChainError> {
        let tx: Transaction = deserialize(raw).map_err(|error| ChainError::Malformed(error.to_string()))?;
        if tx.is_coinbase() {
            return Err(ChainError::Coinbase);
        }
        if tx.input.is_empty() {
            return Err(ChainError::NoInputs);
        }
        if tx.output.is_empty() {
            return Err(ChainError::NoOutputs);
        }
        let txid = tx.compute_txid();
        if let Some(output) = tx.output.iter().position(|out| out.value.to_sat() > MAX_MONEY) {
            return Err(ChainError::ValueOutOfRange { output: Some(output) });
        }
        let outputs_total = tx
            .output
            .iter()
            .try_fold(0u64, |total, out| total.checked_add(out.value.to_sat()))
            .filter(|total| *total <= MAX_MONEY)
            .ok_or(ChainError::ValueOutOfRange { output: None })?;
        if self.txs.contains_key(&txid) || self.mempool.contains_key(&txid) {
            return Err(ChainError::AlreadyKnown {
                txid,
                in_mempool: self.mempool.contains_key(&txid),
            });
        }

        let next_height = self.height() + 1;
        let mut seen = HashSet::with_capacity(tx.input.len());
        let mut prevouts = Vec::with_capacity(tx.input.len());
        let mut inputs_total = 0u64;
        let mut has_unconfirmed_inputs = false;
        for (input, txin) in tx.input.iter().enumerate() {
            let outpoint = txin.previous_output;
            if !seen.insert(outpoint) {
                return Err(ChainError::DuplicateInput { input, outpoint });
            }
            let (prevout, confirmed) = self.spendable(input, outpoint, next_height)?;
            has_unconfirmed_inputs |= !confirmed;
            inputs_total += prevout.value.to_sat();
            prevouts.push(prevout);
        }
        if outputs_total > inputs_total {
            return Err(ChainError::OutputsExceedInputs {
                inputs: inputs_total,
                outputs: outputs_total,
            });
        }
        let fee = inputs_total - outputs_total;
        let vsize = tx.vsize() as u64;
        let minimum = vsize * MIN_RELAY_FEE_RATE;
        if fee < minimum {
            return Err(ChainError::FeeBelowMinimum { fee, minimum, vsize });
        }
        self.verify_p2wpkh_inputs(&tx, &prevouts)?;

        let mut touched = Touched::default();
        for out in tx.output.iter().chain(&prevouts) {
            if indexed(&out.script_pubkey) {
                touched.add(script_hash(out.script_pubkey.as_bytes()));
            }
        }
        for txin in &tx.input {
            self.mempool_spends.insert(txin.previous_output, txid);
        }
        self.mempool_order.push(txid);
        self.mempool.insert(
            txid,
            MempoolEntry {
                vsize: tx.vsize() as u64,
                raw: raw.to_vec(),
                tx,
                fee: inputs_total - outputs_total,
                prevouts,
                has_unconfirmed_inputs,
            },
        );
        Ok((txid.to_byte_array(), touched.list))
    }

    /// Removes a mempool transaction that no other mempool transaction
    /// spends (a trial's, in reverse order of acceptance): its entry, its
    /// spends and its place in the arrival order.
    fn evict(&mut self, txid: &Txid) {
        if let Some(entry) = self.mempool.remove(txid) {
            for txin in &entry.tx.input {
                self.mempool_spends.remove(&txin.previous_output);
            }
            self.mempool_order.retain(|other| other != txid);
        }
    }

    /// `blockchain.transaction.testmempoolaccept`: whether each of `raws`
    /// would be accepted, in order, each seeing the ones before it (a
    /// child may follow its parents). The mempool is left as it was.
    /// Per transaction: its txid and wtxid (display hex; empty when it does
    /// not parse) and `Ok` or the error.
    pub fn test_accept(&mut self, raws: &[Vec<u8>]) -> Vec<(String, String, Result<(), ChainError>)> {
        let mut accepted = Vec::new();
        let mut results = Vec::with_capacity(raws.len());
        for raw in raws {
            let ids = deserialize::<Transaction>(raw)
                .map(|tx| (tx.compute_txid().to_string(), tx.compute_wtxid().to_string()))
                .unwrap_or_default();
            let result = self
                .accept_transaction(raw)
                .map(|(txid, _)| accepted.push(Txid::from_byte_array(txid)));
            results.push((ids.0, ids.1, result));
        }
        for txid in accepted.iter().rev() {
            self.evict(txid);
        }
        results
    }

    /// `blockchain.transaction.broadcast_package`: a child and its parents
    /// (the child last, spending an output of each parent; no parent
    /// spending another), accepted together or not at all. Returns the
    /// scripthashes touched, or, when the package's shape is wrong, its
    /// error; or the failures (txid, Bitcoin Core's reason) of the
    /// transactions refused, the mempool left as it was.
    ///
    /// # Errors
    /// The package's shape, as text.
    #[allow(clippy::type_complexity)]
    pub fn accept_package(
        &mut self,
        raws: &[Vec<u8>],
    ) -> Result<Result<Vec<ScriptHash>, Vec<(String, String)>>, String> {
        let txs: Vec<Transaction> = raws
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                deserialize(raw).map_err(|error| format!("transaction {index} does not parse: {error}"))
            })
            .collect::<Result<_, _>>()?;
        let Some((child, parents)) = txs.split_last() else {
            return Err("package-not-sorted: an empty package".to_owned());
        };
        if parents.is_empty() {
            return Err("package-not-child-with-parents: a package needs a child and its parents".to_owned());
        }
        let parent_ids: Vec<Txid> = parents.iter().map(Transaction::compute_txid).collect();
        for (index, parent) in parents.iter().enumerate() {
            if parent
                .input
                .iter()
                .any(|input| parent_ids.contains(&input.previous_output.txid))
            {
                return Err(format!(
                    "package-not-child-with-unconfirmed-parents: parent {index} spends another parent"
                ));
            }
            if !child
                .input
                .iter()
                .any(|input| input.previous_output.txid == parent_ids[index])
            {
                return Err(format!(
                    "package-not-child-with-parents: the child does not spend parent {index}"
                ));
            }
        }
        let mut accepted = Vec::new();
        let mut touched = Vec::new();
        let mut failures = Vec::new();
        for (raw, tx) in raws.iter().zip(&txs) {
            match self.accept_transaction(raw) {
                Ok((txid, scripts)) => {
                    accepted.push(Txid::from_byte_array(txid));
                    touched.extend(scripts);
                }
                Err(error) => failures.push((tx.compute_txid().to_string(), error.rejection())),
            }
        }
        if failures.is_empty() {
            return Ok(Ok(touched));
        }
        for txid in accepted.iter().rev() {
            self.evict(txid);
        }
        Ok(Err(failures))
    }

    /// The confirmed state of output `vout` of transaction `txid` (internal
    /// byte order): `None` when no confirmed transaction has that output;
    /// else its block height and, once a confirmed transaction spent it,
    /// the spender's txid and height.
    #[allow(clippy::type_complexity)]
    pub fn outpoint_confirmed(&self, txid: [u8; 32], vout: u32) -> Option<(u32, Option<([u8; 32], u32)>)> {
        let txid = Txid::from_byte_array(txid);
        let confirmed = self.txs.get(&txid)?;
        if vout as usize >= confirmed.tx.output.len() {
            return None;
        }
        let spender = self
            .spent
            .get(&OutPoint::new(txid, vout))
            .map(|(spender, height)| (spender.to_byte_array(), *height));
        Some((confirmed.height, spender))
    }

    /// The mempool's view of output `vout` of `txid`: whether a mempool
    /// transaction created it (and whether that one has unconfirmed
    /// inputs), and the mempool transaction spending it (and whether that
    /// one has unconfirmed inputs).
    #[allow(clippy::type_complexity)]
    pub fn outpoint_in_mempool(&self, txid: [u8; 32], vout: u32) -> (Option<bool>, Option<([u8; 32], bool)>) {
        let txid = Txid::from_byte_array(txid);
        let funder = self
            .mempool
            .get(&txid)
            .filter(|entry| (vout as usize) < entry.tx.output.len())
            .map(|entry| entry.has_unconfirmed_inputs);
        let spender = self
            .mempool_spends
            .get(&OutPoint::new(txid, vout))
            .map(|spender| {
                let unconfirmed = self
                    .mempool
                    .get(spender)
                    .is_some_and(|entry| entry.has_unconfirmed_inputs);
                (spender.to_byte_array(), unconfirmed)
            });
        (funder, spender)
    }

    /// Every outpoint the mempool's transactions create or spend (txid in
    /// internal byte order, index): what mining them touches.
    pub fn mempool_outpoints(&self) -> Vec<([u8; 32], u32)> {
        self.mempool
            .values()
            .flat_map(|entry| outpoints_of(&entry.tx))
            .collect()
    }

    /// `mempool.recent`: the last `count` transactions to enter the
    /// mempool, newest first: txid (display hex), fee (sats), vsize.
    pub fn recent_mempool(&self, count: usize) -> Vec<(String, u64, u64)> {
        self.mempool_order
            .iter()
            .rev()
            .take(count)
            .filter_map(|txid| {
                self.mempool
                    .get(txid)
                    .map(|entry| (txid.to_string(), entry.fee, entry.vsize))
            })
            .collect()
    }

    /// Mines one block holding the whole mempool in arrival order, after a coinbase
    /// paying subsidy plus fees to the chain key, and empties the mempool.
    pub fn mine_block(&mut self) -> MinedBlock {
        let height = self.height() + 1;
        let entries: Vec<MempoolEntry> = std::mem::take(&mut self.mempool_order)
            .iter()
            .map(|txid| {
                self.mempool
                    .remove(txid)
                    .expect("ordered txids are in the mempool")
            })
            .collect();
        self.clear_mempool();

        let fees: u64 = entries.iter().map(|entry| entry.fee).sum();
        let with_witness = entries
            .iter()
            .any(|entry| entry.tx.input.iter().any(|txin| !txin.witness.is_empty()));
        let coinbase = Transaction {
            version: Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                // BIP34 height first; the extra OP_0 keeps the script at least two
                // bytes long for heights 1 to 16, which push_int writes as one opcode.
                script_sig: Builder::new()
                    .push_int(i64::from(height))
                    .push_opcode(OP_0)
                    .into_script(),
                sequence: Sequence::MAX,
                witness: if with_witness {
                    Witness::from_slice(&[[0u8; 32]])
                } else {
                    Witness::new()
                },
            }],
            output: vec![TxOut {
                value: Amount::from_sat(subsidy(height) + fees),
                script_pubkey: self.key_script.clone(),
            }],
        };
        let previous = &self.blocks.last().expect("the chain holds genesis").header;
        let mut block = Block {
            header: Header {
                version: BlockVersion::from_consensus(0x2000_0000),
                prev_blockhash: previous.block_hash(),
                merkle_root: TxMerkleNode::all_zeros(),
                time: previous.time + BLOCK_SPACING,
                bits: CompactTarget::from_consensus(REGTEST_BITS),
                nonce: 0,
            },
            txdata: std::iter::once(coinbase)
                .chain(entries.into_iter().map(|entry| entry.tx))
                .collect(),
        };
        if with_witness {
            // The witness root hashes the coinbase as zeros, so it does not depend
            // on the commitment output added here.
            let witness_root = block.witness_root().expect("the block has transactions");
            let commitment = Block::compute_witness_commitment(&witness_root, &[0u8; 32]);
            let mut data = WITNESS_COMMITMENT_HEADER.to_vec();
            data.extend_from_slice(commitment.as_byte_array());
            let data = PushBytesBuf::try_from(data).expect("36 bytes fit a push");
            block.txdata[0].output.push(TxOut {
                value: Amount::ZERO,
                script_pubkey: Builder::new()
                    .push_opcode(OP_RETURN)
                    .push_slice(data)
                    .into_script(),
            });
        }
        block.header.merkle_root = block.compute_merkle_root().expect("the block has transactions");
        let target = block.header.target();
        while !target.is_met_by(block.header.block_hash()) {
            block.header.nonce += 1;
        }
        self.connect(block)
    }

    /// `mempool.get_fee_histogram`: `(fee rate in sat/vB, vsize)` pairs, highest rate
    /// first, built as ElectrumX does (rates rounded down to 0.1 sat/vB, bins of at
    /// least 100,000 vB growing by 10 % each), except that the last, partly filled
    /// bin is kept so that a small regtest mempool still shows.
    pub fn fee_histogram(&self) -> Vec<(f64, u64)> {
        let mut by_rate: BTreeMap<u64, u64> = BTreeMap::new();
        for entry in self.mempool.values() {
            let tenths = entry.fee * 10 / entry.vsize.max(1);
            *by_rate.entry(tenths).or_default() += entry.vsize;
        }
        let mut compact = Vec::new();
        let mut bin_size = HISTOGRAM_BIN_SIZE;
        let mut cumulative = 0u64;
        let mut previous = None;
        for (&tenths, &vsize) in by_rate.iter().rev() {
            // A big lump at one rate closes the bin before it.
            if let Some(prev) = previous.filter(|_| vsize as f64 > 2.0 * bin_size && cumulative > 0) {
                compact.push((prev as f64 / 10.0, cumulative));
                cumulative = 0;
                bin_size *= 1.1;
            }
            cumulative += vsize;
            if cumulative as f64 > bin_size {
                compact.push((tenths as f64 / 10.0, cumulative));
                cumulative = 0;
                bin_size *= 1.1;
            }
            previous = Some(tenths);
        }
        if let Some(last) = previous.filter(|_| cumulative > 0) {
            compact.push((last as f64 / 10.0, cumulative));
        }
        compact
    }

    /// `blockchain.relayfee`: 0.00001 BTC/kvB (1 sat/vB).
    pub fn relay_fee(&self) -> f64 {
        RELAY_FEE_BTC_PER_KVB
    }

    /// `blockchain.estimatefee`: a deterministic stand-in for bitcoind's estimator,
    /// in BTC/kvB. For a target of `blocks` confirmations it answers
    /// `20 / blocks` sat/vB, never less than the relay fee (1 block: 20 sat/vB,
    /// 2: 10, 5: 4, 10: 2, 20 and more: 1), so a wallet's fee slider has a range
    /// to show. `None` (Electrum's −1) for a target of 0 or above 1008, which
    /// bitcoind refuses too.
    pub fn estimate_fee(&self, blocks: u32) -> Option<f64> {
        if blocks == 0 || blocks > MAX_ESTIMATE_TARGET {
            return None;
        }
        let sat_per_vb = (FEE_ESTIMATE_BASE / f64::from(blocks)).max(1.0);
        // sat/vB → BTC/kvB, rounded to whole sats per kvB.
        Some((sat_per_vb * 1_000.0).round() / COIN as f64)
    }

    /// A chain holding only the regtest genesis block.
    fn genesis() -> Chain {
        let key = TestKey::from_seed(CHAIN_KEY_SEED);
        let key_script = ScriptBuf::from_bytes(key.script_pubkey());
        let mut chain = Chain {
            key,
            key_script,
            secp: Secp256k1::verification_only(),
            blocks: Vec::new(),
            txs: HashMap::new(),
            coins: HashMap::new(),
            spent: HashMap::new(),
            history: HashMap::new(),
            unspent: HashMap::new(),
            mempool_order: Vec::new(),
            mempool: HashMap::new(),
            mempool_spends: HashMap::new(),
        };
        chain.connect(genesis_block(Network::Regtest));
        chain
    }

    fn height(&self) -> u32 {
        self.blocks.len() as u32 - 1
    }

    fn clear_mempool(&mut self) {
        self.mempool_order.clear();
        self.mempool.clear();
        self.mempool_spends.clear();
    }

    /// Appends `block` (already valid) and updates the indexes. The genesis
    /// coinbase's output is not spendable (as in bitcoind) and is not indexed.
    fn connect(&mut self, block: Block) -> MinedBlock {
        let height = self.blocks.len() as u32;
        let mut touched = Touched::default();
        let mut txids = Vec::with_capacity(block.txdata.len());
        for (position, tx) in block.txdata.into_iter().enumerate() {
            let position = position as u32;
            let txid = tx.compute_txid();
            let coinbase = tx.is_coinbase();
            let mut scripts = Touched::default();
            if !coinbase {
                for txin in &tx.input {
                    let outpoint = txin.previous_output;
                    let coin = self
                        .coins
                        .remove(&outpoint)
                        .expect("block transactions spend existing coins");
                    let sh = script_hash(coin.script_pubkey.as_bytes());
                    if let Some(index) = self.unspent.get_mut(&sh) {
                        index.remove(&coin.order(outpoint.vout));
                    }
                    self.spent.insert(outpoint, (txid, height));
                    scripts.add(sh);
                }
            }
            if height > 0 {
                for (vout, out) in tx.output.iter().enumerate() {
                    if !indexed(&out.script_pubkey) {
                        continue;
                    }
                    let outpoint = OutPoint::new(txid, vout as u32);
                    let coin = Coin {
                        value: out.value.to_sat(),
                        script_pubkey: out.script_pubkey.clone(),
                        height,
                        position,
                        coinbase,
                    };
                    let sh = script_hash(out.script_pubkey.as_bytes());
                    self.unspent
                        .entry(sh)
                        .or_default()
                        .insert(coin.order(outpoint.vout), outpoint);
                    self.coins.insert(outpoint, coin);
                    scripts.add(sh);
                }
            }
            for sh in scripts.list {
                self.history.entry(sh).or_default().push((txid, height));
                touched.add(sh);
            }
            txids.push(txid);
            self.txs.insert(
                txid,
                ConfirmedTx {
                    raw: serialize(&tx),
                    tx,
                    height,
                    position,
                },
            );
        }
        let hash = block.header.block_hash().to_byte_array();
        let mined = MinedBlock {
            height,
            hash,
            txids: txids.iter().map(|t| t.to_byte_array()).collect(),
            touched: touched.list,
        };
        self.blocks.push(StoredBlock {
            header: block.header,
            txids,
        });
        mined
    }

    /// The output `outpoint` names, if input `input` of a transaction for block
    /// `next_height` may spend it, and whether it is confirmed.
    fn spendable(
        &self,
        input: usize,
        outpoint: OutPoint,
        next_height: u32,
    ) -> Result<(TxOut, bool), ChainError> {
        if let Some(spender) = self.mempool_spends.get(&outpoint) {
            return Err(ChainError::AlreadySpent {
                input,
                outpoint,
                spender: *spender,
                spent_at: None,
            });
        }
        if let Some(coin) = self.coins.get(&outpoint) {
            let mature_at = coin.height + COINBASE_MATURITY;
            if coin.coinbase && next_height < mature_at {
                return Err(ChainError::ImmatureCoinbase {
                    input,
                    outpoint,
                    coinbase_height: coin.height,
                    mature_at,
                    next_height,
                });
            }
            let prevout = TxOut {
                value: Amount::from_sat(coin.value),
                script_pubkey: coin.script_pubkey.clone(),
            };
            return Ok((prevout, true));
        }
        if let Some(out) = self
            .mempool
            .get(&outpoint.txid)
            .and_then(|entry| entry.tx.output.get(outpoint.vout as usize))
            .filter(|out| indexed(&out.script_pubkey))
        {
            return Ok((out.clone(), false));
        }
        if let Some(&(spender, height)) = self.spent.get(&outpoint) {
            return Err(ChainError::AlreadySpent {
                input,
                outpoint,
                spender,
                spent_at: Some(height),
            });
        }
        Err(ChainError::MissingInput { input, outpoint })
    }

    /// Checks the BIP143 signature of every input spending a P2WPKH output.
    fn verify_p2wpkh_inputs(&self, tx: &Transaction, prevouts: &[TxOut]) -> Result<(), ChainError> {
        let mut cache = SighashCache::new(tx);
        for (input, (txin, prevout)) in tx.input.iter().zip(prevouts).enumerate() {
            if !prevout.script_pubkey.is_p2wpkh() {
                continue;
            }
            // Bitcoin Core names the script error the input fails with; a
            // failure that consensus rules alone would not make is
            // "non-mandatory".
            let bad = |core_reason: &'static str, reason: &str| ChainError::BadSignature {
                input,
                reason: reason.to_owned(),
                core_reason,
            };
            if !txin.script_sig.is_empty() {
                return Err(bad(
                    "mandatory-script-verify-flag-failed (Witness requires empty scriptSig)",
                    "the scriptSig must be empty",
                ));
            }
            let (Some(sig), Some(pubkey), None) =
                (txin.witness.nth(0), txin.witness.nth(1), txin.witness.nth(2))
            else {
                return Err(bad(
                    "mandatory-script-verify-flag-failed (Witness program hash mismatch)",
                    "the witness must be exactly <signature> <public key>",
                ));
            };
            let key_hash = hash160::Hash::hash(pubkey).to_byte_array();
            if prevout.script_pubkey.as_bytes()[2..] != key_hash {
                return Err(bad(
                    "mandatory-script-verify-flag-failed (Script failed an OP_EQUALVERIFY operation)",
                    "the public key does not hash to the spent output's key hash",
                ));
            }
            let pubkey = CompressedPublicKey::from_slice(pubkey).map_err(|_| match pubkey.len() {
                65 => bad(
                    "non-mandatory-script-verify-flag (Using non-compressed keys in segwit)",
                    "the public key is not compressed",
                ),
                _ => bad(
                    "mandatory-script-verify-flag-failed (Public key is neither compressed or uncompressed)",
                    "the public key is not a compressed secp256k1 key",
                ),
            })?;
            let signature = ecdsa::Signature::from_slice(sig).map_err(|error| {
                bad(
                    "mandatory-script-verify-flag-failed (Non-canonical DER signature)",
                    &format!("the signature does not parse ({error})"),
                )
            })?;
            let sighash = cache
                .p2wpkh_signature_hash(
                    input,
                    &prevout.script_pubkey,
                    prevout.value,
                    signature.sighash_type,
                )
                .map_err(|error| {
                    bad(
                        "mandatory-script-verify-flag-failed (Signature hash type missing or not understood)",
                        &error.to_string(),
                    )
                })?;
            let mut inner = signature.signature;
            // Consensus accepts high-S signatures; libsecp256k1 verifies only low-S ones.
            inner.normalize_s();
            self.secp
                .verify_ecdsa(&Message::from_digest(sighash.to_byte_array()), &inner, &pubkey.0)
                .map_err(|_| {
                    bad(
                        "mandatory-script-verify-flag-failed \
                         (Signature must be zero for failed CHECK(MULTI)SIG operation)",
                        "the signature does not verify",
                    )
                })?;
        }
        Ok(())
    }

    /// Signs and submits one payment per entry from the chain key's coins.
    fn send_payments(&mut self, payments: &[(ScriptBuf, u64)]) -> Result<(), ChainError> {
        for (script, amount) in payments {
            let raw = self.build_payment(script, *amount)?;
            self.accept_transaction(&raw)?;
        }
        Ok(())
    }

    /// A signed transaction paying `amount` to `script` from the chain key's coins
    /// spendable in the next block (its mempool change first, then its oldest mature
    /// coinbases), with change back to the key.
    fn build_payment(&self, script: &ScriptBuf, amount: u64) -> Result<Vec<u8>, ChainError> {
        let key_sh = script_hash(self.key_script.as_bytes());
        let next_height = self.height() + 1;
        let spendable = self.utxos(&key_sh).into_iter().filter(|utxo| {
            let outpoint = OutPoint::new(Txid::from_byte_array(utxo.txid), utxo.vout);
            self.coins
                .get(&outpoint)
                .is_none_or(|coin| !coin.coinbase || coin.height + COINBASE_MATURITY <= next_height)
        });
        let (mut unconfirmed, confirmed): (Vec<Utxo>, Vec<Utxo>) =
            spendable.partition(|utxo| utxo.height == 0);
        unconfirmed.extend(confirmed);

        let mut inputs = Vec::new();
        let mut available = 0u64;
        let mut needed = amount;
        for utxo in unconfirmed {
            inputs.push((utxo.txid, utxo.vout, utxo.value));
            available += utxo.value;
            if available < amount {
                continue;
            }
            let mut outputs = vec![
                (script.to_bytes(), amount),
                (self.key_script.to_bytes(), available - amount),
            ];
            let draft = self.key.sign_p2wpkh_spend(&inputs, &outputs);
            let vsize = deserialize::<Transaction>(&draft)
                .expect("own transaction decodes")
                .vsize() as u64;
            let fee = vsize * PAYMENT_FEE_RATE;
            needed = amount + fee;
            if available < needed {
                continue;
            }
            let change = available - needed;
            if change < MIN_CHANGE {
                outputs.pop();
            } else {
                outputs[1].1 = change;
            }
            return Ok(self.key.sign_p2wpkh_spend(&inputs, &outputs));
        }
        Err(ChainError::InsufficientFunds { available, needed })
    }
}

/// The outpoints a transaction creates and spends (txid in internal byte
/// order, index): what accepting or mining it touches. Nothing for bytes
/// that are not a transaction.
pub fn tx_outpoints(raw: &[u8]) -> Vec<([u8; 32], u32)> {
    deserialize::<Transaction>(raw)
        .map(|tx| outpoints_of(&tx))
        .unwrap_or_default()
}

fn outpoints_of(tx: &Transaction) -> Vec<([u8; 32], u32)> {
    let txid = tx.compute_txid().to_byte_array();
    let spent = tx
        .input
        .iter()
        .filter(|input| !input.previous_output.is_null())
        .map(|input| {
            (
                input.previous_output.txid.to_byte_array(),
                input.previous_output.vout,
            )
        });
    let created = (0..tx.output.len() as u32).map(move |vout| (txid, vout));
    spent.chain(created).collect()
}

/// Electrum scripthash of `script_pubkey`.
pub fn script_hash(script_pubkey: &[u8]) -> ScriptHash {
    sha256::Hash::hash(script_pubkey).to_byte_array()
}

/// The output script of a regtest address: bech32 `bcrt1…` (P2WPKH, P2WSH, P2TR)
/// or base58 P2PKH (`m…`/`n…`) and P2SH (`2…`).
///
/// # Errors
///
/// [`ChainError::InvalidAddress`] when it does not parse, [`ChainError::WrongNetwork`]
/// for another network's address, [`ChainError::UnsupportedAddress`] for other types.
pub fn address_script(address: &str) -> Result<ScriptBuf, ChainError> {
    let unchecked: Address<NetworkUnchecked> =
        address
            .parse()
            .map_err(|error: bitcoin::address::ParseError| ChainError::InvalidAddress {
                address: address.to_owned(),
                reason: error.to_string(),
            })?;
    if !unchecked.is_valid_for_network(Network::Regtest) {
        let network = if unchecked.is_valid_for_network(Network::Bitcoin) {
            "mainnet"
        } else {
            "testnet/signet"
        };
        return Err(ChainError::WrongNetwork {
            address: address.to_owned(),
            network,
        });
    }
    let checked = unchecked.assume_checked();
    match checked.address_type() {
        Some(
            AddressType::P2pkh
            | AddressType::P2sh
            | AddressType::P2wpkh
            | AddressType::P2wsh
            | AddressType::P2tr,
        ) => Ok(checked.script_pubkey()),
        _ => Err(ChainError::UnsupportedAddress {
            address: address.to_owned(),
        }),
    }
}

/// Block subsidy at `height`: 50 BTC halved every [`HALVING_INTERVAL`] blocks.
pub fn subsidy(height: u32) -> u64 {
    let halvings = height / HALVING_INTERVAL;
    if halvings >= 64 {
        0
    } else {
        INITIAL_SUBSIDY >> halvings
    }
}

/// Smallest height whose block can spend coinbases worth at least `total`.
fn first_funding_height(total: u64) -> Option<u32> {
    let mut matured = 0u64;
    let mut coinbase_height = 1u32;
    loop {
        let value = subsidy(coinbase_height);
        if value == 0 {
            return None;
        }
        matured += value;
        if matured >= total {
            return Some(coinbase_height + COINBASE_MATURITY);
        }
        coinbase_height += 1;
    }
}

/// Whether an output enters the indexes and the coin set: every output except the
/// provably unspendable `OP_RETURN` ones (as ElectrumX and bitcoind skip them).
fn indexed(script: &ScriptBuf) -> bool {
    !script.is_op_return()
}

fn sats_i64(amount: Amount) -> i64 {
    i64::try_from(amount.to_sat()).expect("amounts are below 21 million BTC")
}

#[cfg(test)]
mod tests {
    use bitcoin::opcodes::{Class, ClassifyContext};
    use bitcoin::script::Instruction;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use bitcoin::{KnownHrp, NetworkKind, Target, XOnlyPublicKey};

    use super::*;

    const BTC: u64 = COIN;

    fn key(n: u8) -> TestKey {
        TestKey::from_seed([n; 32])
    }

    fn chain_key() -> TestKey {
        TestKey::from_seed(CHAIN_KEY_SEED)
    }

    fn header_at(chain: &Chain, height: u32) -> Header {
        deserialize(&chain.header(height).expect("header exists")).expect("header decodes")
    }

    fn tx(chain: &Chain, txid: &[u8; 32]) -> Transaction {
        deserialize(&chain.raw_transaction(txid).expect("transaction exists")).expect("decodes")
    }

    fn block_at(chain: &Chain, height: u32) -> Block {
        Block {
            header: header_at(chain, height),
            txdata: chain
                .block_txids(height)
                .expect("block exists")
                .iter()
                .map(|txid| tx(chain, txid))
                .collect(),
        }
    }

    /// The single output of `txid` paying to `script`, as (vout, value).
    fn output_to(chain: &Chain, txid: &[u8; 32], script: &[u8]) -> (u32, u64) {
        let outputs: Vec<(u32, u64)> = tx(chain, txid)
            .output
            .iter()
            .enumerate()
            .filter(|(_, out)| out.script_pubkey.as_bytes() == script)
            .map(|(vout, out)| (vout as u32, out.value.to_sat()))
            .collect();
        assert_eq!(outputs.len(), 1, "one output to the script");
        outputs[0]
    }

    fn bip34_height(coinbase: &Transaction) -> i64 {
        match coinbase.input[0].script_sig.instructions_minimal().next() {
            Some(Ok(Instruction::Op(op))) => match op.classify(ClassifyContext::Legacy) {
                Class::PushNum(n) => i64::from(n),
                other => panic!("coinbase starts with {other:?}"),
            },
            Some(Ok(Instruction::PushBytes(bytes))) => {
                bitcoin::script::read_scriptint(bytes.as_bytes()).expect("minimal number")
            }
            other => panic!("coinbase starts with {other:?}"),
        }
    }

    /// A 110-block chain paying 1 BTC to `key(1)`; returns it, the payment's txid and vout.
    fn paid_chain() -> (Chain, [u8; 32], u32) {
        let payee = key(1);
        let chain = Chain::new(110, &[(payee.address(), BTC)]).expect("chain builds");
        let (txid, _) = chain.history(&payee.scripthash())[0];
        let (vout, _) = output_to(&chain, &txid, &payee.script_pubkey());
        (chain, txid, vout)
    }

    /// Everything the mempool shows for `shs`, to compare before and after a refusal.
    fn mempool_view(chain: &Chain, shs: &[ScriptHash]) -> String {
        let mut view = format!("{} {:?}", chain.mempool_len(), chain.fee_histogram());
        for sh in shs {
            view += &format!(
                " {:?} {:?} {:?}",
                chain.mempool_entries(sh),
                chain.balance(sh),
                chain.utxos(sh)
            );
        }
        view
    }

    #[test]
    fn headers_link_from_genesis_and_meet_their_target() {
        let chain = Chain::new(110, &[]).expect("chain builds");
        let genesis = genesis_block(Network::Regtest).header;
        assert_eq!(chain.header(0), Some(serialize(&genesis).try_into().unwrap()));
        assert_eq!(
            genesis.block_hash().to_string(),
            "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        );
        let limit = Target::from_compact(CompactTarget::from_consensus(REGTEST_BITS));
        let mut previous = genesis;
        for height in 1..=110 {
            let header = header_at(&chain, height);
            assert_eq!(header.prev_blockhash, previous.block_hash(), "height {height}");
            assert_eq!(header.bits.to_consensus(), REGTEST_BITS);
            assert!(header.target().is_met_by(header.block_hash()));
            assert!(header.validate_pow(limit).is_ok());
            assert!(header.time > previous.time);
            previous = header;
        }
        assert_eq!(chain.tip(), (110, previous.block_hash().to_byte_array()));
        assert_eq!(chain.header(111), None);
        assert_eq!(chain.block_txids(111), None);
    }

    #[test]
    fn blocks_commit_to_their_transactions() {
        let (mut chain, txid, vout) = paid_chain();
        let spend = key(1).sign_p2wpkh_spend(&[(txid, vout, BTC)], &[(key(2).script_pubkey(), BTC - 500)]);
        chain.accept_transaction(&spend).expect("spend accepted");
        let mined = chain.mine_block();
        for height in 0..=mined.height {
            let block = block_at(&chain, height);
            assert!(block.check_merkle_root(), "merkle root of block {height}");
            assert!(
                block.check_witness_commitment(),
                "witness commitment of block {height}"
            );
            for (position, tx) in block.txdata.iter().enumerate() {
                assert_eq!(tx.is_coinbase(), position == 0);
                let txid = tx.compute_txid().to_byte_array();
                assert_eq!(chain.tx_position(&txid), Some((height, position as u32)));
            }
            if height > 0 {
                let coinbase = &block.txdata[0];
                assert_eq!(bip34_height(coinbase), i64::from(height));
                let size = coinbase.input[0].script_sig.len();
                assert!((2..=100).contains(&size), "coinbase script of {size} bytes");
            }
        }
        // Blocks 101 (payments from the chain key) and 111 hold witness transactions.
        for height in [101, 111] {
            let coinbase = &block_at(&chain, height).txdata[0];
            assert_eq!(coinbase.input[0].witness.to_vec(), vec![vec![0u8; 32]]);
            let commitment = coinbase.output.last().unwrap().script_pubkey.as_bytes();
            assert_eq!(commitment[..6], [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed]);
        }
        let coinbase_100 = &block_at(&chain, 100).txdata[0];
        assert!(coinbase_100.input[0].witness.is_empty());
        assert_eq!(coinbase_100.output.len(), 1);
    }

    #[test]
    fn coinbases_pay_subsidy_plus_fees_to_the_chain_key() {
        let chain = Chain::new(151, &[(key(1).address(), BTC)]).expect("chain builds");
        let key_script = chain_key().script_pubkey();
        assert_eq!(chain.mining_address(), chain_key().address());
        let coinbase_value = |height: u32| {
            let coinbase = &block_at(&chain, height).txdata[0];
            assert_eq!(coinbase.output[0].script_pubkey.as_bytes(), key_script);
            coinbase.output[0].value.to_sat()
        };
        assert_eq!(coinbase_value(1), 50 * BTC);
        assert_eq!(coinbase_value(149), 50 * BTC);
        assert_eq!(coinbase_value(150), 25 * BTC);
        assert_eq!(subsidy(300), 1_250_000_000);
        let payment = block_at(&chain, 101).txdata[1].clone();
        let fee = 50 * BTC - payment.output.iter().map(|o| o.value.to_sat()).sum::<u64>();
        assert_eq!(fee, payment.vsize() as u64 * PAYMENT_FEE_RATE);
        assert_eq!(coinbase_value(101), 50 * BTC + fee);
        // Fees come back to the key: it holds every subsidy minus the payment.
        let subsidies = (1..=151).map(subsidy).sum::<u64>();
        assert_eq!(chain.balance(&chain_key().scripthash()), (subsidies - BTC, 0));
        // 151 coinbases and the payment spending one of them.
        assert_eq!(chain.history(&chain_key().scripthash()).len(), 152);
    }

    #[test]
    fn pay_to_gives_exact_balance_history_and_utxos() {
        let secp = Secp256k1::new();
        let secret = SecretKey::from_slice(&[3; 32]).unwrap();
        let public = CompressedPublicKey(secret.public_key(&secp));
        let script = ScriptBuf::new_p2wpkh(&public.wpubkey_hash());
        let addresses = [
            key(1).address(),
            Address::p2pkh(public, NetworkKind::Test).to_string(),
            Address::p2sh(&script, NetworkKind::Test).unwrap().to_string(),
            Address::p2wsh(&script, KnownHrp::Regtest).to_string(),
            Address::p2tr(&secp, XOnlyPublicKey::from(public.0), None, KnownHrp::Regtest).to_string(),
        ];
        assert!(addresses[1].starts_with(['m', 'n']), "{}", addresses[1]);
        assert!(addresses[2].starts_with('2'));
        assert!(addresses[4].starts_with("bcrt1p"));
        let amounts = [BTC, 12_345, 7 * BTC / 10, 2 * BTC, 546];
        let pay_to: Vec<(String, u64)> = addresses.iter().cloned().zip(amounts).collect();
        let chain = Chain::new(110, &pay_to).expect("chain builds");
        assert_eq!(chain.tip().0, 110);
        let payments = chain.block_txids(101).unwrap();
        assert_eq!(payments.len(), 1 + pay_to.len());
        for ((address, amount), txid) in pay_to.iter().zip(&payments[1..]) {
            let script = address_script(address).unwrap();
            let sh = script_hash(script.as_bytes());
            let (vout, value) = output_to(&chain, txid, script.as_bytes());
            assert_eq!(value, *amount);
            assert_eq!(chain.balance(&sh), (*amount, 0), "{address}");
            assert_eq!(chain.history(&sh), vec![(*txid, 101)]);
            assert_eq!(
                chain.utxos(&sh),
                vec![Utxo {
                    txid: *txid,
                    vout,
                    height: 101,
                    value: *amount
                }]
            );
            assert_eq!(chain.mempool_entries(&sh), vec![]);
            assert_eq!(chain.tx_height(txid), Some(101));
        }
        // Two payments to one address: two history entries and two outputs.
        let twice =
            Chain::new(101, &[(key(1).address(), BTC), (key(1).address(), 2 * BTC)]).expect("chain builds");
        let sh = key(1).scripthash();
        assert_eq!(twice.balance(&sh), (3 * BTC, 0));
        assert_eq!(twice.history(&sh).len(), 2);
        assert_eq!(
            twice.utxos(&sh).iter().map(|u| u.value).collect::<Vec<_>>(),
            [BTC, 2 * BTC]
        );
    }

    #[test]
    fn pay_to_refuses_other_networks_and_bad_input() {
        let secp = Secp256k1::new();
        let public = CompressedPublicKey(SecretKey::from_slice(&[3; 32]).unwrap().public_key(&secp));
        let refuse =
            |address: String, amount: u64| Chain::new(110, &[(address, amount)]).expect_err("refused");
        let mainnet = Address::p2wpkh(&public, KnownHrp::Mainnet).to_string();
        let error = refuse(mainnet.clone(), BTC);
        assert_eq!(
            error,
            ChainError::WrongNetwork {
                address: mainnet,
                network: "mainnet"
            }
        );
        assert!(error.to_string().contains("regtest"), "{error}");
        let legacy_mainnet = Address::p2pkh(public, NetworkKind::Main).to_string();
        assert!(matches!(
            refuse(legacy_mainnet, BTC),
            ChainError::WrongNetwork {
                network: "mainnet",
                ..
            }
        ));
        let testnet = Address::p2wpkh(&public, KnownHrp::Testnets).to_string();
        assert!(matches!(
            refuse(testnet, BTC),
            ChainError::WrongNetwork {
                network: "testnet/signet",
                ..
            }
        ));
        assert!(matches!(
            refuse("bcrt1qnotanaddress".into(), BTC),
            ChainError::InvalidAddress { .. }
        ));
        assert!(matches!(
            refuse(String::new(), BTC),
            ChainError::InvalidAddress { .. }
        ));
        assert_eq!(
            refuse(key(1).address(), 0),
            ChainError::ZeroAmount {
                address: key(1).address()
            }
        );
    }

    #[test]
    fn pay_to_needs_enough_blocks() {
        let to = |amount: u64| vec![(key(1).address(), amount)];
        assert_eq!(
            Chain::new(100, &to(BTC)).unwrap_err(),
            ChainError::TooFewBlocks {
                blocks: 100,
                needed: 101
            }
        );
        assert_eq!(Chain::new(101, &to(BTC)).unwrap().tip().0, 101);
        // 60 BTC needs the coinbases of blocks 1 and 2, spendable from block 102.
        assert_eq!(
            Chain::new(101, &to(60 * BTC)).unwrap_err(),
            ChainError::TooFewBlocks {
                blocks: 101,
                needed: 102
            }
        );
        let chain = Chain::new(102, &to(60 * BTC)).unwrap();
        assert_eq!(chain.history(&key(1).scripthash())[0].1, 102);
        // All 50 BTC of block 1's coinbase leaves nothing for the fee: one more block.
        let chain = Chain::new(105, &to(50 * BTC)).unwrap();
        assert_eq!(chain.history(&key(1).scripthash())[0].1, 102);
        assert!(matches!(
            Chain::new(1_000, &to(MAX_MONEY)),
            Err(ChainError::PaymentsTooLarge { .. })
        ));
        assert_eq!(Chain::new(0, &[]).unwrap().tip().0, 0);
    }

    #[test]
    fn spends_show_in_the_mempool_and_confirm() {
        let (mut chain, paid_txid, paid_vout) = paid_chain();
        let (a, b, c) = (key(1), key(2), key(3));
        let (sh_a, sh_b, sh_c) = (a.scripthash(), b.scripthash(), c.scripthash());

        let parent = a.sign_p2wpkh_spend(
            &[(paid_txid, paid_vout, BTC)],
            &[(b.script_pubkey(), 60_000_000), (a.script_pubkey(), 39_990_000)],
        );
        let (parent_txid, touched) = chain.accept_transaction(&parent).expect("parent accepted");
        assert_eq!(touched, vec![sh_b, sh_a]);
        let parent_entry = MempoolTx {
            txid: parent_txid,
            fee: 10_000,
            has_unconfirmed_inputs: false,
        };
        assert_eq!(chain.mempool_entries(&sh_a), vec![parent_entry]);
        assert_eq!(chain.mempool_entries(&sh_b), vec![parent_entry]);
        assert_eq!(chain.balance(&sh_a), (BTC, 39_990_000 - BTC as i64));
        assert_eq!(chain.balance(&sh_b), (0, 60_000_000));
        assert_eq!(
            chain.utxos(&sh_a),
            vec![Utxo {
                txid: parent_txid,
                vout: 1,
                height: 0,
                value: 39_990_000
            }]
        );
        assert_eq!(chain.history(&sh_a), vec![(paid_txid, 101)]);
        assert_eq!(chain.raw_transaction(&parent_txid), Some(parent.clone()));
        assert_eq!(chain.tx_height(&parent_txid), None);
        assert!(chain.in_mempool(&parent_txid));

        // A child spending the unconfirmed output: Electrum height −1.
        let child = b.sign_p2wpkh_spend(
            &[(parent_txid, 0, 60_000_000)],
            &[(c.script_pubkey(), 59_995_000)],
        );
        let (child_txid, touched) = chain.accept_transaction(&child).expect("child accepted");
        assert_eq!(touched, vec![sh_c, sh_b]);
        let child_entry = MempoolTx {
            txid: child_txid,
            fee: 5_000,
            has_unconfirmed_inputs: true,
        };
        assert_eq!(chain.mempool_entries(&sh_b), vec![parent_entry, child_entry]);
        assert_eq!(chain.mempool_entries(&sh_c), vec![child_entry]);
        assert_eq!(chain.balance(&sh_b), (0, 0));
        assert_eq!(chain.utxos(&sh_b), vec![]);
        assert_eq!(chain.balance(&sh_c), (0, 59_995_000));
        assert_eq!(chain.fee_histogram().len(), 1);

        let mined = chain.mine_block();
        assert_eq!(mined.height, 111);
        assert_eq!(chain.tip(), (111, mined.hash));
        let coinbase_txid = mined.txids[0];
        assert_eq!(mined.txids, vec![coinbase_txid, parent_txid, child_txid]);
        for sh in [sh_a, sh_b, sh_c, chain_key().scripthash()] {
            assert!(mined.touched.contains(&sh));
        }
        assert_eq!(mined.touched.len(), 4);
        assert_eq!(chain.mempool_len(), 0);
        assert_eq!(chain.fee_histogram(), vec![]);
        assert_eq!(
            tx(&chain, &coinbase_txid).output[0].value.to_sat(),
            50 * BTC + 15_000
        );
        assert_eq!(chain.history(&sh_a), vec![(paid_txid, 101), (parent_txid, 111)]);
        assert_eq!(chain.history(&sh_b), vec![(parent_txid, 111), (child_txid, 111)]);
        assert_eq!(chain.balance(&sh_a), (39_990_000, 0));
        assert_eq!(chain.balance(&sh_b), (0, 0));
        assert_eq!(
            chain.utxos(&sh_c),
            vec![Utxo {
                txid: child_txid,
                vout: 0,
                height: 111,
                value: 59_995_000
            }]
        );
        assert_eq!(chain.mempool_entries(&sh_c), vec![]);
        assert_eq!(chain.tx_height(&child_txid), Some(111));
        assert!(!chain.in_mempool(&child_txid));
    }

    #[test]
    fn refused_transactions_leave_the_mempool_unchanged() {
        let (mut chain, paid_txid, paid_vout) = paid_chain();
        let (a, b) = (key(1), key(2));
        let pending = a.sign_p2wpkh_spend(
            &[(paid_txid, paid_vout, BTC)],
            &[(b.script_pubkey(), BTC - 1_000)],
        );
        let (pending_txid, _) = chain.accept_transaction(&pending).unwrap();
        let shs = [a.scripthash(), b.scripthash(), chain_key().scripthash()];
        let before = mempool_view(&chain, &shs);
        let (_, tip_hash) = chain.tip();
        // Block 1's coinbase paid for the payment in block 101; block 110's is immature.
        let coinbase_1 = chain_key_coinbase(&chain, 1);
        let coinbase_110 = chain_key_coinbase(&chain, 110);
        let (block_tx, _) = chain_history_first(&chain, &a.scripthash());
        let mut refuse = |raw: Vec<u8>| {
            let error = chain.accept_transaction(&raw).expect_err("refused");
            assert_eq!(mempool_view(&chain, &shs), before, "after {error}");
            error
        };
        let paid = OutPoint::new(Txid::from_byte_array(paid_txid), paid_vout);

        let error = refuse(a.sign_p2wpkh_spend(
            &[(paid_txid, paid_vout, BTC)],
            &[(a.script_pubkey(), BTC - 2_000)],
        ));
        assert_eq!(
            error,
            ChainError::AlreadySpent {
                input: 0,
                outpoint: paid,
                spender: Txid::from_byte_array(pending_txid),
                spent_at: None
            }
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("input 0 spends {paid}, which is already spent by")),
            "{error}"
        );

        let error =
            refuse(chain_key().sign_p2wpkh_spend(&[(coinbase_1, 0, 50 * BTC)], &[(a.script_pubkey(), BTC)]));
        assert!(
            matches!(
                error,
                ChainError::AlreadySpent {
                    spent_at: Some(101),
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().ends_with("in block 101"), "{error}");

        let error = refuse(a.sign_p2wpkh_spend(&[([7; 32], 0, BTC)], &[(a.script_pubkey(), BTC)]));
        assert!(
            matches!(error, ChainError::MissingInput { input: 0, .. }),
            "{error}"
        );
        assert!(error.to_string().ends_with("which does not exist"), "{error}");
        let error = refuse(b.sign_p2wpkh_spend(&[(pending_txid, 5, BTC)], &[(a.script_pubkey(), 1)]));
        assert!(matches!(error, ChainError::MissingInput { .. }), "{error}");

        let error = refuse(
            chain_key().sign_p2wpkh_spend(&[(coinbase_110, 0, 50 * BTC)], &[(a.script_pubkey(), BTC)]),
        );
        assert_eq!(
            error,
            ChainError::ImmatureCoinbase {
                input: 0,
                outpoint: OutPoint::new(Txid::from_byte_array(coinbase_110), 0),
                coinbase_height: 110,
                mature_at: 210,
                next_height: 111
            }
        );

        let error =
            refuse(b.sign_p2wpkh_spend(&[(pending_txid, 0, BTC - 1_000)], &[(a.script_pubkey(), BTC)]));
        assert_eq!(
            error,
            ChainError::OutputsExceedInputs {
                inputs: BTC - 1_000,
                outputs: BTC
            }
        );

        let error = refuse(b"not a transaction".to_vec());
        assert!(matches!(error, ChainError::Malformed(_)), "{error}");
        assert!(matches!(refuse(Vec::new()), ChainError::Malformed(_)));
        assert!(matches!(
            refuse(pending[..pending.len() - 1].to_vec()),
            ChainError::Malformed(_)
        ));
        let mut trailing = pending.clone();
        trailing.push(0);
        assert!(matches!(refuse(trailing), ChainError::Malformed(_)));

        assert!(matches!(
            refuse(pending.clone()),
            ChainError::AlreadyKnown { in_mempool: true, .. }
        ));
        assert!(matches!(
            refuse(block_tx),
            ChainError::AlreadyKnown {
                in_mempool: false,
                ..
            }
        ));

        // B's output signed by A's key.
        let error =
            refuse(a.sign_p2wpkh_spend(&[(pending_txid, 0, BTC - 1_000)], &[(a.script_pubkey(), 1_000)]));
        assert!(
            matches!(error, ChainError::BadSignature { input: 0, .. }),
            "{error}"
        );
        // The right key, but a signature over another amount.
        let error = refuse(b.sign_p2wpkh_spend(&[(pending_txid, 0, BTC)], &[(a.script_pubkey(), 1_000)]));
        assert!(
            matches!(error, ChainError::BadSignature { input: 0, .. }),
            "{error}"
        );

        let error = refuse(b.sign_p2wpkh_spend(
            &[(pending_txid, 0, BTC - 1_000), (pending_txid, 0, BTC - 1_000)],
            &[(a.script_pubkey(), 1_000)],
        ));
        assert!(
            matches!(error, ChainError::DuplicateInput { input: 1, .. }),
            "{error}"
        );
        assert_eq!(chain.tip().1, tip_hash);
    }

    fn chain_key_coinbase(chain: &Chain, height: u32) -> [u8; 32] {
        chain.block_txids(height).unwrap()[0]
    }

    fn chain_history_first(chain: &Chain, sh: &ScriptHash) -> (Vec<u8>, u32) {
        let (txid, height) = chain.history(sh)[0];
        (chain.raw_transaction(&txid).unwrap(), height)
    }

    #[test]
    fn coinbases_mature_after_100_blocks() {
        let mut chain = Chain::new(100, &[]).unwrap();
        let payee = key(1).script_pubkey();
        let spend = |height: u32| {
            chain_key().sign_p2wpkh_spend(
                &[(chain_key_coinbase(&chain, height), 0, 50 * BTC)],
                &[(payee.clone(), 50 * BTC - 1_000)],
            )
        };
        let (young, old) = (spend(2), spend(1));
        assert!(matches!(
            chain.accept_transaction(&young),
            Err(ChainError::ImmatureCoinbase {
                coinbase_height: 2,
                mature_at: 102,
                next_height: 101,
                ..
            })
        ));
        chain
            .accept_transaction(&old)
            .expect("block 1's coinbase spends in block 101");
        chain.mine_block();
        chain
            .accept_transaction(&young)
            .expect("block 2's coinbase spends in block 102");
        assert_eq!(chain.mine_block().height, 102);
        assert_eq!(chain.balance(&key(1).scripthash()), (2 * (50 * BTC - 1_000), 0));
    }

    #[test]
    fn fees_histogram_and_estimates() {
        let chain = Chain::new(0, &[]).unwrap();
        assert_eq!(chain.relay_fee(), 0.000_01);
        assert_eq!(chain.estimate_fee(1), Some(0.000_2));
        assert_eq!(chain.estimate_fee(2), Some(0.000_1));
        assert_eq!(chain.estimate_fee(6), Some(0.000_033_33));
        assert_eq!(chain.estimate_fee(25), Some(0.000_01));
        assert_eq!(chain.estimate_fee(1_008), Some(0.000_01));
        assert_eq!(chain.estimate_fee(0), None);
        assert_eq!(chain.estimate_fee(1_009), None);
        assert_eq!(chain.fee_histogram(), vec![]);

        let (mut chain, paid_txid, paid_vout) = paid_chain();
        let (a, b) = (key(1), key(2));
        // One input, two outputs: 141 vB; fees of 10 and 2 sat/vB.
        let high = a.sign_p2wpkh_spend(
            &[(paid_txid, paid_vout, BTC)],
            &[(b.script_pubkey(), BTC / 2), (a.script_pubkey(), BTC / 2 - 1_410)],
        );
        let (high_txid, _) = chain.accept_transaction(&high).unwrap();
        let low = a.sign_p2wpkh_spend(
            &[(high_txid, 1, BTC / 2 - 1_410)],
            &[(b.script_pubkey(), BTC / 2 - 1_410 - 220)],
        );
        chain.accept_transaction(&low).unwrap();
        let (high_vsize, low_vsize) = (
            deserialize::<Transaction>(&high).unwrap().vsize() as u64,
            deserialize::<Transaction>(&low).unwrap().vsize() as u64,
        );
        assert_eq!((high_vsize, low_vsize), (141, 110));
        // Both fit one partial bin, labelled with its lowest rate.
        assert_eq!(chain.fee_histogram(), vec![(2.0, 251)]);
    }

    #[test]
    fn merkle_branches_lead_to_the_header_root() {
        let (mut chain, paid_txid, paid_vout) = paid_chain();
        let (a, b) = (key(1), key(2));
        let mut previous = (paid_txid, paid_vout, BTC);
        for _ in 0..4 {
            let value = previous.2 - 1_000;
            let raw = a.sign_p2wpkh_spend(
                &[previous],
                &[(b.script_pubkey(), 1_000), (a.script_pubkey(), value - 1_000)],
            );
            let (txid, _) = chain.accept_transaction(&raw).unwrap();
            previous = (txid, 1, value - 1_000);
        }
        let mined = chain.mine_block();
        assert_eq!(mined.txids.len(), 5);
        for height in [0, 101, mined.height] {
            let root = header_at(&chain, height).merkle_root.to_byte_array();
            let txids = chain.block_txids(height).unwrap();
            for (position, txid) in txids.iter().enumerate() {
                let branch = chain.merkle_branch(height, position).unwrap();
                let mut hash = *txid;
                for (level, sibling) in branch.iter().enumerate() {
                    let mut pair = Vec::with_capacity(64);
                    if (position >> level) & 1 == 0 {
                        pair.extend_from_slice(&hash);
                        pair.extend_from_slice(sibling);
                    } else {
                        pair.extend_from_slice(sibling);
                        pair.extend_from_slice(&hash);
                    }
                    hash = sha256d::Hash::hash(&pair).to_byte_array();
                }
                assert_eq!(hash, root, "block {height} position {position}");
            }
            assert_eq!(chain.merkle_branch(height, txids.len()), None);
        }
    }

    #[test]
    fn chains_are_reproducible() {
        let pay_to = [(key(1).address(), BTC)];
        let first = Chain::new(105, &pay_to).unwrap();
        let second = Chain::new(105, &pay_to).unwrap();
        assert_eq!(first.tip(), second.tip());
        assert!(first.mining_address().starts_with("bcrt1q"));
        assert_eq!(key(1).address(), TestKey::from_seed([1; 32]).address());
        assert_ne!(key(1).address(), key(2).address());
    }
}
