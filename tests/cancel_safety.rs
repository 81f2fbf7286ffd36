//! Every public future dropped at each of its await points: nothing is
//! lost (notifications, events) and nothing is left behind (slots, costs,
//! subscriptions, index entries).
//!
//! Hosts run in `Yielding` mode, so every host call is an await point. For
//! `k = 0, 1, 2, …` a fresh future is polled until it has returned
//! `Pending` `k + 1` times and is then dropped; the enumeration ends when
//! the future completes before that.

mod common;

use common::Fixture;
use futures::executor::block_on;
use indexer_sessions::Cost;
use indexer_sessions::testing::MemoryHost;
use indexer_sessions::testing::{HostBehaviour, TransportLog};
use indexer_sessions::{
    Changes, Config, ConfirmedOutpoint, ExtendedNotification, HashX, Height, HistoryEntry, Limits,
    MempoolOutpoint, MempoolSpender, Notification, OutPoint, OutpointStatus, SessionHandle, Tip, TxHash,
    scripthash_of_scriptpubkey,
};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Polls `future` until it has been `Pending` `pendings` times (then
/// returns `None`, dropping it) or completes.
fn poll_until_pending<F: Future>(future: F, pendings: usize) -> Option<F::Output> {
    let mut future = pin!(future);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut seen = 0;
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return Some(output),
            Poll::Pending => {
                seen += 1;
                if seen == pendings {
                    return None;
                }
            }
        }
    }
}

/// Runs `scenario(k)` for every drop point `k` of the future it builds;
/// returns how many drop points there were (`scenario` returns false once
/// its future completed without being dropped).
fn at_each_await(mut scenario: impl FnMut(usize) -> bool) -> usize {
    for k in 1..1000 {
        if !scenario(k) {
            return k - 1;
        }
    }
    panic!("the future never completed");
}

fn alias(n: u8) -> String {
    format!("{:02x}", n.wrapping_mul(37).wrapping_add(3)).repeat(32)
}

fn hashx(n: u8) -> HashX {
    HashX::from_scripthash_hex(&alias(n)).unwrap()
}

fn header(height: u32, salt: u8) -> Vec<u8> {
    let mut header = vec![salt; 80];
    header[..4].copy_from_slice(&height.to_le_bytes());
    header
}

/// Block 1 (with header salt `salt`) confirms a transaction of script 1.
fn confirm_script_1(fx: &Fixture, salt: u8) -> Tip {
    fx.db.add_history(
        hashx(1),
        HistoryEntry {
            txid: TxHash([9; 32]),
            height: Height(1),
        },
    );
    fx.db.push_block(header(1, salt), vec![TxHash([9; 32])])
}

fn yielding_fixture(config: Config) -> Fixture {
    let fx = Fixture::new(config);
    fx.db.push_block(header(0, 0), vec![]);
    fx.db.set_behaviour(HostBehaviour::Yielding);
    fx.mempool.set_behaviour(HostBehaviour::Yielding);
    fx.daemon.set_behaviour(HostBehaviour::Yielding);
    fx
}

/// Delivers everything queued for `session` (a fresh delivery future,
/// polled until it waits for more).
fn drain(session: &SessionHandle<MemoryHost>) {
    let deliver = session.deliver();
    let mut deliver = pin!(deliver);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..1000 {
        if deliver.as_mut().poll(&mut cx).is_ready() || session.pending_notifications() == 0 {
            // One more poll lets the last send complete.
            let _ = deliver.as_mut().poll(&mut cx);
            return;
        }
    }
}

fn statuses(log: &TransportLog) -> Vec<Option<String>> {
    log.sent()
        .into_iter()
        .filter_map(|n| match n {
            Notification::ScriptHashStatus { status, .. } => Some(status),
            Notification::Header { .. } => None,
        })
        .collect()
}

fn headers(log: &TransportLog) -> Vec<Height> {
    log.sent()
        .into_iter()
        .filter_map(|n| match n {
            Notification::Header { height, .. } => Some(height),
            Notification::ScriptHashStatus { .. } => None,
        })
        .collect()
}

