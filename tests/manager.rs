//! The manager under a manual clock: sweeps, listener control, bans,
//! admin selectors and tables, shutdown, configuration errors.

mod common;

use common::Fixture;
use futures::FutureExt;
use futures::executor::block_on;
use indexer_sessions::Cost;
use indexer_sessions::testing::MemoryHost;
use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool};
use indexer_sessions::{
    Config, ConfigError, DisconnectReason, Error, Limits, ListenerState, Refusal, Selector, SessionId,
    SessionManager,
};
use std::time::Duration;

#[test]
fn the_stale_sweep_closes_exactly_the_idle_sessions() {
    let fx = Fixture::new(Config::default());
    let (idle, idle_log) = fx.connect("203.0.113.1:1");
    let (busy, busy_log) = fx.connect("203.0.113.2:1");
    fx.timer.advance(Duration::from_secs(400));
    busy.record_received(100);
    fx.timer.advance(Duration::from_secs(200)); // idle: 600 s, busy: 200 s
    // Idle for exactly the timeout is not stale: it takes more.
    assert_eq!(block_on(fx.manager.sweep()), 0);
    assert_eq!(idle_log.closed(), None);
    fx.timer.advance(Duration::from_millis(1));
    assert_eq!(block_on(fx.manager.sweep()), 1);
    assert_eq!(idle_log.closed(), Some(DisconnectReason::Stale));
    assert!(idle.is_closed());
    assert_eq!(busy_log.closed(), None);
    assert!(!busy.is_closed());
    assert_eq!(fx.manager.session_count(), 1);
}

#[test]
fn housekeeping_sweeps_every_interval_and_stops_at_shutdown() {
    let fx = Fixture::new(Config {
        limits: Limits {
            session_timeout: Duration::from_secs(10),
            ..Limits::default()
        },
        sweep_interval: Duration::from_secs(5),
        ..Config::default()
    });
    let (_session, log) = fx.connect("203.0.113.1:1");
    let mut housekeeping = Box::pin(fx.manager.run_housekeeping());
    assert!(common::poll_once(&mut housekeeping).is_none());
    fx.timer.advance(Duration::from_secs(5));
    assert!(common::poll_once(&mut housekeeping).is_none());
    assert_eq!(log.closed(), None, "5 s idle is not stale");
    fx.timer.advance(Duration::from_secs(5));
    assert!(common::poll_once(&mut housekeeping).is_none());
    assert_eq!(log.closed(), None, "10 s idle is not more than the timeout");
    fx.timer.advance(Duration::from_secs(5));
    assert!(common::poll_once(&mut housekeeping).is_none());
    assert_eq!(log.closed(), Some(DisconnectReason::Stale));
    block_on(fx.manager.shutdown());
    assert!(
        common::poll_once(&mut housekeeping).is_some(),
        "housekeeping ends at shutdown"
    );
}

/// A manager that admits at most `max_sessions` sessions.
fn with_max_sessions(max_sessions: usize) -> Fixture {
    Fixture::new(Config {
        limits: Limits {
            max_sessions,
            ..Limits::default()
        },
        ..Config::default()
    })
}

