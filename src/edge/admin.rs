//! Operator reports and actions: `info()`, `sessions()`, `groups()`,
//! disconnect by selector, bans, per-session logging.

use crate::core::groups::canonical_ip;
use crate::core::hashing::HashMap;
use crate::core::sync::lock;
use crate::edge::listener::ListenerState;
use crate::edge::manager::SessionManager;
use crate::edge::session::{Counters, SessionShared};
use crate::error::ConfigError;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::ledger::GroupLedger;
use crate::types::{DisconnectReason, SessionId, TransportKind};
use ipnetwork::IpNetwork;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Which sessions an admin action applies to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Selector {
    /// One session.
    Session(SessionId),
    /// Every session of a group (its subnet, as shown in `groups()`).
    Group(IpNetwork),
    /// Every session from one IP address.
    Address(IpAddr),
    /// Every session.
    All,
}

impl Selector {
    fn matches<H: Host>(&self, session: &SessionShared<H>) -> bool {
        match self {
            Selector::Session(id) => session.id == *id,
            Selector::Group(group) => session.group() == Some(*group),
            Selector::Address(addr) => canonical_ip(session.peer.addr.ip()) == canonical_ip(*addr),
            Selector::All => true,
        }
    }
}

impl FromStr for Selector {
    type Err = Error;

    /// `all`, a session id (`17`), a group (`203.0.113.0/24`) or an address.
    ///
    /// ```
    /// use indexer_sessions::admin::Selector;
    /// assert_eq!("all".parse::<Selector>().unwrap(), Selector::All);
    /// assert!(matches!("12".parse::<Selector>().unwrap(), Selector::Session(_)));
    /// assert!(matches!("10.0.0.0/8".parse::<Selector>().unwrap(), Selector::Group(_)));
    /// assert!(matches!("::1".parse::<Selector>().unwrap(), Selector::Address(_)));
    /// assert!("nonsense".parse::<Selector>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("all") {
            Ok(Selector::All)
        } else if let Ok(id) = text.parse::<u64>() {
            Ok(Selector::Session(SessionId(id)))
        } else if text.contains('/') {
            text.parse::<IpNetwork>()
                .map(|net| Selector::Group(IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)))
                .map_err(|e| Error::BadRequest(format!("bad group {text:?}: {e}")))
        } else {
            text.parse::<IpAddr>().map(Selector::Address).map_err(|_| {
                Error::BadRequest(format!("{text:?} is not a session id, group, address or 'all'"))
            })
        }
    }
}

/// One row of [`SessionManager::sessions`], with ElectrumX's columns.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SessionRow {
    /// Session id.
    pub id: SessionId,
    /// ElectrumX's flags: transport letter, `L` when logged, then the concurrency target.
    pub flags: String,
    /// Client name from `server.version`.
    pub client: Option<String>,
    /// Negotiated protocol version.
    pub protocol: Option<String>,
    /// Own cost.
    pub cost: f64,
    /// Extra (group) cost at the last recalculation.
    pub extra_cost: f64,
    /// Requests now being processed.
    pub in_flight: u32,
    /// Subscriptions.
    pub subs: usize,
    /// Pending notifications.
    pub pending_notifications: usize,
    /// Counters (requests, errors, traffic, transactions).
    pub counters: Counters,
    /// Time since the session started.
    pub age: Duration,
    /// Peer address.
    pub peer: SocketAddr,
    /// Transport kind.
    pub kind: TransportKind,
    /// Group (subnet), `None` when exempt.
    pub group: Option<IpNetwork>,
    /// Whether requests are logged.
    pub log: bool,
}

/// One row of [`SessionManager::groups`], with ElectrumX's columns.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct GroupRow {
    /// The group's subnet.
    pub network: IpNetwork,
    /// Live sessions.
    pub sessions: usize,
    /// Retained plus live cost, as held by the ledger.
    pub cost: f64,
    /// Retained cost.
    pub retained_cost: f64,
    /// Subscriptions of the live sessions.
    pub subs: usize,
    /// Counters summed over the live sessions.
    pub counters: Counters,
}

/// One active ban.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BanRow {
    /// The banned network.
    pub network: IpNetwork,
    /// Time left, `None` for permanent.
    pub remaining: Option<Duration>,
}