fn subscribed_pair(fx: &Fixture) -> (SessionHandle<MemoryHost>, Arc<TransportLog>) {
    let (session, log) = fx.connect("203.0.113.1:1");
    fx.db.set_behaviour(HostBehaviour::Normal);
    fx.mempool.set_behaviour(HostBehaviour::Normal);
    block_on(session.subscribe(&alias(1))).unwrap();
    block_on(session.subscribe_headers()).unwrap();
    fx.db.set_behaviour(HostBehaviour::Yielding);
    fx.mempool.set_behaviour(HostBehaviour::Yielding);
    (session, log)
}

#[test]
fn notify_dropped_at_any_await_leaves_its_event_to_the_next_call() {
    let mut points = 0;
    let drops = at_each_await(|k| {
        let fx = yielding_fixture(Config::default());
        block_on(fx.manager.notify(fx.db.current_tip(), &[]));
        let (session, log) = subscribed_pair(&fx);
        let tip = confirm_script_1(&fx, 1);
        let completed = poll_until_pending(fx.manager.notify(tip, &[hashx(1)]), k).is_some();
        // The host calls notify again with the same tip (nothing new touched).
        block_on(fx.manager.notify(tip, &[]));
        drain(&session);
        assert_eq!(
            headers(&log),
            vec![Height(1)],
            "drop point {k}: one header for the new tip"
        );
        assert_eq!(
            statuses(&log).len(),
            1,
            "drop point {k}: the changed status, once"
        );
        // A third call sends nothing more.
        block_on(fx.manager.notify(tip, &[hashx(1)]));
        drain(&session);
        assert_eq!(log.sent().len(), 2, "drop point {k}: nothing twice");
        points = k;
        !completed
    });
    assert!(drops >= 3, "the pass has await points ({drops}, last {points})");
}

#[test]
fn a_merged_notify_completes_once_its_event_is_applied_and_takes_over_a_dropped_pass() {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    for drop_the_running_call in [false, true] {
        let fx = yielding_fixture(Config::default());
        block_on(fx.manager.notify(fx.db.current_tip(), &[]));
        let (session, log) = subscribed_pair(&fx);
        let tip = confirm_script_1(&fx, 1);
        let mut running = Box::pin(fx.manager.notify(tip, &[hashx(1)]));
        assert!(
            running.as_mut().poll(&mut cx).is_pending(),
            "mid-pass on a yielding host"
        );
        let mut merged = Box::pin(fx.manager.notify(tip, &[]));
        for _ in 0..3 {
            assert!(
                merged.as_mut().poll(&mut cx).is_pending(),
                "a merged call waits for the pass that applies its event"
            );
        }
        if drop_the_running_call {
            drop(running);
            let report = block_on(merged);
            assert!(!report.merged, "the waiting call ran the passes itself");
        } else {
            let report = block_on(running);
            assert!(!report.merged);
            assert_eq!(report.header_notifications, 1);
            match merged.as_mut().poll(&mut cx) {
                Poll::Ready(report) => assert!(report.merged, "{report:?}"),
                Poll::Pending => panic!("the pass that applied the merged event has finished"),
            }
        }
        drain(&session);
        assert_eq!(headers(&log), vec![Height(1)], "dropped: {drop_the_running_call}");
        assert_eq!(statuses(&log).len(), 1, "dropped: {drop_the_running_call}");
    }
}

#[test]
fn deliver_dropped_mid_send_sends_that_notification_again() {
    let fx = Fixture::new(Config::default());
    fx.db.push_block(header(0, 0), vec![]);
    block_on(fx.manager.notify(fx.db.current_tip(), &[]));
    let (session, log) = fx.connect("203.0.113.1:1");
    block_on(session.subscribe(&alias(1))).unwrap();
    block_on(session.subscribe_headers()).unwrap();
    log.set_yielding(true);
    let tip = confirm_script_1(&fx, 1);
    block_on(fx.manager.notify(tip, &[hashx(1)]));
    assert_eq!(session.pending_notifications(), 2);
    // Each delivery future is dropped in the middle of its send.
    for _ in 0..3 {
        assert!(poll_until_pending(session.deliver(), 1).is_none());
        assert_eq!(session.pending_notifications(), 2, "nothing left the outbox");
    }
    assert!(log.sent().is_empty());
    log.set_yielding(false);
    drain(&session);
    assert_eq!(headers(&log), vec![Height(1)]);
    assert_eq!(statuses(&log).len(), 1);
    assert_eq!(session.pending_notifications(), 0);
}

