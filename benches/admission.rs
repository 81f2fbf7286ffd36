//! Admission + charge of one request, unthrottled, one thread (target
//! ≤ 20 ns; DESIGN §7 asked < 30 ns), three ways: `try_admit()` (no
//! future), `admit()` polled where it lies (as `.await` polls it) and
//! `admit_owned()` (the `'static` future and permit, one `Arc` more); and
//! `SessionHandle::charge` alone; each beside a baseline that
//! does the same accounting the way a straightforward port would: one global
//! `Mutex<HashMap<SessionId, SessionState>>` looked up per request, an f64
//! cost and a semaphore count.
//!
//! `cargo bench --features test-util --bench admission`

mod common;

use common::{Fixture, Target, Zst, report, set_peer};
use criterion::black_box;
use indexer_sessions::Cost;
use indexer_sessions::testing::ManualTimer;
use indexer_sessions::testing::MemoryHost;
use indexer_sessions::{SessionHandle, SessionId, Timer};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Cost charged per request (`blockchain.transaction.get`, `server.features`).
const COST: f64 = 1.0;
/// Live sessions besides the measured one (both sides).
const OTHERS: u32 = 1000;
/// Requests per timed chunk (the clock moves between chunks).
const CHUNK: u64 = 512;

/// The baseline: what a direct port of ElectrumX's accounting looks like.
mod baseline {
    use super::*;

    pub struct State {
        cost: f64,
        cost_at_recalc: f64,
        decayed_at: Instant,
        /// Requests in flight (the semaphore count) and the limit.
        in_flight: u32,
        target: u32,
        sleep: Duration,
        requests: u64,
    }

    pub struct Accounting {
        timer: ManualTimer,
        sessions: Mutex<HashMap<SessionId, State>>,
    }

    pub struct Permit<'a> {
        accounting: &'a Accounting,
        id: SessionId,
        charge: f64,
    }

    impl Permit<'_> {
        pub fn charge(&mut self, amount: f64) -> Result<(), ()> {
            if !(amount.is_finite() && amount >= 0.0) {
                return Err(());
            }
            self.charge += amount;
            Ok(())
        }
    }

    impl Drop for Permit<'_> {
        fn drop(&mut self) {
            let mut sessions = self.accounting.sessions.lock().unwrap();
            let state = sessions.get_mut(&self.id).expect("live session");
            state.in_flight -= 1;
            self.accounting.add_cost(state, self.charge);
        }
    }

    impl Accounting {
        pub fn new(timer: ManualTimer, sessions: u64) -> Self {
            let now = timer.now();
            let map = (0..sessions)
                .map(|id| {
                    let state = State {
                        cost: 5.0,
                        cost_at_recalc: 5.0,
                        decayed_at: now,
                        in_flight: 0,
                        target: 10,
                        sleep: Duration::ZERO,
                        requests: 0,
                    };
                    (SessionId(id), state)
                })
                .collect();
            Accounting {
                timer,
                sessions: Mutex::new(map),
            }
        }

        pub fn admit(&self, id: SessionId) -> Option<Permit<'_>> {
            let mut sessions = self.sessions.lock().unwrap();
            let state = sessions.get_mut(&id)?;
            if state.in_flight < state.target && state.sleep.is_zero() {
                state.in_flight += 1;
                state.requests += 1;
                Some(Permit {
                    accounting: self,
                    id,
                    charge: 0.0,
                })
            } else {
                None
            }
        }

        pub fn charge(&self, id: SessionId, amount: f64) -> Result<(), ()> {
            if !(amount.is_finite() && amount >= 0.0) {
                return Err(());
            }
            let mut sessions = self.sessions.lock().unwrap();
            let state = sessions.get_mut(&id).ok_or(())?;
            self.add_cost(state, amount);
            Ok(())
        }

        /// Adds the cost; past a drift of 100, decays and retargets (the same
        /// rule as the crate's meter: soft 1000, hard 10000, 10 concurrent).
        fn add_cost(&self, state: &mut State, amount: f64) {
            state.cost += amount;
            if (state.cost - state.cost_at_recalc).abs() > 100.0 {
                let now = self.timer.now();
                let elapsed = now.saturating_duration_since(state.decayed_at).as_secs_f64();
                state.decayed_at = now;
                state.cost = (state.cost - elapsed).max(0.0);
                state.cost_at_recalc = state.cost;
                let fraction = ((state.cost - 1000.0) / 9000.0).max(0.0);
                state.target = ((1.0 - fraction) * 10.0).ceil().max(0.0) as u32;
                state.sleep = Duration::from_millis(2500).mul_f64(fraction.min(1.0));
            }
        }
    }
}

/// Runs `request` `iters` times in chunks of [`CHUNK`]; between chunks,
/// outside the timed region, the clock moves on by twice what a chunk
/// charges. Cost decays 1 unit per second (hard limit 10000, no
/// subscriptions), so both sides stay unthrottled while their recalculation
/// still runs every 100 cost units, as in service.
fn timed(timer: &ManualTimer, iters: u64, request: impl FnMut()) -> Duration {
    common::timed_chunks(timer, iters, CHUNK, Duration::from_secs_f64(COST * 2.0), request)
}

