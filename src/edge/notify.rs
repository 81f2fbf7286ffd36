//! Subscriptions and notification fan-out.
//!
//! `notify(tip, touched)` computes the status of each script and outpoint
//! in `touched ∩ subscribed` (plus, on a tip change, every one whose status
//! involved the mempool) **once**, and queues it in the outbox of each
//! subscriber whose last status differs. It never awaits a client: each
//! session's delivery future ([`SessionHandle::deliver`]) drains its outbox.
//! Calls that arrive while one is running are merged into the next pass.

use crate::answers::Answers;
use crate::core::hashing::HashSet;
use crate::core::outbox::{Outgoing, Payload, StatusKey, StatusPrint};
use crate::core::subscriptions::{
    Alias, Delivery, OutpointDelivery, ScriptName, SubLimits, Subscriber, SubscriptionIndex,
    parse_scripthash, split_scripthash,
};
use crate::core::sync::lock;
use crate::edge::chain::{ComputedOutpoint, ScriptStatus};
use crate::edge::deadline::within;
use crate::edge::manager::SessionManager;
use crate::edge::session::{SessionHandle, SessionShared};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::timer::Timer;
use crate::types::{DisconnectReason, HASHX_LEN, HashX, Height, OutPoint, OutpointStatus, SessionId, Tip};
use futures::StreamExt;
use std::sync::Arc;
use std::task::{Poll, Waker};

/// What a block or a mempool refresh touched: scripts and outpoints, as
/// [`SessionManager::notify`] takes them.
///
/// ```
/// use indexer_sessions::{Changes, HashX, OutPoint, TxHash};
/// let mut changes = Changes::new();
/// changes.add_script(HashX([1; 11]));
/// changes.add_outpoint(OutPoint { txid: TxHash([2; 32]), vout: 0 });
/// changes.extend([HashX([3; 11])]);
/// assert_eq!((changes.scripts().count(), changes.outpoints().count()), (2, 1));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub(crate) scripts: HashSet<HashX>,
    pub(crate) outpoints: HashSet<OutPoint>,
}

impl Changes {
    /// Nothing touched.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a touched script.
    pub fn add_script(&mut self, hashx: HashX) {
        self.scripts.insert(hashx);
    }

    /// Adds a touched outpoint: one created or spent by a transaction that
    /// entered or left the mempool, or was connected or disconnected in a
    /// block.
    pub fn add_outpoint(&mut self, outpoint: OutPoint) {
        self.outpoints.insert(outpoint);
    }

    /// The touched scripts, in no order.
    pub fn scripts(&self) -> impl Iterator<Item = &HashX> {
        self.scripts.iter()
    }

    /// The touched outpoints, in no order.
    pub fn outpoints(&self) -> impl Iterator<Item = &OutPoint> {
        self.outpoints.iter()
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty() && self.outpoints.is_empty()
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, other: Changes) {
        if self.is_empty() {
            *self = other;
        } else {
            self.scripts.extend(other.scripts);
            self.outpoints.extend(other.outpoints);
        }
    }
}

impl Extend<HashX> for Changes {
    fn extend<I: IntoIterator<Item = HashX>>(&mut self, iter: I) {
        self.scripts.extend(iter);
    }
}

impl Extend<OutPoint> for Changes {
    fn extend<I: IntoIterator<Item = OutPoint>>(&mut self, iter: I) {
        self.outpoints.extend(iter);
    }
}

/// What [`SessionManager::notify`] accepts as "what changed": any
/// collection of `&HashX` (a set, a slice, a vector: scripts only, as
/// before outpoints existed), or a [`Changes`] (scripts and outpoints), by
/// value or by reference.
pub trait Touched {
    /// Adds what was touched to `changes`.
    fn add_to(self, changes: &mut Changes);
}

impl<'a, I: IntoIterator<Item = &'a HashX>> Touched for I {
    fn add_to(self, changes: &mut Changes) {
        changes.scripts.extend(self.into_iter().copied());
    }
}

impl Touched for Changes {
    fn add_to(self, changes: &mut Changes) {
        changes.merge(self);
    }
}

impl Touched for &Changes {
    fn add_to(self, changes: &mut Changes) {
        changes.scripts.extend(self.scripts.iter().copied());
        changes.outpoints.extend(self.outpoints.iter().copied());
    }
}

impl<H: Host> Subscriber for Arc<SessionShared<H>> {
    fn id(&self) -> SessionId {
        self.id
    }

    /// The outbox lock, the request word (charged) and the queued count,
    /// each read once. (A pass borrows the subscriber from the index, so
    /// its reference count is not touched.)
    fn warm(&self) {
        std::hint::black_box(self.outbox.warm());
        std::hint::black_box(self.requests.in_flight());
        std::hint::black_box(self.queued_since_noise.load(std::sync::atomic::Ordering::Relaxed));
    }
}

pub(crate) type Index<H> = SubscriptionIndex<Arc<SessionShared<H>>>;

/// Events waiting for a notification pass, and what an interrupted pass
/// left to redo.
#[derive(Default)]
pub(crate) struct PendingEvents {
    tip: Option<Tip>,
    pub(crate) touched: Changes,
    running: bool,
    /// A tip change whose header notifications and mempool rechecks were
    /// not all queued (the pass was dropped, or the tip header could not be
    /// read): the next pass treats its tip as changed.
    redo_tip_change: bool,
    /// The tip before a tip change whose block caches were not settled.
    redo_settle: Option<Option<Tip>>,
    /// Events recorded by `notify` calls so far.
    recorded: u64,
    /// Events a finished pass has applied (every event up to this one).
    applied: u64,
    /// `notify` calls merged into a running pass, waiting for it.
    waiters: Vec<Waker>,
}

