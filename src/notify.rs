//! Subscriptions and notification fan-out.
//!
//! `notify(tip, touched)` computes the status of each script in
//! `touched ∩ subscribed` (plus, on a tip change, every script whose status
//! involved the mempool) **once**, and queues it in the outbox of each
//! subscriber whose last status differs. It never awaits a client: each
//! session's delivery future ([`SessionHandle::deliver`]) drains its outbox.
//! Calls that arrive while one is running are merged into the next pass.

use crate::error::{Error, Result};
use crate::manager::SessionManager;
use crate::session::{SessionHandle, SessionShared};
use crate::subscriptions::{Delivery, SubLimits, Subscriber, SubscriptionIndex, parse_scripthash};
use crate::sync::lock;
use crate::timer::within;
use crate::types::{DisconnectReason, HashX, Height, SessionId, Tip};
use futures::StreamExt;
use hashbrown::HashSet;
use std::sync::Arc;

impl Subscriber for Arc<SessionShared> {
    fn id(&self) -> SessionId {
        self.id
    }
}

pub(crate) type Index = SubscriptionIndex<Arc<SessionShared>>;

/// Events waiting for the running notification pass.
#[derive(Default)]
pub(crate) struct PendingEvents {
    tip: Option<Tip>,
    touched: HashSet<HashX>,
    running: bool,
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
    /// Scripts whose status could not be computed (host error); they keep
    /// their old status and are retried on the next event that touches them.
    pub failures: usize,
    /// Whether the event was merged into a pass already running (its work is
    /// done by that pass, and this report is empty).
    pub merged: bool,
}

/// How many statuses are computed concurrently in one pass.
const STATUS_CONCURRENCY: usize = 32;

impl SessionManager {
    fn sub_limits(&self) -> SubLimits {
        let limits = self.limits();
        SubLimits {
            per_session: limits.max_subs_per_session,
            per_group: limits.max_subs_per_group,
            global: limits.max_subs,
        }
    }

    pub(crate) fn forget_subscriptions(&self, session: &SessionShared) {
        lock(&self.inner.index).remove_session(session.id);
    }

    /// (subscriptions, distinct scripts, header subscribers).
    pub(crate) fn subscription_counts(&self) -> (usize, usize, usize) {
        let index = lock(&self.inner.index);
        (index.total(), index.distinct(), index.header_subscriber_count())
    }

    fn queue(
        &self,
        deliveries: Vec<Delivery<Arc<SessionShared>>>,
        status: &crate::chain::ScriptStatus,
    ) -> usize {
        let now = self.now();
        let print = status.print();
        let hex = status.hex();
        let charge = crate::cost::status(0);
        let count = deliveries.len();
        for delivery in deliveries {
            delivery.subscriber.outbox.push_status(
                delivery.hashx,
                delivery.alias,
                hex.clone(),
                print,
                delivery.base,
                now,
            );
            delivery.subscriber.add_cost(charge);
        }
        count
    }

    /// Tells the manager what changed: the new tip and the scripts touched
    /// by a block or a mempool refresh (any collection of [`HashX`]: a set,
    /// a slice, a vector) (pass them together when both
    /// happened, or in two calls: a status is only sent when it differs from
    /// what the client was last sent, and a mempool entry already confirmed
    /// is left out of the status, so a confirming transaction is announced
    /// once).
    ///
    /// The event is recorded when `notify` is called; the returned future
    /// does the work and completes once every affected session's outbox is
    /// filled (it never waits for a client). A call made while another pass
    /// is running is merged into that pass's next round and completes at
    /// once with `merged` set. Dropping the future before it completes
    /// leaves the event to the next `notify`.
    pub fn notify<'a>(
        &self,
        tip: Tip,
        touched: impl IntoIterator<Item = &'a HashX>,
    ) -> impl std::future::Future<Output = NotifyReport> + Send + '_ {
        {
            let mut pending = lock(&self.inner.pending_events);
            pending.tip = Some(tip);
            pending.touched.extend(touched.into_iter().copied());
        }
        async move {
            if !std::mem::replace(&mut lock(&self.inner.pending_events).running, true) {
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
    /// future mid-pass, the guard lets the next `notify` take over.
    async fn run_passes(&self) -> NotifyReport {
        struct Running<'m>(&'m SessionManager);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                lock(&self.0.inner.pending_events).running = false;
            }
        }
        let _running = Running(self);
        let mut report = NotifyReport::default();
        loop {
            let (tip, touched) = {
                let mut pending = lock(&self.inner.pending_events);
                match pending.tip.take() {
                    Some(tip) => (tip, std::mem::take(&mut pending.touched)),
                    None => {
                        // Cleared under the same lock a new event is queued
                        // under, so no event is left behind.
                        pending.running = false;
                        break;
                    }
                }
            };
            let pass = self.notify_pass(tip, touched).await;
            report.statuses_computed += pass.statuses_computed;
            report.statuses_changed += pass.statuses_changed;
            report.status_notifications += pass.status_notifications;
            report.header_notifications += pass.header_notifications;
            report.failures += pass.failures;
        }
        report
    }

    /// Records one computed status and queues it for the subscribers whose
    /// status differs.
    fn apply_status(
        &self,
        hashx: HashX,
        result: Result<crate::chain::ScriptStatus>,
        report: &mut NotifyReport,
    ) {
        let Ok(status) = result else {
            report.failures += 1;
            return;
        };
        let deliveries = lock(&self.inner.index).update(&hashx, status.print(), status.mempool);
        if !deliveries.is_empty() {
            report.statuses_changed += 1;
            report.status_notifications += self.queue(deliveries, &status);
        }
    }

    async fn notify_pass(&self, tip: Tip, touched: HashSet<HashX>) -> NotifyReport {
        let mut report = NotifyReport::default();
        let tip_changed = self.advance_tip(tip, &touched).await;
        let targets = lock(&self.inner.index).targets(&touched, tip_changed);
        report.statuses_computed = targets.len();
        // Each status future is polled once in place: a host that answers at
        // once (an in-memory index) costs no task bookkeeping; the others
        // run concurrently, at most STATUS_CONCURRENCY at a time.
        let mut waiting = futures::stream::FuturesUnordered::new();
        for hashx in targets {
            let mut status = Box::pin(async move { (hashx, self.fresh_script_status(hashx).await) });
            match futures::poll!(status.as_mut()) {
                std::task::Poll::Ready((hashx, result)) => self.apply_status(hashx, result, &mut report),
                std::task::Poll::Pending => waiting.push(status),
            }
            if waiting.len() >= STATUS_CONCURRENCY
                && let Some((hashx, result)) = waiting.next().await
            {
                self.apply_status(hashx, result, &mut report);
            }
        }
        while let Some((hashx, result)) = waiting.next().await {
            self.apply_status(hashx, result, &mut report);
        }
        if tip_changed && let Ok((height, header)) = self.tip_header().await {
            let subscribers = lock(&self.inner.index).header_subscribers();
            let now = self.now();
            for session in &subscribers {
                session.outbox.push_header(height, header.clone(), now);
            }
            report.header_notifications = subscribers.len();
        }
        report
    }
}

