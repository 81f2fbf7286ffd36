//! A session's coalescing outbox: what the manager has to tell the client
//! and the client has not yet been sent.
//!
//! The manager only ever fills it (never awaits the client); the session's
//! delivery future drains it in order. Pending notifications coalesce: at
//! most one header (the newest) and one status per subscribed script (the
//! newest), so a client that stops reading holds bounded memory. A status
//! that changes back to what the client already has before it was sent is
//! dropped, so the client never receives the same status twice in a row.

use crate::sync::lock;
use crate::types::{HashX, Height, Notification};
use hashbrown::HashMap;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Poll, Waker};
use std::time::Instant;

/// A status as the index stores it: a fingerprint of the status hash (0
/// for "no history").
pub(crate) type StatusPrint = u64;

#[derive(Debug)]
pub(crate) struct PendingStatus {
    pub(crate) alias: String,
    pub(crate) status: Option<String>,
    /// Fingerprint of the status the client had before this was queued.
    pub(crate) base: StatusPrint,
}

#[derive(Debug, Default)]
struct State {
    header: Option<(Height, Vec<u8>)>,
    order: VecDeque<HashX>,
    statuses: HashMap<HashX, PendingStatus>,
    /// When the oldest undelivered notification was queued.
    pending_since: Option<Instant>,
    closed: bool,
    deliver_waker: Option<Waker>,
    close_wakers: Vec<Waker>,
}

impl State {
    fn is_empty(&self) -> bool {
        self.header.is_none() && self.order.is_empty()
    }

    fn wake_deliverer(&mut self) -> Option<Waker> {
        self.deliver_waker.take()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    state: Mutex<State>,
}

impl Outbox {
    /// Queues the newest header, replacing an undelivered one.
    pub(crate) fn push_header(&self, height: Height, header: Vec<u8>, now: Instant) {
        let waker = {
            let mut state = lock(&self.state);
            if state.closed {
                return;
            }
            state.header = Some((height, header));
            state.pending_since.get_or_insert(now);
            state.wake_deliverer()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Queues a status change from `base` to `print`. A pending status for
    /// the same script is replaced; if the result is what the client already
    /// has, the pending status is dropped.
    pub(crate) fn push_status(
        &self,
        hashx: HashX,
        alias: String,
        status: Option<String>,
        print: StatusPrint,
        base: StatusPrint,
        now: Instant,
    ) {
        let waker = {
            let mut state = lock(&self.state);
            if state.closed {
                return;
            }
            match state.statuses.get_mut(&hashx) {
                Some(pending) if pending.base == print => {
                    state.statuses.remove(&hashx);
                    state.order.retain(|h| *h != hashx);
                    if state.is_empty() {
                        state.pending_since = None;
                    }
                    return;
                }
                Some(pending) => {
                    pending.status = status;
                    return;
                }
                None => {
                    if base == print {
                        return;
                    }
                    state
                        .statuses
                        .insert(hashx, PendingStatus { alias, status, base });
                    state.order.push_back(hashx);
                    state.pending_since.get_or_insert(now);
                }
            }
            state.wake_deliverer()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Drops a pending status (the script was unsubscribed).
    pub(crate) fn forget(&self, hashx: HashX) {
        let mut state = lock(&self.state);
        if state.statuses.remove(&hashx).is_some() {
            state.order.retain(|h| *h != hashx);
            if state.is_empty() {
                state.pending_since = None;
            }
        }
    }

    /// Number of undelivered notifications.
    pub(crate) fn len(&self) -> usize {
        let state = lock(&self.state);
        state.order.len() + usize::from(state.header.is_some())
    }

    /// When the oldest undelivered notification was queued.
    pub(crate) fn pending_since(&self) -> Option<Instant> {
        lock(&self.state).pending_since
    }

    /// Waits for the next notification; `None` once the outbox is closed.
    pub(crate) async fn next(&self) -> Option<Notification> {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.closed {
                return Poll::Ready(None);
            }
            if let Some((height, header)) = state.header.take() {
                return Poll::Ready(Some(Notification::Header { height, header }));
            }
            while let Some(hashx) = state.order.pop_front() {
                if let Some(pending) = state.statuses.remove(&hashx) {
                    return Poll::Ready(Some(Notification::ScriptHashStatus {
                        alias: pending.alias,
                        status: pending.status,
                    }));
                }
            }
            state.pending_since = None;
            state.deliver_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Marks the start of the next wait: called after a send completed, so
    /// `pending_since` measures how long the client has kept us waiting.
    pub(crate) fn delivered(&self, now: Instant) {
        let mut state = lock(&self.state);
        state.pending_since = if state.is_empty() { None } else { Some(now) };
    }

    pub(crate) fn close(&self) {
        let (deliver, close) = {
            let mut state = lock(&self.state);
            state.closed = true;
            state.header = None;
            state.order.clear();
            state.statuses.clear();
            state.pending_since = None;
            (
                state.deliver_waker.take(),
                std::mem::take(&mut state.close_wakers),
            )
        };
        deliver.into_iter().chain(close).for_each(Waker::wake);
    }

    pub(crate) async fn closed(&self) {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.closed {
                return Poll::Ready(());
            }
            if !state.close_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                state.close_wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