/// The event one pass is working on. If the pass is dropped, what it has
/// not finished goes back to [`PendingEvents`].
struct Pass {
    /// The last event this pass applies.
    event: u64,
    tip: Tip,
    touched: Changes,
    tip_changed: bool,
    settle: Option<Option<Tip>>,
}

impl PendingEvents {
    /// Takes the next event, or marks the passes finished (under the same
    /// lock a new event is queued under, so no event is left behind).
    fn take_pass(&mut self) -> Option<Pass> {
        let Some(tip) = self.tip.take() else {
            self.running = false;
            return None;
        };
        Some(Pass {
            event: self.recorded,
            tip,
            touched: std::mem::take(&mut self.touched),
            tip_changed: std::mem::take(&mut self.redo_tip_change),
            settle: self.redo_settle.take(),
        })
    }

    /// Records that a pass applied every event up to `event`; returns the
    /// merged calls to wake.
    fn applied(&mut self, event: u64) -> Vec<Waker> {
        self.applied = self.applied.max(event);
        std::mem::take(&mut self.waiters)
    }

    /// Puts back what an unfinished pass had taken: its scripts are
    /// recomputed, its tip change redone, by the next pass. A newer tip
    /// queued meanwhile wins.
    fn restore(&mut self, pass: Pass) {
        self.tip.get_or_insert(pass.tip);
        self.touched.merge(pass.touched);
        self.redo_tip_change |= pass.tip_changed;
        if self.redo_settle.is_none() {
            self.redo_settle = pass.settle;
        }
    }
}

/// What one notification pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifyReport {
    /// Scripts whose status was computed.
    pub statuses_computed: usize,
    /// Scripts whose status changed.
    pub statuses_changed: usize,
    /// Status notifications queued (one per subscriber of a changed script).
    pub status_notifications: usize,
    /// Header notifications queued.
    pub header_notifications: usize,
    /// Outpoints whose status was computed.
    pub outpoints_computed: usize,
    /// Outpoints whose status changed.
    pub outpoints_changed: usize,
    /// Outpoint status notifications queued (one per subscriber of a
    /// changed outpoint).
    pub outpoint_notifications: usize,
    /// Noise pings queued ([`crate::NoisePolicy`]).
    pub noise_pings: usize,
    /// Scripts and outpoints whose status could not be computed (host
    /// error); they keep their old status and are retried by the next
    /// `notify`.
    pub failures: usize,
    /// Whether the event was merged into a pass already running: that pass
    /// applied it before this call completed, and reports the work (this
    /// report is otherwise empty).
    pub merged: bool,
}

/// Parses an outpoint request's parameters.
fn parse_outpoint(tx_hash: &str, txout_idx: i64, spk_hint: Option<&str>) -> Result<OutPoint> {
    let outpoint = OutPoint::parse(tx_hash, txout_idx)?;
    if let Some(hint) = spk_hint
        && crate::types::decode_hex(hint).is_none()
    {
        return Err(crate::error::ParamError::NotHex { param: "spk_hint" }.into());
    }
    Ok(outpoint)
}

/// How many statuses are computed concurrently in one pass.
const STATUS_CONCURRENCY: usize = 32;

/// How many scripts' histories one `Db::histories` call asks for.
const HISTORY_BATCH: usize = 256;

impl<H: Host> SessionManager<H> {
    fn sub_limits(&self) -> SubLimits {
        let limits = self.limits();
        SubLimits {
            per_session: limits.max_subs_per_session,
            per_group: limits.max_subs_per_group,
            global: limits.max_subs,
        }
    }

    /// Drops every subscription of a session that has ended (index, then
    /// session state: the session holds its part of the index).
    pub(crate) fn forget_subscriptions(&self, session: &SessionShared<H>) {
        let mut index = lock(&self.inner.index);
        let subs = std::mem::take(&mut lock(&session.state).subs);
        index.remove_session(subs, session.id, session.group());
    }

    /// (subscriptions, distinct scripts, distinct outpoints, header subscribers).
    pub(crate) fn subscription_counts(&self) -> (usize, usize, usize, usize) {
        let index = lock(&self.inner.index);
        (
            index.total(),
            index.distinct(),
            index.distinct_outpoints(),
            index.header_subscriber_count(),
        )
    }

    fn queue(&self, deliveries: Vec<Delivery<Arc<SessionShared<H>>>>, status: &ScriptStatus) -> usize {
        let charge = crate::core::cost::status(0);
        self.queue_each(deliveries, status.print(), charge, |delivery| {
            let payload = Payload::Script {
                name: delivery.name,
                status: status.status,
            };
            (
                delivery.subscriber,
                StatusKey::Script(delivery.hashx),
                payload,
                delivery.base,
            )
        })
    }

    fn queue_outpoints(
        &self,
        deliveries: Vec<OutpointDelivery<Arc<SessionShared<H>>>>,
        computed: &ComputedOutpoint,
    ) -> usize {
        let charge = crate::core::cost::OUTPOINT_STATUS;
        self.queue_each(deliveries, computed.print(), charge, |delivery| {
            let payload = Payload::Outpoint {
                outpoint: delivery.outpoint,
                status: computed.status,
            };
            (
                delivery.subscriber,
                StatusKey::Outpoint(delivery.outpoint),
                payload,
                delivery.base,
            )
        })
    }

