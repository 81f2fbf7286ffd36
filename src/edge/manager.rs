//! The session manager: admits sessions, keeps the group ledger and limits,
//! runs housekeeping, and closes sessions.

use crate::config::{Config, Limits};
use crate::core::bans::BanList;
use crate::core::groups::{canonical_ip, group_of};
use crate::core::hashing::MapHasher;
use crate::core::sync::lock;
use crate::edge::builder::SessionManagerBuilder;
use crate::edge::deadline::within;
use crate::edge::listener::{ListenerEvents, ListenerState};
use crate::edge::session::{Context, Counters, HotLimits, SessionHandle, SessionShared};
use crate::edge::watch::WatchCell;
use crate::error::{ConfigError, Error, Refusal, Result};
use crate::host::{Host, Transport};
use crate::ledger::GroupLedger;
use crate::timer::Timer;
use crate::types::{DisconnectReason, SessionId};
use futures::future::{Either, join_all, select};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// The live sessions by id: a table of the sessions' `Arc`s alone (one
/// word per bucket), hashed by the id each session holds.
pub(crate) struct SessionTable<H: Host> {
    table: hashbrown::HashTable<Arc<SessionShared<H>>>,
    hasher: MapHasher,
    /// Counters of sessions that have ended, and how many ended: under the
    /// table's lock, which a removal holds anyway.
    pub(crate) ended: (Counters, u64),
    /// The next session's id (under the lock `add_session` holds anyway).
    next_id: u64,
}

impl<H: Host> Default for SessionTable<H> {
    fn default() -> Self {
        SessionTable {
            table: hashbrown::HashTable::new(),
            hasher: MapHasher::default(),
            ended: (Counters::default(), 0),
            next_id: 0,
        }
    }
}