#[test]
fn the_listener_pauses_at_max_and_resumes_at_95_percent() {
    let fx = with_max_sessions(20);
    let mut events = fx.manager.listener_state();
    let mut sessions: Vec<_> = (0..19)
        .map(|i| fx.connect(&format!("127.0.0.1:{}", 1000 + i)))
        .collect();
    assert_eq!(events.current(), ListenerState::Accepting);
    sessions.push(fx.connect("127.0.0.1:2000"));
    assert_eq!(events.changed().now_or_never(), Some(ListenerState::Paused));
    let refused = fx.try_connect("127.0.0.1:2001").err().unwrap();
    assert!(matches!(refused, Refusal::AtCapacity { max: 20 }));
    sessions.pop(); // 19 = 95 %: resume
    assert_eq!(events.changed().now_or_never(), Some(ListenerState::Accepting));

    // With a larger maximum, 96 % stays paused and 95 % resumes.
    let fx = with_max_sessions(100);
    let mut events = fx.manager.listener_state();
    let mut sessions: Vec<_> = (0..100)
        .map(|i| fx.connect(&format!("127.0.0.1:{}", 1000 + i)))
        .collect();
    assert_eq!(events.changed().now_or_never(), Some(ListenerState::Paused));
    sessions.truncate(96);
    assert_eq!(events.current(), ListenerState::Paused, "96 % stays paused");
    sessions.truncate(95);
    assert_eq!(events.changed().now_or_never(), Some(ListenerState::Accepting));
    let mut accepting = Box::pin(events.accepting());
    assert_eq!(common::poll_once(&mut accepting), Some(ListenerState::Accepting));
}

/// A session added at the maximum and another removed at the same moment,
/// on two threads, over and over: whenever both are done the count is back
/// at 95 %, so the listener must be accepting. (A pause decided on the
/// count read before the removal, and applied after the removal looked for
/// a pause to undo, left it paused with no removal to come.)
#[test]
fn a_removal_racing_the_pause_at_the_maximum_leaves_the_listener_accepting() {
    use std::sync::Barrier;
    let fx = with_max_sessions(20);
    let events = fx.manager.listener_state();
    let _resident: Vec<_> = (0..18)
        .map(|i| fx.connect(&format!("127.0.0.1:{}", 1000 + i)))
        .collect();
    let start = Barrier::new(3);
    let done = Barrier::new(3);
    let rounds = 20_000;
    std::thread::scope(|scope| {
        let (fx, start, done) = (&fx, &start, &done);
        // Adds the 20th session each round, and drops it after the check.
        scope.spawn(move || {
            for _ in 0..rounds {
                start.wait();
                let added = fx.connect("127.0.0.1:3000");
                done.wait();
                done.wait();
                drop(added);
                done.wait();
            }
        });
        // Holds the 19th session and drops it as the 20th comes.
        scope.spawn(move || {
            let mut held = Some(fx.connect("127.0.0.1:3001"));
            for _ in 0..rounds {
                start.wait();
                held = None;
                done.wait();
                done.wait();
                held = held.or_else(|| Some(fx.connect("127.0.0.1:3001")));
                done.wait();
            }
            drop(held);
        });
        // Checked after the threads end (a panic here would leave them
        // waiting at the barrier).
        let mut paused_rounds = Vec::new();
        for round in 0..rounds {
            start.wait();
            done.wait();
            let count = fx.manager.session_count();
            if count != 19 || events.current() != ListenerState::Accepting {
                paused_rounds.push((round, count, events.current()));
            }
            done.wait();
            done.wait();
        }
        assert!(
            paused_rounds.is_empty(),
            "{} of {rounds} rounds ended paused (or miscounted) at 95 %: {:?}",
            paused_rounds.len(),
            &paused_rounds[..paused_rounds.len().min(5)]
        );
    });
}

