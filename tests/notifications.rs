//! Subscriptions, notification fan-out and delivery through the public API.

mod common;

use common::Fixture;
use futures::FutureExt;
use futures::executor::block_on;
use indexer_sessions::Cost;
use indexer_sessions::status::{electrum_status, status_hex};
use indexer_sessions::testing::TransportLog;
use indexer_sessions::{
    Config, DisconnectReason, Error, HashX, Height, HistoryEntry, Limits, MempoolEntry, Notification,
    SubscriptionScope, Tip, TxHash,
};
use proptest::prelude::*;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

fn alias(n: u8) -> String {
    format!("{:02x}", n.wrapping_mul(37).wrapping_add(1)).repeat(32)
}

fn hashx(n: u8) -> HashX {
    HashX::from_scripthash_hex(&alias(n)).unwrap()
}

fn txid(n: u32) -> TxHash {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    bytes[31] = 0xee;
    TxHash(bytes)
}

/// An 80-byte header unique to `height` and `salt`.
fn header(height: u32, salt: u8) -> Vec<u8> {
    let mut header = vec![salt; 80];
    header[..4].copy_from_slice(&height.to_le_bytes());
    header
}

fn new_block(fx: &Fixture) -> Tip {
    let height = fx.db.current_tip().height.0 + 1;
    fx.db.push_block(header(height, 0), vec![])
}

fn true_status(fx: &Fixture, n: u8) -> Option<String> {
    let history = block_on(async {
        use indexer_sessions::Db;
        fx.db.history(hashx(n), usize::MAX).await.unwrap()
    });
    let mut mempool = block_on(async {
        use indexer_sessions::Mempool;
        fx.mempool.entries(hashx(n)).await.unwrap()
    });
    mempool.retain(|m| !history.iter().any(|h| h.txid == m.txid));
    electrum_status(&history, &mempool).map(|s| status_hex(&s))
}

type Delivery = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Polls a delivery future until it waits; returns what the client received.
fn drain(deliver: &mut Delivery, log: &TransportLog) -> Vec<Notification> {
    assert!(
        deliver.as_mut().now_or_never().is_none(),
        "delivery runs until the session ends"
    );
    log.take_sent()
}

fn statuses(notifications: &[Notification]) -> Vec<(String, Option<String>)> {
    notifications
        .iter()
        .filter_map(|n| match n {
            Notification::ScriptHashStatus { alias, status } => Some((alias.clone(), status.clone())),
            Notification::Header { .. } => None,
        })
        .collect()
}

fn start(fx: &Fixture) -> Tip {
    let tip = fx.db.push_block(header(0, 0), vec![]);
    block_on(fx.manager.notify(tip, &[]));
    tip
}

#[test]
fn subscribe_returns_the_status_and_notify_sends_changes_once_per_subscriber() {
    let fx = Fixture::new(Config::default());
    start(&fx);
    let (a, a_log) = fx.connect("203.0.113.1:1");
    let (b, b_log) = fx.connect("198.51.100.1:1");
    let mut a_deliver: Delivery = Box::pin(a.deliver());
    let mut b_deliver: Delivery = Box::pin(b.deliver());
    assert_eq!(block_on(a.subscribe(&alias(1))).unwrap(), None);
    assert_eq!(block_on(b.subscribe(&alias(1))).unwrap(), None);
    assert_eq!(block_on(b.subscribe(&alias(2))).unwrap(), None);

    fx.db.add_history(
        hashx(1),
        HistoryEntry {
            txid: txid(1),
            height: Height(1),
        },
    );
    let tip = new_block(&fx);
    let touched = [hashx(1), hashx(3)];
    let report = block_on(fx.manager.notify(tip, &touched));
    assert_eq!(
        report.statuses_computed, 1,
        "only touched ∩ subscribed is computed"
    );
    assert_eq!(report.statuses_changed, 1);
    assert_eq!(report.status_notifications, 2);
    let expected = vec![(alias(1), true_status(&fx, 1))];
    assert!(expected[0].1.is_some());
    assert_eq!(statuses(&drain(&mut a_deliver, &a_log)), expected);
    assert_eq!(statuses(&drain(&mut b_deliver, &b_log)), expected);

    // The same event again changes nothing and sends nothing.
    let report = block_on(fx.manager.notify(tip, &touched));
    assert_eq!(report.status_notifications, 0);
    assert!(drain(&mut a_deliver, &a_log).is_empty());

    // Unsubscribed sessions are not told.
    assert!(a.unsubscribe(&alias(1)).unwrap());
    assert!(!a.unsubscribe(&alias(1)).unwrap());
    fx.db.add_history(
        hashx(1),
        HistoryEntry {
            txid: txid(2),
            height: Height(2),
        },
    );
    let tip = new_block(&fx);
    block_on(fx.manager.notify(tip, &touched));
    assert!(drain(&mut a_deliver, &a_log).is_empty());
    assert_eq!(
        statuses(&drain(&mut b_deliver, &b_log)),
        vec![(alias(1), true_status(&fx, 1))]
    );
}

