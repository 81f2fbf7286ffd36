//! One block notification (`manager.notify(tip, &touched)`) with N sessions
//! × 10 subscriptions, for N = 1k, 10k, 100k and 1M (DESIGN §7: < 0.25 ms at
//! 10k, < 1 ms at 100k, < 2 ms at 1M, flat in sessions), beside an
//! ElectrumX-shaped baseline in the same process: every session intersects
//! `touched` with its own subscriptions and computes its statuses itself
//! (ElectrumX 1.16 `ElectrumX._notify_inner`), on the same `MemoryDb` and
//! `MemoryMempool`, with `indexer_sessions::status::electrum_status`.
//!
//! Each session subscribes, through the public API, to 10 scripts of its
//! own (distinct scripts: 10·N index entries). Each event touches 1,000
//! scripts that all have a confirmed history; 500 of them are subscribed,
//! one each by 500 sessions spread evenly over the N. Every iteration is a
//! new block (a new tip) and, outside the timed region, alternately adds and
//! removes a mempool transaction on the 500 subscribed scripts, so all 500
//! statuses really change on every event (asserted: 500 notifications per
//! event). After each event the 500 sessions' delivery futures are polled,
//! outside the timed region, so every event starts with empty outboxes as in
//! service. The outboxes hold each status as bytes: its text (the status
//! hex, the scripthash alias) is written by the delivery future when it
//! takes the notification, so that work is outside the timed region, with
//! the send. Sessions come from public addresses in 4,096 /24 groups.
//!
//! The floor beside it: the work no implementation can skip for the 500
//! changed statuses of an event, with nothing else — per script one probe
//! of a hash map holding the 10k sessions' 100k subscriptions, the status
//! (`electrum_status`: the preimage of its one confirmed and, every other
//! event, one mempool entry, and its SHA-256) and its hex. `SUMMARY` gives
//! ours / floor at each size.
//!
//! Beside both, at each size on the same host and chain as ours, the bare
//! event: the same event's work written plainly, with none of the
//! manager's guarantees (no costs, coalescing, ordering or cancel safety)
//! — all 1,000 touched scripts looked up in a `HashMap` of the N × 10
//! subscriptions (to the one subscriber), the 500 subscribed ones'
//! histories and mempool entries read from the host (one call each), their
//! statuses hashed, each written into its subscriber's own heap block (one
//! cache line per subscriber). It is a yardstick, not a floor: it keeps
//! none of the manager's guarantees, and it can take less than the floor
//! (which also writes each status's hex).
//!
//! `cargo bench --features test-util --bench notify`
//! (`NOTIFY_SIZES=1000,10000` to run only some sizes; `NOTIFY_BASELINE_MAX`
//! caps the sizes the baseline runs at, default 1,000,000).

mod common;

use common::{Fixture, Target, Zst, report, set_peer};
use criterion::{Criterion, SamplingMode};
use futures::FutureExt;
use futures::executor::block_on;
use hashbrown::{HashMap, HashSet};
use indexer_sessions::status::{electrum_status, status_hex};
use indexer_sessions::testing::MemoryHost;
use indexer_sessions::testing::{MemoryDb, MemoryMempool};
use indexer_sessions::{
    Answers, Db, HashX, Height, HistoryEntry, Mempool, MempoolEntry, SessionHandle, Tip, TxHash, encode_hex,
};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

const SUBS: u64 = 10;
const TOUCHED_SUBSCRIBED: u64 = 500;
const TOUCHED_OTHER: u64 = 500;
const GROUPS: u32 = 4096;
/// Script ids of touched scripts nobody subscribes to.
const UNSUBSCRIBED_BASE: u64 = 1 << 40;

/// The internal scripthash of script `id` (its hashX starts with `id`).
fn scripthash(id: u64) -> [u8; 32] {
    let mut bytes = [0xa5u8; 32];
    bytes[..8].copy_from_slice(&id.to_le_bytes());
    bytes
}

fn hashx(id: u64) -> HashX {
    HashX::from_scripthash(&scripthash(id))
}