/// Polls `future` once where it lies, as `.await` does (`now_or_never`
/// would move it first).
#[inline(always)]
fn poll_in_place<F: std::future::Future>(future: F) -> Option<F::Output> {
    let future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    match future.poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// Prints the floors' medians as SUMMARY lines.
fn floors(group: &str, ids: &[&str]) {
    for id in ids {
        if let Some(ns) = common::median_ns(group, id) {
            println!("SUMMARY {group}/{id}: median {}", common::fmt_ns(ns));
        }
    }
}

fn main() {
    common::mark_start();
    let mut c = common::criterion();
    let fx = Fixture::new(common::config(1 << 20));
    let _others: Vec<SessionHandle<MemoryHost>> = (0..OTHERS)
        .map(|n| {
            set_peer(common::public_addr(n + 1));
            fx.manager.add_session(Zst).unwrap()
        })
        .collect();
    set_peer(common::public_addr(1 << 20));
    let session = fx.manager.add_session(Zst).unwrap();
    let base = baseline::Accounting::new(fx.timer.clone(), u64::from(OTHERS) + 1);
    let base_id = SessionId(u64::from(OTHERS) / 2);
    println!("load average before: {}", common::load());
    let group_name = "admission";
    let mut group = c.benchmark_group(group_name);
    group.bench_function("ours_admit_charge_drop", |b| {
        b.iter_custom(|iters| {
            timed(&fx.timer, iters, || {
                let mut permit = poll_in_place(session.admit())
                    .expect("unthrottled admission is immediate")
                    .expect("admitted");
                permit.charge(Cost::new(black_box(COST)).unwrap());
                drop(permit);
            })
        })
    });
    group.bench_function("ours_try_admit_charge_drop", |b| {
        b.iter_custom(|iters| {
            timed(&fx.timer, iters, || {
                let mut permit = session
                    .try_admit()
                    .expect("admitted")
                    .expect("unthrottled admission is immediate");
                permit.charge(Cost::new(black_box(COST)).unwrap());
                drop(permit);
            })
        })
    });
    group.bench_function("ours_admit_owned_charge_drop", |b| {
        b.iter_custom(|iters| {
            timed(&fx.timer, iters, || {
                let mut permit = poll_in_place(session.admit_owned())
                    .expect("unthrottled admission is immediate")
                    .expect("admitted");
                permit.charge(Cost::new(black_box(COST)).unwrap());
                drop(permit);
            })
        })
    });
    group.bench_function("baseline_admit_charge_drop", |b| {
        b.iter_custom(|iters| {
            timed(&fx.timer, iters, || {
                let mut permit = base.admit(black_box(base_id)).expect("admitted");
                permit.charge(black_box(COST)).unwrap();
                drop(permit);
            })
        })
    });
    group.bench_function("ours_session_charge", |b| {
        b.iter_custom(|iters| {
            timed(&fx.timer, iters, || {
                session.charge(Cost::new(black_box(COST)).unwrap())
            })
        })
    });
    group.bench_function("baseline_session_charge", |b| {
        b.iter_custom(|iters| {
            timed(&fx.timer, iters, || {
                base.charge(black_box(base_id), black_box(COST)).unwrap()
            })
        })
    });
    // Floors: what one admit + charge + drop cannot avoid. The lock-free
    // path is one compare-and-swap to admit and one to release; the
    // `'static` future of `admit_owned()` and its permit also hold an `Arc`
    // of the session (one clone and one drop).
    let word = std::sync::atomic::AtomicU64::new(0);
    let arc = std::sync::Arc::new(0u64);
    let mutex = Mutex::new(0u64);
    group.bench_function("floor_two_cas", |b| {
        b.iter(|| {
            for delta in [1u64, u64::MAX] {
                let word = black_box(&word);
                let now = word.load(std::sync::atomic::Ordering::Relaxed);
                let _ = word.compare_exchange(
                    now,
                    now.wrapping_add(delta),
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        })
    });
    group.bench_function("floor_arc_clone_drop", |b| {
        b.iter(|| drop(black_box(black_box(&arc).clone())))
    });
    group.bench_function("floor_mutex_lock_unlock", |b| {
        b.iter(|| *black_box(&mutex).lock().unwrap() += 1)
    });
    group.finish();
    assert_eq!(session.throttle().fraction, 0.0, "the session stayed unthrottled");

    println!("load average after: {}", common::load());
    for ours in [
        "ours_try_admit_charge_drop",
        "ours_admit_charge_drop",
        "ours_admit_owned_charge_drop",
    ] {
        report(
            group_name,
            ours,
            "baseline_admit_charge_drop",
            Target::Below(20.0),
        );
    }
    report(
        group_name,
        "ours_session_charge",
        "baseline_session_charge",
        Target::None,
    );
    floors(
        group_name,
        &["floor_two_cas", "floor_arc_clone_drop", "floor_mutex_lock_unlock"],
    );
    if let (Some(cas), Some(arc)) = (
        common::median_ns(group_name, "floor_two_cas"),
        common::median_ns(group_name, "floor_arc_clone_drop"),
    ) {
        println!(
            "SUMMARY {group_name}/floor_admit_charge_drop: two CAS = {}; with admit_owned's Arc clone/drop = {}",
            common::fmt_ns(cas),
            common::fmt_ns(cas + arc)
        );
    }
    c.final_summary();
}
