//! Shared bench support: a zero-sized transport, public client addresses,
//! the manager fixture, and the medians criterion recorded (to print the
//! ratio ours / baseline in the same process).
#![allow(dead_code)]

use async_trait::async_trait;
use criterion::Criterion;
use indexer_sessions::testing::MemoryHost;
use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool};
use indexer_sessions::{
    Config, DisconnectReason, ExtendedNotification, HostError, Notification, PeerInfo, SessionManager,
    Transport, TransportKind,
};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::SystemTime;

thread_local! {
    static NEXT_PEER: Cell<SocketAddr> = const {
        Cell::new(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(11, 0, 0, 1), 50001)))
    };
}

/// A zero-sized transport: no host allocation, `send` succeeds at once.
/// Its peer is the address last given to [`set_peer`] on this thread (the
/// manager reads it once, in `add_session`), so a connection costs exactly
/// what the crate allocates.
#[derive(Clone, Copy, Debug, Default)]
pub struct Zst;

/// Sets the address the next [`Zst`] accepted on this thread reports.
pub fn set_peer(addr: SocketAddr) {
    NEXT_PEER.with(|peer| peer.set(addr));
}

#[async_trait]
impl Transport for Zst {
    fn peer(&self) -> PeerInfo {
        PeerInfo {
            addr: NEXT_PEER.with(Cell::get),
            kind: TransportKind::Tcp,
        }
    }

    async fn send(&self, _notification: Notification) -> Result<(), HostError> {
        Ok(())
    }

    async fn send_extended(&self, _notification: ExtendedNotification) -> Result<(), HostError> {
        Ok(())
    }

    async fn close(&self, _reason: DisconnectReason) {}
}

/// A public (non-exempt) IPv4 address in 11.0.0.0/8, unique for `n < 2^24`;
/// `n >> 8` is its /24 group.
pub fn public_addr(n: u32) -> SocketAddr {
    let [_, a, b, c] = n.to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(11, a, b, c), 50001))
}

/// The address of session `n` when sessions are spread round robin over
/// `groups` /24 groups (`groups` ≤ 65536, `n / groups` < 256).
pub fn grouped_addr(n: u32, groups: u32) -> SocketAddr {
    let (group, host) = (n % groups, n / groups);
    assert!(groups <= 1 << 16 && host < 256, "address space exhausted");
    public_addr((group << 8) | host)
}

/// ElectrumX's limits with room for `max_sessions` sessions.
pub fn config(max_sessions: usize) -> Config {
    let mut config = Config::default();
    config.limits.max_sessions = max_sessions;
    config
}

/// A manager on a manual clock with in-memory hosts.
pub struct Fixture {
    pub manager: SessionManager<MemoryHost>,
    pub timer: ManualTimer,
    pub db: MemoryDb,
    pub mempool: MemoryMempool,
}

impl Fixture {
    pub fn new(config: Config) -> Self {
        let timer = ManualTimer::new();
        let db = MemoryDb::new();
        let mempool = MemoryMempool::new();
        let manager = SessionManager::builder(config)
            .timer(timer.clone())
            .db(db.clone())
            .daemon(MemoryDaemon::new())
            .mempool(mempool.clone())
            .build()
            .expect("valid configuration");
        Fixture {
            manager,
            timer,
            db,
            mempool,
        }
    }
}

/// Criterion as configured by the command line.
pub fn criterion() -> Criterion {
    Criterion::default().configure_from_args()
}

/// Where criterion writes its results (its own default).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("criterion")
}

fn started() -> SystemTime {
    use std::sync::OnceLock;
    static START: OnceLock<SystemTime> = OnceLock::new();
    *START.get_or_init(SystemTime::now)
}

/// Call first thing in `main`: results older than this are not reported.
pub fn mark_start() {
    started();
}

/// The median time per iteration criterion recorded in this run for
/// `group/id`, in nanoseconds; `None` if it was not run (filtered out).
pub fn median_ns(group: &str, id: &str) -> Option<f64> {
    let safe = |s: &str| s.replace(['?', '"', '/', '\\', '*', '<', '>', ':', '|', '^'], "_");
    let path = criterion_dir()
        .join(safe(group))
        .join(safe(id))
        .join("new")
        .join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < started() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Formats nanoseconds with a unit.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} µs", ns / 1e3)
    } else {
        format!("{ns:.2} ns")
    }
}

/// How a median compares with its target.
#[derive(Clone, Copy)]
pub enum Target {
    /// Time per iteration below this many nanoseconds.
    Below(f64),
    /// Iterations per second above this.
    RateAbove(f64),
    /// No target (a baseline-only or informative figure).
    None,
}

/// Prints one summary line: our median, the baseline's, the ratio ours /
/// baseline, and whether the target is met. Returns our median.
pub fn report(group: &str, ours: &str, baseline: &str, target: Target) -> Option<f64> {
    let ours_ns = median_ns(group, ours);
    let base_ns = median_ns(group, baseline);
    let Some(ours_ns) = ours_ns else {
        println!("SUMMARY {group}/{ours}: not run");
        return None;
    };
    let base = match base_ns {
        Some(b) => format!(
            "baseline {} median {}, ratio ours/baseline {:.4}",
            baseline,
            fmt_ns(b),
            ours_ns / b
        ),
        None => format!("baseline {baseline} not run"),
    };
    let verdict = match target {
        Target::Below(limit) => format!(
            "target < {}: {}",
            fmt_ns(limit),
            if ours_ns < limit { "MET" } else { "NOT MET" }
        ),
        Target::RateAbove(rate) => format!(
            "{:.2} M/s, target > {:.1} M/s: {}",
            1e3 / ours_ns,
            rate / 1e6,
            if 1e9 / ours_ns > rate { "MET" } else { "NOT MET" }
        ),
        Target::None => String::new(),
    };
    println!(
        "SUMMARY {group}/{ours}: median {}; {base}; {verdict}",
        fmt_ns(ours_ns)
    );
    Some(ours_ns)
}

/// The 1-minute load average (other engineers build on this machine).
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs `request` `iters` times in chunks of `chunk`; before each chunk,
/// outside the timed region, `timer` moves on by `advance` per request of
/// the chunk (so cost decays as it would in service). Returns the time
/// spent in the requests.
pub fn timed_chunks(
    timer: &ManualTimer,
    iters: u64,
    chunk: u64,
    advance: std::time::Duration,
    mut request: impl FnMut(),
) -> std::time::Duration {
    let mut total = std::time::Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(chunk);
        timer.advance(advance * n as u32);
        let start = std::time::Instant::now();
        for _ in 0..n {
            request();
        }
        total += start.elapsed();
        left -= n;
    }
    total
}
