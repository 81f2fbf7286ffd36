//! The `metrics` feature: a scripted client connects, is served, throttled
//! and kicked with −101, another is refused, and a block is notified; a
//! recorder sees every counter, gauge and histogram move as it should.
//! One test in this binary: it installs the process-wide recorder.

mod common;

use common::Fixture;
use futures::FutureExt;
use futures::executor::block_on;
use indexer_sessions::Cost;
use indexer_sessions::testing::HostBehaviour;
use indexer_sessions::{
    Config, DisconnectReason, Error, HashX, Height, HistoryEntry, Limits, Refusal, TxHash, cost,
};
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::collections::BTreeMap;
use std::time::Duration;

/// `name{label="value",…}`.
type Series = String;

/// What the recorder saw, accumulated over snapshots (a snapshot resets
/// the recorder's counters and drains its histograms).
struct Scrape {
    snapshotter: Snapshotter,
    counters: BTreeMap<Series, u64>,
    gauges: BTreeMap<Series, f64>,
    histograms: BTreeMap<Series, Vec<f64>>,
    described: BTreeMap<String, bool>,
}

impl Scrape {
    fn new(snapshotter: Snapshotter) -> Self {
        Scrape {
            snapshotter,
            counters: BTreeMap::new(),
            gauges: BTreeMap::new(),
            histograms: BTreeMap::new(),
            described: BTreeMap::new(),
        }
    }

    /// Takes a snapshot; gauges hold only what was set since the last one.
    fn scrape(&mut self) {
        self.gauges.clear();
        for (key, unit, description, value) in self.snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<_> = key
                .labels()
                .map(|l| format!("{}={:?}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = key.name().to_string();
            let series = if labels.is_empty() {
                name.clone()
            } else {
                format!("{name}{{{}}}", labels.join(","))
            };
            self.described
                .insert(name, unit.is_some() && description.is_some());
            match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(n)) => {
                    *self.counters.entry(series).or_default() += n
                }
                (MetricKind::Gauge, DebugValue::Gauge(v)) => {
                    self.gauges.insert(series, v.into_inner());
                }
                (MetricKind::Histogram, DebugValue::Histogram(values)) => self
                    .histograms
                    .entry(series)
                    .or_default()
                    .extend(values.into_iter().map(|v| v.into_inner())),
                other => panic!("{series}: unexpected {other:?}"),
            }
        }
    }

    fn counter(&self, series: &str) -> u64 {
        self.counters.get(series).copied().unwrap_or(0)
    }

    fn gauge(&self, series: &str) -> f64 {
        *self
            .gauges
            .get(series)
            .unwrap_or_else(|| panic!("gauge {series} not set: {:?}", self.gauges))
    }

    fn histogram(&self, series: &str) -> &[f64] {
        self.histograms.get(series).map(Vec::as_slice).unwrap_or_default()
    }
}

fn header(height: u32) -> Vec<u8> {
    let mut header = vec![5; 80];
    header[..4].copy_from_slice(&height.to_le_bytes());
    header
}

fn script(n: u8) -> (String, HashX) {
    let alias = format!("{n:02x}").repeat(32);
    (alias.clone(), HashX::from_scripthash_hex(&alias).unwrap())
}

fn milli(cost: f64) -> u64 {
    (cost * 1000.0).round() as u64
}