#[test]
fn banned_networks_are_refused_and_their_sessions_closed() {
    let fx = Fixture::new(Config::default());
    let (_inside, log) = fx.connect("203.0.113.9:1");
    let (_outside, other) = fx.connect("198.51.100.9:1");
    let closed = block_on(
        fx.manager
            .ban("203.0.113.0/24".parse().unwrap(), Some(Duration::from_secs(60))),
    )
    .unwrap();
    assert_eq!(closed, 1);
    assert_eq!(log.closed(), Some(DisconnectReason::Banned));
    assert_eq!(other.closed(), None);
    let refused = fx.try_connect("[::ffff:203.0.113.10]:1").err().unwrap();
    assert!(matches!(refused, Refusal::Banned { .. }), "{refused}");
    assert_eq!(fx.manager.bans().len(), 1);
    fx.timer.advance(Duration::from_secs(60));
    fx.connect("203.0.113.10:1");
    block_on(fx.manager.ban("198.51.100.0/24".parse().unwrap(), None)).unwrap();
    assert!(fx.manager.unban("198.51.100.0/24".parse().unwrap()));
    fx.connect("198.51.100.10:1");
    assert!(matches!(
        block_on(
            fx.manager
                .ban("198.51.100.0/24".parse().unwrap(), Some(Duration::ZERO))
        ),
        Err(ConfigError {
            field: "ban duration",
            ..
        })
    ));
    // A duration too long for the clock bans for good instead of panicking.
    block_on(
        fx.manager
            .ban("192.0.2.0/24".parse().unwrap(), Some(Duration::MAX)),
    )
    .unwrap();
    let ban = fx
        .manager
        .bans()
        .into_iter()
        .find(|b| b.network.to_string() == "192.0.2.0/24")
        .unwrap();
    assert_eq!(ban.remaining, None);
}

#[test]
fn disconnect_selects_by_id_group_address_and_all() {
    let fx = Fixture::new(Config::default());
    let (a, a_log) = fx.connect("203.0.113.1:1");
    let (_b, b_log) = fx.connect("203.0.113.2:1");
    let (_c, c_log) = fx.connect("198.51.100.1:1");
    let (_d, d_log) = fx.connect("198.51.100.1:2");
    let (_e, e_log) = fx.connect("[2001:db8::1]:2");

    assert_eq!(
        block_on(fx.manager.disconnect(Selector::Session(a.id()))).unwrap(),
        1
    );
    assert_eq!(a_log.closed(), Some(DisconnectReason::Admin));
    assert_eq!(b_log.closed(), None);
    let unknown = block_on(fx.manager.disconnect(Selector::Session(SessionId(999))));
    assert!(matches!(unknown, Err(Error::UnknownSession(SessionId(999)))));
    assert_eq!(
        block_on(fx.manager.disconnect("203.0.113.0/24".parse().unwrap())).unwrap(),
        1
    );
    assert_eq!(b_log.closed(), Some(DisconnectReason::Admin));
    assert_eq!(
        block_on(fx.manager.disconnect("198.51.100.1".parse().unwrap())).unwrap(),
        2
    );
    assert!(c_log.closed().is_some() && d_log.closed().is_some());
    assert_eq!(e_log.closed(), None);
    assert_eq!(block_on(fx.manager.disconnect(Selector::All)).unwrap(), 1);
    assert_eq!(fx.manager.session_count(), 0);
}

#[test]
fn admin_tables_show_the_numbers() {
    let fx = Fixture::new(Config::default());
    let (a, _) = fx.connect("203.0.113.1:1");
    let (b, _) = fx.connect("203.0.113.2:1");
    let (c, _) = fx.connect("127.0.0.1:1");
    a.set_client("Electrum 4.5.8", "1.4");
    a.record_received(5000);
    a.record_sent(2500);
    drop(a.admit().now_or_never().unwrap().unwrap());
    b.charge(Cost::constant(45.0));
    c.charge(Cost::constant(1.0));
    assert_eq!(fx.manager.set_log(Selector::Session(b.id()), true).unwrap(), 1);
    assert!(b.log_enabled());
    fx.timer.advance(Duration::from_secs(3));

    let rows = fx.manager.sessions();
    assert_eq!(rows.len(), 3);
    let row_a = &rows[0];
    assert_eq!(row_a.id, a.id());
    assert_eq!(row_a.flags, "T10");
    assert_eq!(row_a.client.as_deref(), Some("Electrum 4.5.8"));
    assert_eq!(row_a.protocol.as_deref(), Some("1.4"));
    assert_eq!(row_a.cost, 5.0 + 1.0 + 0.5);
    assert_eq!(row_a.counters.requests, 1);
    assert_eq!(row_a.counters.recv_bytes, 5000);
    assert_eq!(row_a.age, Duration::from_secs(3));
    assert_eq!(row_a.group, Some("203.0.113.0/24".parse().unwrap()));
    assert_eq!(rows[1].flags, "TL10");
    assert_eq!(rows[2].group, None);

    fx.manager.recalculate(); // reports costs to the ledger
    let groups = fx.manager.groups();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].sessions, 2);
    // Both members decayed 3 s at 1 unit per second before being reported.
    assert!(
        (groups[0].cost - ((6.5 - 3.0) + (50.0 - 3.0))).abs() < 1e-9,
        "{}",
        groups[0].cost
    );
    assert_eq!(groups[0].counters.requests, 1);
    assert_eq!(groups[0].counters.recv_bytes, 5000);

    let info = fx.manager.info();
    assert_eq!(info.sessions, 3);
    assert_eq!(info.groups, 1);
    assert_eq!(info.logged, 1);
    assert_eq!(info.counters.requests, 1);
    assert_eq!(info.uptime, Duration::from_secs(3));
    assert_eq!(info.listener, ListenerState::Accepting);
    drop(a);
    let info = fx.manager.info();
    assert_eq!(info.sessions_ended, 1);
    assert_eq!(info.counters.recv_bytes, 5000, "ended sessions still count");
    assert!(matches!(
        fx.manager.session_info(SessionId(77)),
        Err(Error::UnknownSession(_))
    ));
}