impl<H: Host> SessionTable<H> {
    fn hash(&self, id: SessionId) -> u64 {
        self.hasher.hash_one(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Adds a session whose id is not in the table.
    fn insert(&mut self, session: Arc<SessionShared<H>>) {
        let hasher = &self.hasher;
        self.table
            .insert_unique(hasher.hash_one(session.id), session, |s| hasher.hash_one(s.id));
    }

    fn remove(&mut self, id: SessionId) {
        if let Ok(found) = self.table.find_entry(self.hash(id), |s| s.id == id) {
            found.remove();
        }
    }

    fn get(&self, id: SessionId) -> Option<&Arc<SessionShared<H>>> {
        self.table.find(self.hash(id), |s| s.id == id)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<SessionShared<H>>> {
        self.table.iter()
    }
}

pub(crate) struct Inner<H: Host> {
    pub(crate) config: Config,
    pub(crate) ctx: Arc<Context<H>>,
    pub(crate) sessions: Mutex<SessionTable<H>>,
    pub(crate) bans: Mutex<BanList>,
    /// Whether `bans` holds any ban (set under its lock): `add_session`
    /// takes that lock only then.
    pub(crate) any_bans: AtomicBool,
    /// `shutdown`'s value, read without its lock by `add_session`.
    pub(crate) shut_down: AtomicBool,
    pub(crate) listener: WatchCell<ListenerState>,
    /// Whether `listener` is `Paused`, set in its `update`s (under its
    /// lock): a removal reads it without that lock.
    listener_paused: AtomicBool,
    pub(crate) shutdown: WatchCell<bool>,
    pub(crate) started: Instant,
    pub(crate) caches: crate::edge::caches::Caches,
    pub(crate) index: Mutex<crate::edge::notify::Index<H>>,
    pub(crate) pending_events: Mutex<crate::edge::notify::PendingEvents>,
    pub(crate) last_tip: Mutex<crate::core::tip::RecordedTip>,
    /// The shared header-subscription result.
    pub(crate) tip_header: Mutex<Option<crate::core::tip::TipHeader>>,
    /// When retained group cost was last refunded.
    last_refund: Mutex<Instant>,
    /// The noise policy with its seed, if noise is on.
    pub(crate) noise: Option<crate::core::noise::Noise>,
    /// Noise steps so far, and when the last one ran.
    pub(crate) noise_step: Mutex<(u64, Instant)>,
}

impl<H: Host> Inner<H> {
    pub(crate) fn db(&self) -> &H::Db {
        self.ctx.host.db()
    }
    pub(crate) fn daemon(&self) -> &H::Daemon {
        self.ctx.host.daemon()
    }
    pub(crate) fn mempool(&self) -> &H::Mempool {
        self.ctx.host.mempool()
    }
    pub(crate) fn validator(&self) -> &H::Validator {
        self.ctx.host.validator()
    }
}

/// A seed from the process's random hash keys (no extra dependency).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(b"noise");
    hasher.finish()
}

/// The session manager: a cheap-to-clone handle on shared state.
///
/// Generic over its [`Host`] (the index, node, mempool, clock, validator
/// and ledger), so every host call is statically dispatched; build it with
/// [`SessionManager::builder`], or [`SessionManager::new`] from a host
/// type of your own. [`crate::DynSessionManager`] is the form with every
/// part behind an `Arc<dyn …>`.
///
/// See the [crate documentation](crate) for the model and an example.
pub struct SessionManager<H: Host> {
    pub(crate) inner: Arc<Inner<H>>,
}

impl<H: Host> Clone for SessionManager<H> {
    fn clone(&self) -> Self {
        SessionManager {
            inner: self.inner.clone(),
        }
    }
}

impl SessionManager<crate::edge::builder::DynHost> {
    /// Starts building a manager with `config` ([`Config::default`] gives
    /// ElectrumX's numbers). Whatever parts it is given, the builder's
    /// `build` returns a manager generic over them (this function is only
    /// listed under the dynamic form, as `HashMap::new` is under its
    /// default hasher).
    pub fn builder(config: Config) -> SessionManagerBuilder {
        SessionManagerBuilder::new(config)
    }
}

impl<H: Host> std::fmt::Debug for SessionManager<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("sessions", &self.session_count())
            .finish_non_exhaustive()
    }
}

impl<H: Host> SessionManager<H> {
    /// A manager over `host` (see [`Host`]); [`SessionManager::builder`]
    /// assembles one from its parts instead.
    ///
    /// # Errors
    /// [`ConfigError`] for an out-of-range setting.
    pub fn new(config: Config, host: H) -> Result<Self, ConfigError> {
        config.validate()?;
        let started = host.timer().now();
        let ctx = Arc::new(Context {
            host,
            limits: RwLock::new(Arc::new(config.limits.clone())),
            hot: HotLimits::new(&config.limits),
            epoch: started,
            group_prefixes: (config.ipv4_group_prefix, config.ipv6_group_prefix),
        });
        Ok(SessionManager {
            inner: Arc::new(Inner {
                ctx,
                sessions: Mutex::new(SessionTable::default()),
                bans: Mutex::new(BanList::default()),
                any_bans: AtomicBool::new(false),
                shut_down: AtomicBool::new(false),
                listener: WatchCell::new(ListenerState::Accepting),
                listener_paused: AtomicBool::new(false),
                shutdown: WatchCell::new(false),
                started,
                caches: crate::edge::caches::Caches::new(&config),
                index: Mutex::new(crate::edge::notify::Index::default()),
                pending_events: Mutex::new(crate::edge::notify::PendingEvents::default()),
                last_tip: Mutex::new(crate::core::tip::RecordedTip::default()),
                tip_header: Mutex::new(None),
                last_refund: Mutex::new(started),
                noise: config
                    .noise
                    .clone()
                    .map(|policy| crate::core::noise::Noise::new(policy, random_seed())),
                noise_step: Mutex::new((0, started)),
                config,
            }),
        })
    }

