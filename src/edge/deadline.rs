//! Bounding a future by a [`Timer`]'s clock.

use crate::timer::Timer;
use futures::future::BoxFuture;
use std::time::Duration;

/// Runs `future` for at most `limit` on `timer`; `None` if the time ran out.
///
/// The future is polled once per poll of this one, before the sleep; a
/// call that answers at once needs no timer (the sleep is made at the
/// first `Pending`, so the limit counts from there).
pub(crate) async fn within<T: Timer + ?Sized, V>(
    timer: &T,
    limit: Duration,
    future: impl std::future::Future<Output = V>,
) -> Option<V> {
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
