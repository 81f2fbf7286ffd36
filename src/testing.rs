//! Test and example support (feature `test-util`): a manual clock and
//! in-memory host implementations.
//!
//! ```
//! use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport};
//! use indexer_sessions::{Config, SessionManager};
//! use std::time::Duration;
//!
//! let timer = ManualTimer::new();
//! let manager = SessionManager::builder(Config::default())
//!     .timer(timer.clone())
//!     .db(MemoryDb::new())
//!     .daemon(MemoryDaemon::new())
//!     .mempool(MemoryMempool::new())
//!     .build()
//!     .unwrap();
//! let (transport, _client) = MemoryTransport::new("203.0.113.7:50001".parse().unwrap());
//! let session = manager.add_session(transport).unwrap();
//! timer.advance(Duration::from_secs(5));
//! assert_eq!(manager.sessions()[0].age, Duration::from_secs(5));
//! drop(session);
//! assert_eq!(manager.session_count(), 0);
//! ```

use crate::answers::Answers;
use crate::core::hashing::HashMap;
use crate::core::sync::lock;
use crate::error::HostError;
use crate::host::{BroadcastFailure, Daemon, Db, FeeMode, Mempool, Transport};
use crate::timer::Timer;
use crate::types::{
    BlockHash, DisconnectReason, ExtendedNotification, HashX, Height, Notification, PeerInfo, Tip,
    TransportKind, TxHash,
};
use crate::types::{ConfirmedOutpoint, HistoryEntry, MempoolEntry, MempoolOutpoint, OutPoint};
use async_trait::async_trait;
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The in-memory host: what `SessionManager::builder` makes of the
/// in-memory parts with the default validator and ledger.
pub type MemoryHost = crate::HostParts<MemoryDb, MemoryDaemon, MemoryMempool, ManualTimer>;

/// A manager over [`MemoryHost`].
pub type MemoryManager = crate::SessionManager<MemoryHost>;

/// Makes the crate's hash maps created from now on, in this process, use a
/// fixed seed instead of a random one, so a single-threaded simulation
/// iterates them in the same order on every run and a seed replays
/// exactly. For tests only: with a fixed seed, clients could aim hash
/// collisions at the tables keyed by what they send.
pub fn deterministic_hashing() {
    crate::core::hashing::use_fixed_seed();
}

/// A [`ManualTimer`]'s clock and its pending sleeps.
#[derive(Default)]
struct Clock {
    /// Nanoseconds since the clock was made: read without the lock (by
    /// `now`), written only under it (by `advance`), so a sleep that checks
    /// it under the lock cannot miss the advance that wakes it.
    elapsed_nanos: AtomicU64,
    sleepers: Mutex<Sleepers>,
}

impl Clock {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::Acquire))
    }
}

#[derive(Default)]
struct Sleepers {
    next_id: u64,
    /// Pending sleeps by id: deadline and waker. A sleep removes itself when dropped.
    waiting: HashMap<u64, (Duration, Waker)>,
}

/// One [`ManualTimer::sleep`].
struct Sleep {
    id: u64,
    deadline: Duration,
    clock: Arc<Clock>,
}

impl std::future::Future for Sleep {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut sleepers = lock(&self.clock.sleepers);
        if self.clock.elapsed() >= self.deadline {
            sleepers.waiting.remove(&self.id);
            return Poll::Ready(());
        }
        sleepers
            .waiting
            .insert(self.id, (self.deadline, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        lock(&self.clock.sleepers).waiting.remove(&self.id);
    }
}

/// A clock that moves only when told to ([`ManualTimer::advance`]); sleeps
/// complete when the clock passes their deadline. Cheap to clone (clones
/// share the clock); reading it takes no lock.
#[derive(Clone)]
pub struct ManualTimer {
    base: Instant,
    clock: Arc<Clock>,
}

impl std::fmt::Debug for ManualTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualTimer")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

impl Default for ManualTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualTimer {
    /// A clock at its start.
    pub fn new() -> Self {
        ManualTimer {
            base: Instant::now(),
            clock: Arc::default(),
        }
    }

