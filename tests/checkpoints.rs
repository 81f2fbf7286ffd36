//! Checkpoint proofs (`cp_height`) through the public API, against a `Db`
//! that counts what it is asked: a proof for any checkpoint the header
//! merkle levels reach reads one header, whatever the chain length; growing
//! them reads each new header once, shared by every session and paid by the
//! one that grows them; reorgs (notified or not) cut them back to the fork;
//! every proof equals the from-scratch merkle tree over the prefix.

use async_trait::async_trait;
use futures::executor::block_on;
use indexer_sessions::merkle::{double_sha256, merkle_branch, merkle_root, root_from_branch};
use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryMempool, MemoryTransport};
use indexer_sessions::{
    BlockHash, Config, Db, Error, HashX, Height, HistoryEntry, HostError, HostParts, SessionHandle,
    SessionManager, Tip, TxHash,
};
use proptest::prelude::*;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Headers that chain as Bitcoin's do (each holds its parent's hash), and
/// counts of what the manager read.
#[derive(Clone, Default)]
struct CountingDb {
    headers: Arc<Mutex<Vec<Vec<u8>>>>,
    /// `Db::header` calls.
    header_calls: Arc<AtomicUsize>,
    /// `Db::headers` calls.
    range_calls: Arc<AtomicUsize>,
    /// Headers returned by `Db::headers`.
    range_headers: Arc<AtomicUsize>,
}

/// What the manager read, between two points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reads {
    header_calls: usize,
    range_calls: usize,
    range_headers: usize,
}

impl Reads {
    /// Every header read, one by one or in ranges.
    fn headers(self) -> usize {
        self.header_calls + self.range_headers
    }
}

impl std::ops::Sub for Reads {
    type Output = Reads;

    fn sub(self, earlier: Reads) -> Reads {
        Reads {
            header_calls: self.header_calls - earlier.header_calls,
            range_calls: self.range_calls - earlier.range_calls,
            range_headers: self.range_headers - earlier.range_headers,
        }
    }
}

fn make_header(parent: Option<&Vec<u8>>, height: usize, salt: u64) -> Vec<u8> {
    let mut header = vec![0u8; 80];
    header[..4].copy_from_slice(&1u32.to_le_bytes());
    if let Some(parent) = parent {
        header[4..36].copy_from_slice(&double_sha256(parent));
    }
    header[36..44].copy_from_slice(&(height as u64).to_le_bytes());
    header[44..52].copy_from_slice(&salt.to_le_bytes());
    header
}

impl CountingDb {
    /// Keeps the first `keep` headers and appends `grow` new ones made with `salt`.
    fn reorg(&self, keep: usize, grow: usize, salt: u64) -> Tip {
        let mut headers = self.headers.lock().unwrap();
        headers.truncate(keep);
        for _ in 0..grow {
            let height = headers.len();
            let header = make_header(headers.last(), height, salt);
            headers.push(header);
        }
        tip_of(&headers)
    }

    fn hashes(&self) -> Vec<TxHash> {
        let headers = self.headers.lock().unwrap();
        headers.iter().map(|h| TxHash(double_sha256(h))).collect()
    }

    fn reads(&self) -> Reads {
        Reads {
            header_calls: self.header_calls.load(Ordering::SeqCst),
            range_calls: self.range_calls.load(Ordering::SeqCst),
            range_headers: self.range_headers.load(Ordering::SeqCst),
        }
    }
}

fn tip_of(headers: &[Vec<u8>]) -> Tip {
    Tip {
        height: Height(headers.len() as u32 - 1),
        hash: BlockHash(double_sha256(headers.last().expect("a header"))),
    }
}

#[async_trait]
impl Db for CountingDb {
    async fn tip(&self) -> Result<Tip, HostError> {
        Ok(tip_of(&self.headers.lock().unwrap()))
    }

    async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, HostError> {
        self.header_calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.headers.lock().unwrap().get(height.0 as usize).cloned())
    }

    async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, HostError> {
        let headers = self.headers.lock().unwrap();
        let start = (start.0 as usize).min(headers.len());
        let end = start.saturating_add(count as usize).min(headers.len());
        self.range_calls.fetch_add(1, Ordering::SeqCst);
        self.range_headers.fetch_add(end - start, Ordering::SeqCst);
        Ok(headers[start..end].to_vec())
    }

    async fn history(&self, _: HashX, _: usize) -> Result<Vec<HistoryEntry>, HostError> {
        Ok(Vec::new())
    }

    async fn block_txids(&self, _: Height) -> Result<Option<Vec<TxHash>>, HostError> {
        Ok(None)
    }
}

type CountingHost = HostParts<CountingDb, MemoryDaemon, MemoryMempool, ManualTimer>;

struct Harness {
    manager: SessionManager<CountingHost>,
    db: CountingDb,
}

