//! Shared test fixtures: a manager on a manual clock with in-memory hosts.
#![allow(dead_code)]

use indexer_sessions::testing::MemoryHost;
use indexer_sessions::testing::{
    ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport, TransportLog,
};
use indexer_sessions::{Config, Refusal, SessionHandle, SessionManager};
use std::net::SocketAddr;
use std::sync::Arc;

pub struct Fixture {
    pub manager: SessionManager<MemoryHost>,
    pub timer: ManualTimer,
    pub db: MemoryDb,
    pub daemon: MemoryDaemon,
    pub mempool: MemoryMempool,
}

impl Fixture {
    pub fn new(config: Config) -> Self {
        let timer = ManualTimer::new();
        let db = MemoryDb::new();
        let daemon = MemoryDaemon::new();
        let mempool = MemoryMempool::new();
        let manager = SessionManager::builder(config)
            .timer(timer.clone())
            .db(db.clone())
            .daemon(daemon.clone())
            .mempool(mempool.clone())
            .build()
            .expect("valid configuration");
        Fixture {
            manager,
            timer,
            db,
            daemon,
            mempool,
        }
    }

    pub fn connect(&self, addr: &str) -> (SessionHandle<MemoryHost>, Arc<TransportLog>) {
        self.try_connect(addr).expect("session admitted")
    }

    pub fn try_connect(&self, addr: &str) -> Result<(SessionHandle<MemoryHost>, Arc<TransportLog>), Refusal> {
        let addr: SocketAddr = addr.parse().expect("socket address");
        let (transport, log) = MemoryTransport::new(addr);
        Ok((self.manager.add_session(transport)?, log))
    }
}

/// Polls a future once; `None` if it is not ready.
pub fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
    use futures::FutureExt;
    future.now_or_never()
}

/// The real blocks in `tests/data` (see its README).
pub const BLOCK_2500: &str = "mainnet_block_000000000000000000000c835b2adcaedc20fdf6ee440009c249452c726dafae";
pub const BLOCK_9: &str = "mainnet_block_0000000000013b8ab2cd513b0261a14096412195a72a0c4827d229dcc7e0f7af";
pub const BLOCK_SEGWIT: &str =
    "testnet_block_000000000000045e0b1660b6445b5e5c5ab63c9a4f956be7e1e69be04fa4497b";

/// One block vector: the raw block and what its JSON says about it.
pub struct Vector {
    pub raw: Vec<u8>,
    pub block_hash: String,
    pub merkle_root: indexer_sessions::TxHash,
    pub txids: Vec<indexer_sessions::TxHash>,
}

impl Vector {
    /// The 80-byte header.
    pub fn header(&self) -> Vec<u8> {
        self.raw[..80].to_vec()
    }
}

/// Loads `tests/data/{name}.raw` and `.json`.
pub fn load_vector(name: &str) -> Vector {
    use indexer_sessions::TxHash;
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let raw = std::fs::read(dir.join(format!("{name}.raw"))).expect("read raw block");
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("read json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("parse json");
    let hash = |v: &serde_json::Value| TxHash::from_hex(v.as_str().expect("hex string")).expect("txid hex");
    let txids: Vec<TxHash> = json["txids"]
        .as_array()
        .expect("txids")
        .iter()
        .map(hash)
        .collect();
    assert_eq!(json["tx_count"].as_u64(), Some(txids.len() as u64));
    Vector {
        raw,
        block_hash: json["block_hash"].as_str().expect("block_hash").to_owned(),
        merkle_root: hash(&json["merkle_root"]),
        txids,
    }
}