#[test]
fn a_status_replaced_while_being_sent_is_sent_next_and_a_revert_too() {
    let fx = Fixture::new(Config::default());
    fx.db.push_block(header(0, 0), vec![]);
    block_on(fx.manager.notify(fx.db.current_tip(), &[]));
    let (session, log) = fx.connect("203.0.113.1:1");
    assert_eq!(block_on(session.subscribe(&alias(1))).unwrap(), None);
    log.set_stalled(true);
    let mut deliver = Box::pin(session.deliver());
    let entry = HistoryEntry {
        txid: TxHash([9; 32]),
        height: Height(1),
    };
    fx.db.add_history(hashx(1), entry);
    let tip = fx.db.push_block(header(1, 1), vec![entry.txid]);
    block_on(fx.manager.notify(tip, &[hashx(1)]));
    assert!(common::poll_once(&mut deliver).is_none(), "the send is stuck");
    // The script reverts (a reorg) while its status is being sent.
    fx.db.set_history(hashx(1), vec![]);
    let tip = fx.db.replace_tip(header(1, 2), vec![]);
    block_on(fx.manager.notify(tip, &[hashx(1)]));
    log.set_stalled(false);
    assert!(common::poll_once(&mut deliver).is_none());
    let sent = statuses(&log);
    assert_eq!(sent.len(), 2, "the stuck status, then the revert: {sent:?}");
    assert!(sent[0].is_some());
    assert_eq!(sent[1], None);
}

#[test]
fn subscribe_dropped_at_any_await_leaves_no_subscription() {
    let drops = at_each_await(|k| {
        let fx = yielding_fixture(Config::default());
        block_on(fx.manager.notify(fx.db.current_tip(), &[]));
        let (session, log) = fx.connect("203.0.113.1:1");
        let completed = poll_until_pending(session.subscribe(&alias(1)), k).is_some();
        let info = fx.manager.info();
        if completed {
            assert_eq!((info.subs, session.subscription_count()), (1, 1));
            return false;
        }
        assert_eq!((info.subs, info.distinct_subs), (0, 0), "drop point {k}");
        assert_eq!(session.subscription_count(), 0);
        // A change to the script is not sent to the session.
        let tip = confirm_script_1(&fx, 1);
        block_on(fx.manager.notify(tip, &[hashx(1)]));
        drain(&session);
        assert!(log.sent().is_empty());
        true
    });
    assert!(drops >= 2, "subscribe has await points ({drops})");
}

#[test]
fn subscribe_headers_dropped_at_any_await_leaves_no_subscription() {
    let drops = at_each_await(|k| {
        let fx = yielding_fixture(Config::default());
        let (session, log) = fx.connect("203.0.113.1:1");
        let completed = poll_until_pending(session.subscribe_headers(), k).is_some();
        if completed {
            assert_eq!(fx.manager.info().header_subs, 1);
            return false;
        }
        assert_eq!(fx.manager.info().header_subs, 0, "drop point {k}");
        let tip = fx.db.push_block(header(1, 1), vec![]);
        block_on(fx.manager.notify(tip, &[]));
        drain(&session);
        assert!(log.sent().is_empty());
        true
    });
    assert!(drops >= 1);
}

#[test]
fn a_header_subscription_at_the_tip_is_not_sent_that_tip_again() {
    let fx = Fixture::new(Config::default());
    fx.db.push_block(header(0, 0), vec![]);
    let tip = fx.db.push_block(header(1, 0), vec![]);
    let (session, log) = fx.connect("203.0.113.1:1");
    // Subscribed before the host's first notify, at the tip it then reports.
    assert_eq!(block_on(session.subscribe_headers()).unwrap().0, Height(1));
    let report = block_on(fx.manager.notify(tip, &[]));
    assert_eq!(report.header_notifications, 0);
    drain(&session);
    assert!(log.sent().is_empty(), "{:?}", log.sent());
    let next = fx.db.push_block(header(2, 0), vec![]);
    block_on(fx.manager.notify(next, &[]));
    drain(&session);
    assert_eq!(headers(&log), vec![Height(2)]);
}