#[test]
fn header_subscribers_get_the_newest_header_once_per_tip_change() {
    let fx = Fixture::new(Config::default());
    start(&fx);
    let (a, log) = fx.connect("203.0.113.1:1");
    let mut deliver: Delivery = Box::pin(a.deliver());
    let (height, raw) = block_on(a.subscribe_headers()).unwrap();
    assert_eq!((height, raw), (Height(0), header(0, 0)));
    for _ in 0..3 {
        let tip = new_block(&fx);
        block_on(fx.manager.notify(tip, &[]));
    }
    // Not drained in between: coalesced into the newest header.
    let sent = drain(&mut deliver, &log);
    assert_eq!(
        sent,
        vec![Notification::Header {
            height: Height(3),
            header: header(3, 0)
        }]
    );
    // A mempool event (same tip) sends no header.
    block_on(fx.manager.notify(fx.db.current_tip(), &[]));
    assert!(drain(&mut deliver, &log).is_empty());
}

#[test]
fn a_confirming_transaction_produces_exactly_one_status_change_per_subscriber() {
    let fx = Fixture::new(Config::default());
    let tip = start(&fx);
    let sessions: Vec<_> = (0..3).map(|i| fx.connect(&format!("203.0.{i}.1:1"))).collect();
    let mut deliveries: Vec<Delivery> = sessions
        .iter()
        .map(|(s, _)| Box::pin(s.deliver()) as Delivery)
        .collect();
    for (session, _) in &sessions {
        block_on(session.subscribe(&alias(7))).unwrap();
    }
    // The transaction enters the mempool: one change.
    let entry = MempoolEntry {
        txid: txid(9),
        fee: 500,
        has_unconfirmed_inputs: false,
    };
    fx.mempool.add(hashx(7), entry);
    block_on(fx.manager.notify(tip, &[hashx(7)]));
    let unconfirmed = true_status(&fx, 7);
    for ((_, log), deliver) in sessions.iter().zip(&mut deliveries) {
        assert_eq!(
            statuses(&drain(deliver, log)),
            vec![(alias(7), unconfirmed.clone())]
        );
    }
    // It confirms. The block is notified while the mempool still lists it,
    // then the mempool refresh is notified: one change per subscriber.
    fx.db.add_history(
        hashx(7),
        HistoryEntry {
            txid: txid(9),
            height: Height(1),
        },
    );
    let tip = new_block(&fx);
    block_on(fx.manager.notify(tip, &[hashx(7)]));
    fx.mempool.remove(txid(9));
    block_on(fx.manager.notify(tip, &[hashx(7)]));
    let confirmed = true_status(&fx, 7);
    assert_ne!(confirmed, unconfirmed);
    for ((_, log), deliver) in sessions.iter().zip(&mut deliveries) {
        assert_eq!(
            statuses(&drain(deliver, log)),
            vec![(alias(7), confirmed.clone())]
        );
    }
}

