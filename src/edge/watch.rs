//! A small runtime-agnostic watch cell: one current value, and waiters that
//! wake when it changes. Used for listener control and shutdown.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::core::sync::lock;

#[derive(Debug)]
struct State<T> {
    value: T,
    version: u64,
    wakers: Vec<Waker>,
}

/// The sending side; cheap to clone.
#[derive(Debug)]
pub(crate) struct WatchCell<T> {
    state: Arc<Mutex<State<T>>>,
}

impl<T> Clone for WatchCell<T> {
    fn clone(&self) -> Self {
        WatchCell {
            state: self.state.clone(),
        }
    }
}

impl<T: Clone + PartialEq> WatchCell<T> {
    pub(crate) fn new(value: T) -> Self {
        WatchCell {
            state: Arc::new(Mutex::new(State {
                value,
                version: 0,
                wakers: Vec::new(),
            })),
        }
    }

    pub(crate) fn get(&self) -> T {
        lock(&self.state).value.clone()
    }

    /// Sets the value; waiters wake only if it changed. Returns whether it changed.
    pub(crate) fn set(&self, value: T) -> bool {
        self.update(|_| value)
    }

    /// Applies `f` to the value under the lock; wakes waiters if it changed.
    pub(crate) fn update(&self, f: impl FnOnce(&T) -> T) -> bool {
        let wakers = {
            let mut state = lock(&self.state);
            let value = f(&state.value);
            if state.value == value {
                return false;
            }
            state.value = value;
            state.version += 1;
            std::mem::take(&mut state.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
        true
    }

    pub(crate) fn watcher(&self) -> Watcher<T> {
        let seen = lock(&self.state).version;
        Watcher {
            cell: self.clone(),
            seen,
        }
    }

    fn poll_changed(&self, seen: &mut u64, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = lock(&self.state);
        if state.version != *seen {
            *seen = state.version;
            return Poll::Ready(state.value.clone());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A receiver that sees every change after it was made (intermediate values
/// may be skipped; the newest is always seen).
#[derive(Debug, Clone)]
pub(crate) struct Watcher<T> {
    cell: WatchCell<T>,
    seen: u64,
}

impl<T: Clone + PartialEq> Watcher<T> {
    pub(crate) fn current(&self) -> T {
        self.cell.get()
    }

    pub(crate) async fn changed(&mut self) -> T {
        std::future::poll_fn(|cx| self.cell.poll_changed(&mut self.seen, cx)).await
    }

    pub(crate) fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        self.cell.poll_changed(&mut self.seen, cx)
    }

    /// Waits until `pred` holds for the value (checks the current value first).
    pub(crate) async fn wait_for(&mut self, pred: impl Fn(&T) -> bool) -> T {
        loop {
            let value = self.current();
            if pred(&value) {
                return value;
            }
            let value = self.changed().await;
            if pred(&value) {
                return value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn watcher_sees_changes_and_skips_equal_sets() {
        let cell = WatchCell::new(1);
        let mut w = cell.watcher();
        assert!(w.changed().now_or_never().is_none());
        assert!(!cell.set(1));
        assert!(w.changed().now_or_never().is_none());
        assert!(cell.set(2));
        assert_eq!(w.changed().now_or_never(), Some(2));
        assert_eq!(futures::executor::block_on(w.wait_for(|v| *v == 2)), 2);
    }
}
