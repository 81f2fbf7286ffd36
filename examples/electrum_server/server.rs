//! Starting and stopping the server: the chain, the session manager, the
//! Electrum listeners (TCP, TLS, WebSocket, secure WebSocket and HTTP, see
//! `crate::services`; every one follows `listener_state()` and serves
//! sessions of the one manager), the admin listener, housekeeping and the
//! block timer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "redis")]
use indexer_sessions::redis_ledger::{RedisLedger, RedisLedgerConfig, RedisLedgerError};
use indexer_sessions::{
    Config, GroupEntry, GroupFull, GroupLedger, HostParts, InProcessLedger, ListenerState, SessionManager,
    SharedBan, StructuralValidator, Tip, TokioTimer,
};
use ipnetwork::IpNetwork;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::chain::{Chain, ChainError};
use crate::hosts::{Hosts, Node};
use crate::observe::{Observer, Site, serve_http};
use crate::services::{Service, ServiceKind};
use crate::tls::{Tls, TlsError};

/// The server's host: one in-process node serves as index, node and
/// mempool; the clock is tokio's; the validator is the default; the ledger
/// is chosen at start ([`ServerLedger`]).
pub type ServerHost = HostParts<Hosts, Hosts, Hosts, TokioTimer, StructuralValidator, ServerLedger>;

/// The server's manager, statically dispatched over [`ServerHost`].
pub type Manager = SessionManager<ServerHost>;

/// The group ledger, chosen at start: this process's, or with `--redis` one
/// shared by every server on that Redis.
///
/// An enum rather than an `Arc<dyn GroupLedger>` part: its calls stay
/// statically dispatched, and the manager's futures stay `Send` for
/// `tokio::spawn` (with a trait object in the host's type, rustc cannot
/// prove it: a higher-ranked lifetime error).
#[derive(Debug)]
pub enum ServerLedger {
    /// Costs and bans kept in this process.
    InProcess(InProcessLedger),
    /// Costs and bans shared through Redis.
    #[cfg(feature = "redis")]
    Redis(RedisLedger),
}

/// `ledger => call` on whichever ledger a [`ServerLedger`] holds.
macro_rules! on_ledger {
    ($self:expr, $ledger:ident => $call:expr) => {
        match $self {
            ServerLedger::InProcess($ledger) => $call,
            #[cfg(feature = "redis")]
            ServerLedger::Redis($ledger) => $call,
        }
    };
}

impl GroupLedger for ServerLedger {
    fn join(
        &self,
        group: IpNetwork,
        initial_cost: f64,
        max_sessions: Option<usize>,
    ) -> Result<f64, GroupFull> {
        on_ledger!(self, ledger => ledger.join(group, initial_cost, max_sessions))
    }
    fn report(&self, group: IpNetwork, delta: f64) -> f64 {
        on_ledger!(self, ledger => ledger.report(group, delta))
    }
    fn leave(&self, group: IpNetwork, reported: f64, cost: f64) {
        on_ledger!(self, ledger => ledger.leave(group, reported, cost))
    }
    fn refund(&self, amount: f64) {
        on_ledger!(self, ledger => ledger.refund(amount))
    }
    fn shares_bans(&self) -> bool {
        on_ledger!(self, ledger => ledger.shares_bans())
    }
    fn cost(&self, group: IpNetwork) -> f64 {
        on_ledger!(self, ledger => ledger.cost(group))
    }
    fn entries(&self) -> Vec<GroupEntry> {
        on_ledger!(self, ledger => ledger.entries())
    }
    fn entry(&self, group: IpNetwork) -> Option<GroupEntry> {
        on_ledger!(self, ledger => ledger.entry(group))
    }
    fn share_ban(&self, network: IpNetwork, duration: Option<Duration>) {
        on_ledger!(self, ledger => ledger.share_ban(network, duration))
    }
    fn share_unban(&self, network: IpNetwork) {
        on_ledger!(self, ledger => ledger.share_unban(network))
    }
    fn shared_ban(&self, addr: std::net::IpAddr) -> Option<SharedBan> {
        on_ledger!(self, ledger => ledger.shared_ban(addr))
    }
    fn shared_bans(&self) -> Vec<SharedBan> {
        on_ledger!(self, ledger => ledger.shared_bans())
    }
}