    /// Time since the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Moves the clock forward and wakes every sleep now due. The clock
    /// stops at 2⁶⁴ nanoseconds (584 years) after it was made.
    pub fn advance(&self, by: Duration) {
        let due: Vec<Waker> = {
            let mut sleepers = lock(&self.clock.sleepers);
            let nanos = u64::try_from(self.clock.elapsed().saturating_add(by).as_nanos()).unwrap_or(u64::MAX);
            self.clock.elapsed_nanos.store(nanos, Ordering::Release);
            let now = Duration::from_nanos(nanos);
            let due: Vec<u64> = sleepers
                .waiting
                .iter()
                .filter(|(_, (at, _))| *at <= now)
                .map(|(id, _)| *id)
                .collect();
            due.iter()
                .filter_map(|id| sleepers.waiting.remove(id))
                .map(|(_, waker)| waker)
                .collect()
        };
        due.into_iter().for_each(Waker::wake);
    }

    /// Sleeps not yet due.
    pub fn sleepers(&self) -> usize {
        lock(&self.clock.sleepers).waiting.len()
    }
}

impl Timer for ManualTimer {
    #[inline]
    fn now(&self) -> Instant {
        self.base + self.clock.elapsed()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let mut sleepers = lock(&self.clock.sleepers);
        sleepers.next_id += 1;
        Box::pin(Sleep {
            id: sleepers.next_id,
            deadline: self.clock.elapsed().saturating_add(duration),
            clock: self.clock.clone(),
        })
    }
}

/// What a [`MemoryTransport`] recorded, shared with the test that made it.
#[derive(Default)]
pub struct TransportLog {
    sent: Mutex<Vec<Notification>>,
    extended: Mutex<Vec<ExtendedNotification>>,
    closed: Mutex<Option<DisconnectReason>>,
    stalled: AtomicBool,
    stall_wakers: Mutex<Vec<Waker>>,
    fail: AtomicBool,
    yielding: AtomicBool,
}

impl TransportLog {
    /// Notifications sent so far.
    pub fn sent(&self) -> Vec<Notification> {
        lock(&self.sent).clone()
    }

    /// Takes the notifications sent so far.
    pub fn take_sent(&self) -> Vec<Notification> {
        std::mem::take(&mut *lock(&self.sent))
    }

    /// Notifications sent through [`Transport::send_extended`] so far.
    pub fn sent_extended(&self) -> Vec<ExtendedNotification> {
        lock(&self.extended).clone()
    }

    /// Takes the notifications sent through [`Transport::send_extended`] so far.
    pub fn take_sent_extended(&self) -> Vec<ExtendedNotification> {
        std::mem::take(&mut *lock(&self.extended))
    }

    /// Why the manager closed the connection, if it did.
    pub fn closed(&self) -> Option<DisconnectReason> {
        lock(&self.closed).clone()
    }

    /// While stalled, `send` never completes (a client that stopped reading).
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
        if !stalled {
            lock(&self.stall_wakers).drain(..).for_each(Waker::wake);
        }
    }

    /// While failing, `send` returns an error.
    pub fn set_failing(&self, failing: bool) {
        self.fail.store(failing, Ordering::SeqCst);
    }

    /// While yielding, `send` yields to the executor (as
    /// [`HostBehaviour::Yielding`] does) before it records the notification:
    /// a send dropped there sent nothing.
    pub fn set_yielding(&self, yielding: bool) {
        self.yielding.store(yielding, Ordering::SeqCst);
    }
}

/// An in-memory connection: records what the manager sends and how it closed.
pub struct MemoryTransport {
    peer: PeerInfo,
    log: Arc<TransportLog>,
}

impl MemoryTransport {
    /// A TCP connection from `addr`, and the log the test reads.
    pub fn new(addr: SocketAddr) -> (Self, Arc<TransportLog>) {
        Self::with_kind(addr, TransportKind::Tcp)
    }