/// The scripthash string a client sends (reversed byte order, lowercase hex).
fn alias(id: u64) -> String {
    let mut bytes = scripthash(id);
    bytes.reverse();
    encode_hex(&bytes)
}

fn txid(tag: u8, n: u64) -> TxHash {
    let mut bytes = [tag; 32];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    TxHash(bytes)
}

fn header(height: u32) -> Vec<u8> {
    let mut header = vec![0x42; 80];
    header[..4].copy_from_slice(&height.to_le_bytes());
    header
}

/// The event: which scripts are touched, and who subscribed to them.
struct Event {
    /// Sessions (indices) holding one touched script each.
    sessions: Vec<usize>,
    /// The touched subscribed scripts (ids), in `sessions` order.
    subscribed: Vec<u64>,
    /// All 1,000 touched hashXs.
    touched: Vec<HashX>,
}

impl Event {
    fn new(n: usize) -> Self {
        let mut sessions = Vec::new();
        let mut subscribed = Vec::new();
        for k in 0..TOUCHED_SUBSCRIBED {
            let session = (k as usize) * n / TOUCHED_SUBSCRIBED as usize;
            sessions.push(session);
            subscribed.push(session as u64 * SUBS + k % SUBS);
        }
        let touched = subscribed
            .iter()
            .copied()
            .chain((0..TOUCHED_OTHER).map(|k| UNSUBSCRIBED_BASE + k))
            .map(hashx)
            .collect();
        Event {
            sessions,
            subscribed,
            touched,
        }
    }
}

/// Moves the chain and the mempool on, outside the timed region: a new
/// block, and a mempool transaction added to (odd steps) or removed from
/// (even steps) every touched subscribed script.
struct Chain {
    db: MemoryDb,
    mempool: MemoryMempool,
    step: u64,
}

impl Chain {
    fn next(&mut self, subscribed: &[HashX]) -> Tip {
        self.step += 1;
        if self.step % 2 == 1 {
            for hashx in subscribed {
                let entry = MempoolEntry {
                    txid: txid(0x77, self.step),
                    fee: 1000,
                    has_unconfirmed_inputs: false,
                };
                self.mempool.add(*hashx, entry);
            }
        } else {
            self.mempool.remove(txid(0x77, self.step - 1));
        }
        let height = self.db.current_tip().height.0 + 1;
        self.db.push_block(header(height), Vec::new())
    }
}

/// `iters` events: each moves the chain on (untimed), runs `event` on the
/// new tip (timed), then `check`s its result (untimed).
fn timed_events<R>(
    iters: u64,
    chain: &mut Chain,
    subscribed: &[HashX],
    mut event: impl FnMut(Tip) -> R,
    mut check: impl FnMut(R),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let tip = chain.next(subscribed);
        let start = Instant::now();
        let result = event(tip);
        total += start.elapsed();
        check(result);
    }
    total
}

type Delivery = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Our side at one size: the manager, N sessions with 10 subscriptions each,
/// and the delivery futures of the 500 sessions an event notifies.
struct Ours {
    sessions: Vec<SessionHandle<MemoryHost>>,
    deliveries: Vec<Delivery>,
}

fn setup_ours(fx: &Fixture, n: usize, event: &Event) -> Ours {
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        set_peer(common::grouped_addr(i as u32, GROUPS));
        let session = fx.manager.add_session(Zst).expect("admitted");
        for j in 0..SUBS {
            block_on(session.subscribe(&alias(i as u64 * SUBS + j))).expect("subscribed");
        }
        sessions.push(session);
    }
    let deliveries = event
        .sessions
        .iter()
        .map(|&i| {
            let mut delivery: Delivery = Box::pin(sessions[i].deliver());
            assert!(delivery.as_mut().now_or_never().is_none());
            delivery
        })
        .collect();
    Ours { sessions, deliveries }
}

/// ElectrumX 1.16's per-session notification, transcribed: each session
/// intersects `touched` with its subscriptions, computes each status itself,
/// rechecks every script whose last status involved the mempool, and sends
/// what it computed.
mod baseline {
    use super::*;

