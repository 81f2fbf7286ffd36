//! A notification pass over an index that takes 200 µs per call (an
//! on-disk index), with 1,000 touched subscribed scripts whose statuses all
//! change: once with an index that answers one script per call (the `Db`
//! trait's default `histories`), once with one that answers a batch of
//! scripts in one call (it overrides `histories`).
//!
//! `cargo bench --features test-util --bench notify_slow_index`

mod common;

use async_trait::async_trait;
use common::{Target, Zst, report, set_peer};
use criterion::SamplingMode;
use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool};
use indexer_sessions::{
    Answers, Db, HashX, Height, HistoryEntry, Host, HostError, HostParts, MempoolEntry, SessionHandle,
    SessionManager, Tip, TxHash, encode_hex,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Scripts touched (and subscribed, one per session) per event.
const SCRIPTS: u64 = 1000;
/// What one call to the index takes.
const LATENCY: Duration = Duration::from_micros(200);

fn scripthash(id: u64) -> [u8; 32] {
    let mut bytes = [0x5au8; 32];
    bytes[..8].copy_from_slice(&id.to_le_bytes());
    bytes
}

fn alias(id: u64) -> String {
    let mut bytes = scripthash(id);
    bytes.reverse();
    encode_hex(&bytes)
}

fn txid(tag: u8, n: u64) -> TxHash {
    let mut bytes = [tag; 32];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    TxHash(bytes)
}

/// One index round trip: `LATENCY` on a blocking thread, as a disk read is.
async fn round_trip(calls: &AtomicU64) {
    calls.fetch_add(1, Ordering::Relaxed);
    tokio::task::spawn_blocking(|| std::thread::sleep(LATENCY))
        .await
        .expect("the blocking pool runs");
}

/// An index answering one script per call.
#[derive(Clone)]
struct PerScriptIndex {
    inner: MemoryDb,
    calls: Arc<AtomicU64>,
}

/// An index answering a batch of scripts in one call (and, asked for one
/// script, as [`PerScriptIndex`]).
#[derive(Clone)]
struct BatchedIndex(PerScriptIndex);

#[async_trait]
impl Db for PerScriptIndex {
    async fn tip(&self) -> Result<Tip, HostError> {
        self.inner.tip().await
    }
    async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, HostError> {
        self.inner.header(height).await
    }
    async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, HostError> {
        self.inner.headers(start, count).await
    }
    async fn block_txids(&self, height: Height) -> Result<Option<Vec<TxHash>>, HostError> {
        self.inner.block_txids(height).await
    }
    async fn history(&self, hashx: HashX, limit: usize) -> Result<Vec<HistoryEntry>, HostError> {
        round_trip(&self.calls).await;
        self.inner.history(hashx, limit).await
    }
}

#[async_trait]
impl Db for BatchedIndex {
    async fn tip(&self) -> Result<Tip, HostError> {
        self.0.tip().await
    }
    async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, HostError> {
        self.0.header(height).await
    }
    async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, HostError> {
        self.0.headers(start, count).await
    }
    async fn block_txids(&self, height: Height) -> Result<Option<Vec<TxHash>>, HostError> {
        self.0.block_txids(height).await
    }
    async fn history(&self, hashx: HashX, limit: usize) -> Result<Vec<HistoryEntry>, HostError> {
        self.0.history(hashx, limit).await
    }
    async fn histories(
        &self,
        hashxs: &[HashX],
        limit: usize,
        answers: &mut Answers<HistoryEntry>,
    ) -> Result<(), HostError> {
        round_trip(&self.0.calls).await;
        for hashx in hashxs {
            answers.push(self.0.inner.history(*hashx, limit).await);
        }
        Ok(())
    }
}

struct Setup<H: Host> {
    manager: SessionManager<H>,
    sessions: Vec<SessionHandle<H>>,
    mempool: MemoryMempool,
    tip: Tip,
    touched: Vec<HashX>,
    step: u64,
}

fn setup<D: Db + Clone>(
    db: MemoryDb,
    index: D,
    runtime: &tokio::runtime::Runtime,
) -> Setup<HostParts<D, MemoryDaemon, MemoryMempool, ManualTimer>> {
    let mempool = MemoryMempool::new();
    let manager = SessionManager::builder(common::config(1 << 20))
        .timer(ManualTimer::new())
        .db(index)
        .daemon(MemoryDaemon::new())
        .mempool(mempool.clone())
        .build()
        .expect("valid configuration");
    let tip = db.push_block(vec![0x42; 80], vec![]);
    let mut touched = Vec::new();
    let mut sessions = Vec::new();
    for id in 0..SCRIPTS {
        let hashx = HashX::from_scripthash(&scripthash(id));
        db.add_history(
            hashx,
            HistoryEntry {
                txid: txid(1, id),
                height: Height(0),
            },
        );
        touched.push(hashx);
        set_peer(common::grouped_addr(id as u32, 256));
        let session = manager.add_session(Zst).expect("admitted");
        runtime
            .block_on(session.subscribe(&alias(id)))
            .expect("subscribed");
        sessions.push(session);
    }
    runtime.block_on(manager.notify(tip, &[]));
    Setup {
        manager,
        sessions,
        mempool,
        tip,
        touched,
        step: 0,
    }
}

impl<H: Host> Setup<H> {
    /// A mempool transaction added to (odd steps) or removed from (even)
    /// every script, so every status changes; then the timed notify.
    fn event(&mut self, runtime: &tokio::runtime::Runtime) -> Duration {
        self.step += 1;
        for (id, hashx) in self.touched.iter().enumerate() {
            let tx = txid(2, id as u64);
            if self.step % 2 == 1 {
                self.mempool.add(
                    *hashx,
                    MempoolEntry {
                        txid: tx,
                        fee: 1000,
                        has_unconfirmed_inputs: false,
                    },
                );
            } else {
                self.mempool.remove(tx);
            }
        }
        let start = Instant::now();
        let report = runtime.block_on(self.manager.notify(self.tip, &self.touched));
        let took = start.elapsed();
        assert_eq!(report.status_notifications, SCRIPTS as usize, "{report:?}");
        // Deliver outside the timed region so each event starts empty.
        for session in &self.sessions {
            futures::FutureExt::now_or_never(async {
                let deliver = session.deliver();
                let mut deliver = std::pin::pin!(deliver);
                while session.pending_notifications() > 0 {
                    if futures::poll!(deliver.as_mut()).is_ready() {
                        break;
                    }
                }
            });
        }
        took
    }
}

fn main() {
    common::mark_start();
    let mut c = common::criterion();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(512)
        .enable_all()
        .build()
        .expect("a runtime");
    let per_script_db = MemoryDb::new();
    let per_script_calls = Arc::new(AtomicU64::new(0));
    let mut per_script = setup(
        per_script_db.clone(),
        PerScriptIndex {
            inner: per_script_db,
            calls: per_script_calls.clone(),
        },
        &runtime,
    );
    let batched_db = MemoryDb::new();
    let batched_calls = Arc::new(AtomicU64::new(0));
    let mut batched = setup(
        batched_db.clone(),
        BatchedIndex(PerScriptIndex {
            inner: batched_db,
            calls: batched_calls.clone(),
        }),
        &runtime,
    );

    // Count only the events' calls, not the subscriptions'.
    let (batched_setup, per_script_setup) = (
        batched_calls.load(Ordering::Relaxed),
        per_script_calls.load(Ordering::Relaxed),
    );
    println!("load average before: {}", common::load());
    let group_name = "notify_slow_index";
    let mut group = c.benchmark_group(group_name);
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("batched_histories", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| batched.event(&runtime)).sum())
    });
    group.bench_function("one_call_per_script", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| per_script.event(&runtime)).sum())
    });
    group.finish();
    println!("load average after: {}", common::load());
    println!(
        "SUMMARY notify_slow_index/index_calls_per_event: batched {:.1}, one per script {:.1}",
        (batched_calls.load(Ordering::Relaxed) - batched_setup) as f64 / batched.step.max(1) as f64,
        (per_script_calls.load(Ordering::Relaxed) - per_script_setup) as f64 / per_script.step.max(1) as f64,
    );
    report(
        group_name,
        "batched_histories",
        "one_call_per_script",
        Target::Below(10_000_000.0),
    );
    report(
        group_name,
        "one_call_per_script",
        "batched_histories",
        Target::Below(10_000_000.0),
    );
    c.final_summary();
}