    /// Queues a new status (fingerprint `print`) to each delivery's
    /// subscriber and charges it `charge`; `parts` names the subscriber,
    /// the key, the payload and the status it was last sent. Returns how
    /// many were queued.
    fn queue_each<D>(
        &self,
        deliveries: Vec<D>,
        print: StatusPrint,
        charge: crate::types::Cost,
        parts: impl Fn(D) -> (Arc<SessionShared<H>>, StatusKey, Payload, StatusPrint),
    ) -> usize {
        let now = self.now();
        let count = deliveries.len();
        for delivery in deliveries {
            let (session, key, payload, base) = parts(delivery);
            session.outbox.push_status(key, payload, print, base, now);
            session.count_queued();
            session.add_cost(charge);
        }
        count
    }

    /// Tells the manager what changed: the new tip and the scripts and
    /// outpoints touched by a block or a mempool refresh ([`Touched`]: any
    /// collection of `&HashX` — a set, a slice, a vector — for scripts
    /// alone, or a [`Changes`] for scripts and outpoints). Pass them
    /// together when both happened, or in two calls: a status is only sent
    /// when it differs from what the client was last sent, and a mempool
    /// entry already confirmed is left out of the status, so a confirming
    /// transaction is announced once. On a reorg, pass what the removed
    /// blocks touched too.
    ///
    /// Each status is computed once per event, whatever the number of
    /// subscribers: a script's from one [`crate::Db::histories`] batch entry
    /// and one [`crate::Mempool::entries_batch`] batch entry, an outpoint's from one
    /// [`crate::Db::outpoint`] and (unless confirmed spent) one
    /// [`crate::Mempool::outpoint`] call. On a tip change, every status that
    /// involved the mempool is computed again. With a [`crate::NoisePolicy`],
    /// the pass then queues noise pings to the sessions that asked for them.
    ///
    /// **The event is recorded when `notify` is called**, before the
    /// returned future is first polled: a caller that drops the future
    /// unpolled has still told the manager, and the next `notify` (or a
    /// merged call's wait, below) applies it. The future does the work and
    /// completes once every affected session's outbox is filled (it never
    /// waits for a client).
    ///
    /// Calls are merged: one made while another call's pass is running
    /// waits for that pass to apply its event, then completes with an
    /// empty report and `merged` set (the running call reports the work).
    /// If the running call's future is dropped first, a waiting call takes
    /// over and runs the passes itself. So when any `notify` future
    /// completes, its event has been applied.
    ///
    /// A status that cannot be computed (a host error) is retried by the
    /// next `notify`, whatever that one touches; so is the header of a tip
    /// whose header could not be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is lost. Dropping the future before it completes
    /// (a timeout, a `select!`) puts what its pass had not finished back:
    /// the next `notify` recomputes those scripts, settles the caches and
    /// sends the tip's header, and sends no status or header a client
    /// already has queued or received. Dropping a call that is waiting
    /// for another call's pass (a merged call) loses nothing either: its
    /// event was recorded when it was called and that pass, or the next
    /// `notify`, applies it; only the wait for it is given up.
    pub fn notify(
        &self,
        tip: Tip,
        touched: impl Touched,
    ) -> impl std::future::Future<Output = NotifyReport> + Send + '_ {
        let event = {
            let mut pending = lock(&self.inner.pending_events);
            pending.tip = Some(tip);
            touched.add_to(&mut pending.touched);
            pending.recorded += 1;
            pending.recorded
        };
        async move {
            let run = std::future::poll_fn(|cx| {
                let mut pending = lock(&self.inner.pending_events);
                if pending.applied >= event {
                    return Poll::Ready(false);
                }
                if !pending.running {
                    pending.running = true;
                    return Poll::Ready(true);
                }
                if !pending.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    pending.waiters.push(cx.waker().clone());
                }
                Poll::Pending
            })
            .await;
            if run {
                self.run_passes().await
            } else {
                NotifyReport {
                    merged: true,
                    ..NotifyReport::default()
                }
            }
        }
    }

    /// Runs passes until no event is pending. If the caller drops the
    /// future mid-pass, the guard puts the unfinished pass back and lets the
    /// next `notify` take over.
    async fn run_passes(&self) -> NotifyReport {
        struct Running<'m, H: Host> {
            manager: &'m SessionManager<H>,
            pass: Option<Pass>,
        }
        impl<H: Host> Drop for Running<'_, H> {
            fn drop(&mut self) {
                let waiters = {
                    let mut pending = lock(&self.manager.inner.pending_events);
                    if let Some(pass) = self.pass.take() {
                        pending.restore(pass);
                    }
                    pending.running = false;
                    // A merged call left waiting takes the passes over.
                    std::mem::take(&mut pending.waiters)
                };
                waiters.into_iter().for_each(Waker::wake);
            }
        }
        let mut running = Running {
            manager: self,
            pass: None,
        };
        let mut report = NotifyReport::default();
        loop {
            running.pass = lock(&self.inner.pending_events).take_pass();
            let Some(pass) = running.pass.as_mut() else {
                break;
            };
            let stopwatch = crate::edge::observe::Stopwatch::start(self.inner.ctx.timer(), true);
            let (done, failed) = self.notify_pass(pass).await;
            crate::edge::observe::notify_pass(&done, stopwatch, self.inner.ctx.timer());
            let Some(finished) = running.pass.take() else {
                break;
            };
            let waiters = {
                let mut pending = lock(&self.inner.pending_events);
                // Left for the next `notify`: not retried now, so a failing
                // host does not spin this loop.
                pending.touched.merge(failed);
                pending.redo_tip_change |= finished.tip_changed;
                pending.applied(finished.event)
            };
            waiters.into_iter().for_each(Waker::wake);
            report.statuses_computed += done.statuses_computed;
            report.statuses_changed += done.statuses_changed;
            report.status_notifications += done.status_notifications;
            report.header_notifications += done.header_notifications;
            report.outpoints_computed += done.outpoints_computed;
            report.outpoints_changed += done.outpoints_changed;
            report.outpoint_notifications += done.outpoint_notifications;
            report.noise_pings += done.noise_pings;
            report.failures += done.failures;
        }
        report
    }

    /// Records the statuses computed for `batch` (each `(position in
    /// batch, result)`; `slots`: where the index found each script) under
    /// one index lock, queueing each changed one to its subscribers as it
    /// goes (under the lock: the subscribers are borrowed from the index,
    /// not cloned out of it). `computed` is drained.
    ///
    /// Lock order: the index, then a session's state (its charge) or its
    /// mailbox, as everywhere else.
    fn apply_statuses(
        &self,
        batch: &[HashX],
        slots: &[u32],
        computed: &mut Vec<(usize, Result<ScriptStatus>)>,
        report: &mut NotifyReport,
        failed: &mut Changes,
    ) {
        let now = self.now();
        let charge = crate::core::cost::status(0);
        // Queued notifications are counted only for the noise policy.
        let counting = self.inner.noise.is_some();
        let mut index = lock(&self.inner.index);
        // Every entry and subscriber first (plain loads): with many
        // sessions they are cold, and their misses then overlap.
        for (at, result) in computed.iter() {
            if result.is_ok() {
                index.warm(&batch[*at], slots[*at]);
            }
        }
        for (at, result) in computed.drain(..) {
            let Ok(status) = result else {
                report.failures += 1;
                failed.add_script(batch[at]);
                continue;
            };
            let hashx = batch[at];
            let print = status.print();
            let Some((slot, base)) = index.record_at(&hashx, slots[at], print, status.mempool) else {
                continue;
            };
            let mut count = 0;
            index.for_each_delivery(slot, &hashx, |session, name| {
                let payload = Payload::Script {
                    name,
                    status: status.status,
                };
                session
                    .outbox
                    .push_status(StatusKey::Script(hashx), payload, print, base, now);
                if counting {
                    session.count_queued();
                }
                session.add_cost(charge);
                count += 1;
            });
            if count > 0 {
                report.statuses_changed += 1;
                report.status_notifications += count;
            }
        }
    }

    /// Records one computed outpoint status and queues it for the
    /// subscribers whose status differs.
    fn apply_outpoint(
        &self,
        outpoint: OutPoint,
        result: Result<ComputedOutpoint>,
        report: &mut NotifyReport,
        failed: &mut Changes,
    ) {
        let Ok(computed) = result else {
            report.failures += 1;
            failed.add_outpoint(outpoint);
            return;
        };
        let deliveries =
            lock(&self.inner.index).update_outpoint(&outpoint, computed.print(), computed.mempool());
        if !deliveries.is_empty() {
            report.outpoints_changed += 1;
            report.outpoint_notifications += self.queue_outpoints(deliveries, &computed);
        }
    }

    /// Computes the status of each outpoint of `targets` (at most
    /// `STATUS_CONCURRENCY` at a time) and queues the changes.
    async fn notify_outpoints(&self, targets: &[OutPoint], report: &mut NotifyReport, failed: &mut Changes) {
        report.outpoints_computed = targets.len();
        let mut waiting = futures::stream::FuturesUnordered::new();
        for &outpoint in targets {
            let mut status = Box::pin(async move { (outpoint, self.fresh_outpoint_status(outpoint).await) });
            match futures::poll!(status.as_mut()) {
                Poll::Ready((outpoint, result)) => self.apply_outpoint(outpoint, result, report, failed),
                Poll::Pending => waiting.push(status),
            }
            if waiting.len() >= STATUS_CONCURRENCY
                && let Some((outpoint, result)) = waiting.next().await
            {
                self.apply_outpoint(outpoint, result, report, failed);
            }
        }
        while let Some((outpoint, result)) = waiting.next().await {
            self.apply_outpoint(outpoint, result, report, failed);
        }
    }

    /// Queues noise pings to the sessions that asked for them, as the
    /// [`crate::NoisePolicy`] decides for this event (`block`: the tip
    /// changed). Synchronous, so it runs whole or not at all.
    fn add_noise(&self, block: bool, report: &mut NotifyReport) {
        let Some(noise) = &self.inner.noise else {
            return;
        };
        let sessions = lock(&self.inner.index).noise_sessions();
        let now = self.now();
        let (event, elapsed) = {
            let mut step = lock(&self.inner.noise_step);
            step.0 += 1;
            let elapsed = now.saturating_duration_since(step.1);
            step.1 = now;
            (step.0, elapsed)
        };
        for session in sessions {
            let sent = session
                .queued_since_noise
                .swap(0, std::sync::atomic::Ordering::Relaxed);
            let pings = if block {
                noise.block_pings(event, session.id, sent)
            } else {
                noise.mempool_pings(event, session.id, elapsed)
            };
            if session.outbox.push_pings(pings, noise.padding(), now) {
                report.noise_pings += pings as usize;
            }
        }
    }

    /// One pass over `pass`'s event. Every step is idempotent, so a pass
    /// redone after an interruption queues nothing twice (its noise step,
    /// last and synchronous, runs once). On return, `pass.tip_changed` is
    /// still set if the header could not be sent; the scripts and
    /// outpoints whose status failed are returned.
    async fn notify_pass(&self, pass: &mut Pass) -> (NotifyReport, Changes) {
        let mut report = NotifyReport::default();
        let mut failed = Changes::default();
        if let Some(previous) = self.record_tip(pass.tip, &pass.touched) {
            pass.tip_changed = true;
            pass.settle.get_or_insert(previous);
        }
        let block = pass.tip_changed;
        if let Some(previous) = pass.settle {
            self.settle_tip_change(previous, pass.tip).await;
            pass.settle = None;
        }
        let ((targets, slots), outpoint_targets) = {
            let index = lock(&self.inner.index);
            (
                index.targets_at(&pass.touched.scripts, pass.tip_changed),
                index.outpoint_targets(&pass.touched.outpoints, pass.tip_changed),
            )
        };
        report.statuses_computed = targets.len();
        // The histories come in batches (one `Db::histories` call each),
        // then the batch's mempool entries (one `Mempool::entries_batch`
        // call, for the scripts whose history was read), both into buffers
        // kept from batch to batch. A batch's statuses are recorded in the
        // index, and queued, under one lock.
        let batch_len = targets.len().min(HISTORY_BATCH);
        let mut computed = Vec::with_capacity(batch_len);
        let mut histories = Answers::new();
        let mut mempools = Answers::new();
        // The positions in the batch whose history was read, and their scripts.
        let mut read = Vec::with_capacity(batch_len);
        let mut read_scripts = Vec::with_capacity(batch_len);
        for (batch, slots) in targets.chunks(HISTORY_BATCH).zip(slots.chunks(HISTORY_BATCH)) {
            read.clear();
            read_scripts.clear();
            match self.fresh_histories(batch, &mut histories).await {
                Ok(()) => {
                    for (at, hashx) in batch.iter().enumerate() {
                        match self.fresh_history(&mut histories, at) {
                            Ok(_) => {
                                read.push(at);
                                read_scripts.push(*hashx);
                            }
                            Err(error) => computed.push((at, Err(error))),
                        }
                    }
                }
                Err(error) => computed.extend((0..batch.len()).map(|at| (at, Err(error.clone())))),
            }
            if !read.is_empty() {
                let mempools_read = self.fresh_mempool_entries(&read_scripts, &mut mempools).await;
                for (k, &at) in read.iter().enumerate() {
                    // Checked above: each of `read` is a history.
                    let history = histories.get(at).and_then(Result::ok).unwrap_or_default();
                    let status = match &mempools_read {
                        Ok(()) => self.fresh_status(history, &mut mempools, k),
                        Err(error) => Err(error.clone()),
                    };
                    computed.push((at, status));
                }
            }
            self.apply_statuses(batch, slots, &mut computed, &mut report, &mut failed);
        }
        self.notify_outpoints(&outpoint_targets, &mut report, &mut failed)
            .await;
        if pass.tip_changed {
            match self.tip_header().await {
                Ok(tip_header) => {
                    let subscribers = lock(&self.inner.index).header_subscribers();
                    let now = self.now();
                    for session in &subscribers {
                        let queued = session.outbox.push_header(
                            tip_header.generation,
                            tip_header.hash,
                            tip_header.height(),
                            tip_header.header.clone(),
                            now,
                        );
                        if queued {
                            session.count_queued();
                        }
                        report.header_notifications += usize::from(queued);
                    }
                    pass.tip_changed = false;
                }
                Err(_) => report.failures += 1,
            }
        }
        self.add_noise(block, &mut report);
        (report, failed)
    }
}

