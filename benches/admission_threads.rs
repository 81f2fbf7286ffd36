//! Admission on two cores: two threads admitting and charging requests of
//! two different sessions, against one thread (the request path takes no
//! global lock, so throughput should scale); and one thread admitting
//! while another runs notification passes (a pass must not stall
//! admission).
//!
//! `cargo bench --features test-util --bench admission_threads`

mod common;

use common::{Fixture, Zst, set_peer};
use futures::FutureExt;
use futures::executor::block_on;
use indexer_sessions::testing::MemoryHost;
use indexer_sessions::{Config, Cost, HashX, Height, HistoryEntry, MempoolEntry, SessionHandle, TxHash};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const COST: Cost = Cost::constant(1.0);

/// A hard limit no run reaches, so nothing throttles while each session
/// still recalculates (and reports to the group ledger) every 100 units.
fn config() -> Config {
    let mut config = common::config(1 << 20);
    config.limits.cost_soft_limit = 1e14;
    config.limits.cost_hard_limit = 1e15;
    config
}

fn request(session: &SessionHandle<MemoryHost>) {
    let mut permit = session
        .admit()
        .now_or_never()
        .expect("unthrottled admission is immediate")
        .expect("admitted");
    permit.charge(COST);
    drop(permit);
}

/// Runs `per_thread` requests on each session, one thread per session;
/// returns the wall time.
fn on_threads(sessions: &[&SessionHandle<MemoryHost>], per_thread: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for session in sessions {
            scope.spawn(move || {
                for _ in 0..per_thread {
                    request(session);
                }
            });
        }
    });
    start.elapsed()
}

fn main() {
    common::mark_start();
    let mut c = common::criterion();
    let fx = Fixture::new(config());
    let _others: Vec<_> = (0..1000u32)
        .map(|n| {
            set_peer(common::public_addr(n + 1));
            fx.manager.add_session(Zst).unwrap()
        })
        .collect();
    set_peer(common::public_addr(1 << 20));
    let a = fx.manager.add_session(Zst).unwrap();
    set_peer(common::public_addr((1 << 20) + (1 << 8)));
    let b = fx.manager.add_session(Zst).unwrap();

    // Scripts for the notification passes: 1,000 subscribed, all changing.
    let tip = fx.db.push_block(vec![0x42; 80], vec![]);
    let mut touched = Vec::new();
    let subscribers: Vec<_> = (0..1000u32)
        .map(|n| {
            let mut scripthash = [0x77u8; 32];
            scripthash[..4].copy_from_slice(&n.to_le_bytes());
            let hashx = HashX::from_scripthash(&scripthash);
            fx.db.add_history(
                hashx,
                HistoryEntry {
                    txid: TxHash([1; 32]),
                    height: Height(0),
                },
            );
            touched.push(hashx);
            scripthash.reverse();
            set_peer(common::public_addr(0x0020_0000 + n));
            let session = fx.manager.add_session(Zst).unwrap();
            block_on(session.subscribe(&indexer_sessions::encode_hex(&scripthash))).unwrap();
            session
        })
        .collect();
    block_on(fx.manager.notify(tip, &[]));

    println!("load average before: {}", common::load());
    let group_name = "admission_threads";
    let mut group = c.benchmark_group(group_name);
    // Each figure is the time per request: wall time / requests served.
    group.bench_function("one_thread", |bench| {
        bench.iter_custom(|iters| on_threads(&[&a], iters))
    });
    group.bench_function("two_threads", |bench| {
        bench.iter_custom(|iters| on_threads(&[&a, &b], iters.div_ceil(2)))
    });
    let stop = AtomicBool::new(false);
    let mut passes = 0u64;
    std::thread::scope(|scope| {
        let notifier = scope.spawn(|| {
            let mut step = 0u64;
            while !stop.load(Ordering::Relaxed) {
                step += 1;
                for hashx in &touched {
                    if step % 2 == 1 {
                        fx.mempool.add(
                            *hashx,
                            MempoolEntry {
                                txid: TxHash([2; 32]),
                                fee: 1000,
                                has_unconfirmed_inputs: false,
                            },
                        );
                    }
                }
                if step % 2 == 0 {
                    fx.mempool.remove(TxHash([2; 32]));
                }
                block_on(fx.manager.notify(tip, &touched));
                for session in &subscribers {
                    let deliver = session.deliver();
                    let mut deliver = std::pin::pin!(deliver);
                    while session.pending_notifications() > 0 {
                        if (&mut deliver).now_or_never().is_some() {
                            break;
                        }
                    }
                }
            }
            step
        });
        group.bench_function("one_thread_beside_notify", |bench| {
            bench.iter_custom(|iters| on_threads(&[&a], iters))
        });
        stop.store(true, Ordering::Relaxed);
        passes = notifier.join().expect("the notifier ran");
    });
    group.finish();
    println!("load average after: {}", common::load());

    let one = common::median_ns(group_name, "one_thread");
    let two = common::median_ns(group_name, "two_threads");
    let beside = common::median_ns(group_name, "one_thread_beside_notify");
    if let (Some(one), Some(two), Some(beside)) = (one, two, beside) {
        println!(
            "SUMMARY admission_threads: one thread {} per request; two threads {} per request = {:.2}x one thread's throughput (target >= 1.7x); beside {passes} notify passes of 1,000 changed statuses {} per request ({:.2}x one thread alone)",
            common::fmt_ns(one),
            common::fmt_ns(two),
            one / two,
            common::fmt_ns(beside),
            beside / one,
        );
    }
    c.final_summary();
}
