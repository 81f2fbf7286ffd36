//! The host side of the library for the in-process regtest chain: the
//! [`Db`], [`Daemon`] and [`Mempool`] traits implemented over one shared
//! [`Chain`].
//!
//! The library keys scripts by [`HashX`] (the first 11 bytes of the Electrum
//! scripthash) while the chain is keyed by the full scripthash, so [`Node`]
//! keeps an index from one to the other, built from every output in the chain
//! at start and extended by every accepted transaction and mined block.
//!
//! Chain changes (an accepted transaction, a mined block) leave their touched
//! hashXs in [`Node`]'s pending set; the server hands them to
//! `SessionManager::notify` (see `crate::server::Shared::publish`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bitcoin::Transaction;
use bitcoin::consensus::deserialize;
use indexer_sessions::{
    BlockHash, BroadcastFailure, Changes, ConfirmedOutpoint, ConfirmedSpender, Daemon, Db, FeeMode, HashX,
    Height, HistoryEntry, HostError, Mempool, MempoolEntry, MempoolFunder, MempoolOutpoint, MempoolSpender,
    OutPoint, Tip, TxHash,
};

use crate::chain::{Chain, ScriptHash, script_hash};

/// The chain, its hashX index and the changes not yet announced.
#[derive(Debug)]
pub struct Node {
    chain: Mutex<Chain>,
    index: Mutex<HashMap<HashX, ScriptHash>>,
    pending: Mutex<hashbrown::HashSet<HashX>>,
    /// Outpoints created or spent since the last announcement.
    pending_outpoints: Mutex<hashbrown::HashSet<OutPoint>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The hashX of a scripthash (internal byte order).
pub fn hashx(sh: &ScriptHash) -> HashX {
    HashX::from_scripthash(sh)
}

impl Node {
    /// Wraps `chain`, indexing every script it has paid to.
    pub fn new(chain: Chain) -> Arc<Node> {
        let mut index = HashMap::new();
        let (tip, _) = chain.tip();
        for height in 0..=tip {
            for txid in chain.block_txids(height).unwrap_or_default() {
                let Some(raw) = chain.raw_transaction(&txid) else {
                    continue;
                };
                let Ok(tx) = deserialize::<Transaction>(&raw) else {
                    continue;
                };
                for out in &tx.output {
                    let sh = script_hash(out.script_pubkey.as_bytes());
                    index.insert(hashx(&sh), sh);
                }
            }
        }
        Arc::new(Node {
            chain: Mutex::new(chain),
            index: Mutex::new(index),
            pending: Mutex::new(hashbrown::HashSet::new()),
            pending_outpoints: Mutex::new(hashbrown::HashSet::new()),
        })
    }

    /// Locks the chain (never across an await).
    pub fn chain(&self) -> MutexGuard<'_, Chain> {
        lock(&self.chain)
    }

    /// The tip as the library sees it.
    pub fn tip(&self) -> Tip {
        let (height, hash) = self.chain().tip();
        Tip {
            height: Height(height),
            hash: BlockHash(hash),
        }
    }

    fn scripthash_of(&self, hashx: &HashX) -> Option<ScriptHash> {
        lock(&self.index).get(hashx).copied()
    }

    /// Records scripthashes a change touched: indexed, and pending for the next notify.
    fn touched(&self, scripthashes: &[ScriptHash]) {
        let mut index = lock(&self.index);
        let mut pending = lock(&self.pending);
        for sh in scripthashes {
            let key = hashx(sh);
            index.insert(key, *sh);
            pending.insert(key);
        }
    }

    /// Takes the hashXs touched since the last call.
    pub fn take_pending(&self) -> hashbrown::HashSet<HashX> {
        std::mem::take(&mut *lock(&self.pending))
    }

    /// Takes the scripts and outpoints touched since the last call, for
    /// `SessionManager::notify`.
    pub fn take_changes(&self) -> Changes {
        let mut changes = Changes::new();
        changes.extend(self.take_pending());
        changes.extend(std::mem::take(&mut *lock(&self.pending_outpoints)));
        changes
    }

    /// Records outpoints created or spent (txid in internal byte order).
    fn touched_outpoints(&self, outpoints: impl IntoIterator<Item = ([u8; 32], u32)>) {
        lock(&self.pending_outpoints).extend(outpoints.into_iter().map(|(txid, vout)| OutPoint {
            txid: TxHash(txid),
            vout,
        }));
    }

    /// Mines `count` blocks (each confirming the whole mempool); their
    /// touched scripts become pending. Returns the new tip.
    pub fn mine(&self, count: u32) -> Tip {
        let mut touched = Vec::new();
        let mut outpoints = Vec::new();
        {
            let mut chain = self.chain();
            for _ in 0..count {
                outpoints.extend(chain.mempool_outpoints());
                touched.extend(chain.mine_block().touched);
            }
        }
        self.touched(&touched);
        self.touched_outpoints(outpoints);
        self.tip()
    }