#[test]
fn metrics_move_as_a_scripted_client_is_served_throttled_kicked_and_notified() {
    let recorder = DebuggingRecorder::new();
    let mut m = Scrape::new(recorder.snapshotter());
    recorder.install().expect("the only recorder of this test binary");
    indexer_sessions::describe_metrics();

    let config = Config {
        history_cache_bytes: 4096,
        ..Config::default()
    };
    let fx = Fixture::new(config);
    let unit = Limits::default().bandwidth_unit_cost;

    // Connect, and one request.
    let (client, _) = fx.connect("203.0.113.1:1000");
    m.scrape();
    assert_eq!(m.counter("indexer_sessions_sessions_opened_total"), 1);
    assert_eq!(m.gauge("indexer_sessions_sessions"), 1.0);
    client.record_received(100);
    block_on(async {
        let mut permit = client.admit().await.unwrap();
        permit.run(async {}).await.unwrap();
        permit.charge(cost::PING);
    });
    client.record_sent(50);
    m.scrape();
    assert_eq!(m.counter("indexer_sessions_requests_total"), 1);
    assert_eq!(m.counter("indexer_sessions_received_bytes_total"), 100);
    assert_eq!(m.counter("indexer_sessions_sent_bytes_total"), 50);
    assert_eq!(m.histogram("indexer_sessions_request_seconds"), [0.0]);
    assert_eq!(
        m.counter("indexer_sessions_cost_charged_milli_total"),
        milli(100.0 / unit) + milli(cost::PING.get()) + milli(50.0 / unit)
    );
    assert_eq!(m.counter("indexer_sessions_throttled_admissions_total"), 0);

    // Throttled past 5500: the next admission sleeps about 1.25 s.
    client.charge(Cost::constant(5495.0));
    let mut admit = Box::pin(client.admit());
    let mut slept = Duration::ZERO;
    let permit = loop {
        if let Some(result) = (&mut admit).now_or_never() {
            break result.unwrap();
        }
        fx.timer.advance(Duration::from_millis(10));
        slept += Duration::from_millis(10);
    };
    drop(permit);
    m.scrape();
    assert_eq!(m.counter("indexer_sessions_requests_total"), 2);
    assert_eq!(m.counter("indexer_sessions_throttled_admissions_total"), 1);
    let sleeps = m.histogram("indexer_sessions_throttle_sleep_seconds");
    assert_eq!(sleeps.len(), 1);
    assert!(
        sleeps[0] > (slept.as_secs_f64() - 0.010) && sleeps[0] <= slept.as_secs_f64(),
        "{sleeps:?} {slept:?}"
    );
    assert!(slept >= Duration::from_millis(1250), "{slept:?}");

    // At the hard limit: −101, and the host closes the session.
    client.charge(Cost::constant(5000.0));
    assert!(matches!(block_on(client.admit()), Err(Error::ExcessiveCost)));
    block_on(client.close(DisconnectReason::ExcessiveCost));
    m.scrape();
    assert_eq!(m.counter("indexer_sessions_errors_total{code=\"-101\"}"), 1);
    assert_eq!(
        m.counter("indexer_sessions_disconnects_total{reason=\"excessive_cost\"}"),
        1
    );
    assert_eq!(m.gauge("indexer_sessions_sessions"), 0.0);
    assert_eq!(
        m.counter("indexer_sessions_requests_total"),
        2,
        "−101 admits nothing"
    );

    // A parse error and a banned network refused.
    let (other, _) = fx.connect("198.51.100.1:1");
    other.record_parse_error();
    block_on(fx.manager.ban("198.51.100.0/24".parse().unwrap(), None)).unwrap();
    assert!(matches!(
        fx.try_connect("198.51.100.2:1"),
        Err(Refusal::Banned { .. })
    ));
    m.scrape();
    assert_eq!(m.counter("indexer_sessions_errors_total{code=\"-32700\"}"), 1);
    assert_eq!(
        m.counter("indexer_sessions_disconnects_total{reason=\"banned\"}"),
        1
    );
    assert_eq!(m.counter("indexer_sessions_refusals_total{reason=\"banned\"}"), 1);
    drop(other);

    // A subscriber: a history miss, then a hit; the gauges follow `info()`.
    fx.db.push_block(header(0), vec![]);
    let (watcher, log) = fx.connect("192.0.2.1:1");
    let (alias, hashx) = script(1);
    block_on(watcher.subscribe(&alias)).unwrap();
    block_on(watcher.subscribe(&alias)).unwrap();
    block_on(watcher.subscribe_headers()).unwrap();
    block_on(fx.manager.run_pending_cache_tasks());
    fx.manager.info();
    m.scrape();
    assert_eq!(
        m.counter("indexer_sessions_cache_misses_total{cache=\"history\"}"),
        1
    );
    assert_eq!(
        m.counter("indexer_sessions_cache_hits_total{cache=\"history\"}"),
        1
    );
    assert_eq!(m.gauge("indexer_sessions_sessions"), 1.0);
    assert_eq!(m.gauge("indexer_sessions_subscriptions"), 1.0);
    assert_eq!(m.gauge("indexer_sessions_subscribed_scripts"), 1.0);
    assert_eq!(m.gauge("indexer_sessions_header_subscribers"), 1.0);
    assert_eq!(m.gauge("indexer_sessions_queued_notifications"), 0.0);
    assert_eq!(
        m.gauge("indexer_sessions_groups"),
        3.0,
        "two groups with retained cost, one live"
    );
    assert_eq!(fx.manager.groups().len(), 3);
    assert!(m.gauge("indexer_sessions_cache_entries{cache=\"history\"}") >= 1.0);

    // A block touching the script: one pass, one status and one header.
    let txid = TxHash([3; 32]);
    fx.db.add_history(
        hashx,
        HistoryEntry {
            txid,
            height: Height(1),
        },
    );
    let tip = fx.db.push_block(header(1), vec![txid]);
    block_on(fx.manager.notify(tip, [hashx].iter()));
    fx.manager.info();
    m.scrape();
    assert_eq!(m.counter("indexer_sessions_notify_passes_total"), 1);
    assert_eq!(m.counter("indexer_sessions_statuses_computed_total"), 1);
    assert_eq!(m.counter("indexer_sessions_statuses_changed_total"), 1);
    assert_eq!(
        m.counter("indexer_sessions_notifications_queued_total{kind=\"status\"}"),
        1
    );
    assert_eq!(
        m.counter("indexer_sessions_notifications_queued_total{kind=\"header\"}"),
        1
    );
    assert_eq!(m.histogram("indexer_sessions_notify_pass_seconds").len(), 1);
    assert_eq!(m.gauge("indexer_sessions_queued_notifications"), 2.0);
    assert_eq!(
        m.counter("indexer_sessions_cache_clears_total{cache=\"fees\"}"),
        1
    );
    assert_eq!(
        m.counter("indexer_sessions_cache_clears_total{cache=\"txids\"}"),
        1
    );
    assert_eq!(
        m.counter("indexer_sessions_cache_clears_total{cache=\"merkle\"}"),
        1
    );

    // The client reads them.
    let mut deliver = Box::pin(watcher.deliver());
    assert!((&mut deliver).now_or_never().is_none());
    assert_eq!(log.take_sent().len(), 2);
    fx.manager.info();
    m.scrape();
    assert_eq!(
        m.counter("indexer_sessions_notifications_sent_total{kind=\"status\"}"),
        1
    );
    assert_eq!(
        m.counter("indexer_sessions_notifications_sent_total{kind=\"header\"}"),
        1
    );
    assert_eq!(m.gauge("indexer_sessions_queued_notifications"), 0.0);

    // The index fails: host errors by operation.
    fx.db.set_behaviour(HostBehaviour::Failing);
    let tip = fx.db.push_block(header(2), vec![]);
    assert!(block_on(fx.manager.notify(tip, [hashx].iter())).failures > 0);
    fx.db.set_behaviour(HostBehaviour::Normal);
    m.scrape();
    assert!(m.counter("indexer_sessions_host_errors_total{operation=\"history\"}") >= 1);
    assert_eq!(m.counter("indexer_sessions_notify_passes_total"), 2);

    // Twenty histories in a 4 KiB cache: evictions, and its bytes within budget.
    for n in 10..30 {
        let (alias, _) = script(n);
        block_on(watcher.subscribe(&alias)).unwrap();
    }
    block_on(fx.manager.run_pending_cache_tasks());
    fx.manager.info();
    m.scrape();
    assert!(m.counter("indexer_sessions_cache_evictions_total{cache=\"history\"}") > 0);
    let bytes = m.gauge("indexer_sessions_cache_bytes{cache=\"history\"}");
    assert!(bytes > 0.0 && bytes <= 4096.0, "{bytes}");
    assert_eq!(m.gauge("indexer_sessions_subscriptions"), 21.0);

    // Every metric seen is described and in the crate documentation's table;
    // no label is an address or a session id.
    let docs = include_str!("../src/lib.rs");
    for (name, described) in &m.described {
        assert!(name.starts_with("indexer_sessions_"), "{name}");
        assert!(described, "{name} has no unit or description");
        assert!(
            docs.contains(&format!("`{name}`")),
            "{name} is not in the crate docs' table"
        );
    }
    for series in m
        .counters
        .keys()
        .chain(m.gauges.keys())
        .chain(m.histograms.keys())
    {
        for forbidden in ["203.0.113", "198.51.100", "192.0.2", "id="] {
            assert!(!series.contains(forbidden), "{series}");
        }
    }
    assert!(m.described.len() >= 28, "{:?}", m.described.keys());
}
