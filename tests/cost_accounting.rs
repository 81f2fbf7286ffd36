//! The cost model through the public API: aiorpcX's throttle, the hard
//! limit, limiting switched off, and bad input.

mod common;

use common::Fixture;
use futures::FutureExt;
use futures::executor::block_on;
use indexer_sessions::testing::MemoryHost;
use indexer_sessions::{Config, Cost, CostMeter, Error, Limits, SessionHandle};
use std::time::Duration;

#[test]
fn a_new_session_starts_at_five_and_is_admitted_at_once() {
    let fx = Fixture::new(Config::default());
    let (session, _) = fx.connect("203.0.113.1:1000");
    let cost = session.cost();
    assert_eq!(
        (cost.own, cost.group_extra, cost.retained),
        (CostMeter::INITIAL_COST, 0.0, 0.0)
    );
    let permit = session.admit().now_or_never().expect("ready at once");
    assert!(permit.is_ok());
}

#[test]
fn at_5500_the_fraction_is_half_target_five_and_requests_sleep_1250_ms() {
    let fx = Fixture::new(Config::default());
    let (session, _) = fx.connect("203.0.113.1:1000");
    session.charge(Cost::constant(5495.0));
    let throttle = session.throttle();
    assert_eq!(throttle.fraction, 0.5);
    assert_eq!(throttle.target, 5);

    let mut admit = Box::pin(session.admit());
    assert!(
        common::poll_once(&mut admit).is_none(),
        "throttled admission sleeps"
    );
    fx.timer.advance(Duration::from_millis(1249));
    assert!(
        common::poll_once(&mut admit).is_none(),
        "still sleeping at 1249 ms"
    );
    fx.timer.advance(Duration::from_millis(1));
    assert!(matches!(common::poll_once(&mut admit), Some(Ok(_))));
}

#[test]
fn throttled_sessions_hold_at_most_target_requests() {
    let fx = Fixture::new(Config::default());
    let (session, _) = fx.connect("203.0.113.1:1000");
    session.charge(Cost::constant(5495.0)); // target 5, sleep 1.25 s
    let mut admits: Vec<_> = (0..6).map(|_| Box::pin(session.admit())).collect();
    for admit in admits.iter_mut() {
        assert!(common::poll_once(admit).is_none());
    }
    fx.timer.advance(Duration::from_millis(1250));
    let mut permits = Vec::new();
    let mut waiting = Vec::new();
    for mut admit in admits {
        match common::poll_once(&mut admit) {
            Some(result) => permits.push(result.unwrap()),
            None => waiting.push(admit),
        }
    }
    assert_eq!(permits.len(), 5);
    assert_eq!(waiting.len(), 1);
    drop(permits.pop());
    let mut last = waiting.pop().unwrap();
    assert!(common::poll_once(&mut last).is_none(), "got the slot, now sleeps");
    fx.timer.advance(Duration::from_millis(1250));
    assert!(matches!(common::poll_once(&mut last), Some(Ok(_))));
}

#[test]
fn try_admit_admits_only_what_would_not_wait_and_charges_as_admit_does() {
    let fx = Fixture::new(Config::default());
    let (session, _) = fx.connect("203.0.113.1:1000");
    // Unthrottled: every slot of the target (10) without waiting, each counted.
    let mut permits: Vec<_> = (0..10)
        .map(|_| session.try_admit().unwrap().expect("a free slot"))
        .collect();
    assert_eq!(fx.manager.sessions()[0].in_flight, 10);
    assert!(
        session.try_admit().unwrap().is_none(),
        "every slot taken: it would wait"
    );
    for permit in &mut permits {
        permit.charge(Cost::constant(0.5));
    }
    drop(permits);
    let info = &fx.manager.sessions()[0];
    assert_eq!((info.in_flight, info.counters.requests), (0, 10));
    assert_eq!(session.cost().own, CostMeter::INITIAL_COST + 5.0);

    // Throttled (fraction 0.5: target 5 and a sleep): it would wait, and
    // takes no slot; `admit()` then sleeps as usual.
    session.charge(Cost::constant(5490.0));
    assert_eq!(session.throttle().target, 5);
    assert!(session.try_admit().unwrap().is_none());
    assert_eq!(fx.manager.sessions()[0].in_flight, 0);
    let mut admit = Box::pin(session.admit());
    assert!(common::poll_once(&mut admit).is_none(), "admit sleeps");
    fx.timer.advance(Duration::from_millis(1250));
    assert!(matches!(common::poll_once(&mut admit), Some(Ok(_))));
    drop(admit);

    // Past the hard limit and after the end: the same errors as `admit()`.
    session.charge(Cost::constant(10_000.0));
    assert!(matches!(session.try_admit(), Err(Error::ExcessiveCost)));
    block_on(session.close(indexer_sessions::DisconnectReason::Admin));
    assert!(matches!(session.try_admit(), Err(Error::SessionClosed(_))));
}