#[test]
fn broadcast_dropped_at_any_await_counts_nothing_and_keeps_the_session_usable() {
    let raw = {
        // The second transaction of a real 9-transaction block.
        let block = common::load_vector(common::BLOCK_9).raw;
        let (_, txs) = indexer_sessions::tx::parse_block_transactions(&block).unwrap();
        let start = 81 + txs[0].size; // header, a 1-byte count, the coinbase
        block[start..start + txs[1].size].to_vec()
    };
    let drops = at_each_await(|k| {
        let fx = yielding_fixture(Config::default());
        let (session, _) = fx.connect("203.0.113.1:1");
        let completed = poll_until_pending(session.broadcast_transaction(&raw), k).is_some();
        let row = &fx.manager.sessions()[0];
        if completed {
            assert_eq!(row.counters.txs_sent, 1);
            return false;
        }
        assert_eq!(row.counters.txs_sent, 0, "drop point {k}");
        assert_eq!(row.in_flight, 0);
        fx.daemon.set_behaviour(HostBehaviour::Normal);
        block_on(session.broadcast_transaction(&raw)).unwrap();
        assert_eq!(fx.manager.sessions()[0].counters.txs_sent, 1);
        true
    });
    assert!(drops >= 1);
}

/// The admission tests, for the borrowing `admit()` and the owning
/// `admit_owned()` (whose permits are different types).
macro_rules! admission_cancel_tests {
    ($admit:ident, $waiting:ident, $run:ident) => {
        #[test]
        fn $waiting() {
            let fx = Fixture::new(Config {
                limits: Limits {
                    request_sleep: Duration::from_secs(1),
                    ..Limits::default()
                },
                ..Config::default()
            });
            let (session, _) = fx.connect("203.0.113.1:1");
            session.charge(Cost::constant(5495.0)); // fraction 0.5: target 5, sleep 0.5 s
            assert_eq!(session.throttle().target, 5);
            // Dropped while sleeping.
            for _ in 0..3 {
                assert!(poll_until_pending(session.$admit(), 1).is_none());
                assert_eq!(fx.manager.sessions()[0].in_flight, 0);
            }
            // Dropped while waiting for a slot: hold all five.
            let mut held = Vec::new();
            for _ in 0..5 {
                let mut admit = Box::pin(session.$admit());
                assert!(common::poll_once(&mut admit).is_none());
                fx.timer.advance(Duration::from_millis(500));
                held.push(common::poll_once(&mut admit).unwrap().unwrap());
            }
            assert!(poll_until_pending(session.$admit(), 1).is_none());
            assert_eq!(fx.manager.sessions()[0].in_flight, 5);
            held.pop();
            let mut admit = Box::pin(session.$admit());
            assert!(common::poll_once(&mut admit).is_none());
            fx.timer.advance(Duration::from_millis(500));
            assert!(
                common::poll_once(&mut admit).unwrap().is_ok(),
                "the freed slot is taken"
            );
        }

        #[test]
        fn $run() {
            let fx = Fixture::new(Config::default());
            let (session, _) = fx.connect("203.0.113.1:1");
            let before = session.cost().own;
            let mut permit = block_on(session.$admit()).unwrap();
            permit.charge(Cost::constant(7.0));
            assert!(poll_until_pending(permit.run(futures::future::pending::<()>()), 1).is_none());
            assert_eq!(
                fx.manager.sessions()[0].in_flight,
                1,
                "the permit still holds it"
            );
            drop(permit);
            assert_eq!(fx.manager.sessions()[0].in_flight, 0);
            assert_eq!(session.cost().own, before + 7.0);
            // The handler future was dropped; admission goes on.
            assert!(block_on(session.$admit()).is_ok());
        }
    };
}

admission_cancel_tests!(
    admit,
    admit_dropped_while_waiting_or_sleeping_leaves_no_slot,
    permit_run_dropped_mid_handler_releases_the_slot_and_charges_once
);
admission_cancel_tests!(
    admit_owned,
    admit_owned_dropped_while_waiting_or_sleeping_leaves_no_slot,
    owned_permit_run_dropped_mid_handler_releases_the_slot_and_charges_once
);

