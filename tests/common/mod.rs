//! Shared test fixtures: a manager on a manual clock with in-memory hosts.
#![allow(dead_code)]

use indexer_sessions::testing::{
    ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport, TransportLog,
};
use indexer_sessions::{Config, SessionHandle, SessionManager};
use std::net::SocketAddr;
use std::sync::Arc;

pub struct Fixture {
    pub manager: SessionManager,
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

    pub fn connect(&self, addr: &str) -> (SessionHandle, Arc<TransportLog>) {
        self.try_connect(addr).expect("session admitted")
    }

    pub fn try_connect(&self, addr: &str) -> indexer_sessions::Result<(SessionHandle, Arc<TransportLog>)> {
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