/// Everything the server is started with (see `crate::cli` for the flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// The Electrum listeners (`--listen`, `--tls`, `--ws`, `--wss`,
    /// `--http`, or `SERVICES`); by default TCP on 127.0.0.1:50001 and TLS
    /// on 127.0.0.1:50002.
    pub services: Vec<Service>,
    /// Admin JSON-RPC listener (`--admin`).
    pub admin: SocketAddr,
    /// Blocks mined on top of genesis at start (`--blocks`).
    pub blocks: u32,
    /// Payments (address, sats) confirmed in the initial chain (`--pay-to`).
    pub pay_to: Vec<(String, u64)>,
    /// Block timer (`--block-interval`); zero mines only on demand.
    pub block_interval: Duration,
    /// Longest request line in bytes (`--max-recv`).
    pub max_recv: usize,
    /// Most bytes of replies and notifications queued for one client
    /// (`--max-queued`); one message may be larger when nothing else is queued.
    pub max_queued: usize,
    /// The manager's configuration; `config.max_send` is `--max-send`.
    pub config: Config,
    /// Prometheus text at `/metrics` (`--metrics`).
    pub metrics: Option<SocketAddr>,
    /// The live status page at `/` (`--status`).
    pub status: Option<SocketAddr>,
    /// Log lines as text or JSON (`--log-format`).
    pub log_format: LogFormat,
    /// Log connections, refusals and disconnections (as `tracing` events).
    pub log: bool,
    /// Noise pings to protocol 1.7 clients (`--noise`): on a block, a
    /// session sent fewer than two notifications gets a padded
    /// `server.ping`, then more with probability 0.1; on a mempool change,
    /// one per ten minutes on average. On by default, as ElectrumX.
    pub noise: bool,
    /// Which listeners pad their output against traffic analysis
    /// (`--padding`; by default the TLS ones).
    pub padding: crate::padding::PaddingMode,
    /// Expect a PROXY protocol header (v1 or v2) on every Electrum
    /// connection, and take the client's address from it
    /// (`--proxy-protocol`).
    pub proxy_protocol: bool,
    /// How long a connection may take to send its PROXY header.
    pub proxy_header_timeout: Duration,
    /// The certificate chain of the TLS listeners (`ssl`, `wss`), PEM
    /// (`--tls-cert`); without it (and `tls_key`) a self-signed certificate
    /// is generated at start.
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key, PEM (`--tls-key`).
    pub tls_key: Option<PathBuf>,
    /// How long a client may take to complete its TLS handshake and, on a
    /// WebSocket listener, its upgrade request; past it the connection is
    /// closed without a session.
    pub handshake_timeout: Duration,
    /// Group costs and bans shared with other servers through Redis
    /// (`--redis` and the flags that go with it).
    #[cfg(feature = "redis")]
    pub redis: RedisOptions,
}

/// The `--redis` flags: with a URL, the group ledger is a `RedisLedger`
/// shared by every server on that Redis; without, it stays in this process.
#[cfg(feature = "redis")]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RedisOptions {
    /// The Redis to share group costs and bans through (`--redis`).
    pub url: Option<String>,
    /// This server's name among those sharing the Redis (`--node-name`);
    /// `None` for `HOSTNAME-PID`.
    pub node_name: Option<String>,
    /// How often this server's view is reconciled with Redis
    /// (`--redis-sync-ms`); `None` for the ledger's default.
    pub sync_interval: Option<Duration>,
    /// How long this server's share outlives its last sync, should it die
    /// (`--redis-node-ttl`); `None` for the ledger's default.
    pub node_ttl: Option<Duration>,
}

#[cfg(feature = "redis")]
impl RedisOptions {
    /// The ledger's configuration, or `None` without `--redis`. Retained
    /// cost is refunded at `cost_hard_limit / 5000` per second, as the
    /// manager refunds it.
    pub fn ledger_config(&self, cost_hard_limit: f64) -> Option<RedisLedgerConfig> {
        let url = self.url.as_ref()?;
        let node = self.node_name.clone().unwrap_or_else(default_node_name);
        let defaults = RedisLedgerConfig::new(url.as_str(), node);
        Some(RedisLedgerConfig {
            sync_interval: self.sync_interval.unwrap_or(defaults.sync_interval),
            node_ttl: self.node_ttl.unwrap_or(defaults.node_ttl),
            refund_per_sec: cost_hard_limit / 5000.0,
            ..defaults
        })
    }
}