/// The summary of [`SessionManager::info`].
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Info {
    /// Live sessions.
    pub sessions: usize,
    /// Live sessions with at least one subscription.
    pub sessions_with_subs: usize,
    /// Sessions ended since start.
    pub sessions_ended: u64,
    /// Groups held by the ledger.
    pub groups: usize,
    /// Script and outpoint subscriptions across all sessions.
    pub subs: usize,
    /// Distinct scripts subscribed.
    pub distinct_subs: usize,
    /// Distinct outpoints subscribed.
    pub distinct_outpoint_subs: usize,
    /// Sessions subscribed to headers.
    pub header_subs: usize,
    /// Requests being processed now.
    pub in_flight: u64,
    /// Counters over every session, live and ended.
    pub counters: Counters,
    /// Sessions with logging on.
    pub logged: usize,
    /// Active bans.
    pub bans: usize,
    /// Listener state.
    pub listener: ListenerState,
    /// Time since the manager was built.
    pub uptime: Duration,
    /// Cache statistics.
    pub caches: crate::edge::caches::CacheReport,
}

impl<H: Host> SessionManager<H> {
    fn row(&self, session: &SessionShared<H>) -> SessionRow {
        let now = self.now();
        let pending = session.outbox.len();
        let state = lock(&session.state);
        let mut flags = String::new();
        flags.push(session.peer.kind.flag());
        if state.log() {
            flags.push('L');
        }
        flags.push_str(&state.meter.throttle().target.to_string());
        SessionRow {
            id: session.id,
            flags,
            client: state.client().map(str::to_owned),
            protocol: state.protocol().map(str::to_owned),
            cost: session.own_cost(&state),
            extra_cost: state.extra_cost,
            in_flight: session.requests.in_flight(),
            subs: state.subscriptions(),
            pending_notifications: pending,
            counters: session.counters(&state),
            age: now.saturating_duration_since(session.started()),
            peer: session.peer.addr,
            kind: session.peer.kind,
            group: session.group(),
            log: state.log(),
        }
    }

    /// One row per live session, ordered by id.
    pub fn sessions(&self) -> Vec<SessionRow> {
        let mut rows: Vec<_> = self.live_sessions().iter().map(|s| self.row(s)).collect();
        rows.sort_by_key(|row| row.id);
        rows
    }

    /// One session's row.
    ///
    /// # Errors
    /// [`Error::UnknownSession`].
    pub fn session_info(&self, id: SessionId) -> Result<SessionRow> {
        let session = self.session(id)?;
        Ok(self.row(&session))
    }

    /// One row per group the ledger holds (including groups with no live
    /// session but retained cost), ordered by cost, highest first.
    pub fn groups(&self) -> Vec<GroupRow> {
        let mut rows: Vec<GroupRow> = self
            .inner
            .ctx
            .ledger()
            .entries()
            .into_iter()
            .map(|entry| GroupRow {
                network: entry.network,
                sessions: entry.sessions,
                cost: entry.cost(),
                retained_cost: entry.retained_cost,
                subs: 0,
                counters: Counters::default(),
            })
            .collect();
        let position: HashMap<IpNetwork, usize> =
            rows.iter().enumerate().map(|(i, row)| (row.network, i)).collect();
        for session in self.live_sessions() {
            let Some(&i) = session.group().as_ref().and_then(|group| position.get(group)) else {
                continue;
            };
            let state = lock(&session.state);
            rows[i].subs += state.subscriptions();
            rows[i].counters += session.counters(&state);
        }
        rows.sort_by(|a, b| b.cost.total_cmp(&a.cost).then_with(|| a.network.cmp(&b.network)));
        rows
    }

    /// The manager's summary.
    pub fn info(&self) -> Info {
        let now = self.now();
        let (sessions, (mut counters, sessions_ended)) = {
            let table = lock(&self.inner.sessions);
            (table.values().cloned().collect::<Vec<_>>(), table.ended)
        };
        let (mut with_subs, mut in_flight, mut logged) = (0, 0u64, 0);
        for session in &sessions {
            let state = lock(&session.state);
            counters += session.counters(&state);
            with_subs += usize::from(state.subscriptions() > 0);
            in_flight += u64::from(session.requests.in_flight());
            logged += usize::from(state.log());
        }
        let (subs, distinct_subs, distinct_outpoint_subs, header_subs) = self.subscription_counts();
        let info = Info {
            sessions: sessions.len(),
            sessions_with_subs: with_subs,
            sessions_ended,
            groups: self.inner.ctx.ledger().entries().len(),
            subs,
            distinct_subs,
            distinct_outpoint_subs,
            header_subs,
            in_flight,
            counters,
            logged,
            bans: lock(&self.inner.bans).active(now).len(),
            listener: self.inner.listener.get(),
            uptime: now.saturating_duration_since(self.inner.started),
            caches: self.cache_report(),
        };
        if crate::edge::observe::SAMPLES {
            let queued = sessions.iter().map(|s| s.outbox.len()).sum();
            crate::edge::observe::sample(&info, queued);
        }
        info
    }

