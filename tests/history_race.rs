//! A history read that overlaps a `notify` (the `Db` answered from before
//! the block) is not cached and not served: the next reader, and the
//! notification itself, see the new history.

use async_trait::async_trait;
use futures::channel::oneshot;
use futures::executor::block_on;
use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport};
use indexer_sessions::{Config, Db, HashX, Height, HistoryEntry, HostError, SessionManager, Tip, TxHash};
use std::sync::{Arc, Mutex};

/// A `Db` whose next history read takes its answer at once, then waits for
/// a signal before returning it (a slow read racing a block).
#[derive(Clone)]
struct SlowDb {
    inner: MemoryDb,
    gate: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

#[async_trait]
impl Db for SlowDb {
    async fn tip(&self) -> Result<Tip, HostError> {
        self.inner.tip().await
    }
    async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, HostError> {
        self.inner.header(height).await
    }
    async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, HostError> {
        self.inner.headers(start, count).await
    }
    async fn history(&self, hashx: HashX, limit: usize) -> Result<Vec<HistoryEntry>, HostError> {
        let answer = self.inner.history(hashx, limit).await;
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.await;
        }
        answer
    }
    async fn block_txids(&self, height: Height) -> Result<Option<Vec<TxHash>>, HostError> {
        self.inner.block_txids(height).await
    }
}

#[test]
fn a_read_that_overlaps_a_notify_is_read_again() {
    let memory = MemoryDb::new();
    let db = SlowDb {
        inner: memory.clone(),
        gate: Arc::new(Mutex::new(None)),
    };
    let manager = SessionManager::builder(Config::default())
        .timer(ManualTimer::new())
        .db(db.clone())
        .daemon(MemoryDaemon::new())
        .mempool(MemoryMempool::new())
        .build()
        .unwrap();
    let alias = "ab".repeat(32);
    let hashx = HashX::from_scripthash_hex(&alias).unwrap();
    let tip = memory.push_block(vec![0; 80], vec![]);
    block_on(manager.notify(tip, &[]));
    let (transport, log) = MemoryTransport::new("203.0.113.1:1".parse().unwrap());
    let session = manager.add_session(transport).unwrap();

    // A client subscribes; the Db answers from before the block but is slow
    // to return. Without care the client would get, and the cache keep, the
    // old status, and the block's notification would miss the client (it
    // subscribed after the pass looked for subscribers).
    let (release, gate) = oneshot::channel();
    *db.gate.lock().unwrap() = Some(gate);
    memory.set_history(hashx, vec![]);
    let block_entry = HistoryEntry {
        txid: TxHash([9; 32]),
        height: Height(1),
    };
    block_on(async {
        let read = session.subscribe(&alias);
        let block = async {
            // The block lands and is notified while the read is in flight.
            memory.add_history(hashx, block_entry);
            let tip = memory.push_block(vec![1; 80], vec![TxHash([9; 32])]);
            let notify = manager.notify(tip, &[hashx]);
            let report = notify.await;
            let _ = release.send(());
            report
        };
        let (status, _) = futures::join!(read, block);
        assert!(status.unwrap().is_some(), "the overlapping read was read again");
    });
    // Nothing stale stayed in the cache.
    assert_eq!(block_on(session.history(&alias)).unwrap().len(), 1);
    assert!(log.sent().is_empty());
}
