//! The same scenario on tokio (paused clock, `TokioTimer`) and on
//! `futures::executor` (`ManualTimer`): the crate needs no particular runtime.

use futures::future::BoxFuture;
use indexer_sessions::Cost;
use indexer_sessions::testing::{MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport};
use indexer_sessions::{Config, DisconnectReason, Host, HostParts, Limits, SessionManager, Timer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What the scenario needs from a runtime.
trait Runtime {
    fn spawn(&self, future: BoxFuture<'static, ()>);
    /// Moves time forward and lets every task run until it waits again.
    fn advance(&self, by: Duration) -> BoxFuture<'static, ()>;
}

fn manager<T: Timer>(timer: T) -> SessionManager<HostParts<MemoryDb, MemoryDaemon, MemoryMempool, T>> {
    let config = Config {
        limits: Limits {
            session_timeout: Duration::from_secs(10),
            ..Limits::default()
        },
        sweep_interval: Duration::from_secs(1),
        ..Config::default()
    };
    SessionManager::builder(config)
        .timer(timer)
        .db(MemoryDb::new())
        .daemon(MemoryDaemon::new())
        .mempool(MemoryMempool::new())
        .build()
        .unwrap()
}

async fn scenario<H: Host>(manager: SessionManager<H>, runtime: impl Runtime) {
    let housekeeping_done = Arc::new(AtomicBool::new(false));
    let done = housekeeping_done.clone();
    let keeper = manager.clone();
    runtime.spawn(Box::pin(async move {
        keeper.run_housekeeping().await;
        done.store(true, Ordering::SeqCst);
    }));

    let (idle_transport, idle_log) = MemoryTransport::new("203.0.113.1:1".parse().unwrap());
    let (busy_transport, busy_log) = MemoryTransport::new("198.51.100.1:1".parse().unwrap());
    let _idle = manager.add_session(idle_transport).unwrap();
    let busy = Arc::new(manager.add_session(busy_transport).unwrap());

    // A throttled admission sleeps 1.25 s on the runtime's clock.
    busy.charge(Cost::constant(5495.0));
    let admitted = Arc::new(AtomicBool::new(false));
    let (flag, session) = (admitted.clone(), busy.clone());
    runtime.spawn(Box::pin(async move {
        let permit = session.admit().await.unwrap();
        flag.store(true, Ordering::SeqCst);
        drop(permit);
    }));
    runtime.advance(Duration::from_millis(1000)).await;
    assert!(!admitted.load(Ordering::SeqCst), "still sleeping after 1 s");
    runtime.advance(Duration::from_millis(300)).await;
    assert!(admitted.load(Ordering::SeqCst), "admitted after 1.25 s");

    // Housekeeping closes the idle session after 10 s, not the busy one
    // (the clock is at 1.3 s here).
    for _ in 0..8 {
        busy.record_received(10);
        runtime.advance(Duration::from_secs(1)).await;
    }
    assert_eq!(idle_log.closed(), None);
    busy.record_received(10);
    runtime.advance(Duration::from_secs(1)).await;
    assert_eq!(idle_log.closed(), Some(DisconnectReason::Stale));
    assert_eq!(busy_log.closed(), None);

    assert_eq!(manager.shutdown().await, 1);
    runtime.advance(Duration::from_millis(1)).await;
    assert_eq!(busy_log.closed(), Some(DisconnectReason::Shutdown));
    assert!(housekeeping_done.load(Ordering::SeqCst), "housekeeping ended");
}

struct Tokio;

impl Runtime for Tokio {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        tokio::spawn(future);
    }

    fn advance(&self, by: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // Let spawned tasks reach their sleeps before the clock moves.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            tokio::time::advance(by).await;
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn on_tokio_with_its_paused_clock() {
    scenario(manager(indexer_sessions::TokioTimer), Tokio).await;
}

/// Returns `Pending` once (waking itself), so other tasks of the pool run.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

struct FuturesExecutor {
    spawner: futures::executor::LocalSpawner,
    timer: indexer_sessions::testing::ManualTimer,
}

impl Runtime for FuturesExecutor {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        use futures::task::LocalSpawnExt;
        self.spawner.spawn_local(future).unwrap();
    }

    fn advance(&self, by: Duration) -> BoxFuture<'static, ()> {
        let timer = self.timer.clone();
        Box::pin(async move {
            for _ in 0..10 {
                yield_now().await;
            }
            timer.advance(by);
            for _ in 0..10 {
                yield_now().await;
            }
        })
    }
}

#[test]
fn on_futures_executor_with_a_manual_clock() {
    let timer = indexer_sessions::testing::ManualTimer::new();
    let mut pool = futures::executor::LocalPool::new();
    let runtime = FuturesExecutor {
        spawner: pool.spawner(),
        timer: timer.clone(),
    };
    // Everything runs on one local pool: the scenario yields in `advance`,
    // which lets the tasks it spawned run.
    pool.run_until(scenario(manager(timer), runtime));
}
/// Every public future of the dynamic form can be spawned on tokio: its
/// parts are named wrappers around `Arc<dyn …>` (with bare `Arc<dyn Db>`
/// parts, rustc cannot prove some of these futures `Send`).
#[tokio::test]
async fn the_dynamic_form_spawns_on_tokio() {
    use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport};
    use indexer_sessions::{Config, DynSessionManager, SessionManager};
    let db = MemoryDb::new();
    let tip = db.push_block(vec![0; 80], vec![]);
    let manager: DynSessionManager = SessionManager::builder(Config::default())
        .timer(ManualTimer::new())
        .db(db)
        .daemon(MemoryDaemon::new())
        .mempool(MemoryMempool::new())
        .build_dyn()
        .unwrap();
    let session = std::sync::Arc::new(
        manager
            .add_session(MemoryTransport::new("203.0.113.1:1".parse().unwrap()).0)
            .unwrap(),
    );
    let m = manager.clone();
    tokio::spawn(async move { m.notify(tip, &[]).await })
        .await
        .unwrap();
    let s = session.clone();
    tokio::spawn(async move { s.subscribe(&"11".repeat(32)).await.map(|_| ()) })
        .await
        .unwrap()
        .unwrap();
    let s = session.clone();
    tokio::spawn(async move { s.subscribe_headers().await.map(|_| ()) })
        .await
        .unwrap()
        .unwrap();
    let s = session.clone();
    tokio::spawn(async move { s.history(&"11".repeat(32)).await.map(|_| ()) })
        .await
        .unwrap()
        .unwrap();
    let s = session.clone();
    tokio::spawn(async move { drop(s.admit().await) }).await.unwrap();
    let m = manager.clone();
    tokio::spawn(async move { m.sweep().await }).await.unwrap();
    let s = session.clone();
    let refused = tokio::spawn(async move { s.broadcast_transaction(&[1, 2, 3]).await })
        .await
        .unwrap();
    assert!(refused.is_err(), "not a transaction");
    let other = manager
        .add_session(MemoryTransport::new("203.0.113.2:1".parse().unwrap()).0)
        .unwrap();
    tokio::spawn(async move { other.close(indexer_sessions::DisconnectReason::Admin).await })
        .await
        .unwrap();
    let deliver = tokio::spawn(session.deliver());
    let m = manager.clone();
    let housekeeping = tokio::spawn(async move { m.run_housekeeping().await });
    manager.shutdown().await;
    housekeeping.await.unwrap();
    deliver.await.unwrap();
}