    #[derive(Default)]
    pub struct Session {
        /// hashX → the alias the client used (`hashX_subs`).
        pub subs: HashMap<HashX, String>,
        /// Statuses that involved the mempool (`mempool_statuses`).
        pub mempool_statuses: HashMap<HashX, Option<String>>,
        pub cost: f64,
        /// What was sent (the transport), cleared between events.
        pub sent: Vec<(String, Option<String>)>,
    }

    /// `address_status`: history + mempool, status, cost, `mempool_statuses`.
    fn address_status(
        session: &mut Session,
        db: &MemoryDb,
        mempool: &MemoryMempool,
        hashx: HashX,
    ) -> Option<String> {
        let history = db.history(hashx, usize::MAX).now_or_never().unwrap().unwrap();
        let entries = mempool.entries(hashx).now_or_never().unwrap().unwrap();
        let status = electrum_status(&history, &entries).map(|s| status_hex(&s));
        session.cost += 0.1 + (history.len() + entries.len()) as f64 * 68.0 * 0.00002;
        if entries.is_empty() {
            session.mempool_statuses.remove(&hashx);
        } else {
            session.mempool_statuses.insert(hashx, status.clone());
        }
        status
    }

    /// `_notify_inner` for one session; returns the notifications sent.
    pub fn notify_session(
        session: &mut Session,
        db: &MemoryDb,
        mempool: &MemoryMempool,
        touched: &HashSet<HashX>,
        height_changed: bool,
    ) -> usize {
        // `touched.intersection(self.hashX_subs)` iterates the smaller set.
        let hits: Vec<HashX> = if session.subs.len() <= touched.len() {
            session
                .subs
                .keys()
                .filter(|h| touched.contains(*h))
                .copied()
                .collect()
        } else {
            touched
                .iter()
                .filter(|h| session.subs.contains_key(*h))
                .copied()
                .collect()
        };
        let recheck_mempool = height_changed && !session.mempool_statuses.is_empty();
        if hits.is_empty() && !recheck_mempool {
            return 0;
        }
        let mut changed: Vec<(String, Option<String>)> = Vec::new();
        for hashx in hits {
            let alias = session.subs[&hashx].clone();
            let status = address_status(session, db, mempool, hashx);
            changed.push((alias, status));
        }
        let mempool_statuses = session.mempool_statuses.clone();
        for (hashx, old) in mempool_statuses {
            if let Some(alias) = session.subs.get(&hashx).cloned() {
                let status = address_status(session, db, mempool, hashx);
                if status != old {
                    match changed.iter_mut().find(|(a, _)| *a == alias) {
                        Some(slot) => slot.1 = status,
                        None => changed.push((alias, status)),
                    }
                }
            }
        }
        let count = changed.len();
        session.sent.extend(changed);
        count
    }

    /// `SessionManager._notify_sessions`: every session, one after another.
    pub fn notify(
        sessions: &mut [Session],
        db: &MemoryDb,
        mempool: &MemoryMempool,
        touched: &HashSet<HashX>,
        height_changed: bool,
    ) -> usize {
        sessions
            .iter_mut()
            .map(|session| notify_session(session, db, mempool, touched, height_changed))
            .sum()
    }