/// `HOSTNAME-PID`: unique among servers on different hosts and among
/// processes on one host.
#[cfg(feature = "redis")]
pub fn default_node_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().replace(['{', '}'], "-"))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}", std::process::id())
}

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            services: vec![
                Service {
                    kind: ServiceKind::Tcp,
                    addr: SocketAddr::from(([127, 0, 0, 1], 50001)),
                },
                Service {
                    kind: ServiceKind::Ssl,
                    addr: SocketAddr::from(([127, 0, 0, 1], 50002)),
                },
            ],
            admin: SocketAddr::from(([127, 0, 0, 1], 8000)),
            blocks: 110,
            pay_to: Vec::new(),
            block_interval: Duration::ZERO,
            max_recv: 1_000_000,
            max_queued: 1 << 20,
            config: Config::default(),
            metrics: None,
            status: None,
            log_format: LogFormat::Text,
            log: true,
            padding: crate::padding::PaddingMode::default(),
            noise: true,
            proxy_protocol: false,
            proxy_header_timeout: Duration::from_secs(5),
            tls_cert: None,
            tls_key: None,
            handshake_timeout: Duration::from_secs(5),
            #[cfg(feature = "redis")]
            redis: RedisOptions::default(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The initial chain could not be built (a bad `--pay-to`, too few blocks).
    #[error("cannot build the chain: {0}")]
    Chain(#[from] ChainError),
    /// The configuration was refused by the session manager.
    #[error(transparent)]
    Config(#[from] indexer_sessions::ConfigError),
    /// The Prometheus recorder could not be installed.
    #[error("{0}")]
    Metrics(String),
    /// The `--redis` flags do not make a valid ledger.
    #[cfg(feature = "redis")]
    #[error(transparent)]
    Redis(#[from] RedisLedgerError),
    /// The TLS listener has no usable certificate.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// What every connection and task shares.
pub struct Shared {
    /// The session manager every request goes through.
    pub manager: Manager,
    /// The chain.
    pub node: Arc<Node>,
    /// The options the server was started with.
    pub options: Options,
    /// The genesis block hash, display (reversed) hex.
    pub genesis_hash: String,
    /// Journal, notify timings and metrics of the example itself.
    pub observer: Observer,
    /// The shared ledger behind `manager` when started with `--redis`, for
    /// its reports (each node's share, the sync's health).
    #[cfg(feature = "redis")]
    pub redis: Option<RedisLedger>,
}

impl Shared {
    /// Tells the manager about chain changes not yet announced: the tip and
    /// every script and outpoint touched by accepted transactions and mined
    /// blocks.
    pub async fn publish(&self) {
        let changes = self.node.take_changes();
        let tip = self.node.tip();
        let started = std::time::Instant::now();
        let report = self.manager.notify(tip, &changes).await;
        self.observer.notified(tip.height.0, started.elapsed(), &report);
    }

    /// Mines `count` blocks and announces them; returns the new tip.
    pub async fn generate(&self, count: u32) -> Tip {
        let tip = self.node.mine(count);
        self.publish().await;
        tip
    }

    /// Emits an `info` event unless logging is off.
    pub fn log(&self, message: std::fmt::Arguments<'_>) {
        if self.options.log {
            tracing::info!("{message}");
        }
    }

    /// Emits a `warn` event unless logging is off.
    pub fn warn(&self, message: std::fmt::Arguments<'_>) {
        if self.options.log {
            tracing::warn!("{message}");
        }
    }
}

/// A running server.
pub struct ServerHandle {
    /// The listeners, with the addresses they were bound to.
    services: Vec<Service>,
    /// The TLS certificate's SHA-256 fingerprint, with a TLS listener.
    fingerprint: Option<String>,
    admin: SocketAddr,
    metrics: Option<SocketAddr>,
    status: Option<SocketAddr>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The listeners, each with the address it was bound to (the real
    /// port when started on port 0).
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The bound address of the first listener of `kind`, if any.
    #[allow(dead_code)] // for tests
    pub fn addr_of(&self, kind: ServiceKind) -> Option<SocketAddr> {
        self.services
            .iter()
            .find(|service| service.kind == kind)
            .map(|service| service.addr)
    }

    /// The bound address of the first TCP listener.
    ///
    /// # Panics
    /// When the server has no TCP listener (a test's mistake).
    #[allow(dead_code)] // for tests
    pub fn listen_addr(&self) -> SocketAddr {
        self.addr_of(ServiceKind::Tcp)
            .expect("the server has a TCP listener")
    }

    /// The bound address of the first TLS listener, if any.
    #[allow(dead_code)] // for tests
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.addr_of(ServiceKind::Ssl)
    }

    /// The TLS certificate's SHA-256 fingerprint (`AB:CD:…`), with a TLS
    /// (`ssl` or `wss`) listener.
    pub fn tls_fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The bound `--metrics` address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The bound `--status` address, if any.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status
    }

    /// The example's journal and timings.
    #[allow(dead_code)] // for tests
    pub fn observer(&self) -> &Observer {
        &self.shared.observer
    }

    /// The session manager.
    #[allow(dead_code)] // for tests
    pub fn manager(&self) -> &Manager {
        &self.shared.manager
    }

    /// The shared ledger, when started with `--redis`.
    #[cfg(feature = "redis")]
    pub fn redis(&self) -> Option<&RedisLedger> {
        self.shared.redis.as_ref()
    }

    /// The chain.
    pub fn node(&self) -> &Arc<Node> {
        &self.shared.node
    }

    /// Mines `count` blocks now and announces them; returns the new tip.
    #[allow(dead_code)] // for tests
    pub async fn generate(&self, count: u32) -> Tip {
        self.shared.generate(count).await
    }

    /// Stops accepting, closes every session, and ends every task. On a
    /// shared ledger, first waits (briefly) for the closed sessions' cost to
    /// reach Redis, so the other servers keep counting it.
    pub async fn shutdown(self) {
        let closed = self.shared.manager.shutdown().await;
        self.shared
            .log(format_args!("shut down: {closed} sessions closed"));
        #[cfg(feature = "redis")]
        if let Some(ledger) = &self.shared.redis {
            hand_over(ledger, &self.shared.options).await;
        }
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A bound listener and its real address.
async fn bound(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = bind(addr).await?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, local))
}

/// Waits for a sync that started after every session ended (at most two
/// sync intervals and a timeout), unless Redis is unreachable.
#[cfg(feature = "redis")]
async fn hand_over(ledger: &RedisLedger, options: &Options) {
    let Some(config) = options.redis.ledger_config(options.config.limits.cost_hard_limit) else {
        return;
    };
    if ledger.health().is_err() {
        return;
    }
    // A sync under way may have missed the last sessions; the next one has them.
    let target = ledger.syncs() + 2;
    let deadline = tokio::time::Instant::now() + config.sync_interval * 2 + config.timeout;
    while ledger.syncs() < target && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The group ledger: a `RedisLedger` with `--redis` (also returned, for
/// reports and its sync task), else an [`InProcessLedger`].
#[cfg(feature = "redis")]
fn ledger(options: &Options) -> Result<(ServerLedger, Option<RedisLedger>), StartError> {
    match options.redis.ledger_config(options.config.limits.cost_hard_limit) {
        Some(config) => {
            let ledger = RedisLedger::new(config)?;
            Ok((ServerLedger::Redis(ledger.clone()), Some(ledger)))
        }
        None => Ok((ServerLedger::InProcess(InProcessLedger::new()), None)),
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Builds the chain and the manager, binds both listeners and starts every
/// task. Returns once the server accepts connections.
///
/// # Errors
/// [`StartError`] for a chain that cannot be built, a configuration the
/// manager refuses, or an address that cannot be bound.
pub async fn start(options: Options) -> Result<ServerHandle, StartError> {
    let blocks = options.blocks;
    let pay_to = options.pay_to.clone();
    let chain = tokio::task::spawn_blocking(move || Chain::new(blocks, &pay_to))
        .await
        .expect("building the chain does not panic")?;
    let genesis_hash = {
        let header = chain.header(0).expect("the chain holds genesis");
        let mut hash = indexer_sessions::merkle::double_sha256(&header);
        hash.reverse();
        indexer_sessions::encode_hex(&hash)
    };
    let node = Node::new(chain);
    let hosts = Hosts(node.clone());
    #[cfg(feature = "redis")]
    let (group_ledger, redis) = ledger(&options)?;
    #[cfg(not(feature = "redis"))]
    let group_ledger = ServerLedger::InProcess(InProcessLedger::new());
    let mut config = options.config.clone();
    if options.noise && config.noise.is_none() {
        config.noise = Some(indexer_sessions::NoisePolicy::default());
    }
    let manager = SessionManager::builder(config)
        .timer(TokioTimer)
        .db(hosts.clone())
        .daemon(hosts.clone())
        .mempool(hosts.clone())
        .ledger(group_ledger)
        .build()?;
    // The certificate is read (or generated) before any listener is bound.
    let tls = match options.services.iter().any(|service| service.kind.is_tls()) {
        true => Some(crate::tls::load(
            options.tls_cert.as_deref(),
            options.tls_key.as_deref(),
        )?),
        false => None,
    };
    let mut listeners = Vec::with_capacity(options.services.len());
    for service in &options.services {
        let (listener, addr) = bound(service.addr).await?;
        listeners.push((
            listener,
            Service {
                kind: service.kind,
                addr,
            },
        ));
    }
    let services: Vec<Service> = listeners.iter().map(|(_, service)| *service).collect();
    let fingerprint = tls.as_ref().map(|tls| tls.fingerprint.clone());
    let admin_listener = bind(options.admin).await?;
    let admin = admin_listener.local_addr().map_err(|source| StartError::Bind {
        addr: options.admin,
        source,
    })?;
    // The optional HTTP listeners, bound before any task starts.
    let prometheus = match options.metrics {
        Some(_) => Some(crate::observe::prometheus().map_err(StartError::Metrics)?),
        None => None,
    };
    let metrics_listener = match options.metrics {
        Some(addr) => Some(bound(addr).await?),
        None => None,
    };
    let status_listener = match options.status {
        Some(addr) => Some(bound(addr).await?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|(_, addr)| *addr);
    let status_addr = status_listener.as_ref().map(|(_, addr)| *addr);
    let shared = Arc::new(Shared {
        manager,
        node,
        options,
        genesis_hash,
        observer: Observer::default(),
        #[cfg(feature = "redis")]
        redis: redis.clone(),
    });
    // The manager learns the starting tip before any client asks.
    shared.publish().await;

    let mut tasks = Vec::new();
    // The shared ledger's sync; it connects (and reconnects) by itself, so
    // the server serves on its local view until Redis answers.
    #[cfg(feature = "redis")]
    if let Some(ledger) = redis {
        tasks.push(tokio::spawn(ledger.run()));
    }
    let housekeeping = shared.manager.clone();
    tasks.push(tokio::spawn(async move {
        housekeeping.run_housekeeping().await;
    }));
    for (index, (listener, service)) in listeners.into_iter().enumerate() {
        let tls = service.kind.is_tls().then(|| tls.clone()).flatten();
        let accept = Accept {
            kind: service.kind,
            tls,
            log_pauses: index == 0,
        };
        tasks.push(tokio::spawn(accept_loop(listener, accept, shared.clone())));
    }
    tasks.push(tokio::spawn(crate::admin::serve(admin_listener, shared.clone())));
    if let (Some((listener, _)), Some(handle)) = (metrics_listener, prometheus) {
        tasks.push(tokio::spawn(serve_http(
            listener,
            shared.clone(),
            Site::Metrics(handle),
        )));
    }
    if let Some((listener, _)) = status_listener {
        tasks.push(tokio::spawn(serve_http(listener, shared.clone(), Site::Status)));
    }
    let interval = shared.options.block_interval;
    if !interval.is_zero() {
        let timer = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                ticks.tick().await;
                let tip = timer.generate(1).await;
                timer.log(format_args!("mined block {} {}", tip.height, tip.hash));
            }
        }));
    }
    Ok(ServerHandle {
        services,
        fingerprint,
        admin,
        metrics: metrics_addr,
        status: status_addr,
        shared,
        tasks,
    })
}

/// What a listener's connections are and how they start.
struct Accept {
    /// What its connections speak.
    kind: ServiceKind,
    /// Its TLS acceptor (for `ssl` and `wss`).
    tls: Option<Tls>,
    /// Whether it logs the manager's pauses (one listener does).
    log_pauses: bool,
}

/// Accepts connections while the manager says `Accepting`; stops calling
/// `accept` while it says `Paused` (new connections wait in the backlog)
/// and returns at `Stopped`. Every listener follows the one manager.
async fn accept_loop(listener: TcpListener, accept: Accept, shared: Arc<Shared>) {
    let log = |message: std::fmt::Arguments<'_>| {
        if accept.log_pauses {
            shared.log(message);
        }
    };
    let mut events = shared.manager.listener_state();
    loop {
        match events.current() {
            ListenerState::Stopped => return,
            ListenerState::Paused => {
                log(format_args!(
                    "at {} sessions: listener paused",
                    shared.manager.session_count()
                ));
                if events.accepting().await == ListenerState::Stopped {
                    return;
                }
                log(format_args!(
                    "down to {} sessions: listener resumed",
                    shared.manager.session_count()
                ));
                continue;
            }
            ListenerState::Accepting => {}
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let acceptor = accept.tls.as_ref().map(|tls| tls.acceptor.clone());
                    drop(tokio::spawn(crate::rpc::serve(stream, accept.kind, acceptor, shared.clone())));
                }
                Err(error) => {
                    shared.warn(format_args!("accept failed: {error}"));
                    // Out of file descriptors, most likely: give sessions time to end.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = events.changed() => {}
        }
    }
}
