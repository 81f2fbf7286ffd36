//! One block notification with 1,000 touched **outpoints**, at 10k and 1M
//! sessions, beside the same notification with 1,000 touched **scripts** on
//! the same manager (the in-process baseline): outpoints must be flat in
//! sessions like scripts, and cost about what scripts cost.
//!
//! Each session subscribes, through the public API, to 5 outpoints and 5
//! scripts of its own (10 subscriptions, all distinct: 10·N index entries).
//! An outpoint event touches 1,000 outpoints, 500 of them subscribed (one
//! each by 500 sessions spread evenly over the N); a script event the same
//! with scripts. Every iteration is a new block (a new tip) and, outside the
//! timed region, alternately spends and unspends the 500 subscribed
//! outpoints in the mempool (or adds and removes a mempool transaction on
//! the 500 scripts), so all 500 statuses change on every event (asserted:
//! 500 notifications per event). The 500 sessions' delivery futures are
//! polled after each event, outside the timed region. The manager and its
//! sessions are built once per size and serve both cases.
//!
//! `cargo bench --features test-util --bench notify_outpoints`
//! (`NOTIFY_SIZES=10000` to run only some sizes).

mod common;

use common::{Fixture, Target, Zst, report, set_peer};
use criterion::Criterion;
use futures::FutureExt;
use futures::executor::block_on;
use indexer_sessions::testing::{MemoryDb, MemoryHost, MemoryMempool};
use indexer_sessions::{
    Changes, ConfirmedOutpoint, HashX, Height, HistoryEntry, MempoolEntry, MempoolOutpoint, MempoolSpender,
    OutPoint, SessionHandle, Tip, TxHash, encode_hex,
};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

const OUTPOINT_SUBS: u64 = 5;
const SCRIPT_SUBS: u64 = 5;
const TOUCHED_SUBSCRIBED: u64 = 500;
const TOUCHED_OTHER: u64 = 500;
const GROUPS: u32 = 4096;
/// Ids of touched outpoints and scripts nobody subscribes to.
const UNSUBSCRIBED_BASE: u64 = 1 << 40;

fn outpoint(id: u64) -> OutPoint {
    let mut txid = [0x5au8; 32];
    txid[..8].copy_from_slice(&(id / 4).to_le_bytes());
    OutPoint {
        txid: TxHash(txid),
        vout: (id % 4) as u32,
    }
}

fn scripthash(id: u64) -> [u8; 32] {
    let mut bytes = [0xa5u8; 32];
    bytes[..8].copy_from_slice(&id.to_le_bytes());
    bytes
}

fn hashx(id: u64) -> HashX {
    HashX::from_scripthash(&scripthash(id))
}

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

/// Which sessions an event notifies, and what it touches.
struct Event {
    sessions: Vec<usize>,
    outpoints: Vec<OutPoint>,
    scripts: Vec<HashX>,
    touched_outpoints: Changes,
    touched_scripts: Vec<HashX>,
}

impl Event {
    fn new(n: usize) -> Self {
        let mut sessions = Vec::new();
        let (mut outpoints, mut scripts) = (Vec::new(), Vec::new());
        for k in 0..TOUCHED_SUBSCRIBED {
            let session = (k as usize) * n / TOUCHED_SUBSCRIBED as usize;
            sessions.push(session);
            outpoints.push(outpoint(session as u64 * OUTPOINT_SUBS + k % OUTPOINT_SUBS));
            scripts.push(hashx(session as u64 * SCRIPT_SUBS + k % SCRIPT_SUBS));
        }
        let mut touched_outpoints = Changes::new();
        touched_outpoints.extend(outpoints.iter().copied());
        touched_outpoints.extend((0..TOUCHED_OTHER).map(|k| outpoint(UNSUBSCRIBED_BASE + k)));
        let touched_scripts = scripts
            .iter()
            .copied()
            .chain((0..TOUCHED_OTHER).map(|k| hashx(UNSUBSCRIBED_BASE + k)))
            .collect();
        Event {
            sessions,
            outpoints,
            scripts,
            touched_outpoints,
            touched_scripts,
        }
    }
}

/// Moves the chain and the mempool on, outside the timed region.
struct Chain {
    db: MemoryDb,
    mempool: MemoryMempool,
    step: u64,
}

impl Chain {
    fn block(&mut self) -> Tip {
        let height = self.db.current_tip().height.0 + 1;
        self.db.push_block(header(height), Vec::new())
    }

    /// A new block; the outpoints spent (odd steps) or unspent (even) in the mempool.
    fn next_outpoints(&mut self, outpoints: &[OutPoint]) -> Tip {
        self.step += 1;
        let spender = (self.step % 2 == 1).then(|| MempoolSpender {
            txid: txid(0x77, self.step),
            has_unconfirmed_inputs: false,
        });
        for &op in outpoints {
            self.mempool.set_outpoint(
                op,
                MempoolOutpoint {
                    funder: None,
                    spender,
                },
            );
        }
        self.block()
    }

