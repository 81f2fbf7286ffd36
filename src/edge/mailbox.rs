//! A session's outbox behind a lock, with the wakers of the futures that
//! wait on it: the delivery future (for the next notification) and
//! [`crate::SessionHandle::closed`] (for the end of the session).
//!
//! The coalescing rules live in [`crate::core::outbox`]; this file only
//! locks, wakes and waits.

use crate::core::outbox::{Outbox, Outgoing, Payload, StatusKey, StatusPrint, Taken, TipGeneration};
use crate::core::sync::lock;
use crate::types::{BlockHash, Height};
use std::sync::Mutex;
use std::task::{Poll, Waker};
use std::time::Instant;

#[derive(Debug, Default)]
struct State {
    outbox: Outbox,
    deliver_waker: Option<Waker>,
    close_wakers: Vec<Waker>,
}

/// One session's [`Outbox`], shared by the manager (which fills it) and
/// the session's delivery future (which drains it).
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    state: Mutex<State>,
}

impl Mailbox {
    /// [`Outbox::push_header`], waking the delivery future when queued.
    pub(crate) fn push_header(
        &self,
        generation: TipGeneration,
        hash: BlockHash,
        height: Height,
        header: Vec<u8>,
        now: Instant,
    ) -> bool {
        let (queued, waker) = {
            let mut state = lock(&self.state);
            let queued = state.outbox.push_header(generation, hash, height, header, now);
            (queued, queued.then(|| state.deliver_waker.take()).flatten())
        };
        waker.into_iter().for_each(Waker::wake);
        queued
    }

    /// [`Outbox::push_status`], waking the delivery future when queued.
    pub(crate) fn push_status(
        &self,
        key: StatusKey,
        payload: Payload,
        print: StatusPrint,
        base: StatusPrint,
        now: Instant,
    ) {
        let waker = {
            let mut state = lock(&self.state);
            let queued = state.outbox.push_status(key, payload, print, base, now);
            queued.then(|| state.deliver_waker.take()).flatten()
        };
        waker.into_iter().for_each(Waker::wake);
    }

    /// [`Outbox::push_pings`], waking the delivery future when queued.
    pub(crate) fn push_pings(&self, count: u32, padding: usize, now: Instant) -> bool {
        let (queued, waker) = {
            let mut state = lock(&self.state);
            let queued = state.outbox.push_pings(count, padding, now);
            (queued, queued.then(|| state.deliver_waker.take()).flatten())
        };
        waker.into_iter().for_each(Waker::wake);
        queued
    }

    /// Reads the lock's poison flag (a plain load beside the lock word):
    /// brings the lock into the cache ahead of a push, changing nothing.
    pub(crate) fn warm(&self) -> bool {
        self.state.is_poisoned()
    }

    /// [`Outbox::header_given`].
    pub(crate) fn header_given(
        &self,
        generation: TipGeneration,
        hash: BlockHash,
        height: Height,
        header: &[u8],
    ) {
        lock(&self.state)
            .outbox
            .header_given(generation, hash, height, header);
    }

    /// [`Outbox::status_given`].
    pub(crate) fn status_given(&self, key: StatusKey, payload: Payload, print: StatusPrint) {
        lock(&self.state).outbox.status_given(key, payload, print);
    }

    /// [`Outbox::forget_header`].
    pub(crate) fn forget_header(&self) {
        lock(&self.state).outbox.forget_header();
    }

    /// [`Outbox::forget`].
    pub(crate) fn forget(&self, key: StatusKey) {
        lock(&self.state).outbox.forget(key);
    }

    /// [`Outbox::len`].
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).outbox.len()
    }

    /// [`Outbox::pending_since`].
    pub(crate) fn pending_since(&self) -> Option<Instant> {
        lock(&self.state).outbox.pending_since()
    }

    /// [`Outbox::acknowledge`].
    pub(crate) fn acknowledge(&self, taken: Taken, now: Instant) {
        lock(&self.state).outbox.acknowledge(taken, now);
    }

    /// Waits for the next notification and returns a copy of it
    /// ([`Outbox::next`]); `None` once the outbox is closed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it takes nothing.
    pub(crate) async fn peek(&self) -> Option<(Taken, Outgoing)> {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.outbox.is_closed() {
                return Poll::Ready(None);
            }
            match state.outbox.next() {
                Some(next) => Poll::Ready(Some(next)),
                None => {
                    state.deliver_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Closes the outbox and wakes every future waiting on it.
    pub(crate) fn close(&self) {
        let (deliver, close) = {
            let mut state = lock(&self.state);
            state.outbox.close();
            (
                state.deliver_waker.take(),
                std::mem::take(&mut state.close_wakers),
            )
        };
        deliver.into_iter().chain(close).for_each(Waker::wake);
    }

    /// Completes once [`Mailbox::close`] was called.
    pub(crate) async fn closed(&self) {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.outbox.is_closed() {
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