    /// A connection of `kind` from `addr`.
    pub fn with_kind(addr: SocketAddr, kind: TransportKind) -> (Self, Arc<TransportLog>) {
        let log = Arc::new(TransportLog::default());
        (
            MemoryTransport {
                peer: PeerInfo { addr, kind },
                log: log.clone(),
            },
            log,
        )
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    fn peer(&self) -> PeerInfo {
        self.peer
    }

    async fn send(&self, notification: Notification) -> Result<(), HostError> {
        self.before_send().await?;
        lock(&self.log.sent).push(notification);
        Ok(())
    }

    async fn send_extended(&self, notification: ExtendedNotification) -> Result<(), HostError> {
        self.before_send().await?;
        lock(&self.log.extended).push(notification);
        Ok(())
    }

    async fn close(&self, reason: DisconnectReason) {
        lock(&self.log.closed).get_or_insert(reason);
    }
}

impl MemoryTransport {
    /// What every send does before it records: yields, stalls or fails as
    /// the log says.
    async fn before_send(&self) -> Result<(), HostError> {
        if self.log.yielding.load(Ordering::SeqCst) {
            yield_to_executor().await;
        }
        std::future::poll_fn(|cx| {
            if self.log.stalled.load(Ordering::SeqCst) {
                lock(&self.log.stall_wakers).push(cx.waker().clone());
                // Re-check after registering, so an unstall in between is not missed.
                if self.log.stalled.load(Ordering::SeqCst) {
                    return Poll::Pending;
                }
            }
            Poll::Ready(())
        })
        .await;
        if self.log.fail.load(Ordering::SeqCst) {
            return Err("connection reset".into());
        }
        Ok(())
    }
}

/// How a memory host answers: normally, with an error, or never.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HostBehaviour {
    /// Answers from its data.
    #[default]
    Normal,
    /// Every call fails.
    Failing,
    /// Every call hangs forever.
    Hanging,
    /// Every call yields to the executor (returns `Pending` twice, waking
    /// itself), then answers from its data: each call is an await point
    /// where a caller's future can be dropped.
    Yielding,
}

/// Returns `Pending` twice (waking itself each time), then `Ready`: twice,
/// so that a caller that polls a host call once in place before awaiting it
/// still yields to its own caller.
pub(crate) async fn yield_to_executor() {
    crate::edge::chain::yield_now().await;
    crate::edge::chain::yield_now().await;
}

#[derive(Default)]
struct Behaviour {
    /// A [`HostBehaviour`] (`Behaviour::mode`): read on every call, so
    /// an atomic rather than a lock.
    mode: AtomicU8,
    calls: AtomicUsize,
    /// Outpoint lookups among `calls`.
    outpoint_calls: AtomicUsize,
}

impl Behaviour {
    const MODES: [HostBehaviour; 4] = [
        HostBehaviour::Normal,
        HostBehaviour::Failing,
        HostBehaviour::Hanging,
        HostBehaviour::Yielding,
    ];

    fn mode(&self) -> HostBehaviour {
        Self::MODES[usize::from(self.mode.load(Ordering::SeqCst))]
    }

    fn set_mode(&self, mode: HostBehaviour) {
        let index = Self::MODES.iter().position(|m| *m == mode).unwrap_or(0);
        self.mode.store(index as u8, Ordering::SeqCst);
    }

    async fn enter(&self, what: &str) -> Result<(), HostError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.mode() {
            HostBehaviour::Normal => Ok(()),
            HostBehaviour::Failing => Err(format!("{what}: host unavailable").into()),
            HostBehaviour::Hanging => futures::future::pending().await,
            HostBehaviour::Yielding => {
                yield_to_executor().await;
                Ok(())
            }
        }
    }
}

#[derive(Default)]
struct ChainData {
    headers: Vec<Vec<u8>>,
    block_txids: Vec<Vec<TxHash>>,
    history: HashMap<HashX, Vec<HistoryEntry>>,
    outpoints: HashMap<OutPoint, ConfirmedOutpoint>,
}

/// An in-memory index. Headers are whatever bytes the test stores; the
/// tip hash is the double SHA-256 of the tip header.
#[derive(Clone, Default)]
pub struct MemoryDb {
    data: Arc<Mutex<ChainData>>,
    behaviour: Arc<Behaviour>,
}

