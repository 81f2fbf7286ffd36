//! One session: its cost meter, admission (the retargetable concurrency
//! limit and the throttle sleep), traffic counters, and the handle the host
//! holds for the connection's lifetime.

use crate::config::Limits;
use crate::core::admission::{self, RequestWord};
use crate::core::meter::CostMeter;
use crate::core::sync::{lock, read};
use crate::edge::deadline::within;
use crate::error::{Error, Result};
use crate::host::{Host, Transport};
use crate::ledger::GroupLedger;
use crate::timer::Timer;
use crate::types::{Cost, DisconnectReason, PeerInfo, SessionId};
use ipnetwork::IpNetwork;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// What every session shares with the manager: the host (for its clock
/// and ledger), the limits, and the manager's start (sessions keep their
/// times as offsets from it).
pub(crate) struct Context<H: Host> {
    pub(crate) host: H,
    /// Changed only through [`Context::set_limits`], which keeps `hot` in step.
    pub(crate) limits: RwLock<Arc<Limits>>,
    /// The limits every `add_session` and every session's end read, as
    /// plain atomic loads instead of the `RwLock`'s two read-modify-writes.
    pub(crate) hot: HotLimits,
    pub(crate) epoch: Instant,
    /// The group prefixes (`Config::ipv4_group_prefix`, `ipv6_…`).
    pub(crate) group_prefixes: (u8, u8),
}

/// Copies of the limits `add_session` and a session's end read (see
/// [`Context::hot`]), written under the limits' write lock. A reader may
/// see some fields of a change and not others, as it could admit a session
/// under the old limits just before the change.
pub(crate) struct HotLimits {
    max_sessions: AtomicUsize,
    /// `usize::MAX` for none.
    max_sessions_per_group: AtomicUsize,
    initial_concurrent: AtomicU32,
    /// `f64` bits.
    cost_soft_limit: AtomicU64,
    /// `f64` bits.
    cost_hard_limit: AtomicU64,
}

impl HotLimits {
    pub(crate) fn new(limits: &Limits) -> Self {
        let hot = HotLimits {
            max_sessions: AtomicUsize::new(0),
            max_sessions_per_group: AtomicUsize::new(0),
            initial_concurrent: AtomicU32::new(0),
            cost_soft_limit: AtomicU64::new(0),
            cost_hard_limit: AtomicU64::new(0),
        };
        hot.store(limits);
        hot
    }

    fn store(&self, limits: &Limits) {
        self.max_sessions.store(limits.max_sessions, Ordering::Relaxed);
        self.max_sessions_per_group.store(
            limits.max_sessions_per_group.unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
        self.initial_concurrent
            .store(limits.initial_concurrent, Ordering::Relaxed);
        self.cost_soft_limit
            .store(limits.cost_soft_limit.to_bits(), Ordering::Relaxed);
        self.cost_hard_limit
            .store(limits.cost_hard_limit.to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn max_sessions(&self) -> usize {
        self.max_sessions.load(Ordering::Relaxed)
    }

    pub(crate) fn max_sessions_per_group(&self) -> Option<usize> {
        Some(self.max_sessions_per_group.load(Ordering::Relaxed)).filter(|&max| max != usize::MAX)
    }

    pub(crate) fn initial_concurrent(&self) -> u32 {
        self.initial_concurrent.load(Ordering::Relaxed)
    }

    pub(crate) fn cost_soft_limit(&self) -> f64 {
        f64::from_bits(self.cost_soft_limit.load(Ordering::Relaxed))
    }

    pub(crate) fn cost_hard_limit(&self) -> f64 {
        f64::from_bits(self.cost_hard_limit.load(Ordering::Relaxed))
    }
}

impl<H: Host> Context<H> {
    /// Replaces the limits (and their [`HotLimits`] copies, under the
    /// write lock).
    pub(crate) fn set_limits(&self, limits: Limits) {
        let mut current = crate::core::sync::write(&self.limits);
        self.hot.store(&limits);
        *current = Arc::new(limits);
    }

    /// `at` as nanoseconds since [`Context::epoch`] (0 before it; 584
    /// years fit).
    pub(crate) fn offset(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `offset` nanoseconds after [`Context::epoch`].
    pub(crate) fn instant(&self, offset: u64) -> Instant {
        self.epoch + Duration::from_nanos(offset)
    }

    pub(crate) fn limits(&self) -> Arc<Limits> {
        read(&self.limits).clone()
    }

    pub(crate) fn timer(&self) -> &H::Timer {
        self.host.timer()
    }

    pub(crate) fn ledger(&self) -> &H::Ledger {
        self.host.ledger()
    }
}

/// How many characters of a client's name and protocol
/// ([`SessionHandle::set_client`]) are kept.
pub const MAX_CLIENT_CHARS: usize = 64;

/// A session's cost, as [`SessionHandle::cost`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SessionCost {
    /// The session's own cost (decayed to the last charge or recalculation).
    pub own: f64,
    /// The rest of its group's cost (the other members' and the retained
    /// cost), which counts toward its throttle; 0 for an exempt session.
    pub group_extra: f64,
    /// The part of the group's cost left behind by ended sessions,
    /// refunded over time; included in `group_extra`.
    pub retained: f64,
}

impl SessionCost {
    /// What the throttle compares with the soft and hard limits.
    pub fn total(&self) -> f64 {
        self.own + self.group_extra
    }
}

/// Per-session traffic and request counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Counters {
    /// Complete messages received.
    pub recv_count: u64,
    /// Bytes received.
    pub recv_bytes: u64,
    /// Messages sent (replies and notifications).
    pub send_count: u64,
    /// Bytes sent.
    pub send_bytes: u64,
    /// Requests admitted.
    pub requests: u64,
    /// Requests that ended in an error (timeouts and parse errors included).
    pub errors: u64,
    /// Transactions broadcast.
    pub txs_sent: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, other: Counters) {
        self.recv_count += other.recv_count;
        self.recv_bytes += other.recv_bytes;
        self.send_count += other.send_count;
        self.send_bytes += other.send_bytes;
        self.requests += other.requests;
        self.errors += other.errors;
        self.txs_sent += other.txs_sent;
    }
}

/// The counters every session moves ([`Counters`] less the rare ones,
/// `errors` and `txs_sent`, which are in [`Rare`]).
#[derive(Clone, Copy, Default)]
pub(crate) struct Traffic {
    pub(crate) recv_count: u64,
    pub(crate) recv_bytes: u64,
    pub(crate) send_count: u64,
    pub(crate) send_bytes: u64,
    pub(crate) requests: u64,
}

/// What few sessions set, allocated when first set: the client's name
/// and protocol, the operator's log flag, and the counters of errors and
/// transactions broadcast.
#[derive(Default)]
pub(crate) struct Rare {
    client: Option<Box<str>>,
    protocol: Option<Box<str>>,
    pub(crate) errors: u64,
    pub(crate) txs_sent: u64,
    log: bool,
}

/// Admissions waiting for a slot: one word while none waits, as for most
/// sessions (boxed on purpose: a `Vec` is three words).
#[allow(clippy::box_collection)]
#[derive(Debug, Default)]
pub(crate) struct Waiters(Option<Box<Vec<Waker>>>);

impl Waiters {
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Waker> {
        self.0.as_deref().map_or(&[][..], Vec::as_slice).iter()
    }

