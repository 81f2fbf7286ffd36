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

impl<T: Timer + ?Sized> Timer for std::sync::Arc<T> {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        (**self).sleep(duration)
    }
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
