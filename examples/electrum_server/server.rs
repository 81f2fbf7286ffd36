//! Starting and stopping the server: the chain, the session manager, the
//! Electrum listener (following `listener_state()`), the admin listener,
//! housekeeping and the block timer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use indexer_sessions::{Config, HostParts, ListenerState, SessionManager, Tip, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::chain::{Chain, ChainError};
use crate::hosts::{Hosts, Node};
use crate::observe::{Observer, Site, serve_http};

/// The server's host: one in-process node serves as index, node and
/// mempool; the clock is tokio's; validator and ledger are the defaults.
pub type ServerHost = HostParts<Hosts, Hosts, Hosts, TokioTimer>;

/// The server's manager, statically dispatched over [`ServerHost`].
pub type Manager = SessionManager<ServerHost>;

/// Everything the server is started with (see `crate::cli` for the flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// Electrum TCP listener (`--listen`).
    pub listen: SocketAddr,
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
            listen: SocketAddr::from(([127, 0, 0, 1], 50001)),
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
}

impl Shared {
    /// Tells the manager about chain changes not yet announced: the tip and
    /// every script touched by accepted transactions and mined blocks.
    pub async fn publish(&self) {
        let touched = self.node.take_pending();
        let tip = self.node.tip();
        let started = std::time::Instant::now();
        let report = self.manager.notify(tip, &touched).await;
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
    listen: SocketAddr,
    admin: SocketAddr,
    metrics: Option<SocketAddr>,
    status: Option<SocketAddr>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound Electrum address (the real port when started on port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
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

    /// The chain.
    pub fn node(&self) -> &Arc<Node> {
        &self.shared.node
    }

    /// Mines `count` blocks now and announces them; returns the new tip.
    #[allow(dead_code)] // for tests
    pub async fn generate(&self, count: u32) -> Tip {
        self.shared.generate(count).await
    }

    /// Stops accepting, closes every session, and ends every task.
    pub async fn shutdown(self) {
        let closed = self.shared.manager.shutdown().await;
        self.shared
            .log(format_args!("shut down: {closed} sessions closed"));
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
    let manager = SessionManager::builder(options.config.clone())
        .timer(TokioTimer)
        .db(hosts.clone())
        .daemon(hosts.clone())
        .mempool(hosts.clone())
        .build()?;
    let listener = bind(options.listen).await?;
    let admin_listener = bind(options.admin).await?;
    let listen = listener.local_addr().map_err(|source| StartError::Bind {
        addr: options.listen,
        source,
    })?;
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
    });
    // The manager learns the starting tip before any client asks.
    shared.publish().await;

    let mut tasks = Vec::new();
    let housekeeping = shared.manager.clone();
    tasks.push(tokio::spawn(async move {
        housekeeping.run_housekeeping().await;
    }));
    tasks.push(tokio::spawn(accept_loop(listener, shared.clone())));
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
        listen,
        admin,
        metrics: metrics_addr,
        status: status_addr,
        shared,
        tasks,
    })
}

/// Accepts connections while the manager says `Accepting`; stops calling
/// `accept` while it says `Paused` (new connections wait in the backlog) and
/// returns at `Stopped`.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut events = shared.manager.listener_state();
    loop {
        match events.current() {
            ListenerState::Stopped => return,
            ListenerState::Paused => {
                shared.log(format_args!(
                    "at {} sessions: listener paused",
                    shared.manager.session_count()
                ));
                if events.accepting().await == ListenerState::Stopped {
                    return;
                }
                shared.log(format_args!(
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
                    tokio::spawn(crate::rpc::serve(stream, shared.clone()));
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