#[test]
fn a_tip_change_whose_header_cannot_be_read_is_sent_by_the_next_notify() {
    let fx = Fixture::new(Config::default());
    fx.db.push_block(header(0, 0), vec![]);
    block_on(fx.manager.notify(fx.db.current_tip(), &[]));
    let (session, log) = fx.connect("203.0.113.1:1");
    block_on(session.subscribe_headers()).unwrap();
    let tip = fx.db.push_block(header(1, 0), vec![]);
    fx.db.set_behaviour(HostBehaviour::Failing);
    let report = block_on(fx.manager.notify(tip, &[]));
    assert!(report.failures >= 1);
    fx.db.set_behaviour(HostBehaviour::Normal);
    block_on(fx.manager.notify(tip, &[]));
    drain(&session);
    assert_eq!(headers(&log), vec![Height(1)]);
}

#[test]
fn a_status_that_cannot_be_computed_is_retried_by_the_next_notify() {
    let fx = Fixture::new(Config::default());
    fx.db.push_block(header(0, 0), vec![]);
    block_on(fx.manager.notify(fx.db.current_tip(), &[]));
    let (session, log) = fx.connect("203.0.113.1:1");
    block_on(session.subscribe(&alias(1))).unwrap();
    let tip = confirm_script_1(&fx, 0);
    fx.mempool.set_behaviour(HostBehaviour::Failing);
    let report = block_on(fx.manager.notify(tip, &[hashx(1)]));
    assert_eq!(report.failures, 1);
    fx.mempool.set_behaviour(HostBehaviour::Normal);
    // The next event touches something else; the failed script is retried.
    let _: Tip = fx.db.current_tip();
    block_on(fx.manager.notify(tip, &[hashx(2)]));
    drain(&session);
    assert_eq!(statuses(&log).len(), 1);
}

/// Every read-only request dropped at each await point: the session keeps
/// no slot, and the same request then answers as if nothing happened.
#[test]
fn read_only_requests_dropped_at_any_await_change_nothing() {
    type Request = fn(&SessionHandle<MemoryHost>) -> futures::future::BoxFuture<'_, String>;
    let requests: [(&str, Request); 10] = [
        ("history", |s| {
            Box::pin(async move { format!("{:?}", s.history(&alias(1)).await) })
        }),
        ("mempool", |s| {
            Box::pin(async move { format!("{:?}", s.mempool(&alias(1)).await) })
        }),
        ("block_header", |s| {
            Box::pin(async move { format!("{:?}", s.block_header(Height(1), 2).await) })
        }),
        ("block_headers", |s| {
            Box::pin(async move { format!("{:?}", s.block_headers(Height(0), 3, 2).await) })
        }),
        ("merkle_branch", |s| {
            Box::pin(async move { format!("{:?}", s.merkle_branch(TxHash([9; 32]), Height(1)).await) })
        }),
        ("id_from_pos", |s| {
            Box::pin(async move { format!("{:?}", s.id_from_pos(Height(1), 1, true).await) })
        }),
        ("estimate_fee", |s| {
            Box::pin(async move { format!("{:?}", s.estimate_fee(6, None).await) })
        }),
        ("relay_fee", |s| {
            Box::pin(async move { format!("{:?}", s.relay_fee().await) })
        }),
        ("fee_histogram", |s| {
            Box::pin(async move { format!("{:?}", s.fee_histogram().await) })
        }),
        ("transaction_get", |s| {
            Box::pin(async move { format!("{:?}", s.transaction_get(TxHash([9; 32])).await) })
        }),
    ];
    for (name, request) in requests {
        let setup = || {
            let fx = Fixture::new(Config::default());
            fx.db.push_block(header(0, 0), vec![TxHash([1; 32])]);
            let txids = vec![TxHash([8; 32]), TxHash([9; 32]), TxHash([10; 32])];
            fx.db.push_block(header(1, 0), txids);
            fx.db.push_block(header(2, 0), vec![TxHash([2; 32])]);
            fx.db.add_history(
                hashx(1),
                HistoryEntry {
                    txid: TxHash([9; 32]),
                    height: Height(1),
                },
            );
            fx.daemon.set_fee(6, 0.0002);
            fx.daemon.add_transaction(TxHash([9; 32]), vec![1, 2, 3]);
            block_on(fx.manager.notify(fx.db.current_tip(), &[]));
            fx
        };
        let expected = {
            let fx = setup();
            let (session, _) = fx.connect("203.0.113.1:1");
            block_on(request(&session))
        };
        assert!(!expected.starts_with("Err"), "{name}: {expected}");
        let drops = at_each_await(|k| {
            let fx = setup();
            fx.db.set_behaviour(HostBehaviour::Yielding);
            fx.mempool.set_behaviour(HostBehaviour::Yielding);
            fx.daemon.set_behaviour(HostBehaviour::Yielding);
            let (session, _) = fx.connect("203.0.113.1:1");
            let mut permit = block_on(session.admit()).unwrap();
            let completed = poll_until_pending(permit.run(request(&session)), k).is_some();
            drop(permit);
            assert_eq!(fx.manager.sessions()[0].in_flight, 0, "{name} at {k}");
            fx.db.set_behaviour(HostBehaviour::Normal);
            fx.mempool.set_behaviour(HostBehaviour::Normal);
            fx.daemon.set_behaviour(HostBehaviour::Normal);
            assert_eq!(
                block_on(request(&session)),
                expected,
                "{name} after a drop at {k}"
            );
            !completed
        });
        assert!(drops >= 1, "{name} has an await point");
    }
}