    /// A new block; a mempool transaction added to (odd steps) or removed from (even) the scripts.
    fn next_scripts(&mut self, scripts: &[HashX]) -> Tip {
        self.step += 1;
        if self.step % 2 == 1 {
            for hashx in scripts {
                let entry = MempoolEntry {
                    txid: txid(0x78, self.step),
                    fee: 1000,
                    has_unconfirmed_inputs: false,
                };
                self.mempool.add(*hashx, entry);
            }
        } else {
            self.mempool.remove(txid(0x78, self.step - 1));
        }
        self.block()
    }
}

type Delivery = Pin<Box<dyn Future<Output = ()> + Send>>;

fn label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn bench_size(c: &mut Criterion, n: usize) {
    let fx = Fixture::new(common::config(n + 1000));
    let event = Event::new(n);
    for &op in &event.outpoints {
        fx.db.set_outpoint(
            op,
            Some(ConfirmedOutpoint {
                height: Height(0),
                spender: None,
            }),
        );
    }
    for &hashx in &event.scripts {
        fx.db.set_history(
            hashx,
            vec![HistoryEntry {
                txid: txid(0x11, 1),
                height: Height(0),
            }],
        );
    }
    let tip = fx.db.push_block(header(0), Vec::new());
    block_on(fx.manager.notify(tip, &[]));

    let started = Instant::now();
    let mut sessions: Vec<SessionHandle<MemoryHost>> = Vec::with_capacity(n);
    for i in 0..n {
        set_peer(common::grouped_addr(i as u32, GROUPS));
        let session = fx.manager.add_session(Zst).expect("admitted");
        for j in 0..OUTPOINT_SUBS {
            let op = outpoint(i as u64 * OUTPOINT_SUBS + j);
            block_on(session.subscribe_outpoint(&op.txid.to_hex(), i64::from(op.vout), None))
                .expect("subscribed");
        }
        for j in 0..SCRIPT_SUBS {
            block_on(session.subscribe(&alias(i as u64 * SCRIPT_SUBS + j))).expect("subscribed");
        }
        sessions.push(session);
    }
    let mut deliveries: Vec<Delivery> = event
        .sessions
        .iter()
        .map(|&i| {
            let mut delivery: Delivery = Box::pin(sessions[i].deliver());
            assert!(delivery.as_mut().now_or_never().is_none());
            delivery
        })
        .collect();
    block_on(fx.manager.run_pending_cache_tasks());
    let info = fx.manager.info();
    println!(
        "notify_outpoints {}: setup of {n} sessions × ({OUTPOINT_SUBS} outpoints + {SCRIPT_SUBS} scripts) took {:.1} s ({} subscriptions, {} distinct outpoints)",
        label(n),
        started.elapsed().as_secs_f64(),
        info.subs,
        info.distinct_outpoint_subs,
    );
    let mut chain = Chain {
        db: fx.db.clone(),
        mempool: fx.mempool.clone(),
        step: 0,
    };

    let group_name = "notify_outpoints";
    let mut group = c.benchmark_group(group_name);
    group.sample_size(if n >= 1_000_000 { 10 } else { 30 });
    let outpoints_id = format!("outpoints_{}", label(n));
    group.bench_function(outpoints_id.as_str(), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let tip = chain.next_outpoints(&event.outpoints);
                let start = Instant::now();
                let report = block_on(fx.manager.notify(tip, &event.touched_outpoints));
                total += start.elapsed();
                assert_eq!(
                    report.outpoint_notifications, TOUCHED_SUBSCRIBED as usize,
                    "{report:?}"
                );
                for delivery in &mut deliveries {
                    assert!(delivery.as_mut().now_or_never().is_none());
                }
            }
            total
        })
    });
    // Back to no mempool spends, so the script case starts from rest.
    if chain.step % 2 == 1 {
        let tip = chain.next_outpoints(&event.outpoints);
        block_on(fx.manager.notify(tip, &event.touched_outpoints));
        for delivery in &mut deliveries {
            assert!(delivery.as_mut().now_or_never().is_none());
        }
    }
    chain.step = 0;
    let scripts_id = format!("scripts_{}", label(n));
    group.bench_function(scripts_id.as_str(), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let tip = chain.next_scripts(&event.scripts);
                let start = Instant::now();
                let report = block_on(fx.manager.notify(tip, &event.touched_scripts));
                total += start.elapsed();
                assert_eq!(
                    report.status_notifications, TOUCHED_SUBSCRIBED as usize,
                    "{report:?}"
                );
                for delivery in &mut deliveries {
                    assert!(delivery.as_mut().now_or_never().is_none());
                }
            }
            total
        })
    });
    group.finish();
    assert!(sessions.iter().all(|s| s.pending_notifications() == 0));
    report(group_name, &outpoints_id, &scripts_id, Target::None);
    let started = Instant::now();
    drop(deliveries);
    drop(sessions);
    println!(
        "notify_outpoints {}: teardown took {:.1} s; load average {}",
        label(n),
        started.elapsed().as_secs_f64(),
        common::load()
    );
}

fn main() {
    common::mark_start();
    let mut c = common::criterion();
    println!("load average before: {}", common::load());
    let sizes: Vec<usize> = match std::env::var("NOTIFY_SIZES") {
        Ok(list) => list
            .split(',')
            .filter_map(|s| s.trim().replace('_', "").parse().ok())
            .collect(),
        Err(_) => vec![10_000, 1_000_000],
    };
    for n in sizes {
        bench_size(&mut c, n);
    }
    c.final_summary();
}