#[test]
fn cost_decays_lazily_at_recalculation() {
    let fx = Fixture::new(Config::default());
    let (session, _) = fx.connect("203.0.113.1:1000");
    session.charge(Cost::constant(95.0)); // 100, no recalculation due
    fx.timer.advance(Duration::from_secs(50));
    assert_eq!(session.cost().own, 100.0, "no decay until a recalculation");
    fx.manager.recalculate();
    // Decay is hard / 10000 = 1 per second without subscriptions.
    assert!((session.cost().own - 50.0).abs() < 1e-9);
}

#[test]
fn a_recalculation_happens_when_cost_drifts_over_100() {
    let fx = Fixture::new(Config::default());
    let (session, _) = fx.connect("203.0.113.1:1000");
    session.charge(Cost::constant(1000.0)); // recalculated: 1005 → fraction 0.000555…
    fx.timer.advance(Duration::from_secs(10));
    session.charge(Cost::constant(100.0)); // drift exactly 100: not yet
    assert_eq!(session.cost().own, 1105.0);
    session.charge(Cost::constant(0.5)); // drift 100.5: decay 10 s then retarget
    assert!((session.cost().own - 1095.5).abs() < 1e-9);
    assert!((session.throttle().fraction - 95.5 / 9000.0).abs() < 1e-12);
}

#[test]
fn the_hard_limit_fails_the_next_admission_not_the_current_request() {
    let fx = Fixture::new(Config::default());
    let (session, _) = fx.connect("203.0.113.1:1000");
    let mut permit = session.admit().now_or_never().unwrap().unwrap();
    permit.charge(Cost::constant(10_000.0));
    // The request in progress keeps its slot and completes.
    drop(permit);
    assert_eq!(session.throttle().target, 0);
    let next = session.admit().now_or_never().expect("fails at once");
    assert!(matches!(next, Err(Error::ExcessiveCost)));
    assert_eq!(Error::ExcessiveCost.rpc_code(), -101);
}

#[test]
fn soft_and_hard_zero_disable_limiting() {
    let config = Config {
        limits: Limits {
            cost_soft_limit: 0.0,
            cost_hard_limit: 0.0,
            ..Limits::default()
        },
        ..Config::default()
    };
    let fx = Fixture::new(config);
    let (session, _) = fx.connect("203.0.113.1:1000");
    session.charge(Cost::new(1e9).unwrap());
    assert_eq!(session.throttle().fraction, 0.0);
    assert!(matches!(session.admit().now_or_never(), Some(Ok(_))));
}