impl<H: Host> SessionHandle<H> {
    /// `blockchain.scripthash.subscribe`: subscribes to the script with the
    /// scripthash string `alias` (64 hex digits, as the client sent it) and
    /// returns its current status (lowercase hex; `None` for no history).
    /// Re-subscribing returns the status again. Notifications are
    /// [`crate::Notification::ScriptHashStatus`] with `alias` as sent.
    ///
    /// A session holds one subscription per script: subscribing to a
    /// script it already follows by scriptPubKey
    /// ([`SessionHandle::subscribe_scriptpubkey`]) keeps that one
    /// subscription (it counts once) and switches its notifications to
    /// this method and spelling; the last subscribe wins.
    ///
    /// **Cost:** the history lookup (0.1, plus 0.1 + 0.001 × entries on a
    /// cache miss) plus `0.1 + preimage × 0.00002`.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a malformed scripthash;
    /// [`Error::SubscriptionLimit`] when a per-session, per-group or global
    /// limit is reached (the session stays open); [`Error::HistoryTooLarge`];
    /// host errors. No subscription is recorded on error.
    ///
    /// # Cancel safety
    /// Cancel-safe: the subscription is recorded in one step after the
    /// last await, so a future dropped before it completes leaves no
    /// subscription, index entry or count behind. What it had charged for
    /// history lookups stays charged (the work was done).
    pub async fn subscribe(&self, alias: &str) -> Result<Option<String>> {
        let (hashx, rest) = parse_scripthash(alias)
            .ok_or_else(|| Error::BadRequest(format!("invalid scripthash {alias:?}")))?;
        self.subscribe_script(hashx, rest, Alias::ScriptHash(alias.to_owned()))
            .await
    }