#[test]
fn close_and_shutdown_dropped_after_their_first_poll_have_ended_the_sessions() {
    let fx = Fixture::new(Config::default());
    let (first, _) = fx.connect("203.0.113.1:1");
    let (_second, _) = fx.connect("203.0.113.2:1");
    let close = first.close(indexer_sessions::DisconnectReason::Admin);
    let _ = poll_until_pending(close, 1);
    assert!(first.is_closed());
    assert_eq!(fx.manager.session_count(), 1);
    let _ = poll_until_pending(fx.manager.shutdown(), 1);
    assert_eq!(fx.manager.session_count(), 0);
    assert!(fx.manager.is_shutting_down());
}

// ---- Outpoints and scriptPubKey subscriptions (protocol 1.7) ----

fn outpoint_1() -> OutPoint {
    OutPoint {
        txid: TxHash([7; 32]),
        vout: 1,
    }
}

/// Makes output 1 of transaction `7…7` confirmed at height 0, unspent.
fn fund_outpoint_1(fx: &Fixture) {
    fx.db.set_outpoint(
        outpoint_1(),
        Some(ConfirmedOutpoint {
            height: Height(0),
            spender: None,
        }),
    );
}

/// A mempool transaction spends output 1 of `7…7`.
fn spend_outpoint_1_in_mempool(fx: &Fixture) {
    fx.mempool.set_outpoint(
        outpoint_1(),
        MempoolOutpoint {
            funder: None,
            spender: Some(MempoolSpender {
                txid: TxHash([8; 32]),
                has_unconfirmed_inputs: false,
            }),
        },
    );
}

fn outpoint_statuses(log: &TransportLog) -> Vec<OutpointStatus> {
    log.sent_extended()
        .into_iter()
        .filter_map(|n| match n {
            ExtendedNotification::OutpointStatus { status, .. } => Some(status),
            _ => None,
        })
        .collect()
}

#[test]
fn subscribe_outpoint_dropped_at_any_await_leaves_no_subscription() {
    let tx = outpoint_1().txid.to_hex();
    let drops = at_each_await(|k| {
        let fx = yielding_fixture(Config::default());
        fund_outpoint_1(&fx);
        block_on(fx.manager.notify(fx.db.current_tip(), &[]));
        let (session, log) = fx.connect("203.0.113.1:1");
        let completed = poll_until_pending(session.subscribe_outpoint(&tx, 1, Some("51")), k).is_some();
        let info = fx.manager.info();
        if completed {
            assert_eq!((info.subs, info.distinct_outpoint_subs), (1, 1));
            assert_eq!(session.subscription_count(), 1);
            return false;
        }
        assert_eq!((info.subs, info.distinct_outpoint_subs), (0, 0), "drop point {k}");
        assert_eq!(session.subscription_count(), 0);
        // A change to the outpoint is not sent to the session.
        spend_outpoint_1_in_mempool(&fx);
        let mut changes = Changes::new();
        changes.add_outpoint(outpoint_1());
        block_on(fx.manager.notify(fx.db.current_tip(), &changes));
        drain(&session);
        assert!(log.sent_extended().is_empty(), "drop point {k}");
        true
    });
    assert!(drops >= 2, "subscribe_outpoint has await points ({drops})");
}

