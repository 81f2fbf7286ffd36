//! Admission + charge with a `RedisLedger` against the `InProcessLedger`,
//! in the same run, and the Redis round trips per second a node makes
//! while serving 10,000 requests per second.
//!
//! Starts its own `redis-server` (Debian's package) on a free loopback
//! port, persistence off; fails when it is missing.
//!
//! `cargo bench --features redis,test-util --bench redis_ledger`

mod common;
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use common::{Target, Zst, report, set_peer};
use criterion::black_box;
use futures::FutureExt;
use indexer_sessions::redis_ledger::{RedisLedger, RedisLedgerConfig};
use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool};
use indexer_sessions::{
    Cost, GroupLedger, Host, HostParts, SessionHandle, SessionManager, StructuralValidator,
};
use std::time::{Duration, Instant};

/// Cost charged per request.
const COST: Cost = Cost::constant(1.0);
/// Live sessions besides the measured one, on each side.
const OTHERS: u32 = 1000;
/// Requests per timed chunk (the clock moves between chunks).
const CHUNK: u64 = 512;

fn manager<L: GroupLedger>(
    timer: &ManualTimer,
    ledger: L,
) -> SessionManager<HostParts<MemoryDb, MemoryDaemon, MemoryMempool, ManualTimer, StructuralValidator, L>> {
    SessionManager::builder(common::config(1 << 20))
        .timer(timer.clone())
        .db(MemoryDb::new())
        .daemon(MemoryDaemon::new())
        .mempool(MemoryMempool::new())
        .ledger(ledger)
        .build()
        .expect("valid configuration")
}

/// `OTHERS` sessions and the measured one, in its own /24.
fn sessions<H: Host>(manager: &SessionManager<H>) -> (Vec<SessionHandle<H>>, SessionHandle<H>) {
    let others = (0..OTHERS)
        .map(|n| {
            set_peer(common::public_addr(n + 1));
            manager.add_session(Zst).unwrap()
        })
        .collect();
    set_peer(common::public_addr(1 << 20));
    (others, manager.add_session(Zst).unwrap())
}

/// `iters` requests in chunks; between chunks, outside the timed region,
/// the clock moves on by twice what a chunk charges, so the session stays
/// unthrottled while recalculating every 100 cost units (which reports to
/// the ledger), as in service.
fn timed<H: Host>(timer: &ManualTimer, session: &SessionHandle<H>, iters: u64) -> Duration {
    common::timed_chunks(
        timer,
        iters,
        CHUNK,
        Duration::from_secs_f64(COST.get() * 2.0),
        || {
            let mut permit = session
                .admit()
                .now_or_never()
                .expect("unthrottled admission is immediate")
                .expect("admitted");
            permit.charge(black_box(COST));
            drop(permit);
        },
    )
}

fn main() {
    common::mark_start();
    let mut c = common::criterion();
    let redis = redis_server::RedisServer::start_anywhere();
    let url = redis.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let ledger = RedisLedger::new(RedisLedgerConfig {
        prefix: "bench".to_owned(),
        ..RedisLedgerConfig::new(&url, "bench-node")
    })
    .expect("a valid ledger configuration");
    runtime.spawn(ledger.clone().run());
    let deadline = Instant::now() + Duration::from_secs(10);
    while ledger.health().is_err() {
        assert!(
            Instant::now() < deadline,
            "the ledger never synced: {:?}",
            ledger.health()
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let timer = ManualTimer::new();
    let local = manager(&timer, indexer_sessions::InProcessLedger::new());
    let shared = manager(&timer, ledger.clone());
    let (_local_others, local_session) = sessions(&local);
    let (_shared_others, shared_session) = sessions(&shared);

    println!("load average before: {}", common::load());
    let group_name = "redis_ledger";
    let mut group = c.benchmark_group(group_name);
    group.bench_function("redis_admit_charge_drop", |b| {
        b.iter_custom(|iters| timed(&timer, &shared_session, iters))
    });
    group.bench_function("in_process_admit_charge_drop", |b| {
        b.iter_custom(|iters| timed(&timer, &local_session, iters))
    });
    group.finish();
    assert!(
        ledger.health().is_ok(),
        "Redis stayed reachable: {:?}",
        ledger.health()
    );

    // 10,000 requests per second for 5 s, over 1,000 sessions in 100 groups,
    // each request charging 1 (so the costs the ledger reports keep moving).
    let spread: Vec<_> = (0..1000u32)
        .map(|n| {
            // Groups 11.7.208.0/24 to 11.7.243.0/24 (2,000 + n % 100), ten sessions each.
            set_peer(common::public_addr(((2000 + n % 100) << 8) | (n / 100)));
            shared.add_session(Zst).unwrap()
        })
        .collect();
    let before = ledger.round_trips();
    let syncs_before = ledger.syncs();
    let start = Instant::now();
    let mut served = 0u64;
    while start.elapsed() < Duration::from_secs(5) {
        let tick = Instant::now();
        for _ in 0..100 {
            let session = &spread[(served % 1000) as usize];
            let mut permit = session
                .admit()
                .now_or_never()
                .expect("immediate")
                .expect("admitted");
            permit.charge(COST);
            drop(permit);
            served += 1;
        }
        timer.advance(Duration::from_millis(10));
        if let Some(rest) = Duration::from_millis(10).checked_sub(tick.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let round_trips = (ledger.round_trips() - before) as f64 / seconds;
    let syncs = (ledger.syncs() - syncs_before) as f64 / seconds;
    println!("load average after: {}", common::load());

    report(
        group_name,
        "redis_admit_charge_drop",
        "in_process_admit_charge_drop",
        Target::None,
    );
    println!(
        "SUMMARY redis_ledger/round_trips: {:.0} requests/s for {seconds:.1} s, {round_trips:.2} Redis round trips/s per node ({syncs:.2} syncs/s)",
        served as f64 / seconds
    );
    c.final_summary();
}