#[test]
fn shutdown_closes_every_session_refuses_new_ones_and_stops_listeners() {
    let fx = Fixture::new(Config::default());
    let logs: Vec<_> = (0..5).map(|i| fx.connect(&format!("203.0.113.{i}:1"))).collect();
    let mut events = fx.manager.listener_state();
    assert_eq!(block_on(fx.manager.shutdown()), 5);
    for (handle, log) in &logs {
        assert_eq!(log.closed(), Some(DisconnectReason::Shutdown));
        assert!(handle.is_closed());
        assert!(matches!(
            handle.admit().now_or_never(),
            Some(Err(Error::SessionClosed(_)))
        ));
    }
    assert_eq!(events.changed().now_or_never(), Some(ListenerState::Stopped));
    assert!(matches!(
        fx.try_connect("203.0.113.9:1"),
        Err(Refusal::ShuttingDown)
    ));
}

#[test]
fn limits_change_at_run_time_and_bad_limits_change_nothing() {
    let fx = Fixture::new(Config::default());
    let (session, _) = fx.connect("203.0.113.1:1");
    session.charge(Cost::constant(495.0)); // 500: unthrottled by default
    assert_eq!(session.throttle().fraction, 0.0);
    let tighter = Limits {
        cost_soft_limit: 100.0,
        cost_hard_limit: 900.0,
        ..Limits::default()
    };
    fx.manager.set_limits(tighter.clone()).unwrap();
    assert_eq!(session.throttle().fraction, 0.5, "recalculated at once");
    let bad = Limits {
        cost_soft_limit: 1000.0,
        cost_hard_limit: 10.0,
        ..Limits::default()
    };
    assert!(matches!(
        fx.manager.set_limits(bad),
        Err(ConfigError {
            field: "cost_hard_limit",
            ..
        })
    ));
    assert_eq!(*fx.manager.limits(), tighter);
}

fn build(config: Config) -> Result<SessionManager<MemoryHost>, ConfigError> {
    SessionManager::builder(config)
        .timer(ManualTimer::new())
        .db(MemoryDb::new())
        .daemon(MemoryDaemon::new())
        .mempool(MemoryMempool::new())
        .build()
}

