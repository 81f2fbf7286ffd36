//! [`RedisLedger`]: one budget per IP group across many servers, shared
//! through Redis (feature `redis`).
//!
//! # Consistency model
//!
//! Requests never wait on Redis. Each node keeps a local view, and one
//! background future per node ([`RedisLedger::run`]) reconciles it every
//! `sync_interval` (250 ms by default) in **one round trip**: a Lua script
//! that writes this node's share and returns everyone else's.
//!
//! - **Exact on each node, at once:** its own sessions' costs and counts
//!   (what `join`, `report` and `leave` change), as in one process.
//! - **Eventually consistent, within one `sync_interval` of both nodes'
//!   syncs (≈ 0.5 s by default):** the other nodes' live cost and session
//!   count per group, and the retained cost. A group's cost on any node is
//!   its own members' cost, plus the other nodes' last reported members'
//!   cost, plus the retained cost; so a client spreading connections over
//!   N nodes is throttled at the same total as on one node, give or take
//!   what it spends within one sync interval.
//! - **Computed once:** each session's decay is computed by its node (as
//!   always); the retained cost's refund is computed by the script from
//!   Redis's own clock, for the time since the last refund by any node, so
//!   it is neither multiplied by N nor subject to clock skew.
//! - **Counted once:** retained cost moves to Redis in numbered batches; a
//!   batch whose reply was lost is resent with its number and applied at
//!   most once. Live cost is replaced, not added, at every sync.
//! - **Bans** are written to Redis and announced on a pub/sub channel; the
//!   other nodes sync at once on the announcement, so a ban made on one
//!   node refuses its network on every node within about two round trips
//!   (and at the latest at their next periodic sync). Live sessions in the
//!   network are closed by each node's next sweep.
//! - **Expiry:** a node's share expires `node_ttl` (10 s) after its last
//!   sync, so a node that dies (SIGKILL) leaves no live cost behind for
//!   longer than that; every key expires after `key_ttl` (1 h) without
//!   writes. Keys are `{prefix}:…` with the prefix in braces, so a Redis
//!   Cluster keeps them in one slot.
//! - **Faults:** while Redis is unreachable the node keeps serving on its
//!   local view (its own members exact, the others as last seen, retained
//!   cost refunded locally), [`RedisLedger::health`] returns the error,
//!   and the sync reconnects with backoff (100 ms doubling to 2 s). When
//!   Redis comes back the next sync restores this node's share; if Redis
//!   lost its data (a restart without persistence) the retained costs are
//!   seeded again from the nodes' views, first writer wins, so nothing is
//!   doubled.

use crate::core::groups::canonical_ip;
use crate::core::hashing::HashMap;
use crate::core::sync::lock;
use crate::ledger::{GroupEntry, GroupFull, GroupLedger, SharedBan};
use futures::StreamExt;
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a [`RedisLedger`] reaches Redis and shares its view.
#[derive(Clone, Debug)]
pub struct RedisLedgerConfig {
    /// The Redis URL, e.g. `redis://127.0.0.1:6379/`.
    pub url: String,
    /// This node's name, unique among the nodes sharing `prefix`.
    pub node: String,
    /// The prefix of every key (default `indexer-sessions`); nodes with the
    /// same prefix share one budget.
    pub prefix: String,
    /// How often the local view is reconciled (default 250 ms).
    pub sync_interval: Duration,
    /// How long a node's share outlives its last sync (default 10 s).
    pub node_ttl: Duration,
    /// How long any key outlives its last write (default 1 h).
    pub key_ttl: Duration,
    /// Retained cost refunded per second, cluster-wide. It must match the
    /// managers' `cost_hard_limit / 5000` (default 2.0, for the default
    /// hard limit of 10000).
    pub refund_per_sec: f64,
    /// How long one sync (or a connection attempt) may take before it
    /// counts as failed (default 1 s).
    pub timeout: Duration,
}

impl RedisLedgerConfig {
    /// The defaults, for `url` and node name `node`.
    pub fn new(url: impl Into<String>, node: impl Into<String>) -> Self {
        RedisLedgerConfig {
            url: url.into(),
            node: node.into(),
            prefix: "indexer-sessions".to_owned(),
            sync_interval: Duration::from_millis(250),
            node_ttl: Duration::from_secs(10),
            key_ttl: Duration::from_secs(3600),
            refund_per_sec: 2.0,
            timeout: Duration::from_secs(1),
        }
    }
}

