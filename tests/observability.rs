//! The example server's `--metrics`: scraped and parsed as Prometheus text
//! while a scripted client connects, is throttled and kicked (−101) and a
//! block is notified.
//!
//! Its own test binary, with one test: the Prometheus recorder is global to
//! the process, so every server in it would count into the same series.
#![cfg(feature = "tokio")]

include!("support/example_server.rs");

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::json;

use crate::support::{LineClient, TIMEOUT, admin_call, blocking, http_get, start};

/// A parsed scrape of `/metrics`.
struct Metrics {
    text: String,
    samples: Vec<Sample>,
}

impl Metrics {
    fn scrape(addr: SocketAddr) -> Self {
        let (code, text) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "{text}");
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
        Metrics {
            text,
            samples: scrape.samples,
        }
    }

    /// The value of a counter or gauge with these labels; 0 when absent
    /// (a counter never incremented is not rendered).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} is ambiguous in\n{}",
            self.text
        );
        match matching.first().map(|s| &s.value) {
            None => 0.0,
            Some(Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v)) => *v,
            Some(other) => panic!("{name} is not a counter or gauge: {other:?}"),
        }
    }

    /// The sample count of a summary or histogram.
    fn count(&self, name: &str) -> f64 {
        let sample = self
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} missing from\n{}", self.text));
        match &sample.value {
            Metric::Summary(_) | Metric::Histogram(_) => self.value(&format!("{name}_count"), &[]),
            other => panic!("{name} is not a summary or histogram: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_clients() {
    // Loopback addresses form /24 groups; every byte costs 1: a few pings
    // throttle, a few kilobytes of headers pass the hard limit.
    let server = start(&[
        "--metrics",
        "127.0.0.1:0",
        "--exempt-networks",
        "none",
        "--cost-soft-limit",
        "100",
        "--cost-hard-limit",
        "1100",
        "--bandwidth-unit-cost",
        "1",
        "--request-sleep-ms",
        "1",
    ])
    .await;
    let metrics = server.metrics_addr().expect("--metrics is bound");
    let (listen, admin) = (server.listen_addr(), server.admin_addr());

    let before = blocking(move || Metrics::scrape(metrics)).await;
    assert_eq!(
        before.value("indexer_sessions_example_connections_total", &[]),
        0.0
    );
    let passes_before = before.value("indexer_sessions_example_notify_passes_total", &[]);
    assert!(
        passes_before >= 1.0,
        "the starting tip is announced:\n{}",
        before.text
    );

    // A header subscriber in another group (127.0.1.0/24).
    let mut watcher = LineClient::connect_from("127.0.1.1", listen).await;
    // The client that misbehaves, in 127.0.0.0/24.
    let mut abuser = LineClient::connect_from("127.0.0.1", listen).await;
    let (watcher, abuser_reply) = blocking(move || {
        watcher.version();
        let tip = watcher.call(1, "blockchain.headers.subscribe", json!([]));
        assert_eq!(tip["result"]["height"], 110, "{tip}");
        abuser.version();
        for id in 1..=3 {
            let pong = abuser.call(id, "server.ping", json!([]));
            assert!(pong.get("error").is_none(), "{pong}");
        }
        (watcher, abuser)
    })
    .await;
    let mut abuser = abuser_reply;

    let throttled = blocking(move || Metrics::scrape(metrics)).await;
    assert_eq!(
        throttled.value("indexer_sessions_example_connections_total", &[]),
        2.0,
        "{}",
        throttled.text
    );
    assert_eq!(throttled.value("indexer_sessions_example_sessions", &[]), 2.0);
    // versions, the subscription and the pings
    assert_eq!(
        throttled.value("indexer_sessions_example_requests_total", &[]),
        6.0,
        "{}",
        throttled.text
    );
    assert_eq!(
        throttled.value("indexer_sessions_example_throttled_total", &[]),
        1.0,
        "{}",
        throttled.text
    );
    assert_eq!(
        throttled.value(
            "indexer_sessions_example_disconnects_total",
            &[("reason", "excessive_cost")]
        ),
        0.0
    );
    // The library's own series, through the same exporter.
    assert_eq!(
        throttled.value("indexer_sessions_sessions", &[]),
        2.0,
        "{}",
        throttled.text
    );
    assert!(
        throttled.value("indexer_sessions_requests_total", &[]) >= 6.0,
        "{}",
        throttled.text
    );
    assert!(throttled.value("indexer_sessions_received_bytes_total", &[]) > 0.0);

    // 50 headers (8 KB of hex) pass the hard limit: the next request gets −101.
    let kicked = blocking(move || {
        let headers = abuser.call(10, "blockchain.block.headers", json!([0, 50]));
        assert_eq!(headers["result"]["count"], 50, "{headers}");
        let refused = abuser.call(11, "server.ping", json!([]));
        assert_eq!(refused["error"]["code"], -101, "{refused}");
        assert!(abuser.recv().is_none(), "disconnected after −101");
        Metrics::scrape(metrics)
    })
    .await;
    assert_eq!(
        kicked.value(
            "indexer_sessions_example_disconnects_total",
            &[("reason", "excessive_cost")]
        ),
        1.0,
        "{}",
        kicked.text
    );
    assert_eq!(kicked.value("indexer_sessions_example_sessions", &[]), 1.0);
    assert_eq!(
        kicked.value("indexer_sessions_errors_total", &[("code", "-101")]),
        1.0,
        "{}",
        kicked.text
    );
    assert_eq!(
        kicked.value(
            "indexer_sessions_disconnects_total",
            &[("reason", "excessive_cost")]
        ),
        1.0,
        "{}",
        kicked.text
    );
    assert_eq!(kicked.value("indexer_sessions_sessions", &[]), 1.0);
    let library_passes = kicked.value("indexer_sessions_notify_passes_total", &[]);
    let headers_before = kicked.value(
        "indexer_sessions_example_notifications_total",
        &[("kind", "header")],
    );

    // A block: the watcher is notified, and so are the metrics.
    let (watcher, after) = blocking(move || {
        let mut watcher = watcher;
        let tip = admin_call(admin, "generate", json!([1]));
        assert_eq!(tip["height"], 111);
        let note = watcher.recv().expect("a header notification");
        assert_eq!(note["method"], "blockchain.headers.subscribe", "{note}");
        assert_eq!(note["params"][0]["height"], 111, "{note}");
        (watcher, Metrics::scrape(metrics))
    })
    .await;
    assert_eq!(
        after.value("indexer_sessions_example_notify_passes_total", &[]),
        passes_before + 1.0,
        "{}",
        after.text
    );
    assert_eq!(
        after.value(
            "indexer_sessions_example_notifications_total",
            &[("kind", "header")]
        ),
        headers_before + 1.0
    );
    assert_eq!(after.value("indexer_sessions_example_tip_height", &[]), 111.0);
    assert_eq!(
        after.value("indexer_sessions_notify_passes_total", &[]),
        library_passes + 1.0,
        "{}",
        after.text
    );
    assert!(
        after.value(
            "indexer_sessions_notifications_queued_total",
            &[("kind", "header")]
        ) >= 1.0,
        "{}",
        after.text
    );
    assert!(
        after.count("indexer_sessions_example_notify_seconds") >= passes_before + 1.0,
        "{}",
        after.text
    );

    // The watcher hangs up: counted as the client's own close.
    drop(watcher);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let last = blocking(move || Metrics::scrape(metrics)).await;
        if last.value(
            "indexer_sessions_example_disconnects_total",
            &[("reason", "client_closed")],
        ) == 1.0
        {
            assert_eq!(
                last.value("indexer_sessions_example_sessions", &[]),
                0.0,
                "{}",
                last.text
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the close was not counted:\n{}",
            last.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(blocking(move || http_get(metrics, "/nothing")).await.0, 404);
    server.shutdown().await;
}