impl SessionHandle {
    /// `blockchain.scripthash.subscribe`: subscribes to the script with the
    /// scripthash string `alias` (64 hex digits, as the client sent it) and
    /// returns its current status (lowercase hex; `None` for no history).
    /// Re-subscribing returns the status again.
    ///
    /// **Cost:** the history lookup (0.1, plus 0.1 + 0.001 × entries on a
    /// cache miss) plus `0.1 + preimage × 0.00002`.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a malformed scripthash;
    /// [`Error::SubscriptionLimit`] when a per-session, per-group or global
    /// limit is reached (the session stays open); [`Error::HistoryTooLarge`];
    /// host errors. No subscription is recorded on error.
    pub async fn subscribe(&self, alias: &str) -> Result<Option<String>> {
        let manager = &self.manager;
        let session = &self.session;
        let (hashx, _) = parse_scripthash(alias)
            .ok_or_else(|| Error::BadRequest(format!("invalid scripthash {alias:?}")))?;
        let limits = manager.sub_limits();
        lock(&manager.inner.index).check_limits(session.id, session.group, &hashx, limits)?;
        let status = manager.script_status(hashx).await?;
        session.add_cost(status.cost);
        if session.is_ended() {
            return Err(Error::SessionClosed(session.id));
        }
        let subscribed = {
            // Index, then session state: a session that ended meanwhile is
            // refused here, so nothing of it stays in the index.
            let mut index = lock(&manager.inner.index);
            let mut state = lock(&session.state);
            if state.closed {
                return Err(Error::SessionClosed(session.id));
            }
            let subscribed = index.subscribe(
                session.clone(),
                session.group,
                alias,
                status.print(),
                status.mempool,
                limits,
            )?;
            state.subscriptions = subscribed.count;
            state.indexed = true;
            subscribed
        };
        manager.queue(subscribed.deliveries, &status);
        Ok(status.hex())
    }

    /// `blockchain.scripthash.unsubscribe`: returns whether the session was
    /// subscribed. **Cost:** 0.1.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a malformed scripthash.
    pub fn unsubscribe(&self, alias: &str) -> Result<bool> {
        let (hashx, _) = parse_scripthash(alias)
            .ok_or_else(|| Error::BadRequest(format!("invalid scripthash {alias:?}")))?;
        self.session.add_cost(crate::cost::UNSUBSCRIBE);
        let remaining = lock(&self.manager.inner.index).unsubscribe(self.session.id, &hashx);
        match remaining {
            Some(count) => {
                lock(&self.session.state).subscriptions = count;
                self.session.outbox.forget(hashx);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// `blockchain.headers.subscribe`: subscribes to new tips and returns
    /// the current tip header. **Cost:** 0.25.
    ///
    /// # Errors
    /// Host errors reading the tip header.
    pub async fn subscribe_headers(&self) -> Result<(Height, Vec<u8>)> {
        self.session.add_cost(crate::cost::HEADERS_SUBSCRIBE);
        let result = self.manager.tip_header().await?;
        let mut index = lock(&self.manager.inner.index);
        let mut state = lock(&self.session.state);
        if state.closed {
            return Err(Error::SessionClosed(self.session.id));
        }
        index.subscribe_headers(self.session.clone());
        state.indexed = true;
        Ok(result)
    }

    /// Subscriptions this session holds.
    pub fn subscription_count(&self) -> usize {
        lock(&self.session.state).subscriptions
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
    pub fn deliver(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let session = self.session.clone();
        let manager = self.manager.clone();
        async move {
            let timer = session.ctx.timer.clone();
            while let Some(notification) = session.outbox.next().await {
                let limit = session.ctx.limits().max_send_delay;
                match within(&*timer, limit, session.transport.send(notification)).await {
                    Some(Ok(())) => session.outbox.delivered(timer.now()),
                    Some(Err(error)) => {
                        manager
                            .close_session(&session, DisconnectReason::TransportError(error.to_string()))
                            .await;
                        return;
                    }
                    None => {
                        manager
                            .close_session(&session, DisconnectReason::SendTimeout)
                            .await;
                        return;
                    }
                }
            }
        }
    }
}