#[test]
fn bad_configuration_is_a_typed_error_at_build() {
    let field = |config: Config| match build(config) {
        Err(ConfigError { field, .. }) => field,
        other => panic!("expected a configuration error, got {other:?}"),
    };
    assert_eq!(
        field(Config {
            ipv4_group_prefix: 33,
            ..Config::default()
        }),
        "ipv4_group_prefix"
    );
    assert_eq!(
        field(Config {
            ipv6_group_prefix: 129,
            ..Config::default()
        }),
        "ipv6_group_prefix"
    );
    assert_eq!(
        field(Config {
            sweep_interval: Duration::ZERO,
            ..Config::default()
        }),
        "sweep_interval"
    );
    assert_eq!(
        field(Config {
            recalc_interval: Duration::ZERO,
            ..Config::default()
        }),
        "recalc_interval"
    );
    let limits = |limits: Limits| Config {
        limits,
        ..Config::default()
    };
    assert_eq!(
        field(limits(Limits {
            cost_hard_limit: 500.0,
            ..Limits::default()
        })),
        "cost_hard_limit"
    );
    assert_eq!(
        field(limits(Limits {
            cost_soft_limit: f64::NAN,
            ..Limits::default()
        })),
        "cost_soft_limit"
    );
    assert_eq!(
        field(limits(Limits {
            session_timeout: Duration::ZERO,
            ..Limits::default()
        })),
        "session_timeout"
    );
    assert_eq!(
        field(limits(Limits {
            initial_concurrent: 0,
            ..Limits::default()
        })),
        "initial_concurrent"
    );
    assert_eq!(
        field(limits(Limits {
            request_timeout: Duration::MAX,
            ..Limits::default()
        })),
        "request_timeout"
    );
    // A missing timer, db, daemon or mempool does not compile (see the
    // `compile_fail` example on `SessionManagerBuilder`).
    assert!(build(Config::default()).is_ok());
}

#[test]
fn a_client_name_is_kept_to_a_bounded_length() {
    let fx = Fixture::new(Config::default());
    let (session, _) = fx.connect("203.0.113.1:1");
    // 600 KB of name, multi-byte characters included.
    let name = "é".repeat(300_000);
    session.set_client(&name, "1.4".repeat(1000));
    let row = &fx.manager.sessions()[0];
    let max = indexer_sessions::MAX_CLIENT_CHARS;
    let client = row.client.as_deref().unwrap();
    assert_eq!(client.chars().count(), max + 1);
    let kept = client.strip_suffix('…').expect("marked as cut");
    assert!(name.starts_with(kept));
    assert_eq!(row.protocol.as_deref().unwrap().chars().count(), max + 1);
    // A name already cut to the bound keeps its one ellipsis.
    session.set_client(client, "1.4");
    assert_eq!(fx.manager.sessions()[0].client.as_deref(), Some(client));
    session.set_client("Electrum 4.5.8", "1.4");
    assert_eq!(fx.manager.sessions()[0].client.as_deref(), Some("Electrum 4.5.8"));
}

/// Reports carry typed networks (`IpNetwork`), and serialize them as the
/// text an operator reads.
#[cfg(feature = "serde")]
#[test]
fn reports_carry_typed_networks_and_serialize_them_as_text() {
    use indexer_sessions::ipnetwork::IpNetwork;
    let fx = Fixture::new(Config::default());
    let (_session, _) = fx.connect("203.0.113.7:1");
    let network: IpNetwork = "198.51.100.0/24".parse().unwrap();
    block_on(fx.manager.ban(network, None)).unwrap();
    let group: IpNetwork = "203.0.113.0/24".parse().unwrap();

    let row = &fx.manager.sessions()[0];
    assert_eq!(row.group, Some(group));
    assert_eq!(fx.manager.groups()[0].network, group);
    assert_eq!(fx.manager.bans()[0].network, network);

    let session = serde_json::to_value(row).unwrap();
    assert_eq!(session["group"], "203.0.113.0/24");
    assert_eq!(session["peer"], "203.0.113.7:1");
    let groups = serde_json::to_value(fx.manager.groups()).unwrap();
    assert_eq!(groups[0]["network"], "203.0.113.0/24");
    let bans = serde_json::to_value(fx.manager.bans()).unwrap();
    assert_eq!(bans[0]["network"], "198.51.100.0/24");
}