impl MemoryDb {
    /// An empty index (no blocks).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a block: its raw header and txids. Returns the new tip.
    pub fn push_block(&self, header: Vec<u8>, txids: Vec<TxHash>) -> Tip {
        let mut data = lock(&self.data);
        data.headers.push(header);
        data.block_txids.push(txids);
        tip_of(&data)
    }

    /// Replaces the block at the tip (a same-height reorg). Returns the new tip.
    pub fn replace_tip(&self, header: Vec<u8>, txids: Vec<TxHash>) -> Tip {
        let mut data = lock(&self.data);
        data.headers.pop();
        data.block_txids.pop();
        data.headers.push(header);
        data.block_txids.push(txids);
        tip_of(&data)
    }

    /// The current tip.
    pub fn current_tip(&self) -> Tip {
        tip_of(&lock(&self.data))
    }

    /// Sets the confirmed history of a script.
    pub fn set_history(&self, hashx: HashX, history: Vec<HistoryEntry>) {
        lock(&self.data).history.insert(hashx, history);
    }

    /// Appends one confirmed transaction to a script's history.
    pub fn add_history(&self, hashx: HashX, entry: HistoryEntry) {
        lock(&self.data).history.entry(hashx).or_default().push(entry);
    }

    /// Sets the confirmed state of an outpoint ([`Db::outpoint`]); `None`
    /// forgets it (the output never existed in the chain, or a reorg
    /// removed it).
    pub fn set_outpoint(&self, outpoint: OutPoint, confirmed: Option<ConfirmedOutpoint>) {
        let mut data = lock(&self.data);
        match confirmed {
            Some(confirmed) => data.outpoints.insert(outpoint, confirmed),
            None => data.outpoints.remove(&outpoint),
        };
    }

    /// Makes every later call answer normally, fail or hang.
    pub fn set_behaviour(&self, behaviour: HostBehaviour) {
        self.behaviour.set_mode(behaviour);
    }

    /// Calls made so far.
    pub fn calls(&self) -> usize {
        self.behaviour.calls.load(Ordering::SeqCst)
    }

    /// [`Db::outpoint`] calls made so far (also counted by [`MemoryDb::calls`]).
    pub fn outpoint_calls(&self) -> usize {
        self.behaviour.outpoint_calls.load(Ordering::SeqCst)
    }
}

/// The first `limit` entries of a script's history.
fn history_of(data: &ChainData, hashx: HashX, limit: usize) -> Vec<HistoryEntry> {
    data.history
        .get(&hashx)
        .map(|h| h[..h.len().min(limit)].to_vec())
        .unwrap_or_default()
}

fn tip_of(data: &ChainData) -> Tip {
    match data.headers.last() {
        Some(header) => Tip {
            height: Height(data.headers.len() as u32 - 1),
            hash: BlockHash(crate::core::merkle::double_sha256(header)),
        },
        None => Tip::default(),
    }
}

#[async_trait]
impl Db for MemoryDb {
    async fn tip(&self) -> Result<Tip, HostError> {
        self.behaviour.enter("tip").await?;
        Ok(tip_of(&lock(&self.data)))
    }

    async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, HostError> {
        self.behaviour.enter("header").await?;
        Ok(lock(&self.data).headers.get(height.0 as usize).cloned())
    }

    async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, HostError> {
        self.behaviour.enter("headers").await?;
        let data = lock(&self.data);
        let start = (start.0 as usize).min(data.headers.len());
        let end = start.saturating_add(count as usize).min(data.headers.len());
        Ok(data.headers[start..end].to_vec())
    }

    async fn history(&self, hashx: HashX, limit: usize) -> Result<Vec<HistoryEntry>, HostError> {
        self.behaviour.enter("history").await?;
        Ok(history_of(&lock(&self.data), hashx, limit))
    }