    /// N sessions with 10 subscriptions each, statuses computed on subscribe.
    pub fn setup(n: usize, db: &MemoryDb, mempool: &MemoryMempool) -> Vec<Session> {
        (0..n)
            .map(|i| {
                let mut session = Session::default();
                for j in 0..SUBS {
                    let id = i as u64 * SUBS + j;
                    session.subs.insert(hashx(id), alias(id));
                    address_status(&mut session, db, mempool, hashx(id));
                }
                session
            })
            .collect()
    }
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn sizes(var: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(var) {
        Ok(list) => list
            .split(',')
            .filter_map(|s| s.trim().replace('_', "").parse().ok())
            .collect(),
        Err(_) => default.to_vec(),
    }
}

fn bench_size(c: &mut Criterion, n: usize, baseline_max: usize) {
    let fx = Fixture::new(common::config(n + 1000));
    let event = Event::new(n);
    let others = (0..TOUCHED_OTHER).map(|k| UNSUBSCRIBED_BASE + k);
    for id in event.subscribed.iter().copied().chain(others) {
        fx.db.set_history(
            hashx(id),
            vec![HistoryEntry {
                txid: txid(0x11, id),
                height: Height(1),
            }],
        );
    }
    let tip = fx.db.push_block(header(0), Vec::new());
    block_on(fx.manager.notify(tip, &[]));
    let subscribed: Vec<HashX> = event.subscribed.iter().map(|&id| hashx(id)).collect();
    let touched_set: HashSet<HashX> = event.touched.iter().copied().collect();
    let mut chain = Chain {
        db: fx.db.clone(),
        mempool: fx.mempool.clone(),
        step: 0,
    };

    let started = Instant::now();
    let rss_before = rss_mib();
    let mut ours = setup_ours(&fx, n, &event);
    block_on(fx.manager.run_pending_cache_tasks());
    println!(
        "notify {}: setup of {n} sessions × {SUBS} subscriptions through the API took {:.1} s, RSS {:.0} → {:.0} MiB",
        label(n),
        started.elapsed().as_secs_f64(),
        rss_before,
        rss_mib()
    );

    let group_name = "notify";
    let mut group = c.benchmark_group(group_name);
    let (samples, measure) = match n {
        n if n >= 1_000_000 => (10, 3),
        n if n >= 100_000 => (20, 4),
        _ => (50, 4),
    };
    group.sample_size(samples);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(measure));
    let ours_id = format!("ours_{}", label(n));
    group.bench_function(ours_id.as_str(), |b| {
        b.iter_custom(|iters| {
            timed_events(
                iters,
                &mut chain,
                &subscribed,
                |tip| block_on(fx.manager.notify(tip, &event.touched)),
                |report| {
                    assert_eq!(
                        report.status_notifications, TOUCHED_SUBSCRIBED as usize,
                        "{report:?}"
                    );
                    for delivery in &mut ours.deliveries {
                        assert!(delivery.as_mut().now_or_never().is_none());
                    }
                },
            )
        })
    });
    assert!(ours.sessions.iter().all(|s| s.pending_notifications() == 0));
    let started = Instant::now();
    drop(ours);
    println!(
        "notify {}: teardown took {:.1} s",
        label(n),
        started.elapsed().as_secs_f64()
    );

    // The bare event (see the module documentation), on the same host
    // and chain.
    let bare_id = format!("bare_{}", label(n));
    {
        let owners: HashMap<HashX, u32> = (0..n as u64 * SUBS)
            .map(|id| (hashx(id), (id / SUBS) as u32))
            .collect();
        let mut blocks: Vec<Box<[u8; 64]>> = (0..n).map(|_| Box::new([0u8; 64])).collect();
        let mut histories = Answers::new();
        let mut mempools = Answers::new();
        group.bench_function(bare_id.as_str(), |b| {
            b.iter_custom(|iters| {
                timed_events(
                    iters,
                    &mut chain,
                    &subscribed,
                    |_tip| {
                        let mut found = Vec::with_capacity(TOUCHED_SUBSCRIBED as usize);
                        let mut subscribers = Vec::with_capacity(TOUCHED_SUBSCRIBED as usize);
                        for hashx in &event.touched {
                            if let Some(&owner) = owners.get(hashx) {
                                found.push(*hashx);
                                subscribers.push(owner as usize);
                            }
                        }
                        histories.clear();
                        mempools.clear();
                        block_on(fx.db.histories(&found, usize::MAX, &mut histories)).expect("histories");
                        block_on(fx.mempool.entries_batch(&found, &mut mempools)).expect("mempool entries");
                        for (at, &owner) in subscribers.iter().enumerate() {
                            let (Some(Ok(history)), Some(Ok(mempool))) =
                                (histories.get(at), mempools.get(at))
                            else {
                                panic!("the host failed");
                            };
                            let status = electrum_status(history, mempool).expect("a history");
                            blocks[owner][..32].copy_from_slice(&status);
                        }
                        found.len()
                    },
                    |found| assert_eq!(found, TOUCHED_SUBSCRIBED as usize),
                )
            })
        });
    }