    /// Accepts a transaction into the mempool (see [`Chain::accept_transaction`]);
    /// its touched scripts become pending.
    pub fn accept(&self, raw: &[u8]) -> Result<[u8; 32], String> {
        let (txid, touched) = self
            .chain()
            .accept_transaction(raw)
            .map_err(|error| error.rejection())?;
        self.touched(&touched);
        self.touched_outpoints(crate::chain::tx_outpoints(raw));
        Ok(txid)
    }

    /// Accepts a package (a child and its parents) into the mempool, all or
    /// nothing, and records the scripts it touches for the next
    /// announcement; see `Chain::accept_package`.
    ///
    /// # Errors
    /// The package's shape, as text.
    pub fn accept_package(&self, raws: &[Vec<u8>]) -> Result<Vec<(String, String)>, String> {
        let accepted = self.chain().accept_package(raws)?;
        match accepted {
            Ok(touched) => {
                self.touched(&touched);
                self.touched_outpoints(raws.iter().flat_map(|raw| crate::chain::tx_outpoints(raw)));
                Ok(Vec::new())
            }
            Err(failures) => Ok(failures),
        }
    }
}

/// The library's host traits over a shared [`Node`].
#[derive(Clone, Debug)]
pub struct Hosts(pub Arc<Node>);

#[async_trait]
impl Db for Hosts {
    async fn tip(&self) -> Result<Tip, HostError> {
        Ok(self.0.tip())
    }

    async fn outpoint(&self, outpoint: OutPoint) -> Result<Option<ConfirmedOutpoint>, HostError> {
        let confirmed = self.0.chain().outpoint_confirmed(outpoint.txid.0, outpoint.vout);
        Ok(confirmed.map(|(height, spender)| ConfirmedOutpoint {
            height: Height(height),
            spender: spender.map(|(txid, height)| ConfirmedSpender {
                txid: TxHash(txid),
                height: Height(height),
            }),
        }))
    }

    async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.0.chain().header(height.0).map(|header| header.to_vec()))
    }

    async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, HostError> {
        let chain = self.0.chain();
        Ok((start.0..start.0.saturating_add(count))
            .map_while(|height| chain.header(height).map(|header| header.to_vec()))
            .collect())
    }

    async fn history(&self, hashx: HashX, limit: usize) -> Result<Vec<HistoryEntry>, HostError> {
        let Some(sh) = self.0.scripthash_of(&hashx) else {
            return Ok(Vec::new());
        };
        Ok(self
            .0
            .chain()
            .history(&sh)
            .into_iter()
            .take(limit)
            .map(|(txid, height)| HistoryEntry {
                txid: TxHash(txid),
                height: Height(height),
            })
            .collect())
    }

    async fn block_txids(&self, height: Height) -> Result<Option<Vec<TxHash>>, HostError> {
        Ok(self
            .0
            .chain()
            .block_txids(height.0)
            .map(|txids| txids.into_iter().map(TxHash).collect()))
    }
}

#[async_trait]
impl Mempool for Hosts {
    async fn outpoint(&self, outpoint: OutPoint) -> Result<MempoolOutpoint, HostError> {
        let (funder, spender) = self.0.chain().outpoint_in_mempool(outpoint.txid.0, outpoint.vout);
        Ok(MempoolOutpoint {
            funder: funder.map(|has_unconfirmed_inputs| MempoolFunder {
                has_unconfirmed_inputs,
            }),
            spender: spender.map(|(txid, has_unconfirmed_inputs)| MempoolSpender {
                txid: TxHash(txid),
                has_unconfirmed_inputs,
            }),
        })
    }

    async fn entries(&self, hashx: HashX) -> Result<Vec<MempoolEntry>, HostError> {
        let Some(sh) = self.0.scripthash_of(&hashx) else {
            return Ok(Vec::new());
        };
        Ok(self
            .0
            .chain()
            .mempool_entries(&sh)
            .into_iter()
            .map(|entry| MempoolEntry {
                txid: TxHash(entry.txid),
                fee: entry.fee,
                has_unconfirmed_inputs: entry.has_unconfirmed_inputs,
            })
            .collect())
    }

    async fn fee_histogram(&self) -> Result<Vec<(f64, u64)>, HostError> {
        Ok(self.0.chain().fee_histogram())
    }
}

#[async_trait]
impl Daemon for Hosts {
    async fn broadcast_transaction(&self, raw: &[u8]) -> Result<TxHash, BroadcastFailure> {
        self.0.accept(raw).map(TxHash).map_err(BroadcastFailure::Rejected)
    }

    async fn estimate_fee(&self, blocks: u32, _mode: Option<FeeMode>) -> Result<Option<f64>, HostError> {
        Ok(self.0.chain().estimate_fee(blocks))
    }

    async fn relay_fee(&self) -> Result<f64, HostError> {
        Ok(self.0.chain().relay_fee())
    }

    async fn raw_transaction(&self, txid: TxHash) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.0.chain().raw_transaction(&txid.0))
    }
}
