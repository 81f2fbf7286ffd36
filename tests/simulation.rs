//! A deterministic simulation of the manager as hosts really use it.
//!
//! One seed drives a single-threaded executor on a `ManualTimer` through
//! thousands of steps: clients connect from random subnets (IPv4, IPv6,
//! IPv4-mapped, exempt) and leave; honest, slow, stalled and abusive
//! clients subscribe, unsubscribe and make requests; a model chain gets
//! blocks, mempool changes and same-height reorgs, each followed by a
//! `notify`; hosts fail, hang and yield at random; futures (`notify`,
//! `deliver`, `admit`, `Permit::run`, `subscribe`, `subscribe_headers`,
//! broadcasts) are dropped at random await points; limits and bans change
//! at run time. Invariants are checked after every step and at quiescence.
//!
//! `cargo test --all-features --test simulation` runs a bounded number of
//! seeds; `SIM_SEED=n` runs one, `SIM_SEEDS=n` runs `n` seeds from
//! `SIM_FIRST` (default 0), `SIM_STEPS=n` sets the steps per seed.
//!
//! The manager's maps use a fixed hash seed here
//! (`testing::deterministic_hashing`), so a seed replays exactly; host
//! faults are drawn from a hash of (seed, step, call, key) rather than one
//! shared stream, so they do not depend on the order of calls either.