    let base_id = format!("baseline_{}", label(n));
    if n <= baseline_max {
        let started = Instant::now();
        let mut sessions = baseline::setup(n, &fx.db, &fx.mempool);
        println!(
            "notify {}: baseline setup took {:.1} s, RSS {:.0} MiB",
            label(n),
            started.elapsed().as_secs_f64(),
            rss_mib()
        );
        if n >= 100_000 {
            group.sampling_mode(SamplingMode::Flat);
        }
        group.bench_function(base_id.as_str(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    chain.next(&subscribed);
                    let start = Instant::now();
                    let sent = baseline::notify(&mut sessions, &fx.db, &fx.mempool, &touched_set, true);
                    total += start.elapsed();
                    assert!(sent >= TOUCHED_SUBSCRIBED as usize, "{sent}");
                    for &i in &event.sessions {
                        sessions[i].sent.clear();
                    }
                }
                total
            })
        });
    }
    group.finish();
    // Issue 13: ≤ 0.20 ms at every size up to 1M.
    let target = Target::Below(0.2e6);
    report(group_name, &ours_id, &base_id, target);
    println!("load average: {}", common::load());
}

/// 500 × (one probe of a 100k-entry map, one status with its SHA-256, its hex).
fn bench_floor(c: &mut Criterion) {
    let subscribed: HashSet<HashX> = (0..100_000u64).map(hashx).collect();
    let scripts: Vec<(HashX, Vec<HistoryEntry>, Vec<MempoolEntry>)> = (0..TOUCHED_SUBSCRIBED)
        .map(|id| {
            let history = vec![HistoryEntry {
                txid: txid(0x11, id),
                height: Height(1),
            }];
            let mempool = vec![MempoolEntry {
                txid: txid(0x22, id),
                fee: 1000,
                has_unconfirmed_inputs: false,
            }];
            (hashx(id * 200), history, mempool)
        })
        .collect();
    let mut group = c.benchmark_group("notify");
    group.sample_size(50);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let mut step = 0usize;
    group.bench_function("floor_500_statuses", |b| {
        b.iter(|| {
            step += 1;
            let mut found = 0;
            let mut hexes = Vec::with_capacity(scripts.len());
            for (hashx, history, mempool) in &scripts {
                found += usize::from(subscribed.contains(hashx));
                let mempool = if step % 2 == 0 { &mempool[..] } else { &[] };
                hexes.push(electrum_status(history, mempool).map(|s| status_hex(&s)));
            }
            assert_eq!(found, TOUCHED_SUBSCRIBED as usize);
            hexes
        })
    });
    group.finish();
}

fn main() {
    common::mark_start();
    let mut c = common::criterion();
    bench_floor(&mut c);
    let floor = common::median_ns("notify", "floor_500_statuses");
    let baseline_max = sizes("NOTIFY_BASELINE_MAX", &[1_000_000])[0];
    println!("load average before: {}", common::load());
    for n in sizes("NOTIFY_SIZES", &[1000, 10_000, 100_000, 1_000_000]) {
        bench_size(&mut c, n, baseline_max);
        let ours = common::median_ns("notify", &format!("ours_{}", label(n)));
        let bare = common::median_ns("notify", &format!("bare_{}", label(n)));
        if let (Some(bare), Some(ours)) = (bare, ours) {
            println!(
                "SUMMARY notify bare event ({} sessions; the same work with no guarantees, not a floor): \
                 1,000 lookups + the host's 500 histories and mempool entries + 500 statuses + one line per \
                 subscriber median {}; ours {} = {:.2}× the bare event",
                label(n),
                common::fmt_ns(bare),
                common::fmt_ns(ours),
                ours / bare
            );
        }
        if let (Some(floor), Some(ours)) = (floor, ours) {
            println!(
                "SUMMARY notify floor ({} sessions): 500 × (map probe + status SHA-256 + hex) median {}; ours {} = \
                 {:.2}× the floor",
                label(n),
                common::fmt_ns(floor),
                common::fmt_ns(ours),
                ours / floor
            );
        }
    }
    c.final_summary();
}