#[test]
fn a_request_queued_and_slept_past_the_timeout_is_server_busy_and_charged() {
    let config = Config {
        limits: Limits {
            request_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        ..Config::default()
    };
    let fx = Fixture::new(config);
    let (session, _) = fx.connect("203.0.113.1:1000");
    session.charge(Cost::constant(5495.0)); // sleep 1.25 s > 1 s timeout
    let before = session.cost().own;
    let mut admit = Box::pin(session.admit());
    assert!(common::poll_once(&mut admit).is_none());
    fx.timer.advance(Duration::from_secs(1));
    let result = common::poll_once(&mut admit).expect("timed out");
    assert!(matches!(result, Err(Error::ServerBusy(_))));
    assert_eq!(result.unwrap_err().rpc_code(), -102);
    assert_eq!(session.cost().own, before + 100.0, "charged as an error");
    assert_eq!(fx.manager.sessions()[0].counters.errors, 1);
}

#[test]
fn a_request_that_waited_has_only_the_rest_of_its_timeout_to_run() {
    let timeout = Duration::from_secs(2);
    let config = Config {
        limits: Limits {
            request_timeout: timeout,
            ..Limits::default()
        },
        ..Config::default()
    };
    let fx = Fixture::new(config);
    let (session, _) = fx.connect("203.0.113.1:1000");
    session.charge(Cost::constant(5495.0)); // a sleep of about 1.25 s, inside the 2 s
    let step = Duration::from_millis(50);
    let mut admit = Box::pin(session.admit());
    let mut waited = Duration::ZERO;
    let mut permit = loop {
        if let Some(admitted) = common::poll_once(&mut admit) {
            break admitted.expect("admitted once it slept");
        }
        assert!(waited < timeout, "still waiting at the timeout");
        fx.timer.advance(step);
        waited += step;
    };
    assert!(waited >= Duration::from_secs(1), "slept {waited:?}");
    let mut run = Box::pin(permit.run(futures::future::pending::<()>()));
    assert!(common::poll_once(&mut run).is_none());
    // The handler has what the wait left of the timeout, not a new one.
    fx.timer.advance(timeout - waited - step);
    assert!(common::poll_once(&mut run).is_none());
    fx.timer.advance(step);
    assert!(matches!(
        common::poll_once(&mut run),
        Some(Err(Error::ServerBusy(_)))
    ));
}

#[test]
fn a_handler_past_the_timeout_is_server_busy() {
    let config = Config {
        limits: Limits {
            request_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        ..Config::default()
    };
    let fx = Fixture::new(config);
    let (session, _) = fx.connect("203.0.113.1:1000");
    let mut permit = session.admit().now_or_never().unwrap().unwrap();
    let mut run = Box::pin(permit.run(futures::future::pending::<()>()));
    assert!(common::poll_once(&mut run).is_none());
    fx.timer.advance(Duration::from_secs(2));
    assert!(matches!(
        common::poll_once(&mut run),
        Some(Err(Error::ServerBusy(_)))
    ));
}

#[test]
fn bad_costs_cannot_be_made_and_computed_ones_are_clamped() {
    for bad in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let refused = Cost::new(bad).unwrap_err();
        assert!(refused.0 == bad || bad.is_nan(), "{refused}");
    }
    assert_eq!(Cost::saturating(f64::NAN), Cost::ZERO);
    assert_eq!(Cost::saturating(-5.0), Cost::ZERO);
    assert_eq!(Cost::saturating(f64::INFINITY).get(), f64::MAX);
    assert_eq!(Cost::new(2.5).map(Cost::get), Ok(2.5));
    // Sums saturate instead of reaching infinity.
    assert_eq!(
        (Cost::saturating(f64::MAX) + Cost::saturating(f64::MAX)).get(),
        f64::MAX
    );
}

#[test]
fn a_group_member_sees_its_groups_cost_from_the_start() {
    let fx = Fixture::new(Config::default());
    let (first, _) = fx.connect("203.0.113.1:1000");
    first.charge(Cost::constant(400.0));
    drop(first); // 405 retained by 203.0.113.0/24
    let (second, _) = fx.connect("203.0.113.2:1000");
    let cost = second.cost();
    assert_eq!(cost.own, CostMeter::INITIAL_COST);
    assert_eq!(cost.retained, 400.0 + CostMeter::INITIAL_COST);
    assert_eq!(cost.group_extra, cost.retained);
    assert_eq!(cost.total(), cost.own + cost.group_extra);
    let (exempt, _) = fx.connect("127.0.0.1:1000");
    assert_eq!(exempt.cost().retained, 0.0);
}

#[test]
fn traffic_and_errors_cost_as_configured() {
    let fx = Fixture::new(Config::default());
    let (session, _) = fx.connect("203.0.113.1:1000");
    session.record_received(5000);
    session.record_sent(10_000);
    assert_eq!(session.cost().own, 5.0 + 1.0 + 2.0);
    session.record_error();
    session.record_parse_error();
    assert_eq!(session.cost().own, 8.0 + 100.0 + 1100.0);
    let row = &fx.manager.sessions()[0];
    assert_eq!((row.counters.recv_count, row.counters.recv_bytes), (1, 5000));
    assert_eq!((row.counters.send_count, row.counters.send_bytes), (1, 10_000));
    assert_eq!(row.counters.errors, 2);
}

/// A session recalculated at cost 1005, 10 s ago, under the soft limit (no
/// throttle sleep, so admission is immediate).
fn recalculated_at_1005_ten_seconds_ago() -> (Fixture, SessionHandle<MemoryHost>) {
    let mut config = Config::default();
    config.limits.cost_soft_limit = 5000.0;
    let fx = Fixture::new(config);
    let (session, _) = fx.connect("203.0.113.1:1000");
    session.charge(Cost::constant(1000.0));
    fx.timer.advance(Duration::from_secs(10));
    (fx, session)
}

#[test]
fn permit_charges_recalculate_past_a_drift_of_100_as_direct_charges_do() {
    let (fx, session) = recalculated_at_1005_ten_seconds_ago();
    for _ in 0..400 {
        let mut permit = session.admit().now_or_never().unwrap().unwrap();
        permit.charge(Cost::constant(0.25));
    }
    // Drift exactly 100, through the lock-free path: not yet.
    assert_eq!(session.cost().own, 1105.0);
    let mut permit = session.admit().now_or_never().unwrap().unwrap();
    permit.charge(Cost::constant(0.5));
    drop(permit); // drift 100.5: decay 10 s then retarget
    assert!((session.cost().own - 1095.5).abs() < 1e-9);
    assert_eq!(fx.manager.sessions()[0].counters.requests, 401);
    assert_eq!(fx.manager.sessions()[0].in_flight, 0);
}

#[test]
fn tenth_charges_sum_as_locked_charges_and_recalculate_past_a_drift_of_100() {
    // Charges of 0.1 (a ping, a notification) are not whole 1/256 units;
    // they take the lock-free path all the same, and the cost they add is
    // what adding 0.1 one at a time gives.
    let (fx, session) = recalculated_at_1005_ten_seconds_ago();
    let mut expected = 1005.0_f64;
    for i in 0..1000 {
        if i % 2 == 0 {
            session.charge(Cost::constant(0.1));
        } else {
            let mut permit = session.admit().now_or_never().unwrap().unwrap();
            permit.charge(Cost::constant(0.1));
        }
        expected += 0.1;
        assert_eq!(session.cost().own, expected, "after {} tenths", i + 1);
    }
    // Drift 99.9999…: not yet. The 1,001st tenth passes 100: the meter
    // decays 10 s (10.0) and retargets, as for any charge.
    session.charge(Cost::constant(0.1));
    expected += 0.1;
    assert!(
        (session.cost().own - (expected - 10.0)).abs() < 1e-9,
        "{:?}",
        session.cost()
    );
    assert_eq!(fx.manager.sessions()[0].counters.requests, 500);
    assert_eq!(fx.manager.sessions()[0].in_flight, 0);
}

mod concurrent {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Several threads admitting (dropping a pending admission now and
        /// then), charging and dropping permits on one session: the cost is
        /// exactly 5 + every charge, the requests counter counts every
        /// admission, nothing stays in flight, and no more than the
        /// concurrency target is ever held.
        #[test]
        fn admit_charge_release_from_threads_sums_exactly_within_the_target(
            threads in 2usize..5,
            charges in proptest::collection::vec(
                prop_oneof![Just(0.0), Just(0.25), Just(1.0), Just(3.5), Just(40.0), Just(150.0)],
                1..200,
            ),
            target in 1u32..4,
        ) {
            let mut config = Config::default();
            config.limits.initial_concurrent = target;
            config.limits.cost_soft_limit = 1e9;
            config.limits.cost_hard_limit = 2e9;
            let fx = Fixture::new(config);
            let (session, _) = fx.connect("203.0.113.1:1000");
            let held = AtomicU32::new(0);
            let admitted = AtomicU32::new(0);
            std::thread::scope(|scope| {
                for t in 0..threads {
                    let (session, held, admitted, charges) = (&session, &held, &admitted, &charges);
                    scope.spawn(move || {
                        // Thread t takes every threads-th charge, starting at the t-th.
                        for (i, &charge) in charges.iter().enumerate().filter(|(i, _)| i % threads == t) {
                            let permit = loop {
                                let mut admit = Box::pin(session.admit());
                                match common::poll_once(&mut admit) {
                                    Some(result) => break result.expect("admitted"),
                                    // Full: drop the waiting admission (cancel) and retry.
                                    None => std::thread::yield_now(),
                                }
                            };
                            let mut permit = permit;
                            admitted.fetch_add(1, Ordering::SeqCst);
                            let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(now <= target, "{now} held, target {target}");
                            permit.charge(Cost::constant(charge));
                            if i % 7 == 0 {
                                session.charge(Cost::constant(charge));
                            }
                            held.fetch_sub(1, Ordering::SeqCst);
                            drop(permit);
                        }
                    });
                }
            });
            let direct: f64 = charges.iter().enumerate().filter(|(i, _)| i % 7 == 0).map(|(_, c)| c).sum();
            let expected = 5.0 + charges.iter().sum::<f64>() + direct;
            prop_assert_eq!(session.cost().own, expected);
            let row = &fx.manager.sessions()[0];
            prop_assert_eq!(row.in_flight, 0);
            prop_assert_eq!(row.counters.requests, u64::from(admitted.load(Ordering::SeqCst)));
            prop_assert_eq!(row.counters.requests, charges.len() as u64);
        }
    }
}

#[test]
fn every_admission_is_counted_past_the_lock_free_counts_capacity() {
    let fx = Fixture::new(Config::default());
    let (session, _) = fx.connect("203.0.113.1:1000");
    for _ in 0..70_000 {
        drop(session.admit().now_or_never().unwrap().unwrap());
    }
    assert_eq!(fx.manager.sessions()[0].counters.requests, 70_000);
    assert_eq!(fx.manager.info().counters.requests, 70_000);
    assert_eq!(session.cost().own, CostMeter::INITIAL_COST);
    drop(session);
    assert_eq!(fx.manager.info().counters.requests, 70_000, "kept once it ended");
}