use indexer_sessions::Cost;
use indexer_sessions::status::{electrum_status, sort_mempool, status_hex};
use indexer_sessions::testing::ManualTimer;
use indexer_sessions::{
    BlockHash, BroadcastFailure, Config, Daemon, Db, DisconnectReason, Error, FeeMode, HashX, Height,
    HistoryEntry, HostError, HostParts, Limits, ListenerState, Mempool, MempoolEntry, Notification, PeerInfo,
    Refusal, SessionHandle, SessionManager, Tip, Transport, TransportKind, TxHash,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

// ---------------------------------------------------------------- randomness

/// SplitMix64: small, seedable, good enough to drive a simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `SIM_TRACE=<session id>` prints what happens to that session.
fn traced(id: indexer_sessions::SessionId) -> bool {
    static TRACE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    TRACE
        .get_or_init(|| std::env::var("SIM_TRACE").ok().and_then(|v| v.parse().ok()))
        .is_some_and(|traced| traced == id.0)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------- the model chain

const SCRIPTS: u8 = 16;

fn alias(script: u8) -> String {
    format!("{:02x}", script.wrapping_mul(53).wrapping_add(7)).repeat(32)
}

fn hashx(script: u8) -> HashX {
    HashX::from_scripthash_hex(&alias(script)).expect("valid alias")
}

#[derive(Clone, Debug)]
struct ModelTx {
    txid: TxHash,
    scripts: Vec<u8>,
    unconfirmed_inputs: bool,
}

#[derive(Clone, Debug)]
struct Block {
    header: Vec<u8>,
    txs: Vec<ModelTx>,
}

#[derive(Default)]
struct Chain {
    blocks: Vec<Block>,
    mempool: Vec<ModelTx>,
    next_txid: u32,
    next_salt: u32,
}

impl Chain {
    fn header(&mut self, height: usize) -> Vec<u8> {
        self.next_salt += 1;
        let mut header = vec![0u8; 80];
        header[..4].copy_from_slice(&(height as u32).to_le_bytes());
        header[4..8].copy_from_slice(&self.next_salt.to_le_bytes());
        header
    }

    fn new_tx(&mut self, rng: &mut Rng) -> ModelTx {
        self.next_txid += 1;
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&self.next_txid.to_le_bytes());
        bytes[31] = 0x5a;
        let touched = 1 + rng.index(2);
        let scripts = (0..touched)
            .map(|_| rng.below(u64::from(SCRIPTS)) as u8)
            .collect();
        ModelTx {
            txid: TxHash(bytes),
            scripts,
            unconfirmed_inputs: rng.chance(300),
        }
    }

    fn tip(&self) -> Tip {
        let height = self.blocks.len() - 1;
        Tip {
            height: Height(height as u32),
            hash: BlockHash(indexer_sessions::merkle::double_sha256(
                &self.blocks[height].header,
            )),
        }
    }

    fn history(&self, script: u8) -> Vec<HistoryEntry> {
        let mut out = Vec::new();
        for (height, block) in self.blocks.iter().enumerate() {
            for tx in &block.txs {
                if tx.scripts.contains(&script) {
                    out.push(HistoryEntry {
                        txid: tx.txid,
                        height: Height(height as u32),
                    });
                }
            }
        }
        out.dedup();
        out
    }

    fn mempool_entries(&self, script: u8) -> Vec<MempoolEntry> {
        self.mempool
            .iter()
            .filter(|tx| tx.scripts.contains(&script))
            .map(|tx| MempoolEntry {
                txid: tx.txid,
                fee: 1000,
                has_unconfirmed_inputs: tx.unconfirmed_inputs,
            })
            .collect()
    }

    /// The status a client must end up with.
    fn truth(&self, script: u8) -> Option<String> {
        let history = self.history(script);
        let mut mempool = self.mempool_entries(script);
        mempool.retain(|m| !history.iter().any(|h| h.txid == m.txid));
        sort_mempool(&mut mempool);
        electrum_status(&history, &mempool).map(|s| status_hex(&s))
    }

    fn scripts_of(txs: &[ModelTx]) -> BTreeSet<u8> {
        txs.iter().flat_map(|tx| tx.scripts.iter().copied()).collect()
    }
}

// ---------------------------------------------------------------- hosts with faults

#[derive(Clone, Copy, Default, Debug)]
struct FaultRates {
    /// Per mille of host calls that fail, hang, or yield first.
    fail: u64,
    hang: u64,
    yields: u64,
}

struct World {
    seed: u64,
    step: AtomicU64,
    chain: Mutex<Chain>,
    faults: Mutex<FaultRates>,
    /// Calls per (step, call, key) so far, to key each call's fault.
    calls: Mutex<HashMap<(u64, &'static str, u64), u64>>,
    scripts: HashMap<HashX, u8>,
}

enum Fault {
    None,
    Fail,
    Hang,
    Yield(u32),
}

impl World {
    fn fault(&self, call: &'static str, key: u64) -> Fault {
        let step = self.step.load(Ordering::SeqCst);
        let n = {
            let mut calls = lock(&self.calls);
            let n = calls.entry((step, call, key)).or_insert(0);
            *n += 1;
            *n
        };
        let name = call.bytes().fold(0u64, |h, b| mix(h ^ u64::from(b)));
        let draw = mix(self.seed ^ mix(step ^ mix(name ^ mix(key ^ mix(n)))));
        let rates = *lock(&self.faults);
        let roll = draw % 1000;
        if roll < rates.fail {
            Fault::Fail
        } else if roll < rates.fail + rates.hang {
            Fault::Hang
        } else if roll < rates.fail + rates.hang + rates.yields {
            Fault::Yield(1 + (draw >> 20) as u32 % 3)
        } else {
            Fault::None
        }
    }

    async fn enter(&self, call: &'static str, key: u64) -> Result<(), HostError> {
        match self.fault(call, key) {
            Fault::None => Ok(()),
            Fault::Fail => Err(format!("{call}: injected failure").into()),
            Fault::Hang => futures::future::pending().await,
            Fault::Yield(times) => {
                yield_times(times * 2).await;
                Ok(())
            }
        }
    }

    fn script(&self, hashx: &HashX) -> Option<u8> {
        self.scripts.get(hashx).copied()
    }
}

async fn yield_times(times: u32) {
    let mut left = times;
    std::future::poll_fn(|cx| {
        if left == 0 {
            Poll::Ready(())
        } else {
            left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

fn key_of(hashx: &HashX) -> u64 {
    u64::from_le_bytes(hashx.0[..8].try_into().unwrap())
}

/// The simulation's host: the world behind the index, mempool and node.
type SimHost = HostParts<SimDb, SimDaemon, SimMempool, ManualTimer>;

#[derive(Clone)]
struct SimDb(Arc<World>);

#[async_trait::async_trait]
impl Db for SimDb {
    async fn tip(&self) -> Result<Tip, HostError> {
        self.0.enter("tip", 0).await?;
        Ok(lock(&self.0.chain).tip())
    }

    async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, HostError> {
        self.0.enter("header", u64::from(height.0)).await?;
        Ok(lock(&self.0.chain)
            .blocks
            .get(height.0 as usize)
            .map(|b| b.header.clone()))
    }

    async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, HostError> {
        self.0.enter("headers", u64::from(start.0)).await?;
        let chain = lock(&self.0.chain);
        Ok(chain
            .blocks
            .iter()
            .skip(start.0 as usize)
            .take(count as usize)
            .map(|b| b.header.clone())
            .collect())
    }

    async fn history(&self, hashx: HashX, limit: usize) -> Result<Vec<HistoryEntry>, HostError> {
        self.0.enter("history", key_of(&hashx)).await?;
        let Some(script) = self.0.script(&hashx) else {
            return Ok(Vec::new());
        };
        let mut history = lock(&self.0.chain).history(script);
        history.truncate(limit);
        Ok(history)
    }

    async fn block_txids(&self, height: Height) -> Result<Option<Vec<TxHash>>, HostError> {
        self.0.enter("block_txids", u64::from(height.0)).await?;
        Ok(lock(&self.0.chain)
            .blocks
            .get(height.0 as usize)
            .map(|b| b.txs.iter().map(|tx| tx.txid).collect()))
    }
}

#[derive(Clone)]
struct SimMempool(Arc<World>);

#[async_trait::async_trait]
impl Mempool for SimMempool {
    async fn entries(&self, hashx: HashX) -> Result<Vec<MempoolEntry>, HostError> {
        self.0.enter("mempool", key_of(&hashx)).await?;
        Ok(match self.0.script(&hashx) {
            Some(script) => lock(&self.0.chain).mempool_entries(script),
            None => Vec::new(),
        })
    }

    async fn fee_histogram(&self) -> Result<Vec<(f64, u64)>, HostError> {
        self.0.enter("histogram", 0).await?;
        Ok(Vec::new())
    }
}

#[derive(Clone)]
struct SimDaemon(Arc<World>);

#[async_trait::async_trait]
impl Daemon for SimDaemon {
    async fn broadcast_transaction(&self, raw: &[u8]) -> Result<TxHash, BroadcastFailure> {
        self.0
            .enter("broadcast", raw.len() as u64)
            .await
            .map_err(BroadcastFailure::Unavailable)?;
        Ok(TxHash(indexer_sessions::merkle::double_sha256(raw)))
    }

    async fn estimate_fee(&self, blocks: u32, _mode: Option<FeeMode>) -> Result<Option<f64>, HostError> {
        self.0.enter("estimatefee", u64::from(blocks)).await?;
        Ok(Some(0.0001))
    }

    async fn relay_fee(&self) -> Result<f64, HostError> {
        self.0.enter("relayfee", 0).await?;
        Ok(0.00001)
    }

    async fn raw_transaction(&self, txid: TxHash) -> Result<Option<Vec<u8>>, HostError> {
        self.0.enter("rawtx", u64::from(txid.0[0])).await?;
        Ok(None)
    }
}

/// What one client received, in order, and how its connection behaves.
#[derive(Default)]
struct Wire {
    /// Notifications that completed their send.
    received: Mutex<Vec<Notification>>,
    stalled: AtomicBool,
    closed: Mutex<Option<DisconnectReason>>,
    sends: AtomicU64,
}

struct SimTransport {
    peer: PeerInfo,
    wire: Arc<Wire>,
    world: Arc<World>,
    key: u64,
}

#[async_trait::async_trait]
impl Transport for SimTransport {
    fn peer(&self) -> PeerInfo {
        self.peer
    }

    async fn send(&self, notification: Notification) -> Result<(), HostError> {
        let n = self.wire.sends.fetch_add(1, Ordering::SeqCst);
        match self.world.fault("send", mix(self.key ^ n)) {
            Fault::None => {}
            Fault::Yield(times) => yield_times(times).await,
            // A connection reset, rarer than other host failures.
            Fault::Fail if n % 4 == 0 => return Err("connection reset".into()),
            Fault::Fail => {}
            // Stuck until `max_send_delay` cuts it.
            Fault::Hang => futures::future::pending::<()>().await,
        }
        std::future::poll_fn(|cx| {
            if self.wire.stalled.load(Ordering::SeqCst) {
                // Polled again by the executor's next round.
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        lock(&self.wire.received).push(notification);
        Ok(())
    }

    async fn close(&self, reason: DisconnectReason) {
        lock(&self.wire.closed).get_or_insert(reason);
    }
}

// ---------------------------------------------------------------- clients

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Reads everything at once.
    Honest,
    /// Reads now and then.
    Slow,
    /// Stops reading (its sends never complete) until quiescence.
    Stalled,
    /// Spends far more than it should.
    Abusive,
}

/// What a finished request tells the model.
enum Outcome {
    Subscribed(u8, Option<String>),
    HeadersSubscribed(Vec<u8>),
    Done,
    /// −101: the host answers and closes the connection.
    Excessive,
    Failed,
}

type Task<T> = Pin<Box<dyn Future<Output = T> + Send>>;

struct Client {
    handle: Arc<SessionHandle<SimHost>>,
    wire: Arc<Wire>,
    kind: Kind,
    deliver: Option<Task<()>>,
    request: Option<Task<Outcome>>,
    /// Scripts the model believes subscribed (a subscribe completed and no
    /// unsubscribe since).
    subscribed: BTreeSet<u8>,
    headers: bool,
    /// Per script: the last status the client learnt from a reply, and how
    /// many notifications it had received then.
    replied: BTreeMap<u8, (usize, Option<String>)>,
    /// The last header learnt from a reply, and the notification count then.
    header_reply: Option<(usize, Vec<u8>)>,
    /// Tips up to and including the one of the last header reply.
    tips_at_header_subscription: usize,
    /// Notifications already checked.
    checked: usize,
    /// Replies not yet checked: (notifications received before it, script, status).
    unchecked_replies: Vec<(usize, u8, Option<String>)>,
    /// Per script, the last notified status (reset by unsubscribe).
    last_notified: BTreeMap<u8, Option<String>>,
    last_header: Option<Vec<u8>>,
}

// ---------------------------------------------------------------- the simulation

struct Sim {
    rng: Rng,
    world: Arc<World>,
    timer: ManualTimer,
    manager: SessionManager<SimHost>,
    clients: Vec<Client>,
    notifies: Vec<Task<()>>,
    housekeeping: Option<Task<()>>,
    next_port: u16,
    /// Per mille of `Pending` polls after which the future is dropped.
    drop_rate: u64,
    /// A real raw transaction to broadcast.
    raw_tx: Vec<u8>,
    /// Tips since the start, for "one header per tip change".
    tips: Vec<Tip>,
    stats: Stats,
}

#[derive(Default, Debug)]
struct Stats {
    connected: usize,
    refused: usize,
    dropped_futures: usize,
    notifications: usize,
    excessive: usize,
    closed_by_manager: usize,
}

fn poll<T>(task: &mut Task<T>) -> Poll<T> {
    let waker = futures::task::noop_waker();
    task.as_mut().poll(&mut Context::from_waker(&waker))
}

fn random_addr(rng: &mut Rng, port: u16) -> SocketAddr {
    let ip: IpAddr = match rng.below(6) {
        0 | 1 => format!("203.0.{}.{}", 113 + rng.below(3), 1 + rng.below(250)),
        2 => format!("2001:db8:{:x}::{:x}", rng.below(3), 1 + rng.below(500)),
        3 => format!("::ffff:198.51.100.{}", 1 + rng.below(250)),
        4 => format!("198.51.100.{}", 1 + rng.below(250)),
        _ => format!("127.0.0.{}", 1 + rng.below(250)),
    }
    .parse()
    .expect("address");
    SocketAddr::new(ip, port)
}

impl Sim {
    fn new(seed: u64) -> Self {
        indexer_sessions::testing::deterministic_hashing();
        let mut rng = Rng(seed);
        let scripts = (0..SCRIPTS).map(|s| (hashx(s), s)).collect();
        let world = Arc::new(World {
            seed,
            step: AtomicU64::new(0),
            chain: Mutex::new(Chain::default()),
            faults: Mutex::new(FaultRates::default()),
            calls: Mutex::new(HashMap::new()),
            scripts,
        });
        {
            let mut chain = lock(&world.chain);
            let header = chain.header(0);
            chain.blocks.push(Block {
                header,
                txs: Vec::new(),
            });
        }
        let timer = ManualTimer::new();
        let limits = Limits {
            max_sessions: 24 + rng.index(16),
            max_subs_per_session: Some(12),
            request_sleep: Duration::from_millis(500),
            ..Limits::default()
        };
        let config = Config {
            limits,
            host_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        let manager = SessionManager::builder(config)
            .timer(timer.clone())
            .db(SimDb(world.clone()))
            .mempool(SimMempool(world.clone()))
            .daemon(SimDaemon(world.clone()))
            .build()
            .expect("valid configuration");
        let housekeeping: Task<()> = Box::pin({
            let manager = manager.clone();
            async move { manager.run_housekeeping().await }
        });
        let tip = lock(&world.chain).tip();
        Sim {
            rng,
            world,
            timer,
            manager,
            clients: Vec::new(),
            notifies: Vec::new(),
            housekeeping: Some(housekeeping),
            next_port: 1,
            drop_rate: 0,
            raw_tx: real_transaction(),
            tips: vec![tip],
            stats: Stats::default(),
        }
    }

    // ------------------------------------------------------------ actions

    fn connect(&mut self) {
        let addr = random_addr(&mut self.rng, self.next_port);
        self.next_port = self.next_port.wrapping_add(1).max(1);
        let kind = match self.rng.below(10) {
            0..=4 => Kind::Honest,
            5 | 6 => Kind::Slow,
            7 => Kind::Stalled,
            _ => Kind::Abusive,
        };
        let wire = Arc::new(Wire::default());
        wire.stalled.store(kind == Kind::Stalled, Ordering::SeqCst);
        let transport = SimTransport {
            peer: PeerInfo {
                addr,
                kind: TransportKind::Tcp,
            },
            wire: wire.clone(),
            world: self.world.clone(),
            key: mix(u64::from(self.next_port)),
        };
        let count = self.manager.session_count();
        match self.manager.add_session(transport) {
            Ok(handle) => {
                self.stats.connected += 1;
                let handle = Arc::new(handle);
                let deliver: Task<()> = Box::pin(handle.deliver());
                self.clients.push(Client {
                    handle,
                    wire,
                    kind,
                    deliver: Some(deliver),
                    request: None,
                    subscribed: BTreeSet::new(),
                    headers: false,
                    replied: BTreeMap::new(),
                    header_reply: None,
                    tips_at_header_subscription: 0,
                    checked: 0,
                    unchecked_replies: Vec::new(),
                    last_notified: BTreeMap::new(),
                    last_header: None,
                });
            }
            Err(Refusal::AtCapacity { max }) => {
                assert!(count >= max, "refused at capacity with {count} of {max}");
                self.stats.refused += 1;
            }
            Err(Refusal::Banned { .. } | Refusal::GroupFull { .. }) => self.stats.refused += 1,
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }

    fn start_request(&mut self, i: usize) {
        let client = &mut self.clients[i];
        if client.request.is_some() || client.handle.is_closed() {
            return;
        }
        let handle = client.handle.clone();
        let abusive = client.kind == Kind::Abusive;
        let choice = self.rng.below(10);
        let script = self.rng.below(u64::from(SCRIPTS)) as u8;
        let cost = if abusive {
            1000.0 + self.rng.below(4000) as f64
        } else {
            self.rng.below(20) as f64 / 10.0
        };
        handle.record_received(100);
        let task: Task<Outcome> = match choice {
            0..=3 => Box::pin(async move {
                let result = async {
                    let mut permit = handle.admit().await?;
                    permit.run(handle.subscribe(&alias(script))).await?
                }
                .await;
                match result {
                    Ok(status) => Outcome::Subscribed(script, status),
                    Err(Error::ExcessiveCost) => Outcome::Excessive,
                    Err(_) => Outcome::Failed,
                }
            }),
            4 => Box::pin(async move {
                let result = async {
                    let mut permit = handle.admit().await?;
                    permit.run(handle.subscribe_headers()).await?
                }
                .await;
                match result {
                    Ok((_, header)) => Outcome::HeadersSubscribed(header),
                    Err(Error::ExcessiveCost) => Outcome::Excessive,
                    Err(_) => Outcome::Failed,
                }
            }),
            5 => {
                // A real transaction, or malformed bytes the validator refuses.
                let valid = self.rng.chance(500);
                let raw = if valid { self.raw_tx.clone() } else { vec![1, 2, 3] };
                Box::pin(async move {
                    let result = async {
                        let mut permit = handle.admit().await?;
                        permit.run(handle.broadcast_transaction(&raw)).await?
                    }
                    .await;
                    match result {
                        Err(Error::ExcessiveCost) => Outcome::Excessive,
                        Err(Error::TxRejected(_)) => {
                            assert!(!valid, "a valid transaction was refused");
                            Outcome::Done
                        }
                        Ok(_) => {
                            assert!(valid, "garbage was broadcast");
                            Outcome::Done
                        }
                        Err(_) => Outcome::Failed,
                    }
                })
            }
            _ => Box::pin(async move {
                let result = async {
                    let mut permit = handle.admit().await?;
                    permit.run(yield_times(2)).await?;
                    permit.charge(Cost::new(cost).unwrap());
                    Ok::<_, Error>(())
                }
                .await;
                match result {
                    Ok(()) => Outcome::Done,
                    Err(Error::ExcessiveCost) => Outcome::Excessive,
                    Err(_) => Outcome::Failed,
                }
            }),
        };
        client.request = Some(task);
    }

    fn unsubscribe(&mut self, i: usize) {
        let client = &mut self.clients[i];
        let Some(&script) = client
            .subscribed
            .iter()
            .nth(self.rng.index(client.subscribed.len().max(1)))
        else {
            return;
        };
        // A request in flight may be subscribing to it: let it finish first.
        if client.request.is_some() {
            return;
        }
        if traced(client.handle.id()) {
            eprintln!("unsubscribe {script}");
        }
        let was = client.handle.unsubscribe(&alias(script)).expect("valid alias");
        assert!(was || client.handle.is_closed(), "the model had it subscribed");
        client.subscribed.remove(&script);
        client.replied.remove(&script);
        client.last_notified.remove(&script);
    }

    fn leave(&mut self, i: usize) {
        let client = self.clients.swap_remove(i);
        drop(client);
    }

    fn chain_event(&mut self) {
        let touched: BTreeSet<u8> = {
            let mut chain = lock(&self.world.chain);
            match self.rng.below(10) {
                0..=3 => {
                    // A new block: some mempool transactions confirm, some new ones.
                    let mut txs = Vec::new();
                    let mut kept = Vec::new();
                    for tx in std::mem::take(&mut chain.mempool) {
                        if self.rng.chance(600) {
                            txs.push(tx);
                        } else {
                            kept.push(tx);
                        }
                    }
                    chain.mempool = kept;
                    for _ in 0..self.rng.below(3) {
                        let tx = chain.new_tx(&mut self.rng);
                        txs.push(tx);
                    }
                    let height = chain.blocks.len();
                    let header = chain.header(height);
                    let touched = Chain::scripts_of(&txs);
                    chain.blocks.push(Block { header, txs });
                    touched
                }
                4..=6 => {
                    let tx = chain.new_tx(&mut self.rng);
                    let touched = Chain::scripts_of(std::slice::from_ref(&tx));
                    chain.mempool.push(tx);
                    touched
                }
                7 => {
                    if chain.mempool.is_empty() {
                        BTreeSet::new()
                    } else {
                        let at = self.rng.index(chain.mempool.len());
                        let tx = chain.mempool.remove(at);
                        Chain::scripts_of(&[tx])
                    }
                }
                _ => {
                    // A reorg to a different block at the same height (or
                    // one lower, then one higher): its transactions go back
                    // to the mempool, some new ones confirm.
                    if chain.blocks.len() < 2 {
                        return;
                    }
                    let depth = if chain.blocks.len() > 2 && self.rng.chance(300) {
                        2
                    } else {
                        1
                    };
                    let mut touched = BTreeSet::new();
                    let mut back = Vec::new();
                    for _ in 0..depth {
                        let block = chain.blocks.pop().expect("a block");
                        touched.extend(Chain::scripts_of(&block.txs));
                        back.extend(block.txs);
                    }
                    for _ in 0..depth {
                        let mut txs = Vec::new();
                        for _ in 0..self.rng.below(3) {
                            txs.push(chain.new_tx(&mut self.rng));
                        }
                        touched.extend(Chain::scripts_of(&txs));
                        let height = chain.blocks.len();
                        let header = chain.header(height);
                        chain.blocks.push(Block { header, txs });
                    }
                    for tx in back {
                        if self.rng.chance(700) {
                            chain.mempool.push(tx);
                        }
                    }
                    touched
                }
            }
        };
        let tip = lock(&self.world.chain).tip();
        if self.tips.last() != Some(&tip) {
            self.tips.push(tip);
        }
        let touched: Vec<HashX> = touched.into_iter().map(hashx).collect();
        let manager = self.manager.clone();
        let mut task: Task<()> = Box::pin(async move {
            manager.notify(tip, &touched).await;
        });
        // The first poll records the event (as a host's call would); the
        // rest of the pass runs in later rounds, unless dropped.
        if poll(&mut task).is_pending() {
            self.notifies.push(task);
        }
    }

    fn change_faults(&mut self) {
        let rates = match self.rng.below(4) {
            0 => FaultRates::default(),
            1 => FaultRates {
                fail: 0,
                hang: 0,
                yields: 500,
            },
            2 => FaultRates {
                fail: 100,
                hang: 0,
                yields: 300,
            },
            _ => FaultRates {
                fail: 50,
                hang: 30,
                yields: 300,
            },
        };
        *lock(&self.world.faults) = rates;
        self.drop_rate = [0, 20, 100][self.rng.index(3)];
    }

    fn change_limits(&mut self) {
        let mut limits = (*self.manager.limits()).clone();
        match self.rng.below(3) {
            0 => limits.max_sessions = 8 + self.rng.index(32),
            1 => limits.max_subs_per_session = Some(2 + self.rng.index(12)),
            _ => limits.max_sessions_per_group = [None, Some(3), Some(6)][self.rng.index(3)],
        }
        self.manager.set_limits(limits).expect("valid limits");
    }

    fn ban_or_unban(&mut self) {
        let network: ipnetwork::IpNetwork = format!("203.0.{}.0/24", 113 + self.rng.below(3))
            .parse()
            .expect("network");
        if self.rng.chance(500) {
            run_to_end(self.manager.ban(network, Some(Duration::from_secs(30)))).expect("ban");
        } else {
            self.manager.unban(network);
        }
    }

    /// Drops one random in-flight future at whatever await it is.
    fn drop_a_future(&mut self) {
        match self.rng.below(3) {
            0 if !self.notifies.is_empty() => {
                let at = self.rng.index(self.notifies.len());
                drop(self.notifies.remove(at));
            }
            1 if !self.clients.is_empty() => {
                let at = self.rng.index(self.clients.len());
                self.clients[at].deliver = None;
            }
            _ if !self.clients.is_empty() => {
                let at = self.rng.index(self.clients.len());
                self.clients[at].request = None;
            }
            _ => return,
        }
        self.stats.dropped_futures += 1;
    }

    // ------------------------------------------------------------ running

    /// Polls every task once (slow clients' delivery only sometimes).
    fn round(&mut self) {
        if let Some(housekeeping) = self.housekeeping.as_mut() {
            let _ = poll(housekeeping);
        }
        // A future that returned `Pending` is sometimes dropped right there,
        // at whatever await it stopped (a host's `select!` or timeout).
        let drop_rate = self.drop_rate;
        let rng = &mut self.rng;
        let stats = &mut self.stats;
        self.notifies.retain_mut(|task| {
            let keep = poll(task).is_pending();
            if keep && rng.chance(drop_rate) {
                stats.dropped_futures += 1;
                return false;
            }
            keep
        });
        let mut closing = Vec::new();
        for (i, client) in self.clients.iter_mut().enumerate() {
            let reads = match client.kind {
                Kind::Slow => rng.chance(300),
                _ => true,
            };
            if reads {
                if client.deliver.is_none() && !client.handle.is_closed() {
                    client.deliver = Some(Box::pin(client.handle.deliver()));
                }
                if let Some(deliver) = client.deliver.as_mut() {
                    if poll(deliver).is_ready() {
                        client.deliver = None;
                    } else if rng.chance(drop_rate) {
                        stats.dropped_futures += 1;
                        client.deliver = None;
                    }
                }
            }
            let Some(request) = client.request.as_mut() else {
                continue;
            };
            let Poll::Ready(outcome) = poll(request) else {
                if rng.chance(drop_rate) {
                    stats.dropped_futures += 1;
                    client.request = None;
                }
                continue;
            };
            client.request = None;
            let seen = lock(&client.wire.received).len();
            if traced(client.handle.id()) {
                match &outcome {
                    Outcome::Subscribed(script, status) => {
                        eprintln!(
                            "reply at {seen}: script {script} status {:?}",
                            status.as_deref().map(|s| &s[..8])
                        )
                    }
                    Outcome::HeadersSubscribed(header) => {
                        eprintln!("reply at {seen}: header {:?}", &header[..8])
                    }
                    _ => {}
                }
            }
            match outcome {
                Outcome::Subscribed(script, status) => {
                    client.subscribed.insert(script);
                    client.replied.insert(script, (seen, status.clone()));
                    client.unchecked_replies.push((seen, script, status));
                }
                Outcome::HeadersSubscribed(header) => {
                    // The reply may be of a tip older than the model's newest
                    // (its `notify` not yet run): count changes from it.
                    let hash = indexer_sessions::merkle::double_sha256(&header);
                    client.tips_at_header_subscription = self
                        .tips
                        .iter()
                        .rposition(|tip| tip.hash.0 == hash)
                        .map_or(self.tips.len(), |at| at + 1);
                    client.headers = true;
                    client.header_reply = Some((seen, header));
                }
                Outcome::Excessive => closing.push(i),
                Outcome::Done | Outcome::Failed => {}
            }
        }
        for i in closing {
            self.stats.excessive += 1;
            let handle = self.clients[i].handle.clone();
            run_to_end(handle.close(DisconnectReason::ExcessiveCost));
        }
    }

    fn step(&mut self, step: u64) {
        self.world.step.store(step, Ordering::SeqCst);
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("-- step {step}");
        }
        let live = self.clients.len();
        match self.rng.below(100) {
            0..=14 => self.connect(),
            15..=49 if live > 0 => {
                let i = self.rng.index(live);
                self.start_request(i);
            }
            50..=54 if live > 0 => {
                let i = self.rng.index(live);
                self.unsubscribe(i);
            }
            55..=69 => self.chain_event(),
            70..=76 => {
                let millis = [10, 100, 700, 3_000, 30_000, 200_000][self.rng.index(6)];
                self.timer.advance(Duration::from_millis(millis));
            }
            77..=80 => self.change_faults(),
            81..=82 => self.change_limits(),
            83 => self.ban_or_unban(),
            84..=89 => self.drop_a_future(),
            90..=93 if live > 0 => {
                let i = self.rng.index(live);
                self.leave(i);
            }
            _ => {}
        }
        for _ in 0..3 {
            self.round();
        }
        // The host notices sessions the manager closed and lets them go.
        let before = self.clients.len();
        self.clients.retain(|client| !client.handle.is_closed());
        self.stats.closed_by_manager += before - self.clients.len();
        self.check_step();
    }

    // ------------------------------------------------------------ invariants

    fn check_step(&mut self) {
        let manager = &self.manager;
        // Refresh every cost (refunds follow elapsed time, so this adds none).
        manager.recalculate();
        let sessions = manager.sessions();
        let groups = manager.groups();
        let info = manager.info();

        assert_eq!(
            manager.session_count(),
            self.clients.len(),
            "session count = live handles"
        );
        assert_eq!(sessions.len(), self.clients.len());
        let live: BTreeSet<_> = self.clients.iter().map(|c| c.handle.id()).collect();
        assert!(
            sessions.iter().all(|row| live.contains(&row.id)),
            "no row of an ended session"
        );

        // Groups: cost = retained + members' costs, never negative, no
        // empty group left behind.
        for group in &groups {
            let members: Vec<_> = sessions
                .iter()
                .filter(|row| row.group == Some(group.network))
                .collect();
            assert_eq!(group.sessions, members.len(), "members of {}", group.network);
            let sum: f64 = members.iter().map(|row| row.cost).sum();
            assert!(group.retained_cost >= 0.0 && group.cost >= 0.0);
            let expected = group.retained_cost + sum;
            assert!(
                (group.cost - expected).abs() <= 1e-6 * expected.max(1.0),
                "group {} cost {} ≠ retained {} + members {}",
                group.network,
                group.cost,
                group.retained_cost,
                sum
            );
            assert!(
                group.sessions > 0 || group.retained_cost > 0.0,
                "empty group {}",
                group.network
            );
        }
        for row in &sessions {
            if let Some(name) = &row.group {
                assert!(
                    groups.iter().any(|g| &g.network == name),
                    "session {} without its group",
                    row.id
                );
            }
        }

        // Subscriptions: the index holds exactly the live sessions' subscriptions.
        let subs: usize = self.clients.iter().map(|c| c.handle.subscription_count()).sum();
        assert_eq!(info.subs, subs, "index total = live sessions' subscriptions");
        for client in &self.clients {
            // The model's subscriptions are a subset (a dropped subscribe may
            // not be, a completed one always is).
            assert!(client.handle.subscription_count() >= client.subscribed.len());
        }
        let header_subs = self.clients.iter().filter(|c| c.headers).count();
        assert!(info.header_subs >= header_subs);
        assert!(info.header_subs <= self.clients.len());

        // The listener follows the count.
        let limits = manager.limits();
        let state = manager.listener_state().current();
        let count = self.clients.len();
        if count >= limits.max_sessions {
            assert_eq!(state, ListenerState::Paused, "{count} of {}", limits.max_sessions);
        } else if count <= limits.resume_at() {
            assert_eq!(
                state,
                ListenerState::Accepting,
                "{count} of {}",
                limits.max_sessions
            );
        }

        // What clients received: no identical status twice in a row, no
        // header twice in a row, every header one of a real tip.
        for client in &mut self.clients {
            let received = lock(&client.wire.received);
            let mut replies = std::mem::take(&mut client.unchecked_replies)
                .into_iter()
                .peekable();
            for (at, notification) in received.iter().enumerate().skip(client.checked) {
                if traced(client.handle.id()) {
                    match notification {
                        Notification::ScriptHashStatus { alias: sent, status } => eprintln!(
                            "received at {at}: script {:?} status {:?}",
                            (0..SCRIPTS).find(|s| alias(*s) == *sent),
                            status.as_deref().map(|s| &s[..8])
                        ),
                        Notification::Header { header, .. } => {
                            eprintln!("received at {at}: header {:?}", &header[..8])
                        }
                    }
                }
                // A reply with another status between two equal
                // notifications makes the second one news.
                while let Some((_, script, status)) = replies.next_if(|(seen, ..)| *seen <= at) {
                    if client.last_notified.get(&script) != Some(&status) {
                        client.last_notified.remove(&script);
                    }
                }
                self.stats.notifications += 1;
                match notification {
                    Notification::ScriptHashStatus { alias: sent, status } => {
                        let script = (0..SCRIPTS)
                            .find(|s| alias(*s) == *sent)
                            .expect("a status for a known alias");
                        let previous = client.last_notified.insert(script, status.clone());
                        assert_ne!(
                            previous,
                            Some(status.clone()),
                            "session {} script {script}: the same status twice in a row",
                            client.handle.id()
                        );
                    }
                    Notification::Header { header, .. } => {
                        assert_ne!(
                            client.last_header.as_ref(),
                            Some(header),
                            "session {}: the same header twice in a row",
                            client.handle.id()
                        );
                        let hash = indexer_sessions::merkle::double_sha256(header);
                        assert!(
                            self.tips.iter().any(|tip| tip.hash.0 == hash),
                            "a header of no tip"
                        );
                        client.last_header = Some(header.clone());
                    }
                }
            }
            // One header per tip change since the last header reply.
            if let Some((seen, _)) = &client.header_reply {
                let headers = received[*seen..]
                    .iter()
                    .filter(|n| matches!(n, Notification::Header { .. }))
                    .count();
                let tip_changes = self.tips.len() - client.tips_at_header_subscription;
                // +2: a header already on its way when the reply was made
                // arrives after it, and the reply's own header follows it.
                assert!(
                    headers <= tip_changes + 2,
                    "session {}: {headers} headers for {tip_changes} tip changes",
                    client.handle.id()
                );
            }
            for (_, script, status) in replies {
                if client.last_notified.get(&script) != Some(&status) {
                    client.last_notified.remove(&script);
                }
            }
            client.checked = received.len();
        }
    }

    /// Faults off, every client reading, every future run to its end, one
    /// more `notify`: then every subscriber must know the truth.
    fn quiesce(&mut self) {
        *lock(&self.world.faults) = FaultRates::default();
        self.drop_rate = 0;
        self.world.step.fetch_add(1, Ordering::SeqCst);
        for client in &mut self.clients {
            client.wire.stalled.store(false, Ordering::SeqCst);
            if client.kind == Kind::Slow || client.kind == Kind::Stalled {
                client.kind = Kind::Honest;
            }
        }
        // Requests may be throttled (sleeping): let time pass in small steps.
        for _ in 0..400 {
            if self.clients.iter().all(|c| c.request.is_none()) && self.notifies.is_empty() {
                break;
            }
            self.round();
            self.timer.advance(Duration::from_millis(250));
            self.clients.retain(|client| !client.handle.is_closed());
        }
        assert!(self.notifies.is_empty(), "notify futures finish");
        let tip = lock(&self.world.chain).tip();
        let mut last: Task<()> = Box::pin({
            let manager = self.manager.clone();
            async move {
                manager.notify(tip, &[]).await;
            }
        });
        for _ in 0..100 {
            if poll(&mut last).is_ready() {
                break;
            }
        }
        // Sends stuck from before (a hung transport) are cut by
        // `max_send_delay`; everything else drains.
        for _ in 0..50 {
            self.round();
            self.timer.advance(Duration::from_millis(500));
        }
        self.clients.retain(|client| !client.handle.is_closed());
        self.check_step();

        let chain = lock(&self.world.chain);
        let tip_header = chain.blocks.last().expect("a tip").header.clone();
        for client in &self.clients {
            assert_eq!(client.handle.pending_notifications(), 0, "outbox drained");
            let received = lock(&client.wire.received);
            for &script in &client.subscribed {
                // The newest of: the reply, or a notification after it.
                let (at, replied) = client.replied.get(&script).cloned().expect("a reply");
                let notified = received[at..].iter().rev().find_map(|n| match n {
                    Notification::ScriptHashStatus { alias: sent, status } if *sent == alias(script) => {
                        Some(status.clone())
                    }
                    _ => None,
                });
                let known = notified.unwrap_or(replied);
                assert_eq!(
                    known,
                    chain.truth(script),
                    "session {} script {script}: stale or lost status",
                    client.handle.id()
                );
            }
            if client.headers {
                let (at, replied) = client.header_reply.clone().expect("a reply");
                let notified = received[at..].iter().rev().find_map(|n| match n {
                    Notification::Header { header, .. } => Some(header.clone()),
                    _ => None,
                });
                assert_eq!(
                    notified.unwrap_or(replied),
                    tip_header,
                    "session {}: stale or lost header",
                    client.handle.id()
                );
            }
        }
    }
}

/// The second transaction of a real mainnet block in `tests/data`.
fn real_transaction() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "tests/data/mainnet_block_0000000000013b8ab2cd513b0261a14096412195a72a0c4827d229dcc7e0f7af.raw",
    );
    let block = std::fs::read(path).expect("block vector");
    let (_, txs) = indexer_sessions::tx::parse_block_transactions(&block).expect("a block");
    let start = 81 + txs[0].size; // header, a 1-byte count, the coinbase
    block[start..start + txs[1].size].to_vec()
}

/// Runs a future that only waits on hosts the simulation answers at once.
fn run_to_end<F: Future>(task: F) -> F::Output {
    let mut task = std::pin::pin!(task);
    let waker = futures::task::noop_waker();
    for _ in 0..10_000 {
        if let Poll::Ready(value) = task.as_mut().poll(&mut Context::from_waker(&waker)) {
            return value;
        }
    }
    panic!("a future that should finish did not");
}

fn run(seed: u64, steps: u64) -> Stats {
    let mut sim = Sim::new(seed);
    for step in 0..steps {
        sim.step(step);
    }
    sim.quiesce();
    drop(sim.housekeeping.take());
    std::mem::take(&mut sim.stats)
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

fn run_reporting(seed: u64, steps: u64) -> Stats {
    match std::panic::catch_unwind(|| run(seed, steps)) {
        Ok(stats) => stats,
        Err(cause) => {
            let message = cause
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| cause.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "simulation failed at seed {seed}: {message}\n\
                 reproduce: SIM_SEED={seed} SIM_STEPS={steps} cargo test --all-features --test simulation"
            );
        }
    }
}

#[test]
fn simulation() {
    let steps = env("SIM_STEPS").unwrap_or(1500);
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env("SIM_FIRST").unwrap_or(0);
            (first..first + env("SIM_SEEDS").unwrap_or(48)).collect()
        }
    };
    let mut total = Stats::default();
    for seed in seeds {
        let stats = run_reporting(seed, steps);
        total.connected += stats.connected;
        total.refused += stats.refused;
        total.dropped_futures += stats.dropped_futures;
        total.notifications += stats.notifications;
        total.excessive += stats.excessive;
        total.closed_by_manager += stats.closed_by_manager;
    }
    // A run of many seeds exercised what it claims to.
    println!("{total:?}");
    if env("SIM_SEED").is_none() {
        assert!(total.connected > 0 && total.notifications > 0 && total.dropped_futures > 0);
        assert!(total.excessive > 0, "abusive clients reach −101");
        assert!(
            total.closed_by_manager > 0,
            "the manager closes stale and stuck clients"
        );
    }
}
