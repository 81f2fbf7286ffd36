//! What the operator sees beyond the admin RPC: the example's own metrics
//! (emitted through the `metrics` facade, named `indexer_sessions_example_*`),
//! a bounded journal of throttled, kicked and refused clients, notify
//! timings, and the two HTTP listeners that show them: `--metrics`
//! (Prometheus text at `/metrics`) and `--status` (a live page at `/`, its
//! data at `/status.json`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indexer_sessions::caches::CacheStats;
use indexer_sessions::{DisconnectReason, ListenerState, NotifyReport, SessionRow};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::server::Shared;

/// Events kept in the journal (the oldest go first).
const JOURNAL_CAPACITY: usize = 512;
/// How far back the status page looks.
const JOURNAL_WINDOW: Duration = Duration::from_secs(3600);
/// Notify timings kept for the latency figures.
const NOTIFY_SAMPLES: usize = 128;
/// Rows of the status page's session and group tables (highest cost first).
const MAX_ROWS: usize = 200;
/// Longest HTTP request head read.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP connections served at once per listener (more wait to be accepted).
const MAX_HTTP_CONNECTIONS: usize = 64;
/// Longest a `/status.json?v=N` poll waits for a change.
const LONG_POLL: Duration = Duration::from_secs(1);

/// The status page: one file, no external resources.
const STATUS_PAGE: &str = include_str!("status.html");

/// The Prometheus recorder, installed once per process (a global recorder
/// cannot be replaced); later servers in the same process share it.
static PROMETHEUS: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the Prometheus recorder as the global `metrics` recorder (once)
/// and returns its handle.
///
/// # Errors
/// Another recorder was installed first.
pub fn prometheus() -> Result<PrometheusHandle, String> {
    let mut slot = PROMETHEUS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))?;
    *slot = Some(handle.clone());
    Ok(handle)
}

/// A metric label for a disconnect reason (bounded: never an address).
pub fn reason_label(reason: &DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::Stale => "stale",
        DisconnectReason::ExcessiveCost => "excessive_cost",
        DisconnectReason::SendTimeout => "send_timeout",
        DisconnectReason::Admin => "admin",
        DisconnectReason::Banned => "banned",
        DisconnectReason::Shutdown => "shutdown",
        DisconnectReason::TransportError(_) => "transport_error",
        _ => "other",
    }
}

/// One journal entry.
#[derive(Clone, Debug)]
struct Event {
    /// Seconds since the Unix epoch.
    at: f64,
    /// `throttled`, `kicked`, `refused` or `disconnected`.
    kind: &'static str,
    peer: SocketAddr,
    session: Option<u64>,
    detail: String,
}

#[derive(Default)]
struct NotifyTimes {
    passes: u64,
    last: Option<(u32, Duration)>,
    recent: VecDeque<Duration>,
}

/// The example's own record of what happened, for the status page.
pub struct Observer {
    events: Mutex<VecDeque<Event>>,
    notify: Mutex<NotifyTimes>,
    version: watch::Sender<u64>,
    page_loads: AtomicU64,
    polls: AtomicU64,
}