    /// The configuration the manager was built with (limits as they are now).
    pub fn config(&self) -> Config {
        let mut config = self.inner.config.clone();
        config.limits = (*self.limits()).clone();
        config
    }

    /// The limits in force.
    pub fn limits(&self) -> Arc<Limits> {
        self.inner.ctx.limits()
    }

    pub(crate) fn now(&self) -> Instant {
        self.inner.ctx.timer().now()
    }

    /// Replaces the limits at run time. Every session is recalculated at
    /// once, and the listener state follows a changed `max_sessions`.
    ///
    /// # Errors
    /// [`ConfigError`]; the old limits stay in force.
    pub fn set_limits(&self, limits: Limits) -> Result<(), ConfigError> {
        limits.validate()?;
        crate::edge::observe::limits_changed(&limits);
        self.inner.ctx.set_limits(limits);
        self.recalculate_all();
        self.update_listener();
        Ok(())
    }

    /// Listener control events: `Paused` when the session count reaches
    /// `max_sessions`, `Accepting` again at 95 %, `Stopped` at shutdown.
    pub fn listener_state(&self) -> ListenerEvents {
        ListenerEvents {
            watcher: self.inner.listener.watcher(),
        }
    }

    /// Sessions now.
    pub fn session_count(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    /// Adds a session for a newly accepted connection. The manager keeps
    /// the transport (any [`Transport`], including an `Arc` of one) until
    /// the session ends.
    ///
    /// # Errors
    /// A [`Refusal`], after which the manager keeps no trace of the
    /// connection and the host closes it:
    /// - [`Refusal::ShuttingDown`] after [`SessionManager::shutdown`];
    /// - [`Refusal::Banned`] if the peer's address is in a banned network;
    /// - [`Refusal::AtCapacity`] at `max_sessions`;
    /// - [`Refusal::GroupFull`] at `max_sessions_per_group`.
    pub fn add_session(&self, transport: impl Transport) -> Result<SessionHandle<H>, Refusal> {
        let peer = transport.peer();
        let added = self.admit_transport(Box::new(transport), peer);
        if let Err(refusal) = &added {
            crate::edge::observe::session_refused(peer, refusal);
        }
        added
    }

    fn admit_transport(
        &self,
        transport: Box<dyn Transport>,
        peer: crate::types::PeerInfo,
    ) -> Result<SessionHandle<H>, Refusal> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(Refusal::ShuttingDown);
        }
        let inner = &self.inner;
        let now = self.now();
        if let Some(ban) = self.ban_covering(peer.addr.ip(), now) {
            return Err(Refusal::Banned {
                addr: peer.addr.ip(),
                ban,
            });
        }
        // Only what admission needs, without the limits' lock.
        let hot = &inner.ctx.hot;
        let (max_sessions, max_per_group, soft_limit, initial_concurrent) = (
            hot.max_sessions(),
            hot.max_sessions_per_group(),
            hot.cost_soft_limit(),
            hot.initial_concurrent(),
        );
        let group = group_of(
            peer.addr.ip(),
            inner.config.ipv4_group_prefix,
            inner.config.ipv6_group_prefix,
            &inner.config.exempt_networks,
        );
        let mut sessions = lock(&inner.sessions);
        if sessions.len() >= max_sessions {
            return Err(Refusal::AtCapacity { max: max_sessions });
        }
        let group_cost = match group {
            Some(group) => inner
                .ctx
                .ledger()
                .join(group, crate::core::meter::CostMeter::INITIAL_COST, max_per_group)
                .map_err(|full| Refusal::GroupFull { group, max: full.max })?,
            None => 0.0,
        };
        let id = SessionId(sessions.next_id);
        sessions.next_id += 1;
        // `new_cyclic` allocates first, so the session is built in place
        // (`Arc::new` built it on the stack and copied its ~300 bytes twice).
        let session = Arc::new_cyclic(|_| {
            SessionShared::new(
                id,
                peer,
                group,
                transport,
                inner.ctx.clone(),
                now,
                initial_concurrent,
                // The group may already carry cost (a reconnecting client
                // inherits it): the new member sees it at once.
                (group_cost - crate::core::meter::CostMeter::INITIAL_COST).max(0.0),
            )
        });
        debug_assert_eq!(session.group(), group);
        sessions.insert(session.clone());
        let count = sessions.len();
        drop(sessions);
        crate::edge::observe::session_opened(&session.span, count);
        // At the maximum: the listener's rule decides, on the count read
        // again with the pause (see `update_listener_state`).
        if count >= max_sessions {
            self.update_listener();
        }
        if group_cost > soft_limit {
            session.recalculate(now);
        }
        Ok(SessionHandle {
            session,
            manager: self.clone(),
        })
    }

    /// The ban covering `addr`: this node's, or one shared by another node
    /// through the ledger.
    fn ban_covering(&self, addr: std::net::IpAddr, now: Instant) -> Option<crate::types::Ban> {
        if self.inner.any_bans.load(Ordering::Acquire)
            && let Some(ban) = lock(&self.inner.bans).matching(addr, now)
        {
            return Some(ban);
        }
        let shared = self.inner.ctx.ledger().shared_ban(canonical_ip(addr))?;
        Some(crate::types::Ban {
            network: shared.network,
            until: shared.remaining.and_then(|remaining| now.checked_add(remaining)),
        })
    }

    /// Changes the listener state with `change`, given the session count,
    /// keeping `listener_paused` in step. Returns whether it changed.
    ///
    /// Under the listener's lock the count is read, and `listener_paused`
    /// written, under the session table's lock: a removal, which reads
    /// `listener_paused` under that lock too, either comes before (and is
    /// in the count) or sees the pause and updates the listener after it.
    /// A pause decided on a count read earlier could land after a removal
    /// had looked for one to undo, and stay with no removal to come.
    fn update_listener_state(&self, change: impl FnOnce(&ListenerState, usize) -> ListenerState) -> bool {
        self.inner.listener.update(|state| {
            let sessions = lock(&self.inner.sessions);
            let next = change(state, sessions.len());
            self.inner
                .listener_paused
                .store(next == ListenerState::Paused, Ordering::Release);
            next
        })
    }

    fn update_listener(&self) {
        let limits = self.limits();
        let mut seen = 0;
        let changed = self.update_listener_state(|state, count| {
            seen = count;
            match state {
                ListenerState::Stopped => ListenerState::Stopped,
                _ if count >= limits.max_sessions => ListenerState::Paused,
                ListenerState::Paused if count <= limits.resume_at() => ListenerState::Accepting,
                other => *other,
            }
        });
        if changed {
            crate::edge::observe::listener_changed(self.inner.listener.get(), seen, limits.max_sessions);
        }
    }

    /// Removes a session from the manager and settles its cost. Returns
    /// false if it had already ended.
    pub(crate) fn end_session(&self, session: &Arc<SessionShared<H>>) -> bool {
        self.end_session_because(session, None)
    }

    /// [`SessionManager::end_session`]; `reason` is `None` when the host
    /// dropped the session's handle.
    fn end_session_because(
        &self,
        session: &Arc<SessionShared<H>>,
        reason: Option<&DisconnectReason>,
    ) -> bool {
        let now = self.now();
        let Some((counters, indexed)) = session.end(now) else {
            return false;
        };
        let (remaining, paused) = {
            let mut sessions = lock(&self.inner.sessions);
            sessions.remove(session.id);
            sessions.ended.0 += counters;
            sessions.ended.1 += 1;
            // Read under the table's lock (see `update_listener_state`).
            (sessions.len(), self.inner.listener_paused.load(Ordering::Acquire))
        };
        if indexed {
            self.forget_subscriptions(session);
        }
        crate::edge::observe::session_closed(&session.span, reason, &counters, remaining);
        // A removal can only resume a paused listener.
        if paused {
            self.update_listener();
        }
        true
    }

    /// Ends a session and closes its transport (within `close_timeout`).
    pub(crate) async fn close_session(
        &self,
        session: &Arc<SessionShared<H>>,
        reason: DisconnectReason,
    ) -> bool {
        if !self.end_session_because(session, Some(&reason)) {
            return false;
        }
        let timer = self.inner.ctx.timer();
        within(
            timer,
            self.inner.config.close_timeout,
            session.transport.close(reason),
        )
        .await;
        true
    }

    pub(crate) async fn close_all(
        &self,
        sessions: Vec<Arc<SessionShared<H>>>,
        reason: DisconnectReason,
    ) -> usize {
        let closes = sessions.iter().map(|s| self.close_session(s, reason.clone()));
        join_all(closes)
            .await
            .into_iter()
            .filter(|closed| *closed)
            .count()
    }

    pub(crate) fn live_sessions(&self) -> Vec<Arc<SessionShared<H>>> {
        lock(&self.inner.sessions).values().cloned().collect()
    }

    pub(crate) fn session(&self, id: SessionId) -> Result<Arc<SessionShared<H>>> {
        lock(&self.inner.sessions)
            .get(id)
            .cloned()
            .ok_or(Error::UnknownSession(id))
    }

    /// Closes every session idle for more than `session_timeout` (reason
    /// [`DisconnectReason::Stale`]) and every session whose notifications
    /// have waited past `max_send_delay` ([`DisconnectReason::SendTimeout`]),
    /// every session in a network another node banned through the ledger
    /// ([`DisconnectReason::Banned`]), and drops expired bans. Housekeeping calls this every
    /// `sweep_interval`; returns how many sessions were closed.
    ///
    /// # Cancel safety
    /// Cancel-safe: the stale and stuck sessions end at the first poll; a
    /// future dropped after that may leave some `Transport::close` calls
    /// unfinished.
    pub async fn sweep(&self) -> usize {
        let now = self.now();
        let limits = self.limits();
        self.with_bans(|bans| bans.prune(now));
        let mut stale = Vec::new();
        let mut stuck = Vec::new();
        let mut banned = Vec::new();
        let ledger = self.inner.ctx.ledger();
        // Only a ledger that shares bans can know of bans this node did not
        // close sessions for itself.
        let shared_bans = ledger.shares_bans();
        for session in self.live_sessions() {
            if shared_bans && ledger.shared_ban(canonical_ip(session.peer.addr.ip())).is_some() {
                banned.push(session);
                continue;
            }
            let last_recv = session.last_recv(&lock(&session.state));
            if now.saturating_duration_since(last_recv) > limits.session_timeout {
                stale.push(session);
            } else if session
                .outbox
                .pending_since()
                .is_some_and(|since| now.saturating_duration_since(since) >= limits.max_send_delay)
            {
                crate::edge::observe::slow_consumer(&session);
                stuck.push(session);
            }
        }
        let (stale, stuck, banned) = futures::join!(
            self.close_all(stale, DisconnectReason::Stale),
            self.close_all(stuck, DisconnectReason::SendTimeout),
            self.close_all(banned, DisconnectReason::Banned)
        );
        stale + stuck + banned
    }

    /// Decays every session's cost, refunds retained group cost for the time
    /// since the last refund (`hard / 5000` per second: 600 per 300 s with
    /// the defaults), deleting empty groups at zero, and retargets every
    /// session. Housekeeping calls this every `recalc_interval`; calling it
    /// more often refreshes throttles without refunding any faster.
    pub fn recalculate(&self) {
        let limits = self.limits();
        let now = self.now();
        let elapsed = {
            let mut last = lock(&self.inner.last_refund);
            let elapsed = now.saturating_duration_since(*last);
            *last = now.max(*last);
            elapsed
        };
        let refund = elapsed.as_secs_f64() * limits.cost_hard_limit / 5000.0;
        self.inner.ctx.ledger().refund(refund);
        self.recalculate_all();
    }

    /// Recalculates every session in two passes: every cost is reported to
    /// the ledger first, then each session is retargeted against its
    /// group's final total, so no session's extra cost depends on the order
    /// of the pass.
    fn recalculate_all(&self) {
        let now = self.now();
        let sessions = self.live_sessions();
        for session in &sessions {
            session.report_cost(now);
        }
        for session in &sessions {
            let group_cost = session
                .group()
                .map_or(0.0, |group| self.inner.ctx.ledger().cost(group));
            session.retarget(group_cost);
        }
    }

    /// The manager's periodic duties, as one future the host runs on its
    /// executor: the stale sweep (and the caches' pending evictions) every
    /// `sweep_interval` and the cost recalculation every `recalc_interval`.
    /// It ends at shutdown.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping it stops housekeeping between duties (a sweep
    /// under way ends as [`SessionManager::sweep`] says); running it again
    /// resumes with a full interval.
    pub async fn run_housekeeping(&self) {
        let timer = self.inner.ctx.timer();
        let sweep_every = self.inner.config.sweep_interval;
        let recalc_every = self.inner.config.recalc_interval;
        let start = timer.now();
        let mut next_sweep = start + sweep_every;
        let mut next_recalc = start + recalc_every;
        let mut shutdown = self.inner.shutdown.watcher();
        loop {
            if shutdown.current() {
                return;
            }
            let now = timer.now();
            let wake = next_sweep.min(next_recalc);
            if wake > now {
                let sleep = timer.sleep(wake - now);
                let stop = std::pin::pin!(shutdown.wait_for(|stopped| *stopped));
                if let Either::Right(_) = select(sleep, stop).await {
                    return;
                }
            }
            let now = timer.now();
            if now >= next_recalc {
                self.recalculate();
                next_recalc = now + recalc_every;
            }
            if now >= next_sweep {
                self.sweep().await;
                self.run_pending_cache_tasks().await;
                if crate::edge::observe::SAMPLES {
                    self.info();
                }
                next_sweep = now + sweep_every;
            }
        }
    }

    /// Shuts down: refuses new sessions, tells listeners to stop, closes
    /// every session with [`DisconnectReason::Shutdown`] (each close bounded
    /// by `close_timeout`) and ends housekeeping. Returns how many sessions
    /// were closed.
    ///
    /// # Cancel safety
    /// Cancel-safe: the manager is shut down and every session ended at the
    /// first poll; a future dropped after that may leave some
    /// `Transport::close` calls unfinished.
    pub async fn shutdown(&self) -> usize {
        self.inner.shut_down.store(true, Ordering::Release);
        self.inner.shutdown.set(true);
        if self.update_listener_state(|_, _| ListenerState::Stopped) {
            crate::edge::observe::listener_changed(
                ListenerState::Stopped,
                self.session_count(),
                self.limits().max_sessions,
            );
        }
        let sessions = self.live_sessions();
        self.close_all(sessions, DisconnectReason::Shutdown).await
    }

    /// Changes the ban list, keeping `any_bans` in step (under its lock).
    pub(crate) fn with_bans<T>(&self, change: impl FnOnce(&mut BanList) -> T) -> T {
        let mut bans = lock(&self.inner.bans);
        let result = change(&mut bans);
        self.inner.any_bans.store(!bans.is_empty(), Ordering::Release);
        result
    }

    /// Whether [`SessionManager::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.get()
    }
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use super::*;
    use crate::Cost;
    use crate::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport};
    use proptest::prelude::*;
    use std::time::Duration;

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8),
        Charge(usize, f64),
        Remove(usize),
        Tick(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..6u8).prop_map(Op::Add),
            (0..8usize, 0.0..3000.0f64).prop_map(|(i, c)| Op::Charge(i, c)),
            (0..8usize).prop_map(Op::Remove),
            (1..400u64).prop_map(Op::Tick),
        ]
    }

    /// Six addresses over three groups (two per /24) and one exempt.
    fn address(n: u8) -> std::net::SocketAddr {
        match n {
            0 | 1 => format!("203.0.113.{n}:1"),
            2 | 3 => format!("198.51.100.{n}:1"),
            4 => "[2001:db8::4]:1".to_string(),
            _ => "127.0.0.1:1".to_string(),
        }
        .parse()
        .unwrap()
    }

    fn check_ledger(manager: &crate::testing::MemoryManager) -> std::result::Result<(), TestCaseError> {
        let sessions = manager.live_sessions();
        for entry in manager.inner.ctx.ledger().entries() {
            let members: Vec<_> = sessions
                .iter()
                .filter(|s| s.group() == Some(entry.network))
                .collect();
            prop_assert_eq!(entry.sessions, members.len());
            let reported: f64 = members.iter().map(|s| lock(&s.state).reported_cost).sum();
            prop_assert!((entry.live_cost - reported).abs() <= 1e-6 * reported.max(1.0));
            prop_assert!(entry.live_cost >= 0.0 && entry.retained_cost >= 0.0);
            prop_assert!(
                (entry.cost() - (entry.retained_cost + reported)).abs() <= 1e-6 * entry.cost().max(1.0)
            );
        }
        for session in &sessions {
            if let Some(group) = session.group() {
                prop_assert!(manager.inner.ctx.ledger().entry(group).is_some());
            }
        }
        Ok(())
    }

    proptest! {
        /// Random add / charge / remove / tick sequences keep every group's
        /// cost equal to retained + its members' costs, never negative, and
        /// leak no session or group once everything has ended and been refunded.
        #[test]
        fn group_costs_stay_consistent_and_nothing_leaks(ops in proptest::collection::vec(op(), 1..80)) {
            let timer = ManualTimer::new();
            let manager = SessionManager::builder(Config::default())
                .timer(timer.clone())
                .db(MemoryDb::new())
                .daemon(MemoryDaemon::new())
                .mempool(MemoryMempool::new())
                .build()
                .unwrap();
            let mut handles = Vec::new();
            for op in ops {
                match op {
                    Op::Add(n) => handles.push(manager.add_session(MemoryTransport::new(address(n)).0).unwrap()),
                    Op::Charge(i, cost) => {
                        if let Some(handle) = handles.get(i % handles.len().max(1)) {
                            handle.charge(Cost::new(cost).unwrap());
                        }
                    }
                    Op::Remove(i) => {
                        if !handles.is_empty() {
                            let i = i % handles.len();
                            drop(handles.swap_remove(i));
                        }
                    }
                    Op::Tick(secs) => {
                        timer.advance(Duration::from_secs(secs));
                        manager.recalculate();
                        for session in manager.live_sessions() {
                            let state = lock(&session.state);
                            if session.group().is_some() {
                                prop_assert_eq!(state.reported_cost, state.meter.cost());
                            }
                        }
                    }
                }
                check_ledger(&manager)?;
                prop_assert_eq!(manager.session_count(), handles.len());
            }
            handles.clear();
            prop_assert_eq!(manager.session_count(), 0);
            // Retained cost is at most 80 × 3000 + the initial costs; refunds
            // of 600 per 300 s empty every group.
            for _ in 0..500 {
                timer.advance(Duration::from_secs(300));
                manager.recalculate();
                if manager.inner.ctx.ledger().entries().is_empty() {
                    break;
                }
            }
            prop_assert!(manager.inner.ctx.ledger().entries().is_empty());
            prop_assert_eq!(lock(&manager.inner.index).total(), 0);
        }
    }
}