    pub(crate) fn push(&mut self, waker: Waker) {
        self.0.get_or_insert_default().push(waker);
    }
}

impl IntoIterator for Waiters {
    type Item = Waker;
    type IntoIter = std::vec::IntoIter<Waker>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.map_or_else(Vec::new, |waiters| *waiters).into_iter()
    }
}

pub(crate) struct SessionState {
    pub(crate) meter: CostMeter,
    /// The cost the ledger holds for this session.
    pub(crate) reported_cost: f64,
    /// Extra cost seen at the last recalculation.
    pub(crate) extra_cost: f64,
    pub(crate) sleep: Duration,
    /// The allowance last granted to the lock-free path (see
    /// [`crate::core::admission`]); `granted − allowance left` is charged
    /// but not yet in `meter`.
    pub(crate) granted: u64,
    pub(crate) waiters: Waiters,
    /// When the last message was received ([`Context::offset`]).
    last_recv: u64,
    pub(crate) counters: Traffic,
    /// The session's scripts and outpoints: its part of the subscription
    /// index, changed only under the index's lock (index, then this lock).
    pub(crate) subs: crate::core::subscriptions::SessionSubs,
    /// Whether the subscription index may hold anything of this session.
    pub(crate) indexed: bool,
    rare: Option<Box<Rare>>,
    pub(crate) closed: bool,
}

impl SessionState {
    /// Script and outpoint subscriptions (what the limits and the cost
    /// decay count).
    pub(crate) fn subscriptions(&self) -> usize {
        self.subs.count()
    }

    /// The client's name, as [`SessionHandle::set_client`] recorded it.
    pub(crate) fn client(&self) -> Option<&str> {
        self.rare.as_ref()?.client.as_deref()
    }

    /// The client's protocol, as [`SessionHandle::set_client`] recorded it.
    pub(crate) fn protocol(&self) -> Option<&str> {
        self.rare.as_ref()?.protocol.as_deref()
    }

    /// What few sessions set, allocated now if it was not.
    pub(crate) fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    /// Every counter (the requests the lock-free path admitted since it
    /// last settled aside).
    fn all_counters(&self) -> Counters {
        let (errors, txs_sent) = self
            .rare
            .as_ref()
            .map_or((0, 0), |rare| (rare.errors, rare.txs_sent));
        let traffic = self.counters;
        Counters {
            recv_count: traffic.recv_count,
            recv_bytes: traffic.recv_bytes,
            send_count: traffic.send_count,
            send_bytes: traffic.send_bytes,
            requests: traffic.requests,
            errors,
            txs_sent,
        }
    }

    /// Whether the operator asked to log this session's requests.
    pub(crate) fn log(&self) -> bool {
        self.rare.as_ref().is_some_and(|rare| rare.log)
    }

    pub(crate) fn set_log(&mut self, on: bool) {
        if on || self.rare.is_some() {
            self.rare.get_or_insert_default().log = on;
        }
    }
}