impl Default for Observer {
    fn default() -> Self {
        Observer {
            events: Mutex::new(VecDeque::with_capacity(JOURNAL_CAPACITY)),
            notify: Mutex::new(NotifyTimes::default()),
            version: watch::Sender::new(0),
            page_loads: AtomicU64::new(0),
            polls: AtomicU64::new(0),
        }
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Observer {
    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn record(&self, kind: &'static str, peer: SocketAddr, session: Option<u64>, detail: String) {
        {
            let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
            if events.len() == JOURNAL_CAPACITY {
                events.pop_front();
            }
            events.push_back(Event {
                at: now_secs(),
                kind,
                peer,
                session,
                detail,
            });
        }
        self.bump();
    }

    /// A session started.
    pub fn connected(&self) {
        metrics::counter!("indexer_sessions_example_connections_total").increment(1);
        metrics::gauge!("indexer_sessions_example_sessions").increment(1);
        self.bump();
    }

    /// A connection was refused a session.
    pub fn refused(&self, peer: SocketAddr, why: String) {
        metrics::counter!("indexer_sessions_example_refusals_total").increment(1);
        self.record("refused", peer, None, why);
    }

    /// A request was admitted.
    pub fn admitted(&self) {
        metrics::counter!("indexer_sessions_example_requests_total").increment(1);
    }

    /// A session went from unthrottled to throttled.
    pub fn throttled(&self, peer: SocketAddr, session: u64, target: u32, cost: f64) {
        metrics::counter!("indexer_sessions_example_throttled_total").increment(1);
        self.record(
            "throttled",
            peer,
            Some(session),
            format!("concurrency {target}, cost {cost:.0}"),
        );
    }

    /// A session ended; `None` when the client closed the connection.
    pub fn disconnected(&self, peer: SocketAddr, session: Option<u64>, reason: Option<&DisconnectReason>) {
        let label = reason.map_or("client_closed", reason_label);
        metrics::counter!("indexer_sessions_example_disconnects_total", "reason" => label).increment(1);
        metrics::gauge!("indexer_sessions_example_sessions").decrement(1);
        match reason {
            Some(
                reason @ (DisconnectReason::ExcessiveCost
                | DisconnectReason::Banned
                | DisconnectReason::Admin),
            ) => {
                self.record("kicked", peer, session, reason.to_string());
            }
            Some(reason) => self.record("disconnected", peer, session, reason.to_string()),
            None => self.bump(),
        }
    }

    /// A `notify` call for the tip at `height` took `elapsed`.
    pub fn notified(&self, height: u32, elapsed: Duration, report: &NotifyReport) {
        metrics::counter!("indexer_sessions_example_notify_passes_total").increment(1);
        metrics::histogram!("indexer_sessions_example_notify_seconds").record(elapsed.as_secs_f64());
        metrics::counter!("indexer_sessions_example_notifications_total", "kind" => "header")
            .increment(report.header_notifications as u64);
        metrics::counter!("indexer_sessions_example_notifications_total", "kind" => "status")
            .increment(report.status_notifications as u64);
        metrics::gauge!("indexer_sessions_example_tip_height").set(f64::from(height));
        {
            let mut times = self.notify.lock().unwrap_or_else(|p| p.into_inner());
            times.passes += 1;
            times.last = Some((height, elapsed));
            if times.recent.len() == NOTIFY_SAMPLES {
                times.recent.pop_front();
            }
            times.recent.push_back(elapsed);
        }
        self.bump();
    }

    /// Times the status page was served (a reload counts again).
    #[allow(dead_code)] // for tests
    pub fn page_loads(&self) -> u64 {
        self.page_loads.load(Ordering::Relaxed)
    }

    /// Times `/status.json` was served.
    #[allow(dead_code)] // for tests
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    fn events_json(&self) -> Value {
        let since = now_secs() - JOURNAL_WINDOW.as_secs_f64();
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts = serde_json::Map::new();
        let mut rows = Vec::new();
        for event in events.iter().rev().filter(|e| e.at >= since) {
            let count = counts.entry(event.kind).or_insert(json!(0));
            *count = json!(count.as_u64().unwrap_or(0) + 1);
            rows.push(json!({
                "at": event.at,
                "kind": event.kind,
                "peer": event.peer.to_string(),
                "session": event.session,
                "detail": event.detail,
            }));
        }
        json!({ "counts": counts, "recent": rows })
    }

    fn notify_json(&self) -> Value {
        let times = self.notify.lock().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<Duration> = times.recent.iter().copied().collect();
        sorted.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let quantile = |q: f64| {
            (!sorted.is_empty()).then(|| ms(sorted[((sorted.len() - 1) as f64 * q).round() as usize]))
        };
        json!({
            "passes": times.passes,
            "last_height": times.last.map(|(h, _)| h),
            "last_ms": times.last.map(|(_, d)| ms(d)),
            "p50_ms": quantile(0.5),
            "p99_ms": quantile(0.99),
            "max_ms": sorted.last().copied().map(ms),
        })
    }
}

fn cache_json(stats: &CacheStats) -> Value {
    let lookups = stats.hits + stats.misses;
    json!({
        "hits": stats.hits,
        "misses": stats.misses,
        "hit_ratio": (lookups > 0).then(|| stats.hits as f64 / lookups as f64),
        "entries": stats.entries,
        "bytes": stats.bytes,
        "budget": stats.budget,
    })
}

fn session_json(row: &SessionRow, initial: u32) -> Value {
    // The flags end with the concurrency target.
    let target: Option<u32> = row
        .flags
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok();
    json!({
        "id": row.id.0,
        "peer": row.peer.to_string(),
        "group": row.group.map(|group| group.to_string()),
        "client": row.client,
        "cost": row.cost,
        "extra_cost": row.extra_cost,
        "target": target,
        "throttled": target.is_some_and(|t| t < initial),
        "subs": row.subs,
        "requests": row.counters.requests,
        "age_secs": row.age.as_secs(),
    })
}

/// Everything the status page shows.
pub fn status(shared: &Shared) -> Value {
    let manager = &shared.manager;
    let limits = manager.limits();
    let info = manager.info();
    let mut sessions: Vec<SessionRow> = manager.sessions();
    let session_count = sessions.len();
    let initial = limits.initial_concurrent;
    let mut throttled_groups = std::collections::HashSet::new();
    let mut throttled_sessions = 0;
    for row in &sessions {
        if session_json(row, initial)["throttled"] == json!(true) {
            throttled_sessions += 1;
            if let Some(group) = &row.group {
                throttled_groups.insert(*group);
            }
        }
    }
    sessions.sort_by(|a, b| (b.cost + b.extra_cost).total_cmp(&(a.cost + a.extra_cost)));
    let mut groups = manager.groups();
    let group_count = groups.len();
    groups.sort_by(|a, b| b.cost.total_cmp(&a.cost));
    let tip = shared.node.tip();
    json!({
        "version": *shared.observer.version.borrow(),
        "tip": { "height": tip.height.0, "hash": tip.hash.to_hex() },
        "uptime_secs": info.uptime.as_secs(),
        "listener": match info.listener {
            ListenerState::Accepting => "accepting",
            ListenerState::Paused => "paused",
            ListenerState::Stopped => "stopped",
        },
        "limits": {
            "soft": limits.cost_soft_limit,
            "hard": limits.cost_hard_limit,
            "initial_concurrent": limits.initial_concurrent,
            "max_sessions": limits.max_sessions,
        },
        "totals": {
            "sessions": session_count,
            "throttled_sessions": throttled_sessions,
            "groups": group_count,
            "subs": info.subs,
            "distinct_subs": info.distinct_subs,
            "header_subs": info.header_subs,
            "bans": info.bans,
            "requests": info.counters.requests,
            "errors": info.counters.errors,
        },
        "sessions": sessions.iter().take(MAX_ROWS).map(|r| session_json(r, initial)).collect::<Vec<_>>(),
        "groups": groups.iter().take(MAX_ROWS).map(|g| json!({
            "name": g.network.to_string(),
            "sessions": g.sessions,
            "cost": g.cost,
            "retained_cost": g.retained_cost,
            "subs": g.subs,
            "throttled": throttled_groups.contains(&g.network),
        })).collect::<Vec<_>>(),
        "events": shared.observer.events_json(),
        "notify": shared.observer.notify_json(),
        "caches": {
            "history": cache_json(&info.caches.history),
            "txids": cache_json(&info.caches.txids),
            "merkle": cache_json(&info.caches.merkle),
            "checkpoints": cache_json(&info.caches.checkpoints),
            "fees": cache_json(&info.caches.fees),
        },
    })
}

/// What an HTTP listener serves.
#[derive(Clone)]
pub enum Site {
    /// `/metrics`: Prometheus text.
    Metrics(PrometheusHandle),
    /// `/`: the status page; `/status.json`: its data.
    Status,
}

/// Accepts HTTP connections until the task is aborted.
pub async fn serve_http(listener: TcpListener, shared: Arc<Shared>, site: Site) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let (shared, site) = (shared.clone(), site.clone());
                tokio::spawn(async move {
                    http_connection(stream, shared, site).await;
                    drop(slot);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The path and query of a `GET` request head; `None` for anything else.
fn request_target(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\r' || b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    if method != "GET" && method != "HEAD" {
        return None;
    }
    Some(target.split_once('?').unwrap_or((target, "")))
}

/// One request per connection (`Connection: close`).
async fn http_connection(mut stream: TcpStream, shared: Arc<Shared>, site: Site) {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(tokio::time::timeout(REQUEST_TIMEOUT, read).await, Ok(true)) {
        return;
    }
    let (status, content_type, body) = match (request_target(&head), &site) {
        (None, _) => ("405 Method Not Allowed", "text/plain", "GET only\n".to_owned()),
        (Some(("/metrics", _)), Site::Metrics(handle)) => {
            handle.run_upkeep();
            ("200 OK", "text/plain; version=0.0.4", handle.render())
        }
        (Some(("/", _)), Site::Status) => {
            shared.observer.page_loads.fetch_add(1, Ordering::Relaxed);
            ("200 OK", "text/html; charset=utf-8", STATUS_PAGE.to_owned())
        }
        (Some(("/status.json", query)), Site::Status) => {
            // `?v=N`: wait (briefly) until the state differs from version N.
            let seen = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("v="))
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(seen) = seen {
                let mut version = shared.observer.version.subscribe();
                let _ = tokio::time::timeout(LONG_POLL, version.wait_for(|v| *v != seen)).await;
            }
            shared.observer.polls.fetch_add(1, Ordering::Relaxed);
            ("200 OK", "application/json", status(&shared).to_string())
        }
        (Some(_), _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(response.as_bytes())).await;
    let _ = stream.shutdown().await;
}
