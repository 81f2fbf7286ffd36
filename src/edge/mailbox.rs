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

/// A mailbox in use: its outbox and the futures waiting on it.
#[derive(Debug, Default)]
struct Active {
    outbox: Outbox,
    deliver_waker: Option<Waker>,
    close_wakers: Vec<Waker>,
}

#[derive(Debug, Default)]
struct State {
    /// Allocated when something is first queued, a header is given, or a
    /// future first waits on the mailbox, so the mailbox of a session that
    /// never had any is two words (an [`Outbox`] is ~290 bytes).
    active: Option<Box<Active>>,
    /// Closed before it was allocated (it is then never allocated).
    closed: bool,
}

impl State {
    /// The mailbox to queue into or wait on, allocated if it was not;
    /// `None` if it was closed before it was allocated.
    fn open(&mut self) -> Option<&mut Active> {
        if self.closed {
            return None;
        }
        Some(self.active.get_or_insert_default())
    }

    /// The outbox, if it was ever needed.
    fn outbox(&mut self) -> Option<&mut Outbox> {
        self.active.as_deref_mut().map(|active| &mut active.outbox)
    }

    fn is_closed(&self) -> bool {
        match &self.active {
            Some(active) => active.outbox.is_closed(),
            None => self.closed,
        }
    }

    /// Queues with `push` (false: nothing queued, as into a closed
    /// outbox); returns whether it queued and the delivery future to wake.
    fn queue(&mut self, push: impl FnOnce(&mut Outbox) -> bool) -> (bool, Option<Waker>) {
        match self.open() {
            Some(active) => {
                let queued = push(&mut active.outbox);
                (queued, queued.then(|| active.deliver_waker.take()).flatten())
            }
            None => (false, None),
        }
    }
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
        let (queued, waker) =
            lock(&self.state).queue(|outbox| outbox.push_header(generation, hash, height, header, now));
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
        let (_, waker) = lock(&self.state).queue(|outbox| outbox.push_status(key, payload, print, base, now));
        waker.into_iter().for_each(Waker::wake);
    }

    /// [`Outbox::push_pings`], waking the delivery future when queued.
    pub(crate) fn push_pings(&self, count: u32, padding: usize, now: Instant) -> bool {
        if count == 0 {
            return false;
        }
        let (queued, waker) = lock(&self.state).queue(|outbox| outbox.push_pings(count, padding, now));
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
        if let Some(active) = lock(&self.state).open() {
            active.outbox.header_given(generation, hash, height, header);
        }
    }

    /// [`Outbox::status_given`].
    pub(crate) fn status_given(&self, key: StatusKey, payload: Payload, print: StatusPrint) {
        // Only a pending status changes: none without an outbox.
        if let Some(outbox) = lock(&self.state).outbox() {
            outbox.status_given(key, payload, print);
        }
    }

    /// [`Outbox::forget_header`].
    pub(crate) fn forget_header(&self) {
        if let Some(outbox) = lock(&self.state).outbox() {
            outbox.forget_header();
        }
    }

    /// [`Outbox::forget`].
    pub(crate) fn forget(&self, key: StatusKey) {
        if let Some(outbox) = lock(&self.state).outbox() {
            outbox.forget(key);
        }
    }

    /// [`Outbox::len`].
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).outbox().map_or(0, |outbox| outbox.len())
    }

    /// [`Outbox::pending_since`].
    pub(crate) fn pending_since(&self) -> Option<Instant> {
        lock(&self.state)
            .outbox()
            .and_then(|outbox| outbox.pending_since())
    }

    /// [`Outbox::acknowledge`].
    pub(crate) fn acknowledge(&self, taken: Taken, now: Instant) {
        if let Some(outbox) = lock(&self.state).outbox() {
            outbox.acknowledge(taken, now);
        }
    }

    /// Waits for the next notification and returns a copy of it
    /// ([`Outbox::next`]); `None` once the outbox is closed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it takes nothing.
    pub(crate) async fn peek(&self) -> Option<(Taken, Outgoing)> {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.is_closed() {
                return Poll::Ready(None);
            }
            let Some(active) = state.open() else {
                return Poll::Ready(None);
            };
            match active.outbox.next() {
                Some(next) => Poll::Ready(Some(next)),
                None => {
                    active.deliver_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Closes the outbox and wakes every future waiting on it.
    pub(crate) fn close(&self) {
        let mut state = lock(&self.state);
        // Never allocated (most sessions): nothing waits, nothing to wake.
        let Some(active) = state.active.as_deref_mut() else {
            state.closed = true;
            return;
        };
        active.outbox.close();
        let deliver = active.deliver_waker.take();
        let close = std::mem::take(&mut active.close_wakers);
        drop(state);
        deliver.into_iter().chain(close).for_each(Waker::wake);
    }

    /// Completes once [`Mailbox::close`] was called.
    pub(crate) async fn closed(&self) {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.is_closed() {
                return Poll::Ready(());
            }
            if let Some(active) = state.open()
                && !active.close_wakers.iter().any(|w| w.will_wake(cx.waker()))
            {
                active.close_wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