/// The manager's record of a session.
pub(crate) struct SessionShared<H: Host> {
    pub(crate) id: SessionId,
    pub(crate) peer: PeerInfo,
    /// Whether the peer's address is in an exempt network (no group); else
    /// [`SessionShared::group`] is derived from it.
    exempt: bool,
    /// When the session started ([`Context::offset`]).
    started: u64,
    pub(crate) transport: Box<dyn Transport>,
    pub(crate) ctx: Arc<Context<H>>,
    pub(crate) state: Mutex<SessionState>,
    /// The lock-free request path: slots in flight, the slots it may
    /// admit, and the cost it may charge (see [`crate::core::admission`]).
    /// Changed without the lock only by admissions and releases.
    pub(crate) requests: RequestWord,
    /// Set once the session has ended (by `end`, under the state lock);
    /// checked without the lock.
    pub(crate) ended: AtomicBool,
    pub(crate) outbox: crate::edge::mailbox::Mailbox,
    pub(crate) span: crate::edge::observe::SessionSpan,
    /// Notifications queued since the last noise step (see
    /// [`crate::NoisePolicy`]).
    pub(crate) queued_since_noise: AtomicU32,
}

impl<H: Host> SessionShared<H> {
    // One call site (add_session), which has each of these at hand;
    // inlined there so the session is built in place, not moved.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn new(
        id: SessionId,
        peer: PeerInfo,
        group: Option<IpNetwork>,
        transport: Box<dyn Transport>,
        ctx: Arc<Context<H>>,
        now: Instant,
        initial_concurrent: u32,
        extra_cost: f64,
    ) -> Self {
        let now_offset = ctx.offset(now);
        let allowance = admission::allowance_for(CostMeter::RECALC_DRIFT, CostMeter::INITIAL_COST);
        SessionShared {
            id,
            peer,
            exempt: group.is_none(),
            started: now_offset,
            transport,
            ctx,
            state: Mutex::new(SessionState {
                meter: CostMeter::starting(now, initial_concurrent),
                reported_cost: CostMeter::INITIAL_COST,
                extra_cost,
                sleep: Duration::ZERO,
                granted: allowance,
                waiters: Waiters::default(),
                last_recv: now_offset,
                counters: Traffic::default(),
                subs: Default::default(),
                indexed: false,
                rare: None,
                closed: false,
            }),
            requests: RequestWord::new(initial_concurrent, allowance),
            ended: AtomicBool::new(false),
            outbox: crate::edge::mailbox::Mailbox::default(),
            span: crate::edge::observe::SessionSpan::new(id, peer, group),
            queued_since_noise: AtomicU32::new(0),
        }
    }

    /// The session's group (subnet), `None` for an exempt address: as
    /// `group_of` found it at admission, derived again from the peer's
    /// address (the session does not keep it twice).
    pub(crate) fn group(&self) -> Option<IpNetwork> {
        if self.exempt {
            return None;
        }
        let (v4, v6) = self.ctx.group_prefixes;
        crate::core::groups::group_of(self.peer.addr.ip(), v4, v6, &[])
    }

    /// When the session started.
    pub(crate) fn started(&self) -> Instant {
        self.ctx.instant(self.started)
    }

    /// When the session last received a message (under the lock).
    pub(crate) fn last_recv(&self, state: &SessionState) -> Instant {
        self.ctx.instant(state.last_recv)
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Counts one notification queued for this session (for the noise policy).
    pub(crate) fn count_queued(&self) {
        self.queued_since_noise.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `amount` to the cost, recalculating when it drifted past 100.
    pub(crate) fn add_cost(&self, amount: Cost) {
        let amount = amount.get();
        crate::edge::observe::cost_charged(amount);
        if admission::FastCharge::of(amount).is_some_and(|charge| self.requests.try_charge(charge)) {
            return;
        }
        let due = {
            let mut state = lock(&self.state);
            let due = self.settle(&mut state) | state.meter.charge(amount);
            self.grant(&mut state);
            due
        };
        if due {
            self.recalculate(self.ctx.timer().now());
        }
    }

    /// Moves what the lock-free path charged into the meter and takes its
    /// allowance back (0 until [`Self::grant`]). Returns whether a
    /// recalculation is due.
    fn settle(&self, state: &mut SessionState) -> bool {
        let taken = self.requests.take_allowance();
        self.settle_taken(state, taken)
    }

    /// [`Self::settle`] with what was taken from the word.
    fn settle_taken(&self, state: &mut SessionState, taken: admission::Taken) -> bool {
        state.counters.requests += taken.admitted;
        let granted = std::mem::take(&mut state.granted);
        taken.settle(granted, &mut state.meter)
    }

    /// Opens the lock-free path to the meter's current throttle (after
    /// [`Self::settle`]): admissions while unthrottled and not closed, and
    /// charges up to the distance to the next recalculation.
    fn grant(&self, state: &mut SessionState) {
        let (open, allowance) = if state.closed {
            (0, 0)
        } else {
            let open = if state.sleep.is_zero() {
                state.meter.throttle().target
            } else {
                0
            };
            let allowance = admission::allowance_for(state.meter.headroom(), state.meter.cost());
            (open, allowance)
        };
        state.granted = allowance;
        self.requests.set(open, allowance);
    }

    /// The session's own cost: the meter's and what the lock-free path
    /// charged since it last settled (under the lock).
    pub(crate) fn own_cost(&self, state: &SessionState) -> f64 {
        self.requests
            .pending()
            .added_to(state.granted, state.meter.cost())
    }

    /// The session's counters, with the requests the lock-free path
    /// admitted since it last settled (under the lock).
    pub(crate) fn counters(&self, state: &SessionState) -> Counters {
        Counters {
            requests: state.counters.requests + self.requests.pending().admitted,
            ..state.all_counters()
        }
    }

    /// The waiters to wake (under the lock): after this, releases take the
    /// lock again only when a new admission waits.
    fn take_waiters(&self, state: &mut SessionState) -> Waiters {
        self.requests.clear_waiters();
        std::mem::take(&mut state.waiters)
    }

    /// Decays the cost, reports it to the group ledger, and retargets the
    /// concurrency against the rest of the group's cost.
    pub(crate) fn recalculate(&self, now: Instant) {
        if let Some(group_cost) = self.report_cost(now) {
            self.retarget(group_cost);
        }
    }

    /// The first half of a recalculation: decays the cost and reports it to
    /// the group ledger. Returns the group's total cost after (0 without a
    /// group), or `None` if the session has ended.
    pub(crate) fn report_cost(&self, now: Instant) -> Option<f64> {
        let limits = self.ctx.limits();
        let mut state = lock(&self.state);
        if state.closed {
            return None;
        }
        self.settle(&mut state);
        let subscriptions = state.subscriptions();
        state.meter.decay(now, subscriptions, &limits);
        self.grant(&mut state);
        let cost = state.meter.cost();
        Some(match self.group() {
            Some(group) => {
                let delta = cost - state.reported_cost;
                state.reported_cost = cost;
                self.ctx.ledger().report(group, delta)
            }
            None => 0.0,
        })
    }

    /// The second half: the concurrency target and sleep against the rest
    /// of the group's cost (`group_cost` less this session's own).
    pub(crate) fn retarget(&self, group_cost: f64) {
        let limits = self.ctx.limits();
        let wakers = {
            let mut state = lock(&self.state);
            if state.closed {
                return;
            }
            let extra = match self.group() {
                Some(_) => (group_cost - state.reported_cost).max(0.0),
                None => 0.0,
            };
            state.extra_cost = extra;
            let before = state.meter.throttle().target;
            // Charges since the report count from here on (as they would
            // had they come after the retarget).
            self.settle(&mut state);
            let throttle = state.meter.retarget(extra, &limits);
            state.sleep = state.meter.request_sleep(&limits);
            self.grant(&mut state);
            if throttle.target != before {
                let cost = state.meter.cost();
                crate::edge::observe::throttle_changed(&self.span, before, throttle.target, cost, extra);
            }
            if throttle.target > before || throttle.target == 0 {
                self.take_waiters(&mut state)
            } else {
                Waiters::default()
            }
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Marks the session closed and settles its cost with the ledger.
    /// Returns its final counters and whether the subscription index may
    /// hold anything of it, or `None` if it had already ended.
    pub(crate) fn end(&self, now: Instant) -> Option<(Counters, bool)> {
        if self.is_ended() {
            return None;
        }
        let (wakers, counters, indexed) = {
            let mut state = lock(&self.state);
            // `ended` is set only here, under the lock (a store, not a
            // swap: `closed` already says whether another end came first).
            if state.closed {
                return None;
            }
            self.ended.store(true, Ordering::Release);
            let taken = self.requests.close();
            self.settle_taken(&mut state, taken);
            state.closed = true;
            let subscriptions = state.subscriptions();
            state
                .meter
                .decay_with(now, subscriptions, self.ctx.hot.cost_hard_limit());
            if let Some(group) = self.group() {
                let cost = state.meter.cost();
                self.ctx.ledger().leave(group, state.reported_cost, cost);
                state.reported_cost = cost;
            }
            // `close` cleared the waiters bit.
            let wakers = std::mem::take(&mut state.waiters);
            (wakers, state.all_counters(), state.indexed)
        };
        wakers.into_iter().for_each(Waker::wake);
        self.outbox.close();
        Some((counters, indexed))
    }

    /// Frees a slot and charges what the permit collected: lock-free when
    /// no admission waits and the charge fits the allowance.
    #[inline]
    fn release(&self, pending_charge: f64) {
        if admission::FastCharge::of(pending_charge).is_some_and(|charge| self.requests.try_release(charge)) {
            crate::edge::observe::cost_charged(pending_charge);
            return;
        }
        self.release_locked(pending_charge);
    }

    #[cold]
    fn release_locked(&self, pending_charge: f64) {
        let (wakers, due) = {
            let mut state = lock(&self.state);
            self.requests.release_locked();
            let mut due = self.settle(&mut state);
            due |= pending_charge > 0.0 && state.meter.charge(pending_charge);
            self.grant(&mut state);
            crate::edge::observe::cost_charged(pending_charge);
            (self.take_waiters(&mut state), due)
        };
        wakers.into_iter().for_each(Waker::wake);
        if due {
            self.recalculate(self.ctx.timer().now());
        }
    }

    /// Charges an error; `code` is its metric label.
    fn charge_error(&self, amount: f64, code: &'static str) {
        crate::edge::observe::request_error(code);
        lock(&self.state).rare_mut().errors += 1;
        self.add_cost(Cost::saturating(amount));
    }

    /// Fast path of admission: a free slot and no throttle sleep.
    #[inline]
    fn try_admit_now(&self) -> Option<Result<()>> {
        if self.requests.try_admit() {
            crate::edge::observe::request_admitted();
            return Some(Ok(()));
        }
        self.try_admit_locked()
    }

    /// Admission under the lock, when the lock-free path refused (closed,
    /// throttled, or its slots full).
    #[cold]
    fn try_admit_locked(&self) -> Option<Result<()>> {
        let mut state = lock(&self.state);
        // The lock-free path may have refused because its count is full.
        state.counters.requests += self.requests.take_admitted();
        if state.closed {
            return Some(Err(Error::SessionClosed(self.id)));
        }
        let target = state.meter.throttle().target;
        if target == 0 {
            crate::edge::observe::excessive_cost(&self.span, self.own_cost(&state), state.extra_cost);
            return Some(Err(Error::ExcessiveCost));
        }
        if state.sleep.is_zero() && self.requests.admit_locked(target, false) {
            state.counters.requests += 1;
            crate::edge::observe::request_admitted();
            return Some(Ok(()));
        }
        None
    }

    /// Admission: the fast path at the first poll, else the slow path.
    fn admit(&self) -> Admission<'_, H> {
        Admission {
            session: self,
            slow: None,
        }
    }

    async fn admit_slow(&self) -> Result<Permit<'_, H>> {
        let limits = self.ctx.limits();
        let timer = self.ctx.timer();
        let started = timer.now();
        let deadline = started + limits.request_timeout;
        let acquire = std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.closed {
                return Poll::Ready(Err(Error::SessionClosed(self.id)));
            }
            let target = state.meter.throttle().target;
            if target == 0 {
                crate::edge::observe::excessive_cost(&self.span, self.own_cost(&state), state.extra_cost);
                return Poll::Ready(Err(Error::ExcessiveCost));
            }
            if self.requests.admit_locked(target, true) {
                state.counters.requests += 1;
                crate::edge::observe::request_admitted();
                crate::edge::observe::throttled_admission(state.sleep);
                return Poll::Ready(Ok(state.sleep));
            }
            // Full: `admit_locked` set the waiters bit, so the next release
            // takes the lock and wakes this task.
            if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        });
        let sleep = match within(timer, limits.request_timeout, acquire).await {
            Some(result) => result?,
            None => {
                self.charge_error(limits.error_cost, "-102");
                return Err(Error::ServerBusy(limits.request_timeout));
            }
        };
        let permit = Permit {
            session: self,
            slot: Slot {
                deadline: self.ctx.offset(deadline).max(1),
                charge: 0.0,
            },
        };
        if !sleep.is_zero() {
            let remaining = deadline.saturating_duration_since(timer.now());
            if sleep >= remaining {
                timer.sleep(remaining).await;
                drop(permit);
                self.charge_error(limits.error_cost, "-102");
                return Err(Error::ServerBusy(limits.request_timeout));
            }
            timer.sleep(sleep).await;
        }
        Ok(permit)
    }

    /// [`Permit::run`] and [`OwnedPermit::run`].
    async fn run_request<T>(&self, slot: &Slot, handler: impl std::future::Future<Output = T>) -> Result<T> {
        let timer = self.ctx.timer();
        let limits = self.ctx.limits();
        let remaining = match slot.deadline {
            0 => limits.request_timeout,
            deadline => self.ctx.instant(deadline).saturating_duration_since(timer.now()),
        };
        let stopwatch = crate::edge::observe::Stopwatch::start(timer, false);
        let result = within(timer, remaining, handler).await;
        crate::edge::observe::request_finished(stopwatch, timer);
        match result {
            Some(value) => Ok(value),
            None => {
                self.charge_error(limits.error_cost, "-102");
                Err(Error::ServerBusy(limits.request_timeout))
            }
        }
    }
}