    /// One lock for the whole batch while the host answers normally
    /// (counted as one call per script, as [`MemoryDb::calls`] says), the
    /// entries copied straight into `answers`; otherwise as the default
    /// method: one [`Db::history`] call per script, 32 at a time, each
    /// failing, hanging or yielding.
    async fn histories(
        &self,
        hashxs: &[HashX],
        limit: usize,
        answers: &mut Answers<HistoryEntry>,
    ) -> Result<(), HostError> {
        if self.behaviour.mode() == HostBehaviour::Normal {
            self.behaviour.calls.fetch_add(hashxs.len(), Ordering::SeqCst);
            let data = lock(&self.data);
            for hashx in hashxs {
                let history = data
                    .history
                    .get(hashx)
                    .map_or(&[][..], |h| &h[..h.len().min(limit)]);
                answers.answer(history.iter().copied());
            }
            return Ok(());
        }
        crate::host::one_by_one(hashxs, |hashx| self.history(hashx, limit), answers).await;
        Ok(())
    }

    async fn block_txids(&self, height: Height) -> Result<Option<Vec<TxHash>>, HostError> {
        self.behaviour.enter("block txids").await?;
        Ok(lock(&self.data).block_txids.get(height.0 as usize).cloned())
    }

    async fn outpoint(&self, outpoint: OutPoint) -> Result<Option<ConfirmedOutpoint>, HostError> {
        self.behaviour.outpoint_calls.fetch_add(1, Ordering::SeqCst);
        self.behaviour.enter("outpoint").await?;
        Ok(lock(&self.data).outpoints.get(&outpoint).copied())
    }
}

/// An in-memory mempool.
#[derive(Clone, Default)]
pub struct MemoryMempool {
    entries: Arc<Mutex<HashMap<HashX, Vec<MempoolEntry>>>>,
    outpoints: Arc<Mutex<HashMap<OutPoint, MempoolOutpoint>>>,
    histogram: Arc<Mutex<Vec<(f64, u64)>>>,
    behaviour: Arc<Behaviour>,
}

impl MemoryMempool {
    /// An empty mempool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an unconfirmed transaction touching `hashx`.
    pub fn add(&self, hashx: HashX, entry: MempoolEntry) {
        lock(&self.entries).entry(hashx).or_default().push(entry);
    }

    /// Removes a transaction from every script (it confirmed or was
    /// dropped), and from the outpoints it created or spent.
    pub fn remove(&self, txid: TxHash) {
        let mut entries = lock(&self.entries);
        entries
            .values_mut()
            .for_each(|list| list.retain(|e| e.txid != txid));
        entries.retain(|_, list| !list.is_empty());
        let mut outpoints = lock(&self.outpoints);
        for (outpoint, state) in outpoints.iter_mut() {
            if outpoint.txid == txid {
                state.funder = None;
            }
            if state.spender.is_some_and(|s| s.txid == txid) {
                state.spender = None;
            }
        }
        outpoints.retain(|_, state| *state != MempoolOutpoint::default());
    }

    /// Sets the mempool state of an outpoint ([`Mempool::outpoint`]); the
    /// default state forgets it.
    pub fn set_outpoint(&self, outpoint: OutPoint, state: MempoolOutpoint) {
        let mut outpoints = lock(&self.outpoints);
        if state == MempoolOutpoint::default() {
            outpoints.remove(&outpoint);
        } else {
            outpoints.insert(outpoint, state);
        }
    }

    /// [`Mempool::outpoint`] calls made so far (also counted by [`MemoryMempool::calls`]).
    pub fn outpoint_calls(&self) -> usize {
        self.behaviour.outpoint_calls.load(Ordering::SeqCst)
    }

    /// Sets the fee histogram.
    pub fn set_histogram(&self, histogram: Vec<(f64, u64)>) {
        *lock(&self.histogram) = histogram;
    }

    /// Makes every later call answer normally, fail or hang.
    pub fn set_behaviour(&self, behaviour: HostBehaviour) {
        self.behaviour.set_mode(behaviour);
    }