impl Harness {
    /// A chain of `blocks` headers, notified.
    fn new(blocks: usize) -> Self {
        let db = CountingDb::default();
        let manager = SessionManager::builder(Config::default())
            .timer(ManualTimer::new())
            .db(db.clone())
            .daemon(MemoryDaemon::new())
            .mempool(MemoryMempool::new())
            .build()
            .expect("valid configuration");
        let harness = Harness { manager, db };
        let tip = harness.db.reorg(0, blocks, 0);
        harness.notify(tip);
        harness
    }

    fn notify(&self, tip: Tip) {
        block_on(self.manager.notify(tip, &hashbrown::HashSet::new()));
    }

    fn session(&self, n: u8) -> SessionHandle<CountingHost> {
        let addr = format!("203.0.{n}.7:50001").parse().expect("socket address");
        let (transport, _log) = MemoryTransport::new(addr);
        self.manager.add_session(transport).expect("admitted")
    }
}

fn cost(session: &SessionHandle<CountingHost>) -> f64 {
    session.cost().own
}

fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
}

/// Checks a proof against the from-scratch tree over `hashes[..=cp]`.
fn assert_reference(hashes: &[TxHash], height: u32, cp: u32, branch: &[TxHash], root: TxHash) {
    let prefix = &hashes[..=cp as usize];
    assert_eq!(Some(root), merkle_root(prefix), "height {height} cp {cp}");
    assert_eq!(
        merkle_branch(prefix, height as usize).as_deref(),
        Some(branch),
        "height {height} cp {cp}"
    );
    assert_eq!(
        root_from_branch(hashes[height as usize], height as usize, branch),
        root
    );
}

/// A deterministic spread of heights in `0..n`.
fn spread(n: u32, count: u32, seed: u32) -> impl Iterator<Item = u32> {
    (0..count).map(move |i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed)) % n)
}

#[test]
fn a_fresh_checkpoint_reads_one_header_once_the_levels_reach_it() {
    const BLOCKS: usize = 20_000;
    let h = Harness::new(BLOCKS);
    let hashes = h.db.hashes();
    let session = h.session(1);
    let tip = (BLOCKS - 1) as u32;

    // The first proof at the tip grows the levels: every header read once,
    // in chunks of at most 2016 (plus the one it starts from), and paid for.
    let before = (h.db.reads(), cost(&session));
    let reply = block_on(session.block_header(Height(7), tip)).unwrap();
    let proof = reply.proof.unwrap();
    assert_reference(&hashes, 7, tip, &proof.branch, proof.root);
    let reads = h.db.reads() - before.0;
    let chunks = BLOCKS.div_ceil(2016);
    assert_eq!(reads.range_calls, chunks);
    assert_eq!(reads.range_headers, BLOCKS + chunks - 1);
    assert_close(
        cost(&session) - before.1,
        1.25 + (BLOCKS + chunks - 1) as f64 / 1000.0,
    );

    // Fresh checkpoints anywhere below: one header read (the checkpoint's,
    // none when it is the header asked for), no range, the flat cost.
    for (i, cp) in spread(tip, 60, 11).enumerate() {
        let cp = cp.max(1);
        let height = spread(cp + 1, 1, i as u32).next().unwrap();
        let before = (h.db.reads(), cost(&session));
        let reply = block_on(session.block_header(Height(height), cp)).unwrap();
        let reads = h.db.reads() - before.0;
        let expect = if height == cp { 1 } else { 2 };
        assert_eq!(
            (reads.header_calls, reads.range_calls),
            (expect, 0),
            "height {height} cp {cp}"
        );
        assert_close(cost(&session) - before.1, 1.25);
        let proof = reply.proof.unwrap();
        assert_reference(&hashes, height, cp, &proof.branch, proof.root);
    }
    let stats = h.manager.info().caches.checkpoints;
    assert_eq!((stats.misses, stats.hits), (1, 60));
    assert_eq!(stats.entries, BLOCKS as u64);
    // About 64 B per header, growth slack included.
    assert!(stats.bytes >= 2 * 32 * (BLOCKS as u64 - 1), "{stats:?}");
    assert!(stats.bytes <= 4 * 32 * 2 * BLOCKS as u64, "{stats:?}");

    // Ten new blocks: the next proof at the new tip reads them (from the
    // last header held) and nothing else.
    let new_tip = h.db.reorg(BLOCKS, 10, 0);
    h.notify(new_tip);
    let hashes = h.db.hashes();
    let before = (h.db.reads(), cost(&session));
    let chunk = block_on(session.block_headers(Height(19_990), 5, new_tip.height.0)).unwrap();
    let reads = h.db.reads() - before.0;
    // The chunk itself (5 headers), then the checkpoint header and the 11 new ones.
    assert_eq!(reads.range_headers, 5 + 11);
    assert_eq!(reads.header_calls, 1);
    assert_close(cost(&session) - before.1, 5.0 / 50.0 + 1.0 + 11.0 / 1000.0);
    let proof = chunk.proof.unwrap();
    assert_reference(&hashes, 19_994, new_tip.height.0, &proof.branch, proof.root);
}