/// The future of [`SessionShared::admit`]: written out rather than an
/// `async` block so that the fast path is a plain call (no state machine
/// to set up) and the future two words and a tag.
struct Admission<'a, H: Host> {
    session: &'a SessionShared<H>,
    /// The slow path once the fast one refused (boxed: rare, and large).
    slow: Option<SlowAdmission<'a, H>>,
}

type SlowAdmission<'a, H> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Permit<'a, H>>> + Send + 'a>>;

impl<'a, H: Host> std::future::Future for Admission<'a, H> {
    type Output = Result<Permit<'a, H>>;

    #[inline]
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin`.
        let this = self.get_mut();
        if let Some(slow) = &mut this.slow {
            return slow.as_mut().poll(cx);
        }
        match this.session.try_admit_now() {
            Some(Ok(())) => Poll::Ready(Ok(Permit {
                session: this.session,
                slot: Slot::IMMEDIATE,
            })),
            Some(Err(error)) => Poll::Ready(Err(error)),
            None => this
                .slow
                .insert(Box::pin(this.session.admit_slow()))
                .as_mut()
                .poll(cx),
        }
    }
}

/// What a permit holds besides its session.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// When admission waited or slept, the request's deadline as an offset
    /// ([`Context::offset`], at least 1); 0 when admitted at once. (Not an
    /// `Option<Instant>`: a permit of two words and a float moves in
    /// registers.)
    deadline: u64,
    /// Charged when the permit is dropped.
    charge: f64,
}

impl Slot {
    /// Admitted at once: the whole request timeout is left.
    const IMMEDIATE: Slot = Slot {
        deadline: 0,
        charge: 0.0,
    };
}

/// A slot to process one request, borrowed from its [`SessionHandle`]
/// ([`SessionHandle::admit`]) and held until the reply is written.
///
/// Dropping it frees the slot and applies what was charged through
/// [`Permit::charge`]. [`Permit::run`] applies the rest of the request
/// timeout to the handler. [`OwnedPermit`] is the same slot for a request
/// that outlives the borrow (a spawned task).
///
/// Admitting and dropping take no lock while the session is unthrottled,
/// no admission waits, and the charge is a multiple of 2⁻⁸ (1/256) or
/// exactly 0.1 (a ping's cost) that keeps the session short of its next
/// recalculation (100 cost units past the last); otherwise they take the
/// session's lock. Either way the charge counts exactly once, adds to the
/// cost what the locked path would add, and [`SessionHandle::cost`]
/// includes it as soon as the permit is dropped.
#[must_use = "the request slot is released when the permit is dropped"]
pub struct Permit<'a, H: Host> {
    session: &'a SessionShared<H>,
    slot: Slot,
}

impl<H: Host> std::fmt::Debug for Permit<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("session", &self.session.id)
            .field("charge", &self.slot.charge)
            .finish()
    }
}

impl<H: Host> Permit<'_, H> {
    /// Adds `amount` to the session's cost when the permit is dropped.
    #[inline]
    pub fn charge(&mut self, amount: Cost) {
        self.slot.charge += amount.get();
    }

    /// Runs the request handler within what is left of the request timeout.
    ///
    /// # Errors
    /// [`Error::ServerBusy`] (−102) if the time runs out; the session is
    /// charged the error cost and the handler future is dropped.
    ///
    /// # Cancel safety
    /// Dropping the returned future drops the handler; the permit keeps its
    /// slot and what was charged until the permit itself is dropped.
    pub async fn run<T>(&mut self, handler: impl std::future::Future<Output = T>) -> Result<T> {
        self.session.run_request(&self.slot, handler).await
    }

    /// The slot, without releasing it (the caller takes it over).
    fn into_slot(self) -> Slot {
        let slot = self.slot;
        std::mem::forget(self);
        slot
    }
}

impl<H: Host> Drop for Permit<'_, H> {
    #[inline]
    fn drop(&mut self) {
        self.session.release(self.slot.charge);
    }
}

/// A [`Permit`] that holds its session by reference count instead of
/// borrowing the handle ([`SessionHandle::admit_owned`]), for a request
/// handled on another task; it behaves the same way.
#[must_use = "the request slot is released when the permit is dropped"]
pub struct OwnedPermit<H: Host> {
    session: Arc<SessionShared<H>>,
    slot: Slot,
}

impl<H: Host> std::fmt::Debug for OwnedPermit<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("session", &self.session.id)
            .field("charge", &self.slot.charge)
            .finish()
    }
}

impl<H: Host> OwnedPermit<H> {
    /// Adds `amount` to the session's cost when the permit is dropped.
    #[inline]
    pub fn charge(&mut self, amount: Cost) {
        self.slot.charge += amount.get();
    }

    /// Runs the request handler within what is left of the request timeout.
    ///
    /// # Errors
    /// [`Error::ServerBusy`] (−102) if the time runs out; the session is
    /// charged the error cost and the handler future is dropped.
    ///
    /// # Cancel safety
    /// Dropping the returned future drops the handler; the permit keeps its
    /// slot and what was charged until the permit itself is dropped.
    pub async fn run<T>(&mut self, handler: impl std::future::Future<Output = T>) -> Result<T> {
        self.session.run_request(&self.slot, handler).await
    }
}

impl<H: Host> Drop for OwnedPermit<H> {
    #[inline]
    fn drop(&mut self) {
        self.session.release(self.slot.charge);
    }
}

/// The host's handle on one session, held for the connection's lifetime.
///
/// [`SessionHandle::close`] ends the session and calls
/// [`crate::Transport::close`] once; the manager does the same when it ends
/// a session (stale, excessive cost, a client that stopped reading, an
/// operator's disconnect or ban, shutdown). Dropping the handle also ends
/// the session, at once, but without calling `Transport::close`: the host
/// drops it when its connection is already gone. Either way its cost moves
/// to its group's retained cost. To use it from several tasks, put it in
/// an `Arc`.
pub struct SessionHandle<H: Host> {
    pub(crate) session: Arc<SessionShared<H>>,
    pub(crate) manager: crate::edge::manager::SessionManager<H>,
}

impl<H: Host> std::fmt::Debug for SessionHandle<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.session.id)
            .field("peer", &self.session.peer)
            .finish()
    }
}

impl<H: Host> SessionHandle<H> {
    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.session.id
    }

    /// The peer address and transport kind.
    pub fn peer(&self) -> PeerInfo {
        self.session.peer
    }

    /// The session's group (subnet), `None` for an exempt address.
    pub fn group(&self) -> Option<IpNetwork> {
        self.session.group()
    }

    /// The session's `tracing` span (`session`, with fields `id`, `peer`,
    /// `group` and `kind`): the manager's events about the session belong
    /// to it, and a host can run its own per-connection futures in it
    /// (`tracing::Instrument`). Disabled when no subscriber wants `info`.
    #[cfg(feature = "tracing")]
    pub fn span(&self) -> &tracing::Span {
        self.session.span.span()
    }

    /// Whether the session has ended (closed by the manager or removed).
    pub fn is_closed(&self) -> bool {
        self.session.is_ended()
    }

    /// Waits for admission of one request.
    ///
    /// Unthrottled with a free slot this completes on its first poll, with one
    /// compare-and-swap and no lock. Throttled,
    /// it waits for one of the session's `target` slots and then sleeps
    /// `fraction × request_sleep`; the request timeout covers the queueing and
    /// the sleep (and [`Permit::run`] the handler). A session holds at most
    /// 65,535 requests at once, whatever its concurrency target.
    ///
    /// The [`Permit`] borrows the handle; a request handled on another task
    /// takes an [`OwnedPermit`] from [`SessionHandle::admit_owned`] instead.
    ///
    /// # Errors
    /// - [`Error::ExcessiveCost`] (−101) once the concurrency target is 0: the host
    ///   answers and closes the connection ([`SessionHandle::close`]).
    /// - [`Error::ServerBusy`] (−102) if the queueing and sleep outlast the request
    ///   timeout (charged as an error).
    /// - [`Error::SessionClosed`] after the session ended.
    ///
    /// # Cancel safety
    /// Cancel-safe: a future dropped while it waits for a slot or sleeps holds
    /// no slot and has charged nothing (the request is counted in the
    /// session's `requests` once it took a slot).
    pub fn admit(&self) -> impl std::future::Future<Output = Result<Permit<'_, H>>> + Send + '_ {
        self.session.admit()
    }

    /// Admits one request now if the session can run it without waiting:
    /// the first step of [`SessionHandle::admit`], without a future, for a
    /// host that handles requests on the connection's own task.
    ///
    /// `Ok(None)` means admission would wait (the session is throttled, or
    /// every slot it may hold is taken): await [`SessionHandle::admit`]
    /// then, which queues for a slot and sleeps as the throttle says.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// # use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport};
    /// # use indexer_sessions::{Config, CostMeter, SessionManager, cost};
    /// # let manager = SessionManager::builder(Config::default()).timer(ManualTimer::new())
    /// #     .db(MemoryDb::new()).daemon(MemoryDaemon::new()).mempool(MemoryMempool::new()).build().unwrap();
    /// # let (transport, _client) = MemoryTransport::new("203.0.113.7:1".parse().unwrap());
    /// let session = manager.add_session(transport).unwrap();
    /// # futures::executor::block_on(async {
    /// let mut permit = match session.try_admit()? {
    ///     Some(permit) => permit,
    ///     None => session.admit().await?,
    /// };
    /// permit.charge(cost::PING);
    /// drop(permit);
    /// # Ok::<_, indexer_sessions::Error>(())
    /// # }).unwrap();
    /// assert_eq!(session.cost().own, CostMeter::INITIAL_COST + cost::PING.get());
    /// # }
    /// ```
    ///
    /// # Errors
    /// - [`Error::ExcessiveCost`] (−101) once the concurrency target is 0.
    /// - [`Error::SessionClosed`] after the session ended.
    #[inline]
    pub fn try_admit(&self) -> Result<Option<Permit<'_, H>>> {
        match self.session.try_admit_now() {
            Some(Ok(())) => Ok(Some(Permit {
                session: &self.session,
                slot: Slot::IMMEDIATE,
            })),
            Some(Err(error)) => Err(error),
            None => Ok(None),
        }
    }

    /// [`SessionHandle::admit`] for a request handled on another task: the
    /// future and its [`OwnedPermit`] hold the session by reference count
    /// (one atomic increment and decrement more than a borrowed
    /// [`Permit`]) and borrow nothing.
    ///
    /// # Errors
    /// As [`SessionHandle::admit`].
    ///
    /// # Cancel safety
    /// As [`SessionHandle::admit`]: cancel-safe.
    pub fn admit_owned(&self) -> impl std::future::Future<Output = Result<OwnedPermit<H>>> + Send + 'static {
        let session = self.session.clone();
        async move {
            let slot = session.admit().await?.into_slot();
            Ok(OwnedPermit { session, slot })
        }
    }

    /// Charges `amount` to the session now.
    pub fn charge(&self, amount: Cost) {
        self.session.add_cost(amount);
    }

    /// Records one complete message of `bytes` received: charges the
    /// bandwidth cost and resets the idle timer.
    pub fn record_received(&self, bytes: usize) {
        let now = self.session.ctx.offset(self.session.ctx.timer().now());
        let unit = read(&self.session.ctx.limits).bandwidth_unit_cost;
        {
            let mut state = lock(&self.session.state);
            state.last_recv = now;
            state.counters.recv_count += 1;
            state.counters.recv_bytes += bytes as u64;
        }
        crate::edge::observe::bytes_received(bytes);
        self.session.add_cost(Cost::saturating(bytes as f64 / unit));
    }

    /// Records one message of `bytes` sent: charges the bandwidth cost.
    pub fn record_sent(&self, bytes: usize) {
        let unit = read(&self.session.ctx.limits).bandwidth_unit_cost;
        {
            let mut state = lock(&self.session.state);
            state.counters.send_count += 1;
            state.counters.send_bytes += bytes as u64;
        }
        crate::edge::observe::bytes_sent(bytes);
        self.session.add_cost(Cost::saturating(bytes as f64 / unit));
    }

    /// Records a request that ended in an error: charges `error_cost` (100).
    pub fn record_error(&self) {
        let cost = read(&self.session.ctx.limits).error_cost;
        self.session.charge_error(cost, "host");
    }

    /// Records a message that could not be parsed: charges `parse_error_cost` (1100).
    pub fn record_parse_error(&self) {
        let cost = read(&self.session.ctx.limits).parse_error_cost;
        self.session.charge_error(cost, "-32700");
    }

    /// The session's cost as its throttle sees it: its own cost now, and
    /// its group's extra and retained cost as of the last recalculation
    /// (exact from the moment [`crate::SessionManager::add_session`]
    /// returns).
    pub fn cost(&self) -> SessionCost {
        let (own, group_extra) = {
            let state = lock(&self.session.state);
            (self.session.own_cost(&state), state.extra_cost)
        };
        let retained = self
            .session
            .group()
            .and_then(|group| self.session.ctx.ledger().entry(group))
            .map_or(0.0, |entry| entry.retained_cost);
        SessionCost {
            own,
            group_extra,
            retained,
        }
    }

    /// The current throttle (fraction and concurrency target).
    pub fn throttle(&self) -> crate::core::meter::Throttle {
        lock(&self.session.state).meter.throttle()
    }

    /// Records the client's name and negotiated protocol (shown in
    /// `sessions()`). Both come from the client: each is kept to its first
    /// [`MAX_CLIENT_CHARS`] characters (and "…" when cut), so
    /// a session holds and reports a bounded amount whatever it sent.
    pub fn set_client(&self, client: impl AsRef<str>, protocol: impl AsRef<str>) {
        let client = truncated(client.as_ref(), MAX_CLIENT_CHARS);
        let protocol = truncated(protocol.as_ref(), MAX_CLIENT_CHARS);
        let mut state = lock(&self.session.state);
        let rare = state.rare_mut();
        rare.client = Some(client.into_boxed_str());
        rare.protocol = Some(protocol.into_boxed_str());
    }

    /// Whether the operator asked to log this session's requests.
    pub fn log_enabled(&self) -> bool {
        lock(&self.session.state).log()
    }

    /// Ends the session and closes its transport with `reason`: the
    /// session ends at once (its subscriptions and queued notifications
    /// go, its cost moves to its group's retained cost) and
    /// [`crate::Transport::close`] is called exactly once, within
    /// `close_timeout`. A session already ended (by the manager, an earlier
    /// `close`, or a sweep) is left as it is and its transport is not
    /// closed again.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// # use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport};
    /// # use indexer_sessions::{Config, DisconnectReason, SessionManager};
    /// # let manager = SessionManager::builder(Config::default()).timer(ManualTimer::new())
    /// #     .db(MemoryDb::new()).daemon(MemoryDaemon::new()).mempool(MemoryMempool::new()).build().unwrap();
    /// let (transport, client) = MemoryTransport::new("203.0.113.7:1".parse().unwrap());
    /// let session = manager.add_session(transport).unwrap();
    /// futures::executor::block_on(session.close(DisconnectReason::Admin));
    /// futures::executor::block_on(session.close(DisconnectReason::Stale)); // no second close
    /// assert_eq!(client.closed(), Some(DisconnectReason::Admin));
    /// assert!(session.is_closed());
    /// assert_eq!(manager.session_count(), 0);
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// The session ends at the first poll; a future dropped after that may
    /// leave `Transport::close` unfinished.
    pub async fn close(&self, reason: DisconnectReason) {
        self.manager.close_session(&self.session, reason).await;
    }

    /// Waits until the session ends.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits.
    pub async fn closed(&self) {
        self.session.outbox.closed().await
    }
}

/// The first `max` characters of `text`, and "…" if there were more.
fn truncated(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        // Already cut here with its ellipsis: keep it as it is.
        Some((end, '…')) if end + '…'.len_utf8() == text.len() => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

impl<H: Host> Drop for SessionHandle<H> {
    fn drop(&mut self) {
        self.manager.end_session(&self.session);
    }
}