#[test]
fn a_client_that_never_reads_holds_at_most_one_status_per_subscription_plus_a_header() {
    let fx = Fixture::new(Config::default());
    start(&fx);
    let (stuck, stuck_log) = fx.connect("203.0.113.1:1");
    let (reader, reader_log) = fx.connect("198.51.100.1:1");
    stuck_log.set_stalled(true);
    let mut stuck_deliver: Delivery = Box::pin(stuck.deliver());
    let mut reader_deliver: Delivery = Box::pin(reader.deliver());
    block_on(stuck.subscribe_headers()).unwrap();
    for n in 0..10 {
        block_on(stuck.subscribe(&alias(n))).unwrap();
        block_on(reader.subscribe(&alias(n))).unwrap();
    }
    let mut received = 0;
    let mut max_pending = 0;
    for event in 0..1000u32 {
        let n = (event % 10) as u8;
        fx.db.add_history(
            hashx(n),
            HistoryEntry {
                txid: txid(event),
                height: Height(event + 1),
            },
        );
        let tip = new_block(&fx);
        block_on(fx.manager.notify(tip, &[hashx(n)]));
        // The stalled client's first send is in progress; the rest waits.
        assert!(stuck_deliver.as_mut().now_or_never().is_none());
        max_pending = max_pending.max(stuck.pending_notifications());
        received += statuses(&drain(&mut reader_deliver, &reader_log)).len();
        fx.timer.advance(Duration::from_millis(10));
    }
    assert!(max_pending <= 11, "pending {max_pending}");
    assert_eq!(received, 1000, "the reading client got every change");
    assert_eq!(stuck_log.closed(), None, "10 s stalled: not yet");
    fx.timer.advance(Duration::from_secs(10));
    assert!(
        stuck_deliver.as_mut().now_or_never().is_some(),
        "delivery ends with the session"
    );
    assert_eq!(stuck_log.closed(), Some(DisconnectReason::SendTimeout));
    assert!(stuck.is_closed());
    // The reader keeps receiving.
    fx.db.add_history(
        hashx(0),
        HistoryEntry {
            txid: txid(5000),
            height: Height(5000),
        },
    );
    let tip = new_block(&fx);
    block_on(fx.manager.notify(tip, &[hashx(0)]));
    assert_eq!(statuses(&drain(&mut reader_deliver, &reader_log)).len(), 1);
}

#[test]
fn a_host_that_never_runs_delivery_is_caught_by_the_sweep() {
    let fx = Fixture::new(Config::default());
    start(&fx);
    let (session, log) = fx.connect("203.0.113.1:1");
    block_on(session.subscribe_headers()).unwrap();
    let tip = new_block(&fx);
    block_on(fx.manager.notify(tip, &[]));
    session.record_received(1);
    fx.timer.advance(Duration::from_secs(19));
    assert_eq!(block_on(fx.manager.sweep()), 0);
    fx.timer.advance(Duration::from_secs(1));
    assert_eq!(block_on(fx.manager.sweep()), 1);
    assert_eq!(log.closed(), Some(DisconnectReason::SendTimeout));
}

#[test]
fn subscription_limits_refuse_without_disconnecting() {
    let fx = Fixture::new(Config {
        limits: Limits {
            max_subs_per_session: Some(3),
            max_subs_per_group: Some(5),
            max_subs: Some(7),
            ..Limits::default()
        },
        ..Config::default()
    });
    start(&fx);
    let (a, _) = fx.connect("203.0.113.1:1");
    let (b, _) = fx.connect("203.0.113.2:1");
    let (c, _) = fx.connect("198.51.100.1:1");
    for n in 0..3 {
        block_on(a.subscribe(&alias(n))).unwrap();
    }
    let refused = block_on(a.subscribe(&alias(3))).unwrap_err();
    assert!(matches!(
        refused,
        Error::SubscriptionLimit {
            scope: SubscriptionScope::Session,
            max: 3
        }
    ));
    assert!(refused.to_string().contains("session"), "{refused}");
    assert!(!a.is_closed());
    block_on(a.subscribe(&alias(0))).expect("re-subscribing is not a new subscription");
    block_on(b.subscribe(&alias(10))).unwrap();
    block_on(b.subscribe(&alias(11))).unwrap();
    let refused = block_on(b.subscribe(&alias(12))).unwrap_err();
    assert!(matches!(
        refused,
        Error::SubscriptionLimit {
            scope: SubscriptionScope::Group,
            max: 5
        }
    ));
    block_on(c.subscribe(&alias(20))).unwrap();
    block_on(c.subscribe(&alias(21))).unwrap();
    let refused = block_on(c.subscribe(&alias(22))).unwrap_err();
    assert!(matches!(
        refused,
        Error::SubscriptionLimit {
            scope: SubscriptionScope::Global,
            max: 7
        }
    ));
    assert_eq!(fx.manager.info().subs, 7);
    // Room again after an unsubscribe.
    assert!(c.unsubscribe(&alias(20)).unwrap());
    block_on(c.subscribe(&alias(22))).unwrap();
    assert!(matches!(
        block_on(c.subscribe("not hex")),
        Err(Error::BadRequest(_))
    ));
}