    /// `blockchain.scriptpubkey.subscribe` (protocol 1.7): subscribes to the
    /// script `script_hex` (the scriptPubKey in hex, as the client sent
    /// it; its scripthash is the SHA-256 of the script, as
    /// [`crate::scripthash_of_scriptpubkey`] gives it) and returns its
    /// current status, the same status a scripthash subscription gets.
    /// Notifications are [`crate::ExtendedNotification::ScriptPubKeyStatus`]
    /// carrying `script_hex` exactly as sent, through
    /// [`crate::Transport::send_extended`].
    ///
    /// One subscription per script and session, whichever way it was made:
    /// subscribing by scriptPubKey to a script the session follows by
    /// scripthash (or with another spelling) keeps one subscription and
    /// switches its notifications to this method and spelling.
    ///
    /// **Cost:** as [`SessionHandle::subscribe`].
    ///
    /// # Errors
    /// [`Error::BadParam`] for text that is not hex or a script over
    /// [`crate::MAX_SCRIPT_LEN`] bytes; otherwise as
    /// [`SessionHandle::subscribe`].
    ///
    /// # Cancel safety
    /// As [`SessionHandle::subscribe`].
    pub async fn subscribe_scriptpubkey(&self, script_hex: &str) -> Result<Option<String>> {
        let (hashx, rest) = split_scripthash(&crate::types::script_sha256(script_hex)?);
        self.subscribe_script(hashx, rest, Alias::ScriptPubKey(script_hex.to_owned()))
            .await
    }