    /// Calls made so far.
    pub fn calls(&self) -> usize {
        self.behaviour.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Mempool for MemoryMempool {
    async fn entries(&self, hashx: HashX) -> Result<Vec<MempoolEntry>, HostError> {
        self.behaviour.enter("mempool").await?;
        Ok(lock(&self.entries).get(&hashx).cloned().unwrap_or_default())
    }

    /// One lock for the whole batch while the host answers normally
    /// (counted as one call per script, as [`MemoryMempool::calls`] says),
    /// the entries copied straight into `answers`; otherwise as the default
    /// method: one [`Mempool::entries`] call per script, 32 at a time, each
    /// failing, hanging or yielding.
    async fn entries_batch(
        &self,
        hashxs: &[HashX],
        answers: &mut Answers<MempoolEntry>,
    ) -> Result<(), HostError> {
        if self.behaviour.mode() == HostBehaviour::Normal {
            self.behaviour.calls.fetch_add(hashxs.len(), Ordering::SeqCst);
            let entries = lock(&self.entries);
            for hashx in hashxs {
                answers.answer(entries.get(hashx).into_iter().flatten().copied());
            }
            return Ok(());
        }
        crate::host::one_by_one(hashxs, |hashx| self.entries(hashx), answers).await;
        Ok(())
    }

    async fn fee_histogram(&self) -> Result<Vec<(f64, u64)>, HostError> {
        self.behaviour.enter("fee histogram").await?;
        Ok(lock(&self.histogram).clone())
    }

    async fn outpoint(&self, outpoint: OutPoint) -> Result<MempoolOutpoint, HostError> {
        self.behaviour.outpoint_calls.fetch_add(1, Ordering::SeqCst);
        self.behaviour.enter("mempool outpoint").await?;
        Ok(lock(&self.outpoints).get(&outpoint).copied().unwrap_or_default())
    }
}

/// An in-memory node: stores broadcast transactions, answers fee
/// estimates from a table, can reject transactions with a message.
#[derive(Clone, Default)]
pub struct MemoryDaemon {
    transactions: Arc<Mutex<HashMap<TxHash, Vec<u8>>>>,
    broadcasts: Arc<Mutex<Vec<Vec<u8>>>>,
    fees: Arc<Mutex<HashMap<u32, f64>>>,
    reject: Arc<Mutex<Option<String>>>,
    estimate_calls: Arc<AtomicUsize>,
    estimate_delay: Arc<Mutex<Option<(ManualTimer, Duration)>>>,
    behaviour: Arc<Behaviour>,
}

impl MemoryDaemon {
    /// A node that knows nothing and accepts every transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a transaction so `raw_transaction` finds it.
    pub fn add_transaction(&self, txid: TxHash, raw: Vec<u8>) {
        lock(&self.transactions).insert(txid, raw);
    }

    /// Sets the estimate for a block target.
    pub fn set_fee(&self, blocks: u32, rate: f64) {
        lock(&self.fees).insert(blocks, rate);
    }

    /// Makes later broadcasts fail with this message (`None` accepts again).
    pub fn set_reject(&self, message: Option<String>) {
        *lock(&self.reject) = message;
    }

    /// Raw transactions broadcast so far.
    pub fn broadcasts(&self) -> Vec<Vec<u8>> {
        lock(&self.broadcasts).clone()
    }

    /// `estimate_fee` calls made so far.
    pub fn estimate_calls(&self) -> usize {
        self.estimate_calls.load(Ordering::SeqCst)
    }

    /// Makes each estimate take `delay` on `timer` (to test call coalescing).
    pub fn set_estimate_delay(&self, timer: ManualTimer, delay: Duration) {
        *lock(&self.estimate_delay) = Some((timer, delay));
    }

    /// Makes every later call answer normally, fail or hang.
    pub fn set_behaviour(&self, behaviour: HostBehaviour) {
        self.behaviour.set_mode(behaviour);
    }

    /// Calls made so far (every method, failed ones included).
    pub fn calls(&self) -> usize {
        self.behaviour.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Daemon for MemoryDaemon {
    async fn broadcast_transaction(&self, raw: &[u8]) -> Result<TxHash, BroadcastFailure> {
        self.behaviour
            .enter("broadcast")
            .await
            .map_err(BroadcastFailure::Unavailable)?;
        if let Some(message) = lock(&self.reject).clone() {
            return Err(BroadcastFailure::Rejected(message));
        }
        let txid = crate::core::tx::parse_transaction(raw)
            .map(|tx| tx.txid)
            .map_err(|e| BroadcastFailure::Rejected(e.to_string()))?;
        lock(&self.broadcasts).push(raw.to_vec());
        lock(&self.transactions).insert(txid, raw.to_vec());
        Ok(txid)
    }

    async fn estimate_fee(&self, blocks: u32, _mode: Option<FeeMode>) -> Result<Option<f64>, HostError> {
        self.behaviour.enter("estimatefee").await?;
        self.estimate_calls.fetch_add(1, Ordering::SeqCst);
        let delay = lock(&self.estimate_delay).clone();
        if let Some((timer, delay)) = delay {
            timer.sleep(delay).await;
        }
        Ok(lock(&self.fees).get(&blocks).copied())
    }

    async fn relay_fee(&self) -> Result<f64, HostError> {
        self.behaviour.enter("relayfee").await?;
        Ok(0.00001)
    }

    async fn raw_transaction(&self, txid: TxHash) -> Result<Option<Vec<u8>>, HostError> {
        self.behaviour.enter("getrawtransaction").await?;
        Ok(lock(&self.transactions).get(&txid).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    /// A mempool with only the required methods: `entries_batch` is the
    /// trait's default, one `entries` call per script.
    struct PerScript(MemoryMempool);

    #[async_trait]
    impl Mempool for PerScript {
        async fn entries(&self, hashx: HashX) -> Result<Vec<MempoolEntry>, HostError> {
            self.0.entries(hashx).await
        }
        async fn fee_histogram(&self) -> Result<Vec<(f64, u64)>, HostError> {
            self.0.fee_histogram().await
        }
    }

    /// One `entries_batch` call's answers, a failed one as `None`.
    fn batch(mempool: &impl Mempool, asked: &[HashX]) -> Vec<Option<Vec<MempoolEntry>>> {
        let mut answers = Answers::new();
        block_on(mempool.entries_batch(asked, &mut answers)).expect("the call answers");
        (0..answers.len())
            .map(|at| answers.get(at).and_then(Result::ok).map(<[_]>::to_vec))
            .collect()
    }

    #[test]
    fn the_batched_mempool_call_answers_as_the_default_does() {
        let mempool = MemoryMempool::new();
        let scripts: Vec<HashX> = (0..70u8).map(|n| HashX([n; crate::types::HASHX_LEN])).collect();
        for (n, hashx) in scripts.iter().enumerate().filter(|(n, _)| n % 3 != 0) {
            for k in 0..n % 4 {
                let entry = MempoolEntry {
                    txid: TxHash([(n * 4 + k) as u8; 32]),
                    fee: n as u64 * 10 + k as u64,
                    has_unconfirmed_inputs: k % 2 == 1,
                };
                mempool.add(*hashx, entry);
            }
        }
        let default = PerScript(mempool.clone());
        // Scripts repeated and out of order: one answer per script asked for.
        let mut asked = scripts.clone();
        asked.extend(scripts.iter().rev().step_by(7));
        for behaviour in [
            HostBehaviour::Normal,
            HostBehaviour::Yielding,
            HostBehaviour::Failing,
        ] {
            mempool.set_behaviour(behaviour);
            let before = mempool.calls();
            let ours = batch(&mempool, &asked);
            let calls = mempool.calls() - before;
            let theirs = batch(&default, &asked);
            assert_eq!(ours, theirs, "{behaviour:?}");
            assert_eq!(ours.len(), asked.len());
            // Counted as one call per script either way.
            assert_eq!(calls, asked.len(), "{behaviour:?}");
            assert_eq!(mempool.calls() - before, 2 * asked.len(), "{behaviour:?}");
            let expected: Vec<_> = asked
                .iter()
                .map(|hashx| block_on(default.entries(*hashx)).ok())
                .collect();
            assert_eq!(ours, expected, "{behaviour:?}");
            if behaviour != HostBehaviour::Failing {
                assert!(ours.iter().any(|a| a.as_ref().is_some_and(|e| e.len() == 3)));
            } else {
                assert!(ours.iter().all(Option::is_none));
            }
        }
    }
}