    fn select(&self, selector: Selector) -> Result<Vec<Arc<SessionShared<H>>>> {
        if let Selector::Session(id) = selector {
            return Ok(vec![self.session(id)?]);
        }
        Ok(self
            .live_sessions()
            .into_iter()
            .filter(|s| selector.matches(s))
            .collect())
    }

    /// Closes the selected sessions ([`DisconnectReason::Admin`]); returns how many.
    ///
    /// # Errors
    /// [`Error::UnknownSession`] when a selected session id does not exist.
    ///
    /// # Cancel safety
    /// Cancel-safe: the selected sessions end (removed, their cost settled)
    /// at the first poll; a future dropped after that may leave some
    /// `Transport::close` calls unfinished.
    pub async fn disconnect(&self, selector: Selector) -> Result<usize> {
        let sessions = self.select(selector)?;
        let closed = self.close_all(sessions, DisconnectReason::Admin).await;
        crate::edge::observe::admin_disconnect(&selector, closed);
        Ok(closed)
    }

    /// Turns request logging on or off for the selected sessions; returns how many.
    ///
    /// # Errors
    /// [`Error::UnknownSession`] when a selected session id does not exist.
    pub fn set_log(&self, selector: Selector, on: bool) -> Result<usize> {
        let sessions = self.select(selector)?;
        for session in &sessions {
            lock(&session.state).set_log(on);
        }
        Ok(sessions.len())
    }

    /// Bans `network` (for `duration`, or until unbanned when `None`) and
    /// closes its live sessions ([`DisconnectReason::Banned`]); returns how
    /// many were closed. New sessions from it are refused with [`crate::Refusal::Banned`].
    ///
    /// # Errors
    /// [`ConfigError`] for a zero duration.
    ///
    /// # Cancel safety
    /// Cancel-safe: the ban is recorded and the matching sessions end at the
    /// first poll; a future dropped after that may leave some
    /// `Transport::close` calls unfinished.
    pub async fn ban(&self, network: IpNetwork, duration: Option<Duration>) -> Result<usize, ConfigError> {
        if duration.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("ban duration", "must be longer than zero"));
        }
        let network = IpNetwork::new(network.network(), network.prefix()).unwrap_or(network);
        let now = self.now();
        // A duration too long to add to the clock is a permanent ban.
        let ledger = self.inner.ctx.ledger();
        if ledger.shares_bans() {
            // The ledger keeps it, so an unban on any node lifts it here too.
            ledger.share_ban(network, duration);
        } else {
            self.with_bans(|bans| bans.ban(network, duration.and_then(|d| now.checked_add(d))));
        }
        let banned: Vec<_> = self
            .live_sessions()
            .into_iter()
            .filter(|s| network.contains(canonical_ip(s.peer.addr.ip())))
            .collect();
        let closed = self.close_all(banned, DisconnectReason::Banned).await;
        crate::edge::observe::banned(network, duration, closed);
        Ok(closed)
    }

    /// Lifts the ban of exactly `network`, on every node when the ledger
    /// shares bans; returns whether there was one.
    pub fn unban(&self, network: IpNetwork) -> bool {
        let network = IpNetwork::new(network.network(), network.prefix()).unwrap_or(network);
        let ledger = self.inner.ctx.ledger();
        let mut existed = self.with_bans(|bans| bans.unban(network));
        if ledger.shares_bans() {
            existed |= ledger.shared_bans().iter().any(|ban| ban.network == network);
            ledger.share_unban(network);
        }
        crate::edge::observe::unbanned(network, existed);
        existed
    }

    /// The bans in force: this node's, then those other nodes shared
    /// through the ledger.
    pub fn bans(&self) -> Vec<BanRow> {
        let now = self.now();
        let mut rows: Vec<BanRow> = lock(&self.inner.bans)
            .active(now)
            .into_iter()
            .map(|ban| BanRow {
                network: ban.network,
                remaining: ban.until.map(|until| until.saturating_duration_since(now)),
            })
            .collect();
        for shared in self.inner.ctx.ledger().shared_bans() {
            if !rows.iter().any(|row| row.network == shared.network) {
                rows.push(BanRow {
                    network: shared.network,
                    remaining: shared.remaining,
                });
            }
        }
        rows
    }
}