/// What can go wrong with a [`RedisLedger`].
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisLedgerError {
    /// The configuration cannot work (an unparsable URL, an empty node
    /// name, a zero interval).
    #[error("invalid redis ledger configuration: {0}")]
    Config(String),
    /// The last sync failed: the node serves on its local view.
    #[error("redis unreachable since {since_ms} ms: {reason}")]
    Unreachable {
        /// How long ago the last successful sync was (or since start).
        since_ms: u128,
        /// The last error.
        reason: String,
    },
    /// No sync has completed yet.
    #[error("not synced with redis yet")]
    NotSynced,
}

/// One node's share of a group, as last synced.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeShare {
    /// The node's name.
    pub node: String,
    /// Its members' cost.
    pub live_cost: f64,
    /// Its members.
    pub sessions: usize,
}

/// A group across the cluster, as this node sees it now.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterGroup {
    /// The group.
    pub network: IpNetwork,
    /// Retained cost plus every node's members' cost.
    pub cost: f64,
    /// Cost left by ended sessions of any node.
    pub retained_cost: f64,
    /// Each node's share (this node's exact, the others' as last synced).
    pub nodes: Vec<NodeShare>,
}

#[derive(Clone, Copy, Debug, Default)]
struct LocalGroup {
    sessions: usize,
    live: f64,
}

#[derive(Clone, Debug, Default)]
struct RemoteGroup {
    /// The other nodes' shares.
    others: Vec<NodeShare>,
    retained: f64,
}

impl RemoteGroup {
    fn others_live(&self) -> f64 {
        self.others.iter().map(|share| share.live_cost).sum()
    }
    fn others_sessions(&self) -> usize {
        self.others.iter().map(|share| share.sessions).sum()
    }
}

#[derive(Clone, Debug)]
enum BanOp {
    Ban(IpNetwork, Option<Duration>),
    Unban(IpNetwork),
}

/// What one sync sends beyond the live view; resent with the same number
/// until a sync succeeds.
#[derive(Clone, Debug, Default)]
struct Batch {
    seq: u64,
    retained: Vec<(IpNetwork, f64)>,
    bans: Vec<BanOp>,
}

#[derive(Debug, Default)]
struct View {
    local: HashMap<IpNetwork, LocalGroup>,
    /// Retained cost left by this node's sessions, not yet in a batch.
    pending_retained: HashMap<IpNetwork, f64>,
    pending_bans: Vec<BanOp>,
    /// Sent and not known to be applied.
    in_flight: Option<Batch>,
    remote: HashMap<IpNetwork, RemoteGroup>,
    /// Shared bans with their expiry on this node's clock.
    bans: Vec<(IpNetwork, Option<Instant>)>,
    /// Redis's data epoch as last seen; a change means Redis lost its data.
    epoch: Option<String>,
    reseed: bool,
    connected: bool,
    last_error: Option<String>,
    last_sync: Option<Instant>,
    syncs: u64,
}

impl View {
    fn cost(&self, group: &IpNetwork) -> f64 {
        let local = self.local.get(group).map_or(0.0, |g| g.live);
        let remote = self
            .remote
            .get(group)
            .map_or(0.0, |r| r.others_live() + r.retained);
        let pending = self.pending_retained.get(group).copied().unwrap_or(0.0)
            + self.in_flight.as_ref().map_or(0.0, |batch| {
                batch
                    .retained
                    .iter()
                    .filter(|(network, _)| network == group)
                    .map(|(_, cost)| cost)
                    .sum()
            });
        (local + remote + pending).max(0.0)
    }

    fn entry(&self, group: IpNetwork) -> Option<GroupEntry> {
        let local = self.local.get(&group).copied();
        let remote = self.remote.get(&group);
        if local.is_none() && remote.is_none() && !self.pending_retained.contains_key(&group) {
            return None;
        }
        let local = local.unwrap_or_default();
        let total = self.cost(&group);
        let live = local.live + remote.map_or(0.0, RemoteGroup::others_live);
        Some(GroupEntry {
            network: group,
            sessions: local.sessions + remote.map_or(0, RemoteGroup::others_sessions),
            live_cost: live,
            retained_cost: (total - live).max(0.0),
        })
    }
}

