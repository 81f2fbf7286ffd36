//! The clock and sleep the manager uses. There is no default: the host picks
//! one when building the manager ([`crate::SessionManagerBuilder::timer`]), so the
//! crate never assumes a runtime.

use futures::future::BoxFuture;
use std::time::{Duration, Instant};

/// A source of time and sleeps.
///
/// ```
/// use indexer_sessions::Timer;
/// use std::time::{Duration, Instant};
/// # #[derive(Default)]
/// struct ThreadTimer;
/// impl Timer for ThreadTimer {
///     fn now(&self) -> Instant { Instant::now() }
///     fn sleep(&self, duration: Duration) -> futures::future::BoxFuture<'static, ()> {
///         Box::pin(async move {
///             let (tx, rx) = futures::channel::oneshot::channel::<()>();
///             std::thread::spawn(move || { std::thread::sleep(duration); let _ = tx.send(()); });
///             let _ = rx.await;
///         })
///     }
/// }
/// ```
pub trait Timer: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Instant;
    /// A future that completes once `duration` has passed on this timer's clock.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// Runs `future` for at most `limit` on `timer`; `None` if the time ran out.
///
/// The future is polled once per poll of this one, before the sleep; a
/// call that answers at once needs no timer (the sleep is made at the
/// first `Pending`, so the limit counts from there).
pub(crate) async fn within<T>(
    timer: &dyn Timer,
    limit: Duration,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    use std::task::Poll;
    let mut future = std::pin::pin!(future);
    let mut sleep: Option<BoxFuture<'static, ()>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        let sleep = sleep.get_or_insert_with(|| timer.sleep(limit));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(feature = "tokio")]
mod tokio_timer {
    use super::*;

    /// A [`Timer`] on tokio's clock. Under `tokio::time::pause()` it follows
    /// the paused test clock, so tests can advance time instantly.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct TokioTimer;

    impl Timer for TokioTimer {
        fn now(&self) -> Instant {
            tokio::time::Instant::now().into_std()
        }

        fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
            Box::pin(tokio::time::sleep(duration))
        }
    }
}

#[cfg(feature = "tokio")]
pub use tokio_timer::TokioTimer;