    async fn subscribe_script(
        &self,
        hashx: HashX,
        rest: [u8; 32 - HASHX_LEN],
        alias: Alias,
    ) -> Result<Option<String>> {
        let manager = &self.manager;
        let session = &self.session;
        let limits = manager.sub_limits();
        {
            let index = lock(&manager.inner.index);
            index.check_limits(
                &lock(&session.state).subs,
                session.id,
                session.group(),
                &hashx,
                limits,
            )?;
        }
        let (status, deliveries) = self
            .subscribe_current(
                |caches| caches.history_generation(),
                || manager.script_status(hashx),
                |status| status.cost,
                |caches, read_from| caches.history_is_current(&hashx, read_from),
                |index, subs, status| {
                    index.subscribe(
                        subs,
                        session.clone(),
                        session.group(),
                        hashx,
                        rest,
                        alias.clone(),
                        status.print(),
                        status.mempool,
                        limits,
                    )
                },
                |pending| pending.touched.add_script(hashx),
            )
            .await?;
        let payload = Payload::Script {
            name: ScriptName::Alias(alias),
            status: status.status,
        };
        session
            .outbox
            .status_given(StatusKey::Script(hashx), payload, status.print());
        manager.queue(deliveries, &status);
        Ok(status.hex())
    }

    /// Reads a status (`read`, charged `cost`) and records the subscription
    /// (`record`) in one step after the last await, for scripts and
    /// outpoints alike.
    ///
    /// A `notify` that touches the key while its status is being read may
    /// have skipped it (it was not subscribed yet): the status is read
    /// again, up to three times. Touches are stamped (`generation`) before
    /// a pass looks at the index, and `is_current` is checked under the
    /// index lock, so a touch either shows here or the pass sees the new
    /// subscription; past three reads, `retouch` leaves the key for the
    /// next `notify` to recompute. Index, then session state: a session
    /// that ended meanwhile is refused, so nothing of it stays in the
    /// index. Returns the status and the other subscribers to send it to.
    async fn subscribe_current<T, D, F>(
        &self,
        generation: impl Fn(&crate::edge::caches::Caches) -> u64,
        read: impl Fn() -> F,
        cost: impl Fn(&T) -> crate::types::Cost,
        is_current: impl Fn(&crate::edge::caches::Caches, u64) -> bool,
        mut record: impl FnMut(
            &mut Index<H>,
            &mut crate::core::subscriptions::SessionSubs,
            &T,
        ) -> Result<crate::core::subscriptions::Subscribed<D>>,
        retouch: impl FnOnce(&mut PendingEvents),
    ) -> Result<(T, Vec<D>)>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let manager = &self.manager;
        let session = &self.session;
        let caches = &manager.inner.caches;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let read_from = generation(caches);
            let status = read().await?;
            session.add_cost(cost(&status));
            if session.is_ended() {
                return Err(Error::SessionClosed(session.id));
            }
            let mut index = lock(&manager.inner.index);
            let current = is_current(caches, read_from);
            if !current && attempts < 3 {
                continue;
            }
            let mut state = lock(&session.state);
            if state.closed {
                return Err(Error::SessionClosed(session.id));
            }
            let subscribed = record(&mut index, &mut state.subs, &status)?;
            state.indexed = true;
            if !current {
                // Still racing events: the next `notify` recomputes it.
                retouch(&mut lock(&manager.inner.pending_events));
            }
            return Ok((status, subscribed.deliveries));
        }
    }

    /// `blockchain.scripthash.unsubscribe`: returns whether the session was
    /// subscribed to the script (by scripthash or by scriptPubKey: the
    /// session's one subscription to it ends). **Cost:** 0.1.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a malformed scripthash.
    pub fn unsubscribe(&self, alias: &str) -> Result<bool> {
        let (hashx, _) = parse_scripthash(alias)
            .ok_or_else(|| Error::BadRequest(format!("invalid scripthash {alias:?}")))?;
        Ok(self.unsubscribe_script(hashx))
    }

    /// `blockchain.scriptpubkey.unsubscribe` (protocol 1.7): returns whether
    /// the session was subscribed to the script `script_hex` (by
    /// scriptPubKey or by scripthash: the session's one subscription to it
    /// ends). **Cost:** 0.1.
    ///
    /// # Errors
    /// [`Error::BadParam`] for text that is not hex or a script over
    /// [`crate::MAX_SCRIPT_LEN`] bytes.
    pub fn unsubscribe_scriptpubkey(&self, script_hex: &str) -> Result<bool> {
        let (hashx, _) = split_scripthash(&crate::types::script_sha256(script_hex)?);
        Ok(self.unsubscribe_script(hashx))
    }

    fn unsubscribe_script(&self, hashx: HashX) -> bool {
        self.session.add_cost(crate::core::cost::UNSUBSCRIBE);
        let remaining = {
            let mut index = lock(&self.manager.inner.index);
            let mut state = lock(&self.session.state);
            index.unsubscribe(&mut state.subs, self.session.id, self.session.group(), &hashx)
        };
        match remaining {
            Some(_) => {
                self.session.outbox.forget(StatusKey::Script(hashx));
                true
            }
            None => false,
        }
    }

    /// `blockchain.outpoint.subscribe` (protocol 1.7): subscribes to the
    /// output `txout_idx` of transaction `tx_hash` (64 hex digits, display
    /// order) and returns its status ([`OutpointStatus`]: `{}` when it
    /// never existed, else its funding height and, once spent, its
    /// spender). The session is notified
    /// ([`crate::ExtendedNotification::OutpointStatus`], through
    /// [`crate::Transport::send_extended`]) whenever a `notify` touching
    /// the outpoint changes its status, and on a tip change when its status
    /// involved the mempool. `spk_hint`, the output's scriptPubKey in hex,
    /// is checked to be hex and otherwise unused (as by ElectrumX).
    /// Outpoint subscriptions count toward the subscription limits and the
    /// cost decay as script subscriptions do. Re-subscribing returns the
    /// status again.
    ///
    /// Needs [`crate::Db::outpoint`] and [`crate::Mempool::outpoint`].
    ///
    /// **Cost:** 0.1, plus 1 for the existence lookup and 1 more for the
    /// spender lookup when the confirmed state was not cached (as ElectrumX
    /// asks its node), plus 0.1 when the mempool is consulted (the output
    /// has no confirmed spender).
    ///
    /// # Errors
    /// [`Error::BadParam`] for a malformed `tx_hash` or `spk_hint`, or a
    /// `txout_idx` below 0 or above `u32::MAX`;
    /// [`Error::SubscriptionLimit`] when a limit is reached;
    /// [`Error::Unsupported`] when the host does not implement the outpoint
    /// lookups; host errors. No subscription is recorded on error.
    ///
    /// # Cancel safety
    /// Cancel-safe: the subscription is recorded in one step after the
    /// last await, so a future dropped before it completes leaves no
    /// subscription, index entry or count behind. What it had charged for
    /// lookups stays charged (the work was done).
    pub async fn subscribe_outpoint(
        &self,
        tx_hash: &str,
        txout_idx: i64,
        spk_hint: Option<&str>,
    ) -> Result<OutpointStatus> {
        let outpoint = parse_outpoint(tx_hash, txout_idx, spk_hint)?;
        let manager = &self.manager;
        let session = &self.session;
        let limits = manager.sub_limits();
        {
            let index = lock(&manager.inner.index);
            index.check_outpoint_limits(&lock(&session.state).subs, session.group(), &outpoint, limits)?;
        }
        let (computed, deliveries) = self
            .subscribe_current(
                |caches| caches.outpoint_generation(),
                || manager.outpoint_status(outpoint),
                |computed| computed.cost,
                |caches, read_from| caches.outpoint_is_current(&outpoint, read_from),
                |index, subs, computed| {
                    index.subscribe_outpoint(
                        subs,
                        session.clone(),
                        session.group(),
                        outpoint,
                        computed.print(),
                        computed.mempool(),
                        limits,
                    )
                },
                |pending| pending.touched.add_outpoint(outpoint),
            )
            .await?;
        let payload = Payload::Outpoint {
            outpoint,
            status: computed.status,
        };
        session
            .outbox
            .status_given(StatusKey::Outpoint(outpoint), payload, computed.print());
        manager.queue_outpoints(deliveries, &computed);
        Ok(computed.status)
    }

    /// `blockchain.outpoint.get_status` (protocol 1.7): the status of an
    /// outpoint, as [`SessionHandle::subscribe_outpoint`] returns it,
    /// without subscribing.
    ///
    /// **Cost:** as [`SessionHandle::subscribe_outpoint`].
    ///
    /// # Errors
    /// [`Error::BadParam`] for malformed parameters; [`Error::Unsupported`]
    /// when the host does not implement the outpoint lookups; host errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: read-only. What was charged before the drop stays; a
    /// confirmed state being loaded into the cache is finished by the next
    /// caller.
    pub async fn outpoint_status(
        &self,
        tx_hash: &str,
        txout_idx: i64,
        spk_hint: Option<&str>,
    ) -> Result<OutpointStatus> {
        let outpoint = parse_outpoint(tx_hash, txout_idx, spk_hint)?;
        let computed = self.manager.outpoint_status(outpoint).await?;
        self.session.add_cost(computed.cost);
        Ok(computed.status)
    }

    /// `blockchain.outpoint.unsubscribe` (protocol 1.7): returns whether the
    /// session was subscribed to the outpoint; a pending notification of it
    /// is dropped. **Cost:** 0.1.
    ///
    /// # Errors
    /// [`Error::BadParam`] for a malformed `tx_hash` or an out-of-range
    /// `txout_idx`.
    pub fn unsubscribe_outpoint(&self, tx_hash: &str, txout_idx: i64) -> Result<bool> {
        let outpoint = OutPoint::parse(tx_hash, txout_idx)?;
        self.session.add_cost(crate::core::cost::OUTPOINT_UNSUBSCRIBE);
        let remaining = {
            let mut index = lock(&self.manager.inner.index);
            let mut state = lock(&self.session.state);
            index.unsubscribe_outpoint(&mut state.subs, self.session.id, self.session.group(), &outpoint)
        };
        match remaining {
            Some(_) => {
                self.session.outbox.forget(StatusKey::Outpoint(outpoint));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Turns noise pings on or off for this session (a host turns them on
    /// for clients that negotiated protocol 1.7). They are sent only while
    /// the manager has a [`crate::NoisePolicy`] ([`crate::Config::noise`]),
    /// as [`crate::ExtendedNotification::Ping`] through
    /// [`crate::Transport::send_extended`]. Returns whether the setting
    /// changed. Costs nothing; the pings are not charged to the session.
    pub fn set_noise(&self, on: bool) -> bool {
        let mut index = lock(&self.manager.inner.index);
        let mut state = lock(&self.session.state);
        if state.closed {
            return false;
        }
        if on {
            state.indexed = true;
            self.session
                .queued_since_noise
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        index.set_noise(self.session.clone(), on)
    }

    /// `blockchain.headers.subscribe`: subscribes to new tips and returns
    /// the current tip header. **Cost:** 0.25.
    ///
    /// The session is told of every later tip once, and never again of
    /// the tip this returns (nor of an older one).
    ///
    /// # Errors
    /// Host errors reading the tip header (the session is then not
    /// subscribed, unless it already was).
    ///
    /// # Cancel safety
    /// Cancel-safe: a future dropped before it completes leaves the session
    /// subscribed only if it already was. The cost is charged at the first poll.
    pub async fn subscribe_headers(&self) -> Result<(Height, Vec<u8>)> {
        struct Undo<'h, H: Host> {
            handle: &'h SessionHandle<H>,
            armed: bool,
        }
        impl<H: Host> Drop for Undo<'_, H> {
            fn drop(&mut self) {
                if self.armed {
                    lock(&self.handle.manager.inner.index).unsubscribe_headers(self.handle.session.id);
                    self.handle.session.outbox.forget_header();
                }
            }
        }
        self.session.add_cost(crate::core::cost::HEADERS_SUBSCRIBE);
        // Subscribed before the tip is read, so a tip change meanwhile is
        // queued for this session rather than missed.
        let newly = {
            let mut index = lock(&self.manager.inner.index);
            let mut state = lock(&self.session.state);
            if state.closed {
                return Err(Error::SessionClosed(self.session.id));
            }
            state.indexed = true;
            index.subscribe_headers(self.session.clone())
        };
        let mut undo = Undo {
            handle: self,
            armed: newly,
        };
        // A tip recorded while the header was read makes it stale: read
        // again (the new tip's header is then already queued, or skipped).
        let mut tip_header = self.manager.tip_header().await?;
        for _ in 0..2 {
            if tip_header.generation == lock(&self.manager.inner.last_tip).generation {
                break;
            }
            tip_header = self.manager.tip_header().await?;
        }
        undo.armed = false;
        self.session.outbox.header_given(
            tip_header.generation,
            tip_header.hash,
            tip_header.height(),
            &tip_header.header,
        );
        Ok((tip_header.height(), tip_header.header))
    }

    /// Script and outpoint subscriptions this session holds (what the
    /// limits and the cost decay count).
    pub fn subscription_count(&self) -> usize {
        lock(&self.session.state).subscriptions()
    }

    /// Notifications queued and not yet delivered.
    pub fn pending_notifications(&self) -> usize {
        self.session.outbox.len()
    }

    /// The session's delivery future: sends queued notifications through
    /// [`crate::Transport::send`], in order and one at a time, until the
    /// session ends. Run it beside the read loop (in the same `select!`, or
    /// spawned: it owns what it needs). A send that takes longer than
    /// `max_send_delay`, or fails, closes the session.
    ///
    /// # Cancel safety
    /// Cancel-safe: a notification leaves the outbox only once its send
    /// completed, so a future dropped mid-send (and recreated later) sends
    /// that notification again, or its newer replacement. A host whose
    /// `Transport::send` may have written part of a message when dropped
    /// should close the connection rather than recreate the future. Dropped
    /// while closing a failed session, the session has ended but
    /// `Transport::close` may not have run to completion.
    pub fn deliver(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let session = self.session.clone();
        let manager = self.manager.clone();
        async move {
            let timer = session.ctx.timer();
            while let Some((taken, outgoing)) = session.outbox.peek().await {
                let limit = session.ctx.limits().max_send_delay;
                let kind = match &outgoing {
                    Outgoing::Notification(crate::types::Notification::Header { .. }) => "header",
                    Outgoing::Notification(_) => "status",
                    Outgoing::Extended(crate::types::ExtendedNotification::OutpointStatus { .. }) => {
                        "outpoint"
                    }
                    Outgoing::Extended(crate::types::ExtendedNotification::Ping { .. }) => "ping",
                    Outgoing::Extended(_) => "status",
                };
                let send = async {
                    match outgoing {
                        Outgoing::Notification(notification) => session.transport.send(notification).await,
                        Outgoing::Extended(notification) => {
                            session.transport.send_extended(notification).await
                        }
                    }
                };
                let reason = match within(timer, limit, send).await {
                    Some(Ok(())) => {
                        session.outbox.acknowledge(taken, timer.now());
                        crate::edge::observe::notification_sent(kind);
                        continue;
                    }
                    Some(Err(error)) => DisconnectReason::TransportError(Arc::from(error)),
                    None => DisconnectReason::SendTimeout,
                };
                if reason == DisconnectReason::SendTimeout {
                    crate::edge::observe::slow_consumer(&session);
                }
                manager.close_session(&session, reason).await;
                return;
            }
        }
    }
}