#[test]
fn outpoint_status_dropped_at_any_await_changes_nothing_and_charges_at_most_once() {
    let tx = outpoint_1().txid.to_hex();
    let drops = at_each_await(|k| {
        let fx = yielding_fixture(Config::default());
        fund_outpoint_1(&fx);
        let (session, _log) = fx.connect("203.0.113.1:1");
        let before = session.cost().own;
        let completed = poll_until_pending(session.outpoint_status(&tx, 1, None), k);
        let charged = session.cost().own - before;
        assert_eq!(fx.manager.info().subs, 0);
        if let Some(status) = completed {
            assert_eq!(status.unwrap().funder_height, Some(0));
            // 0.1, a miss (existence and spender: 2), the mempool (0.1).
            assert!((charged - 2.2).abs() < 1e-9, "charged {charged}");
            return false;
        }
        assert_eq!(charged, 0.0, "drop point {k}: nothing charged before the answer");
        // A later request is served (the cache holds nothing half-loaded).
        fx.db.set_behaviour(HostBehaviour::Normal);
        fx.mempool.set_behaviour(HostBehaviour::Normal);
        let status = block_on(session.outpoint_status(&tx, 1, None)).unwrap();
        assert_eq!(status.funder_height, Some(0), "drop point {k}");
        true
    });
    assert!(drops >= 2, "outpoint_status has await points ({drops})");
}

#[test]
fn subscribe_scriptpubkey_dropped_at_any_await_leaves_no_subscription() {
    let script = "0014".to_owned() + &"ab".repeat(20);
    let hashx = HashX::from_scripthash_hex(&scripthash_of_scriptpubkey(&script).unwrap()).unwrap();
    let drops = at_each_await(|k| {
        let fx = yielding_fixture(Config::default());
        block_on(fx.manager.notify(fx.db.current_tip(), &[]));
        let (session, log) = fx.connect("203.0.113.1:1");
        let completed = poll_until_pending(session.subscribe_scriptpubkey(&script), k).is_some();
        let info = fx.manager.info();
        if completed {
            assert_eq!((info.subs, info.distinct_subs), (1, 1));
            return false;
        }
        assert_eq!((info.subs, info.distinct_subs), (0, 0), "drop point {k}");
        fx.db.add_history(
            hashx,
            HistoryEntry {
                txid: TxHash([9; 32]),
                height: Height(1),
            },
        );
        let tip = fx.db.push_block(header(1, 1), vec![TxHash([9; 32])]);
        block_on(fx.manager.notify(tip, &[hashx]));
        drain(&session);
        assert!(log.sent_extended().is_empty(), "drop point {k}");
        true
    });
    assert!(drops >= 2, "subscribe_scriptpubkey has await points ({drops})");
}

#[test]
fn notify_with_outpoints_dropped_at_any_await_leaves_its_event_to_the_next_call() {
    let tx = outpoint_1().txid.to_hex();
    let drops = at_each_await(|k| {
        let fx = yielding_fixture(Config::default());
        fund_outpoint_1(&fx);
        block_on(fx.manager.notify(fx.db.current_tip(), &[]));
        let (session, log) = fx.connect("203.0.113.1:1");
        fx.db.set_behaviour(HostBehaviour::Normal);
        fx.mempool.set_behaviour(HostBehaviour::Normal);
        block_on(session.subscribe_outpoint(&tx, 1, None)).unwrap();
        fx.db.set_behaviour(HostBehaviour::Yielding);
        fx.mempool.set_behaviour(HostBehaviour::Yielding);
        spend_outpoint_1_in_mempool(&fx);
        let mut changes = Changes::new();
        changes.add_outpoint(outpoint_1());
        let tip = fx.db.current_tip();
        let completed = poll_until_pending(fx.manager.notify(tip, &changes), k).is_some();
        // The host calls notify again with nothing new.
        block_on(fx.manager.notify(tip, &[]));
        drain(&session);
        let sent = outpoint_statuses(&log);
        assert_eq!(sent.len(), 1, "drop point {k}: the changed status, once");
        assert_eq!(sent[0].spender.map(|s| s.height), Some(0));
        block_on(fx.manager.notify(tip, &changes));
        drain(&session);
        assert_eq!(outpoint_statuses(&log).len(), 1, "drop point {k}: nothing twice");
        !completed
    });
    assert!(drops >= 2, "the pass has outpoint await points ({drops})");
}