#[test]
fn concurrent_sessions_share_one_build_and_only_the_builder_pays() {
    const BLOCKS: usize = 10_000;
    let h = Harness::new(BLOCKS);
    let hashes = h.db.hashes();
    let sessions: Vec<SessionHandle<CountingHost>> = (1..=5).map(|n| h.session(n)).collect();
    let cp = (BLOCKS - 1) as u32;
    let before = h.db.reads();
    let start: Vec<f64> = sessions.iter().map(cost).collect();
    let replies = block_on(futures::future::join_all(
        sessions
            .iter()
            .enumerate()
            .map(|(i, s)| s.block_header(Height(i as u32 * 1000), cp)),
    ));
    for (i, reply) in replies.into_iter().enumerate() {
        let proof = reply.unwrap().proof.unwrap();
        assert_reference(&hashes, i as u32 * 1000, cp, &proof.branch, proof.root);
    }
    // The chain was read once, not once per session.
    let reads = h.db.reads() - before;
    let chunks = BLOCKS.div_ceil(2016);
    assert_eq!(reads.range_headers, BLOCKS + chunks - 1);
    let mut costs: Vec<f64> = sessions
        .iter()
        .zip(start)
        .map(|(s, start)| cost(s) - start)
        .collect();
    costs.sort_by(f64::total_cmp);
    // Each session paid 1.25; the one that grew the levels also the headers.
    for waiting in &costs[..4] {
        assert_close(*waiting, 1.25);
    }
    assert_close(costs[4], 1.25 + (BLOCKS + chunks - 1) as f64 / 1000.0);
}

#[test]
fn a_host_may_grow_the_levels_beforehand_uncharged() {
    const BLOCKS: usize = 5000;
    let h = Harness::new(BLOCKS);
    let session = h.session(1);
    let chunks = BLOCKS.div_ceil(2016);
    assert_eq!(
        block_on(h.manager.prepare_checkpoint_proofs()).unwrap(),
        BLOCKS + chunks - 1
    );
    // Nothing left to read: the first client pays the flat cost only.
    assert_eq!(block_on(h.manager.prepare_checkpoint_proofs()).unwrap(), 0);
    let before = (h.db.reads(), cost(&session));
    let reply = block_on(session.block_header(Height(3), 4999)).unwrap();
    assert_eq!((h.db.reads() - before.0).headers(), 2);
    assert_close(cost(&session) - before.1, 1.25);
    let proof = reply.proof.unwrap();
    assert_reference(&h.db.hashes(), 3, 4999, &proof.branch, proof.root);
    // After three blocks: the last header held and the three new ones.
    let tip = h.db.reorg(BLOCKS, 3, 0);
    h.notify(tip);
    assert_eq!(block_on(h.manager.prepare_checkpoint_proofs()).unwrap(), 4);
    assert_eq!(h.manager.info().caches.checkpoints.entries, BLOCKS as u64 + 3);
}

#[test]
fn growing_the_levels_yields_between_chunks() {
    let h = Harness::new(5000);
    let session = h.session(1);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut proof = pin!(session.block_header(Height(0), 4999));
    // The `Db` answers at once, so only the yields between chunks (three
    // chunks: two yields) can make the request pending.
    let mut pending = 0;
    let reply = loop {
        match proof.as_mut().poll(&mut cx) {
            Poll::Ready(reply) => break reply,
            Poll::Pending => pending += 1,
        }
    };
    assert_eq!(pending, 2);
    assert!(reply.unwrap().proof.is_some());
}