struct Shared {
    config: RedisLedgerConfig,
    client: redis::Client,
    view: Mutex<View>,
    /// Wakes the sync loop early (a ban to share or one announced).
    wake: Mutex<futures::channel::mpsc::Sender<()>>,
    wake_rx: Mutex<Option<futures::channel::mpsc::Receiver<()>>>,
    next_seq: AtomicU64,
    round_trips: AtomicU64,
    started: Instant,
}

/// A [`GroupLedger`] shared by every node with the same Redis and prefix.
/// See the [module documentation](self) for its consistency model.
///
/// Build it with [`RedisLedger::new`], give it to the manager's builder
/// (`.ledger(ledger.clone())`), and run [`RedisLedger::run`] on a tokio
/// runtime for as long as the node serves.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use indexer_sessions::redis_ledger::{RedisLedger, RedisLedgerConfig};
/// let ledger = RedisLedger::new(RedisLedgerConfig::new("redis://127.0.0.1:6379/", "node-1"))?;
/// tokio::spawn(ledger.clone().run());
/// // SessionManager::builder(config).ledger(ledger.clone()) … .build()?
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisLedger {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLedger")
            .field("node", &self.shared.config.node)
            .field("prefix", &self.shared.config.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLedger {
    /// A ledger for `config`. It does not connect: [`RedisLedger::run`]
    /// does, and retries while Redis is down, so a node can start before
    /// Redis.
    ///
    /// # Errors
    /// [`RedisLedgerError::Config`] for an unparsable URL, an empty node
    /// name or prefix, or a zero interval or TTL.
    pub fn new(config: RedisLedgerConfig) -> Result<Self, RedisLedgerError> {
        let invalid = |reason: &str| Err(RedisLedgerError::Config(reason.to_owned()));
        if config.node.is_empty() || config.node.contains(['{', '}']) {
            return invalid("the node name must be non-empty and without braces");
        }
        if config.prefix.is_empty() || config.prefix.contains(['{', '}']) {
            return invalid("the prefix must be non-empty and without braces");
        }
        if config.sync_interval.is_zero()
            || config.node_ttl <= config.sync_interval
            || config.key_ttl < config.node_ttl
            || config.timeout.is_zero()
        {
            return invalid("need 0 < sync_interval < node_ttl <= key_ttl and a non-zero timeout");
        }
        if !(config.refund_per_sec.is_finite() && config.refund_per_sec >= 0.0) {
            return invalid("refund_per_sec must be finite and non-negative");
        }
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| RedisLedgerError::Config(e.to_string()))?;
        let (wake, wake_rx) = futures::channel::mpsc::channel(1);
        // Batch numbers rise across restarts of a node with the same name.
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(RedisLedger {
            shared: Arc::new(Shared {
                config,
                client,
                view: Mutex::new(View::default()),
                wake: Mutex::new(wake),
                wake_rx: Mutex::new(Some(wake_rx)),
                next_seq: AtomicU64::new(start.saturating_mul(1000)),
                round_trips: AtomicU64::new(0),
                started: Instant::now(),
            }),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.shared.config.node
    }

    /// `Ok` while the last sync succeeded; otherwise why the node is
    /// serving on its local view.
    ///
    /// # Errors
    /// [`RedisLedgerError::NotSynced`] before the first sync,
    /// [`RedisLedgerError::Unreachable`] after a failed one.
    pub fn health(&self) -> Result<(), RedisLedgerError> {
        let view = lock(&self.shared.view);
        if view.connected {
            return Ok(());
        }
        match &view.last_error {
            None => Err(RedisLedgerError::NotSynced),
            Some(reason) => Err(RedisLedgerError::Unreachable {
                since_ms: view
                    .last_sync
                    .unwrap_or(self.shared.started)
                    .elapsed()
                    .as_millis(),
                reason: reason.clone(),
            }),
        }
    }

    /// Successful syncs so far.
    pub fn syncs(&self) -> u64 {
        lock(&self.shared.view).syncs
    }

    /// Round trips to Redis so far (sync scripts and connection attempts;
    /// the pub/sub connection's pushes are not round trips).
    pub fn round_trips(&self) -> u64 {
        self.shared.round_trips.load(Ordering::Relaxed)
    }

    /// Every group across the cluster, with each node's share, highest cost first.
    pub fn cluster_groups(&self) -> Vec<ClusterGroup> {
        let view = lock(&self.shared.view);
        let mut networks: Vec<IpNetwork> = view.local.keys().chain(view.remote.keys()).copied().collect();
        networks.sort();
        networks.dedup();
        let mut groups: Vec<ClusterGroup> = networks
            .into_iter()
            .filter_map(|network| {
                let entry = view.entry(network)?;
                let mut nodes = Vec::new();
                if let Some(local) = view.local.get(&network) {
                    nodes.push(NodeShare {
                        node: self.shared.config.node.clone(),
                        live_cost: local.live,
                        sessions: local.sessions,
                    });
                }
                if let Some(remote) = view.remote.get(&network) {
                    nodes.extend(remote.others.iter().cloned());
                }
                nodes.sort_by(|a, b| a.node.cmp(&b.node));
                Some(ClusterGroup {
                    network,
                    cost: entry.cost(),
                    retained_cost: entry.retained_cost,
                    nodes,
                })
            })
            .collect();
        groups.sort_by(|a, b| b.cost.total_cmp(&a.cost).then_with(|| a.network.cmp(&b.network)));
        groups
    }

    fn wake(&self) {
        // A full channel already holds a wake-up.
        let _ = lock(&self.shared.wake).try_send(());
    }

    /// Reconciles the local view with Redis every `sync_interval`, and at
    /// once when a ban is made here or announced by another node; listens
    /// for ban announcements; reconnects with backoff while Redis is
    /// unreachable. Runs until dropped. Needs a tokio runtime. Only one
    /// `run` future works at a time per ledger; a second returns at once.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping it stops syncing (the node then serves on its
    /// local view and its share expires from Redis after `node_ttl`);
    /// nothing is lost, since a batch whose outcome is unknown is resent,
    /// with its number, by the next `run`.
    pub async fn run(self) {
        let Some(wake_rx) = lock(&self.shared.wake_rx).take() else {
            return;
        };
        /// Gives the wake-up receiver back to the ledger when `run` is
        /// dropped, so a later `run` can take over.
        struct GiveBack<'a> {
            shared: &'a Shared,
            rx: Option<futures::channel::mpsc::Receiver<()>>,
        }
        impl Drop for GiveBack<'_> {
            fn drop(&mut self) {
                *lock(&self.shared.wake_rx) = self.rx.take();
            }
        }
        let mut give_back = GiveBack {
            shared: &self.shared,
            rx: Some(wake_rx),
        };
        let Some(wake_rx) = give_back.rx.as_mut() else {
            return;
        };
        let listener = self.listen_for_bans();
        let sync = async {
            let mut connection: Option<redis::aio::MultiplexedConnection> = None;
            let mut backoff = Duration::from_millis(100);
            loop {
                let outcome = match connection.as_mut() {
                    Some(connection) => self.sync(connection).await,
                    None => match self.connect().await {
                        Ok(mut fresh) => {
                            let outcome = self.sync(&mut fresh).await;
                            connection = Some(fresh);
                            outcome
                        }
                        Err(error) => Err(error),
                    },
                };
                let pause = match outcome {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        self.shared.config.sync_interval
                    }
                    Err(reason) => {
                        connection = None;
                        self.record_failure(reason);
                        let pause = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        pause
                    }
                };
                let sleep = std::pin::pin!(tokio::time::sleep(pause));
                let woken = wake_rx.next();
                futures::future::select(sleep, woken).await;
            }
        };
        futures::future::join(listener, sync).await;
    }

    async fn connect(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        self.shared.round_trips.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(
            self.shared.config.timeout,
            self.shared.client.get_multiplexed_async_connection(),
        )
        .await
        {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no connection within {:?}", self.shared.config.timeout)),
        }
    }

    /// Subscribes to ban announcements and wakes the sync loop on each;
    /// resubscribes with backoff. Never completes.
    async fn listen_for_bans(&self) {
        let channel = self.key("bans");
        let mut backoff = Duration::from_millis(100);
        loop {
            let subscribed = async {
                let mut pubsub =
                    tokio::time::timeout(self.shared.config.timeout, self.shared.client.get_async_pubsub())
                        .await
                        .map_err(|_| "no pub/sub connection in time".to_owned())?
                        .map_err(|e| e.to_string())?;
                pubsub.subscribe(&channel).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(pubsub)
            }
            .await;
            if let Ok(mut pubsub) = subscribed {
                backoff = Duration::from_millis(100);
                // Bans made while unsubscribed are read by the next sync.
                self.wake();
                let mut messages = pubsub.on_message();
                while messages.next().await.is_some() {
                    self.wake();
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{{{}}}:{name}", self.shared.config.prefix)
    }

    fn record_failure(&self, reason: String) {
        let was_connected = {
            let mut view = lock(&self.shared.view);
            let was = view.connected;
            view.connected = false;
            view.last_error = Some(reason.clone());
            was
        };
        crate::edge::observe::ledger_unreachable(&self.shared.config.node, &reason, was_connected);
    }

    /// One reconciliation: one script call.
    async fn sync(&self, connection: &mut redis::aio::MultiplexedConnection) -> Result<(), String> {
        let config = &self.shared.config;
        let (batch, live, reseed) = {
            let mut view = lock(&self.shared.view);
            if view.in_flight.is_none()
                && (!view.pending_retained.is_empty() || !view.pending_bans.is_empty())
            {
                let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
                let retained = view
                    .pending_retained
                    .drain()
                    .filter(|(_, cost)| *cost != 0.0)
                    .collect();
                let bans = std::mem::take(&mut view.pending_bans);
                view.in_flight = Some(Batch { seq, retained, bans });
            }
            let live: Vec<(IpNetwork, LocalGroup)> = view
                .local
                .iter()
                .filter(|(_, group)| group.sessions > 0 || group.live > 0.0)
                .map(|(network, group)| (*network, *group))
                .collect();
            let reseed: Vec<(IpNetwork, f64)> = if view.reseed {
                view.remote
                    .iter()
                    .filter(|(_, group)| group.retained > 0.0)
                    .map(|(network, group)| (*network, group.retained))
                    .collect()
            } else {
                Vec::new()
            };
            (view.in_flight.clone().unwrap_or_default(), live, reseed)
        };
        let mut invocation = sync_script().prepare_invoke();
        invocation
            .arg(self.key(""))
            .arg(&config.node)
            .arg(config.node_ttl.as_millis() as u64)
            .arg(config.key_ttl.as_millis() as u64)
            .arg(config.refund_per_sec)
            .arg(batch.seq)
            .arg(live.len())
            .arg(batch.retained.len())
            .arg(batch.bans.len())
            .arg(reseed.len());
        for (network, group) in &live {
            invocation
                .arg(network.to_string())
                .arg(format!("{} {}", group.live, group.sessions));
        }
        for (network, cost) in &batch.retained {
            invocation.arg(network.to_string()).arg(*cost);
        }
        for op in &batch.bans {
            match op {
                BanOp::Ban(network, duration) => invocation
                    .arg(network.to_string())
                    .arg(duration.map_or(0, |d| d.as_millis().clamp(1, u64::MAX as u128) as u64)),
                BanOp::Unban(network) => invocation.arg(network.to_string()).arg(-1),
            };
        }
        for (network, cost) in &reseed {
            invocation.arg(network.to_string()).arg(*cost);
        }
        self.shared.round_trips.fetch_add(1, Ordering::Relaxed);
        let reply: (String, String, Vec<String>, Vec<String>, Vec<String>) =
            match tokio::time::timeout(config.timeout, invocation.invoke_async(connection)).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err(format!("no reply within {:?}", config.timeout)),
            };
        self.apply(reply, batch.seq, !reseed.is_empty());
        Ok(())
    }

    /// Takes in a sync's reply: the others' shares, the retained costs, the
    /// bans and Redis's data epoch.
    fn apply(
        &self,
        reply: (String, String, Vec<String>, Vec<String>, Vec<String>),
        seq: u64,
        reseeded: bool,
    ) {
        let (epoch, now_ms, others, retained, bans) = reply;
        let now_ms: u64 = now_ms.parse().unwrap_or(0);
        let mut remote: HashMap<IpNetwork, RemoteGroup> = HashMap::default();
        for row in others.chunks_exact(3) {
            let (Ok(network), Some((live, sessions))) = (row[1].parse::<IpNetwork>(), row[2].split_once(' '))
            else {
                continue;
            };
            remote.entry(network).or_default().others.push(NodeShare {
                node: row[0].clone(),
                live_cost: live.parse().unwrap_or(0.0),
                sessions: sessions.parse().unwrap_or(0),
            });
        }
        for pair in retained.chunks_exact(2) {
            if let (Ok(network), Ok(cost)) = (pair[0].parse::<IpNetwork>(), pair[1].parse::<f64>()) {
                remote.entry(network).or_default().retained = cost.max(0.0);
            }
        }
        let here = Instant::now();
        let bans = bans
            .chunks_exact(2)
            .filter_map(|pair| {
                let network = pair[0].parse::<IpNetwork>().ok()?;
                let expiry: u64 = pair[1].parse().ok()?;
                let until = (expiry > 0).then(|| here + Duration::from_millis(expiry.saturating_sub(now_ms)));
                Some((network, until))
            })
            .collect();
        let reconnected = {
            let mut view = lock(&self.shared.view);
            if view.in_flight.as_ref().is_some_and(|batch| batch.seq == seq) {
                view.in_flight = None;
            }
            // A new epoch means Redis lost its data: seed the retained costs
            // again from this view at the next sync (first writer wins).
            view.reseed = !reseeded && view.epoch.as_ref().is_some_and(|known| *known != epoch);
            if !view.reseed {
                view.remote = remote;
            } else {
                for (network, group) in remote {
                    let retained = view.remote.get(&network).map_or(0.0, |old| old.retained);
                    view.remote.insert(network, RemoteGroup { retained, ..group });
                }
            }
            view.epoch = Some(epoch);
            // Bans made or lifted here and not yet in Redis stay as made.
            let mut bans: Vec<(IpNetwork, Option<Instant>)> = bans;
            let unsent = view
                .in_flight
                .iter()
                .flat_map(|batch| batch.bans.iter())
                .chain(view.pending_bans.iter());
            for op in unsent {
                match op {
                    BanOp::Ban(network, duration) => {
                        bans.retain(|(banned, _)| banned != network);
                        bans.push((*network, duration.and_then(|d| here.checked_add(d))));
                    }
                    BanOp::Unban(network) => bans.retain(|(banned, _)| banned != network),
                }
            }
            view.bans = bans;
            let reconnected = !view.connected;
            view.connected = true;
            view.last_sync = Some(here);
            view.syncs += 1;
            reconnected && view.last_error.is_some()
        };
        if reconnected {
            crate::edge::observe::ledger_reconnected(&self.shared.config.node);
        }
    }
}

impl GroupLedger for RedisLedger {
    /// Joins on this node; `max_sessions` applies to the group across the
    /// cluster (this node's members exact, the others' as last synced).
    fn join(
        &self,
        group: IpNetwork,
        initial_cost: f64,
        max_sessions: Option<usize>,
    ) -> Result<f64, GroupFull> {
        let mut view = lock(&self.shared.view);
        let others = view.remote.get(&group).map_or(0, RemoteGroup::others_sessions);
        let local = view.local.entry(group).or_default();
        if let Some(max) = max_sessions
            && local.sessions + others >= max
        {
            return Err(GroupFull { max });
        }
        local.sessions += 1;
        local.live += initial_cost;
        Ok(view.cost(&group))
    }

    fn report(&self, group: IpNetwork, delta: f64) -> f64 {
        let mut view = lock(&self.shared.view);
        let local = view.local.entry(group).or_default();
        local.live = (local.live + delta).max(0.0);
        view.cost(&group)
    }

    fn leave(&self, group: IpNetwork, reported: f64, cost: f64) {
        let mut view = lock(&self.shared.view);
        let local = view.local.entry(group).or_default();
        local.sessions = local.sessions.saturating_sub(1);
        local.live = (local.live - reported).max(0.0);
        if local.sessions == 0 {
            view.local.remove(&group);
        }
        *view.pending_retained.entry(group).or_default() += cost;
    }

    /// While synced, a no-op: the sync script refunds the shared retained
    /// cost once, by Redis's clock. While Redis is unreachable, refunds the
    /// local view of it and this node's own unsent part, so throttles still
    /// relax; the next sync replaces that view with Redis's.
    fn refund(&self, amount: f64) {
        let mut view = lock(&self.shared.view);
        if view.connected {
            return;
        }
        for group in view.remote.values_mut() {
            group.retained = (group.retained - amount).max(0.0);
        }
        // This node's own contribution decays too; less of it goes to Redis.
        for cost in view.pending_retained.values_mut() {
            *cost = (*cost - amount).max(0.0);
        }
        view.pending_retained.retain(|_, cost| *cost > 0.0);
    }

    fn cost(&self, group: IpNetwork) -> f64 {
        lock(&self.shared.view).cost(&group)
    }

    fn entries(&self) -> Vec<GroupEntry> {
        let view = lock(&self.shared.view);
        let mut networks: Vec<IpNetwork> = view
            .local
            .iter()
            .filter(|(_, group)| group.sessions > 0 || group.live > 0.0)
            .map(|(network, _)| *network)
            .chain(view.remote.keys().copied())
            .chain(view.pending_retained.keys().copied())
            .collect();
        networks.sort();
        networks.dedup();
        networks
            .into_iter()
            .filter_map(|network| view.entry(network))
            .collect()
    }

    fn entry(&self, group: IpNetwork) -> Option<GroupEntry> {
        lock(&self.shared.view).entry(group)
    }

    fn shares_bans(&self) -> bool {
        true
    }

    /// Refuses `network` on this node at once, and on the others once the
    /// ban reaches Redis and they are told.
    fn share_ban(&self, network: IpNetwork, duration: Option<Duration>) {
        {
            let mut view = lock(&self.shared.view);
            view.pending_bans.push(BanOp::Ban(network, duration));
            let until = duration.and_then(|d| Instant::now().checked_add(d));
            view.bans.retain(|(banned, _)| *banned != network);
            view.bans.push((network, until));
        }
        self.wake();
    }

    fn share_unban(&self, network: IpNetwork) {
        {
            let mut view = lock(&self.shared.view);
            view.pending_bans.push(BanOp::Unban(network));
            view.bans.retain(|(banned, _)| *banned != network);
        }
        self.wake();
    }

    fn shared_ban(&self, addr: IpAddr) -> Option<SharedBan> {
        let addr = canonical_ip(addr);
        let now = Instant::now();
        let view = lock(&self.shared.view);
        view.bans
            .iter()
            .find(|(network, until)| until.is_none_or(|until| now < until) && network.contains(addr))
            .map(|(network, until)| SharedBan {
                network: *network,
                remaining: until.map(|until| until.saturating_duration_since(now)),
            })
    }

    fn shared_bans(&self) -> Vec<SharedBan> {
        let now = Instant::now();
        lock(&self.shared.view)
            .bans
            .iter()
            .filter(|(_, until)| until.is_none_or(|until| now < until))
            .map(|(network, until)| SharedBan {
                network: *network,
                remaining: until.map(|until| until.saturating_duration_since(now)),
            })
            .collect()
    }
}

/// The sync script: refunds the retained cost once by Redis's clock,
/// applies this node's batch once, replaces its share, and returns the
/// others' shares, the retained costs and the bans.
///
/// ARGV: prefix (`{p}:`), node, node TTL ms, key TTL ms, refund per second,
/// batch number, then the counts of live rows, retained rows, ban rows and
/// reseed rows, then the rows as pairs.
const SYNC_SCRIPT: &str = r#"
local p, node = ARGV[1], ARGV[2]
local node_ttl, key_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local rate, seq = tonumber(ARGV[5]), tonumber(ARGV[6])
local n_live, n_retained, n_bans, n_reseed = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fmt(x) return string.format('%.17g', x) end

local epoch = redis.call('GET', p .. 'epoch')
if not epoch then
  epoch = tostring(now) .. ':' .. node
  redis.call('SET', p .. 'epoch', epoch)
end
redis.call('PEXPIRE', p .. 'epoch', key_ttl)

-- Refund the retained cost once, for the time since the last refund.
local retained_key = p .. 'retained'
local last = tonumber(redis.call('GET', p .. 'refunded_at') or now)
local elapsed = math.max(0, now - last) / 1000
if elapsed > 0 and rate > 0 then
  local rows = redis.call('HGETALL', retained_key)
  for i = 1, #rows, 2 do
    local v = tonumber(rows[i + 1]) - elapsed * rate
    if v <= 0 then redis.call('HDEL', retained_key, rows[i]) else redis.call('HSET', retained_key, rows[i], fmt(v)) end
  end
end
redis.call('SET', p .. 'refunded_at', now, 'PX', key_ttl)

local at = 11
local live_at = at
at = at + 2 * n_live
-- This node's batch, applied at most once.
local seq_key = p .. 'seq'
local applied = tonumber(redis.call('HGET', seq_key, node) or '0')
if seq > applied then
  for i = 0, n_retained - 1 do
    redis.call('HINCRBYFLOAT', retained_key, ARGV[at + 2 * i], ARGV[at + 2 * i + 1])
  end
  local bans_key = p .. 'bans'
  local announced = false
  for i = 0, n_bans - 1 do
    local network, ms = ARGV[at + 2 * n_retained + 2 * i], tonumber(ARGV[at + 2 * n_retained + 2 * i + 1])
    if ms < 0 then redis.call('HDEL', bans_key, network)
    elseif ms == 0 then redis.call('HSET', bans_key, network, 0)
    else redis.call('HSET', bans_key, network, now + ms) end
    announced = true
  end
  if announced then redis.call('PUBLISH', p .. 'bans', node) end
  redis.call('HSET', seq_key, node, seq)
end
redis.call('PEXPIRE', seq_key, key_ttl)
at = at + 2 * n_retained + 2 * n_bans
-- Seed retained costs again after Redis lost its data: first writer wins.
for i = 0, n_reseed - 1 do
  redis.call('HSETNX', retained_key, ARGV[at + 2 * i], ARGV[at + 2 * i + 1])
end
redis.call('PEXPIRE', retained_key, key_ttl)

-- Replace this node's share.
local node_key = p .. 'node:' .. node
redis.call('DEL', node_key)
for i = 0, n_live - 1 do
  redis.call('HSET', node_key, ARGV[live_at + 2 * i], ARGV[live_at + 2 * i + 1])
end
redis.call('PEXPIRE', node_key, node_ttl)
local nodes_key = p .. 'nodes'
redis.call('ZADD', nodes_key, now, node)
redis.call('ZREMRANGEBYSCORE', nodes_key, '-inf', now - node_ttl)
redis.call('PEXPIRE', nodes_key, key_ttl)

-- Read the others' shares, the retained costs and the bans in force.
local others = {}
for _, other in ipairs(redis.call('ZRANGE', nodes_key, 0, -1)) do
  if other ~= node then
    local rows = redis.call('HGETALL', p .. 'node:' .. other)
    for i = 1, #rows, 2 do
      others[#others + 1] = other
      others[#others + 1] = rows[i]
      others[#others + 1] = rows[i + 1]
    end
  end
end
local bans_key = p .. 'bans'
local bans = {}
local rows = redis.call('HGETALL', bans_key)
for i = 1, #rows, 2 do
  local expiry = tonumber(rows[i + 1])
  if expiry == 0 or expiry > now then
    bans[#bans + 1] = rows[i]
    bans[#bans + 1] = rows[i + 1]
  else
    redis.call('HDEL', bans_key, rows[i])
  end
end
redis.call('PEXPIRE', bans_key, key_ttl)
return {epoch, tostring(now), others, redis.call('HGETALL', retained_key), bans}
"#;

fn sync_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(SYNC_SCRIPT))
}