#[test]
fn subscriptions_slow_the_cost_decay_and_end_with_the_session() {
    let fx = Fixture::new(Config::default());
    start(&fx);
    let (a, _) = fx.connect("203.0.113.1:1");
    let (b, _) = fx.connect("203.0.113.2:1");
    for n in 0..200 {
        block_on(a.subscribe(&alias(n))).unwrap();
    }
    a.charge(Cost::constant(1000.0));
    b.charge(Cost::new(a.cost().own - b.cost().own).unwrap()); // equal costs
    let (a_before, b_before) = (a.cost().own, b.cost().own);
    fx.timer.advance(Duration::from_secs(100));
    fx.manager.recalculate();
    let a_decay = a_before - a.cost().own;
    let b_decay = b_before - b.cost().own;
    // 10000 / (10000 + 5 × 200) per second against 1 per second.
    assert!((a_decay - 100.0 * 10000.0 / 11000.0).abs() < 1e-6, "{a_decay}");
    assert!((b_decay - 100.0).abs() < 1e-6, "{b_decay}");
    assert_eq!(fx.manager.info().distinct_subs, 200);
    drop(a);
    let info = fx.manager.info();
    assert_eq!((info.subs, info.distinct_subs), (0, 0));
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe(usize, u8),
    Unsubscribe(usize, u8),
    Confirm(u8),
    AddMempool(u8, bool),
    EvictMempool(u8),
    Block,
    MempoolRefresh,
    Drain(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..4u8).prop_map(|(s, h)| Op::Subscribe(s, h)),
        (0..3usize, 0..4u8).prop_map(|(s, h)| Op::Unsubscribe(s, h)),
        (0..4u8).prop_map(Op::Confirm),
        (0..4u8, any::<bool>()).prop_map(|(h, u)| Op::AddMempool(h, u)),
        (0..4u8).prop_map(Op::EvictMempool),
        Just(Op::Block),
        Just(Op::MempoolRefresh),
        (0..3usize).prop_map(Op::Drain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After random subscribe / unsubscribe / history change / notify /
    /// drain sequences, every session's last known status of each
    /// subscription equals the true status, and no session ever received
    /// the status it already had.
    #[test]
    fn delivered_statuses_converge_to_the_truth_without_duplicates(ops in proptest::collection::vec(op(), 1..60)) {
        let fx = Fixture::new(Config::default());
        start(&fx);
        let sessions: Vec<_> = (0..3).map(|i| fx.connect(&format!("203.0.{i}.1:1"))).collect();
        let mut deliveries: Vec<Delivery> = sessions.iter().map(|(s, _)| Box::pin(s.deliver()) as Delivery).collect();
        let mut known: Vec<HashMap<String, Option<String>>> = vec![HashMap::new(); 3];
        let mut touched = std::collections::HashSet::new();
        let mut mempool: Vec<(u8, TxHash)> = Vec::new();
        let mut next_tx = 0u32;
        let receive = |s: usize, deliveries: &mut Vec<Delivery>, known: &mut Vec<HashMap<String, Option<String>>>| -> Result<(), TestCaseError> {
            for (alias, status) in statuses(&drain(&mut deliveries[s], &sessions[s].1)) {
                let last = known[s].get(&alias);
                prop_assert!(last.is_some(), "status for a script not subscribed");
                prop_assert_ne!(last, Some(&status), "duplicate status");
                known[s].insert(alias, status);
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Subscribe(s, h) => {
                    receive(s, &mut deliveries, &mut known)?;
                    let status = block_on(sessions[s].0.subscribe(&alias(h))).unwrap();
                    known[s].insert(alias(h), status);
                }
                Op::Unsubscribe(s, h) => {
                    receive(s, &mut deliveries, &mut known)?;
                    let was = known[s].remove(&alias(h)).is_some();
                    prop_assert_eq!(sessions[s].0.unsubscribe(&alias(h)).unwrap(), was);
                }
                Op::Confirm(h) => {
                    // A mempool transaction of h confirms, or a new one arrives in a block.
                    let height = fx.db.current_tip().height.0 + 1;
                    let tx = match mempool.iter().position(|(m, _)| *m == h) {
                        Some(i) => mempool.remove(i).1,
                        None => { next_tx += 1; txid(next_tx) }
                    };
                    fx.db.add_history(hashx(h), HistoryEntry { txid: tx, height: Height(height) });
                    touched.insert(hashx(h));
                }
                Op::AddMempool(h, unconfirmed_inputs) => {
                    next_tx += 1;
                    fx.mempool.add(hashx(h), MempoolEntry { txid: txid(next_tx), fee: 1, has_unconfirmed_inputs: unconfirmed_inputs });
                    mempool.push((h, txid(next_tx)));
                    touched.insert(hashx(h));
                }
                Op::EvictMempool(h) => {
                    // Dropped from the mempool unconfirmed: the status reverts.
                    if let Some(i) = mempool.iter().position(|(m, _)| *m == h) {
                        fx.mempool.remove(mempool.remove(i).1);
                        touched.insert(hashx(h));
                    }
                }
                Op::Block => {
                    let tip = new_block(&fx);
                    block_on(fx.manager.notify(tip, &std::mem::take(&mut touched)));
                    // The mempool drops what confirmed (it lags the block).
                    for h in 0..4u8 {
                        let history = block_on(async { use indexer_sessions::Db; fx.db.history(hashx(h), usize::MAX).await.unwrap() });
                        for entry in history { fx.mempool.remove(entry.txid); }
                    }
                }
                Op::MempoolRefresh => {
                    block_on(fx.manager.notify(fx.db.current_tip(), &std::mem::take(&mut touched)));
                }
                Op::Drain(s) => receive(s, &mut deliveries, &mut known)?,
            }
        }
        let tip = new_block(&fx);
        block_on(fx.manager.notify(tip, &std::mem::take(&mut touched)));
        for s in 0..3 {
            receive(s, &mut deliveries, &mut known)?;
            for (alias_text, status) in &known[s] {
                let n = (0..4u8).find(|n| alias(*n) == *alias_text).unwrap();
                prop_assert_eq!(status, &true_status(&fx, n), "session {} script {}", s, n);
            }
        }
    }
}

/// An index that answers a batch of scripts per call, counting calls; it
/// can fail one script, or answer with the wrong number of results.
#[derive(Clone, Default)]
struct BatchIndex {
    inner: indexer_sessions::testing::MemoryDb,
    calls: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    failing: std::sync::Arc<std::sync::Mutex<Option<HashX>>>,
    short: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl indexer_sessions::Db for BatchIndex {
    async fn tip(&self) -> Result<Tip, indexer_sessions::HostError> {
        self.inner.tip().await
    }
    async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, indexer_sessions::HostError> {
        self.inner.header(height).await
    }
    async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, indexer_sessions::HostError> {
        self.inner.headers(start, count).await
    }
    async fn history(
        &self,
        hashx: HashX,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, indexer_sessions::HostError> {
        self.inner.history(hashx, limit).await
    }
    async fn block_txids(&self, height: Height) -> Result<Option<Vec<TxHash>>, indexer_sessions::HostError> {
        self.inner.block_txids(height).await
    }
    async fn histories(
        &self,
        hashxs: &[HashX],
        limit: usize,
        answers: &mut indexer_sessions::Answers<HistoryEntry>,
    ) -> Result<(), indexer_sessions::HostError> {
        self.calls.lock().unwrap().push(hashxs.len());
        let failing = *self.failing.lock().unwrap();
        // A short answer leaves the last script unanswered.
        let answered = if self.short.load(std::sync::atomic::Ordering::SeqCst) {
            hashxs.len().saturating_sub(1)
        } else {
            hashxs.len()
        };
        for hashx in &hashxs[..answered] {
            if Some(*hashx) == failing {
                answers.fail("this script's index page is unreadable".into());
            } else {
                answers.push(self.inner.history(*hashx, limit).await);
            }
        }
        Ok(())
    }
}

#[test]
fn a_pass_reads_histories_in_batches_and_a_failing_script_fails_alone() {
    use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryMempool, MemoryTransport};
    let index = BatchIndex::default();
    let manager = indexer_sessions::SessionManager::builder(Config::default())
        .timer(ManualTimer::new())
        .db(index.clone())
        .daemon(MemoryDaemon::new())
        .mempool(MemoryMempool::new())
        .build()
        .unwrap();
    let tip = index.inner.push_block(header(0, 0), vec![]);
    block_on(manager.notify(tip, &[]));
    // 600 scripts, one session each (spread over /24s), all touched by one block.
    let script = |n: u32| {
        let mut bytes = [0x33u8; 32];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        bytes
    };
    let mut sessions = Vec::new();
    let mut touched = Vec::new();
    for n in 0..600u32 {
        let addr = format!("10.{}.{}.1:1", n / 256, n % 256).parse().unwrap();
        let session = manager.add_session(MemoryTransport::new(addr).0).unwrap();
        let mut alias_bytes = script(n);
        alias_bytes.reverse();
        block_on(session.subscribe(&indexer_sessions::encode_hex(&alias_bytes))).unwrap();
        sessions.push(session);
        touched.push(HashX::from_scripthash(&script(n)));
    }
    let confirm_all = |height: u32| {
        for (n, hashx) in touched.iter().enumerate() {
            index.inner.add_history(
                *hashx,
                HistoryEntry {
                    txid: txid(height * 1000 + n as u32),
                    height: Height(height),
                },
            );
        }
        index.inner.push_block(header(height, 0), vec![])
    };

    index.calls.lock().unwrap().clear();
    let report = block_on(manager.notify(confirm_all(1), &touched));
    assert_eq!(report.status_notifications, 600);
    assert_eq!(
        *index.calls.lock().unwrap(),
        vec![256, 256, 88],
        "three calls, not 600"
    );

    // One script's history fails: only it fails, and the next notify retries it.
    *index.failing.lock().unwrap() = Some(touched[7]);
    let report = block_on(manager.notify(confirm_all(2), &touched));
    assert_eq!((report.failures, report.status_notifications), (1, 599));
    *index.failing.lock().unwrap() = None;
    let report = block_on(manager.notify(index.inner.current_tip(), &[]));
    assert_eq!(
        (report.failures, report.status_notifications),
        (0, 1),
        "the failed script, retried"
    );

    // An index that answers with the wrong number of results fails its batch
    // with a host error, and nothing panics.
    index.short.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = block_on(manager.notify(confirm_all(3), &touched));
    assert_eq!(report.failures, 600);
    index.short.store(false, std::sync::atomic::Ordering::SeqCst);
    let report = block_on(manager.notify(index.inner.current_tip(), &[]));
    assert_eq!((report.failures, report.status_notifications), (0, 600));
}

#[test]
fn a_history_grown_past_the_limit_fails_its_script_alone_in_a_pass() {
    let config = Config {
        max_send: 100_000,
        ..Config::default()
    };
    let limit = config.max_history_len();
    let fx = Fixture::new(config);
    start(&fx);
    let (session, log) = fx.connect("203.0.113.1:1");
    let mut deliver: Delivery = Box::pin(session.deliver());
    for n in 1..=3 {
        assert_eq!(block_on(session.subscribe(&alias(n))).unwrap(), None);
    }
    // Script 2's history reaches the limit; 1 and 3 gain one entry each.
    let entry = |n: u32| HistoryEntry {
        txid: txid(n),
        height: Height(1),
    };
    fx.db.add_history(hashx(1), entry(1));
    fx.db
        .set_history(hashx(2), (0..limit as u32).map(|n| entry(10_000 + n)).collect());
    fx.db.add_history(hashx(3), entry(3));
    let report = block_on(fx.manager.notify(new_block(&fx), &[hashx(1), hashx(2), hashx(3)]));
    assert_eq!(
        (
            report.statuses_computed,
            report.failures,
            report.status_notifications
        ),
        (3, 1, 2)
    );
    // Sent in the order of the pass's scripts, which is not theirs.
    let mut sent = statuses(&drain(&mut deliver, &log));
    sent.sort();
    let mut expected = vec![(alias(1), true_status(&fx, 1)), (alias(3), true_status(&fx, 3))];
    expected.sort();
    assert_eq!(sent, expected);

    // Back under the limit (a reorg took entries away): the failed script
    // is retried by the next notify, whatever it touches.
    fx.db.set_history(hashx(2), vec![entry(2)]);
    let report = block_on(fx.manager.notify(fx.db.current_tip(), &[]));
    assert_eq!((report.failures, report.status_notifications), (0, 1));
    assert_eq!(
        statuses(&drain(&mut deliver, &log)),
        vec![(alias(2), true_status(&fx, 2))]
    );
}