#[test]
fn reorgs_cut_the_levels_back_to_the_fork() {
    const BLOCKS: usize = 3000;
    let h = Harness::new(BLOCKS);
    let session = h.session(1);
    let tip = (BLOCKS - 1) as u32;
    block_on(session.block_header(Height(0), tip)).unwrap();

    // A 40-block reorg, notified: a proof above the fork finds it in
    // O(log 40) single-header reads and regrows the 40 headers.
    let new_tip = h.db.reorg(BLOCKS - 40, 45, 1);
    h.notify(new_tip);
    let hashes = h.db.hashes();
    let before = h.db.reads();
    let reply = block_on(session.block_header(Height(2990), new_tip.height.0)).unwrap();
    let reads = h.db.reads() - before;
    let proof = reply.proof.unwrap();
    assert_reference(&hashes, 2990, new_tip.height.0, &proof.branch, proof.root);
    assert!(reads.header_calls <= 2 + 2 * 7, "{reads:?}");
    // The first chunk (from the last header held, 2999, to the checkpoint)
    // shows the change; after the cut, from the last header kept (2959) to
    // the new tip (3004).
    assert_eq!(reads.range_headers, 6 + 46, "{reads:?}");

    // Below the fork nothing changed: no growth, one header read.
    let before = h.db.reads();
    let reply = block_on(session.block_header(Height(100), 2900)).unwrap();
    assert_eq!((h.db.reads() - before).headers(), 2);
    let proof = reply.proof.unwrap();
    assert_reference(&hashes, 100, 2900, &proof.branch, proof.root);

    // A same-height reorg the manager was not told about: the checkpoint
    // header no longer matches, and the proof is still of the `Db`'s chain.
    let silent = h.db.reorg(BLOCKS + 4, 1, 2);
    assert_eq!(silent.height, new_tip.height);
    let hashes = h.db.hashes();
    let reply = block_on(session.block_header(Height(3004), 3004)).unwrap();
    let proof = reply.proof.unwrap();
    assert_reference(&hashes, 3004, 3004, &proof.branch, proof.root);
    // A reorg down to genesis.
    let deep = h.db.reorg(0, BLOCKS, 3);
    h.notify(deep);
    let hashes = h.db.hashes();
    let reply = block_on(session.block_header(Height(5), 2500)).unwrap();
    let proof = reply.proof.unwrap();
    assert_reference(&hashes, 5, 2500, &proof.branch, proof.root);
}

#[test]
fn out_of_range_heights_are_typed_errors() {
    let h = Harness::new(100);
    let session = h.session(1);
    for (height, cp) in [(0, 100), (99, u32::MAX), (100, 100), (u32::MAX, u32::MAX)] {
        let error = block_on(session.block_header(Height(height), cp)).unwrap_err();
        assert!(
            matches!(error, Error::HeightOutOfRange { .. }),
            "{height} {cp}: {error}"
        );
    }
    let error = block_on(session.block_headers(Height(98), 2, u32::MAX)).unwrap_err();
    assert!(matches!(error, Error::HeightOutOfRange { .. }), "{error}");
    let error = block_on(session.block_header(Height(50), 49)).unwrap_err();
    assert!(matches!(error, Error::BadRequest(_)), "{error}");
    let error = block_on(session.block_headers(Height(40), 20, 50)).unwrap_err();
    assert!(matches!(error, Error::BadRequest(_)), "{error}");
    // Nothing was built for refused requests.
    assert_eq!(h.manager.info().caches.checkpoints.entries, 0);
}

#[derive(Debug, Clone)]
enum Step {
    /// Checkpoint proofs: (height pick, checkpoint pick) pairs.
    Prove(Vec<(prop::sample::Index, prop::sample::Index)>),
    /// Keep all but `cut` headers, then add `grow`; notified or not.
    Reorg { cut: usize, grow: usize, notify: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => proptest::collection::vec(any::<(prop::sample::Index, prop::sample::Index)>(), 1..5)
            .prop_map(Step::Prove),
        1 => (0usize..300, 1usize..400, any::<bool>())
            .prop_map(|(cut, grow, notify)| Step::Reorg { cut, grow, notify }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random chains, random reorgs (down to any fork, notified or not) and
    /// random `height ≤ cp_height ≤ tip`: every proof equals the from-scratch
    /// reference over the `Db`'s headers `0..=cp_height`.
    #[test]
    fn proofs_equal_the_reference_merkle_tree(
        blocks in 1usize..3000,
        steps in proptest::collection::vec(step(), 1..8),
    ) {
        let h = Harness::new(blocks);
        let session = h.session(1);
        let mut salt = 1;
        // Heights are checked against the last tip notified.
        let mut known = blocks - 1;
        for step in steps {
            match step {
                Step::Prove(picks) => {
                    let hashes = h.db.hashes();
                    let top = known.min(hashes.len() - 1);
                    for (height, cp) in picks {
                        let cp = cp.index(top + 1) as u32;
                        let height = height.index(cp as usize + 1) as u32;
                        let reply = block_on(session.block_header(Height(height), cp));
                        let reply = reply.unwrap();
                        if cp == 0 {
                            prop_assert!(reply.proof.is_none());
                            continue;
                        }
                        let proof = reply.proof.unwrap();
                        assert_reference(&hashes, height, cp, &proof.branch, proof.root);
                    }
                }
                Step::Reorg { cut, grow, notify } => {
                    let len = h.db.hashes().len();
                    let tip = h.db.reorg(len.saturating_sub(cut), grow, salt);
                    salt += 1;
                    if notify {
                        h.notify(tip);
                        known = tip.height.0 as usize;
                    }
                }
            }
        }
    }
}
