//! Add + remove session pairs (issue 13: ≥ 5 M pairs/s, ≤ 200 ns a pair; DESIGN §7
//! asked > 3 M pairs/s): a connection from
//! a public address (so it joins its /24 group in the ledger), dropped at
//! once, beside an ElectrumX-shaped baseline (a session table and a group
//! table whose cost is a sum over its members).
//!
//! The transport is zero-sized (see `common::Zst`): only the crate's own
//! allocations count. 1,000 other sessions stay connected throughout.
//! Connections come round robin from 1,024 /24 groups; every 65,536 pairs,
//! outside the timed region, the clock moves on one `recalc_interval` and
//! `SessionManager::recalculate` refunds the retained group cost (as
//! housekeeping does in service), so groups stay under the soft limit.
//!
//! `cargo bench --features test-util --bench sessions`

mod common;

use common::{Fixture, Target, Zst, report, set_peer};
use criterion::black_box;
use indexer_sessions::testing::MemoryHost;
use indexer_sessions::{SessionHandle, Timer, Transport, default_exempt_networks};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const GROUPS: u32 = 1024;
const OTHERS: u32 = 1000;
const CHUNK: u64 = 1024;
const REFUND_EVERY: u64 = 65_536;

/// The address of the `k`th connection: group `k % GROUPS`, in 11.0.0.0/14.
fn addr(k: u64) -> SocketAddr {
    let group = (k % u64::from(GROUPS)) as u32;
    let host = ((k / u64::from(GROUPS)) % 256) as u32;
    common::public_addr((group << 8) | host)
}

/// ElectrumX 1.16's `SessionManager.add_session` / `remove_session` and
/// `SessionGroup`, transcribed: a session table mapping each session to its
/// groups, a group table by name, group cost = retained + Σ member costs,
/// and the new session's concurrency recalculated from its groups' costs.
mod baseline {
    use super::*;
    use ipnetwork::IpNetwork;
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// What ElectrumX keeps per session (held, not all read here).
    #[allow(dead_code)]
    pub struct State {
        pub cost: f64,
        pub extra_cost: f64,
        pub target: u32,
        pub in_flight: u32,
        pub last_recv: Instant,
        pub requests: u64,
        pub recv_bytes: u64,
        pub send_bytes: u64,
    }

    #[allow(dead_code)]
    pub struct Session {
        pub id: u64,
        pub peer: SocketAddr,
        pub started: Instant,
        pub transport: Arc<dyn Transport>,
        pub state: Mutex<State>,
    }

    pub struct Group {
        pub weight: f64,
        pub sessions: HashSet<u64>,
        pub retained_cost: f64,
    }

    /// A session and the names of its groups.
    type SessionEntry = (Arc<Session>, Vec<String>);

    #[derive(Default)]
    pub struct Manager {
        sessions: Mutex<HashMap<u64, SessionEntry>>,
        groups: Mutex<HashMap<String, Group>>,
        next_id: AtomicU64,
        exempt: Vec<IpNetwork>,
    }

    impl Manager {
        pub fn new() -> Self {
            Manager {
                exempt: default_exempt_networks(),
                ..Manager::default()
            }
        }

        fn group_names(&self, peer: SocketAddr) -> Vec<String> {
            let ip = peer.ip();
            if self.exempt.iter().any(|net| net.contains(ip)) {
                return Vec::new();
            }
            let net = IpNetwork::new(ip, 24).expect("prefix");
            vec![IpNetwork::new(net.network(), 24).expect("prefix").to_string()]
        }

        pub fn add_session(&self, transport: Arc<dyn Transport>, now: Instant) -> u64 {
            let peer = transport.peer().addr;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let session = Arc::new(Session {
                id,
                peer,
                started: now,
                transport,
                state: Mutex::new(State {
                    cost: 5.0,
                    extra_cost: 0.0,
                    target: 10,
                    in_flight: 0,
                    last_recv: now,
                    requests: 0,
                    recv_bytes: 0,
                    send_bytes: 0,
                }),
            });
            let names = self.group_names(peer);
            let mut sessions = self.sessions.lock().unwrap();
            let mut groups = self.groups.lock().unwrap();
            for name in &names {
                let group = groups.entry(name.clone()).or_insert_with(|| Group {
                    weight: 1.0,
                    sessions: HashSet::new(),
                    retained_cost: 0.0,
                });
                group.sessions.insert(id);
            }
            sessions.insert(id, (session.clone(), names));
            // recalc_concurrency → extra_cost: Σ over groups (group cost − own cost) × weight.
            let own = session.state.lock().unwrap().cost;
            let mut extra = 0.0;
            for name in &sessions[&id].1 {
                let group = &groups[name];
                let members: f64 = group
                    .sessions
                    .iter()
                    .map(|member| sessions[member].0.state.lock().unwrap().cost)
                    .sum();
                extra += (group.retained_cost + members - own) * group.weight;
            }
            let mut state = session.state.lock().unwrap();
            state.extra_cost = extra;
            let fraction = ((state.cost + extra - 1000.0) / 9000.0).max(0.0);
            state.target = ((1.0 - fraction) * 10.0).ceil().max(0.0) as u32;
            id
        }

        pub fn remove_session(&self, id: u64) {
            let mut sessions = self.sessions.lock().unwrap();
            let Some((session, names)) = sessions.remove(&id) else {
                return;
            };
            let cost = session.state.lock().unwrap().cost;
            let mut groups = self.groups.lock().unwrap();
            for name in &names {
                if let Some(group) = groups.get_mut(name) {
                    group.retained_cost += cost;
                    group.sessions.remove(&id);
                }
            }
        }

        /// Housekeeping's refund: retained cost down by `amount`, empty groups dropped.
        pub fn refund(&self, amount: f64) {
            let mut groups = self.groups.lock().unwrap();
            groups.retain(|_, group| {
                group.retained_cost = (group.retained_cost - amount).max(0.0);
                !group.sessions.is_empty() || group.retained_cost > 0.0
            });
        }
    }
}

/// Runs `pair(k)` for `iters` consecutive `k` from `*next` in timed chunks;
/// `refund` runs outside the timed region every [`REFUND_EVERY`] pairs.
fn timed(iters: u64, next: &mut u64, mut pair: impl FnMut(u64), mut refund: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let from = *next;
        let start = Instant::now();
        for k in from..from + n {
            pair(k);
        }
        total += start.elapsed();
        *next += n;
        left -= n;
        if from / REFUND_EVERY != *next / REFUND_EVERY {
            refund();
        }
    }
    total
}

fn main() {
    common::mark_start();
    let mut c = common::criterion();
    let fx = Fixture::new(common::config(1 << 22));
    let recalc_interval = fx.manager.config().recalc_interval;
    let _others: Vec<SessionHandle<MemoryHost>> = (0..OTHERS)
        .map(|n| {
            set_peer(common::public_addr((200 << 16) | n));
            fx.manager.add_session(Zst).unwrap()
        })
        .collect();
    let base = baseline::Manager::new();
    for n in 0..OTHERS {
        set_peer(common::public_addr((200 << 16) | n));
        base.add_session(std::sync::Arc::new(Zst), fx.timer.now());
    }

    println!("load average before: {}", common::load());
    let group_name = "sessions";
    let mut group = c.benchmark_group(group_name);
    let mut next = 0u64;
    group.bench_function("ours_add_remove", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                &mut next,
                |k| {
                    set_peer(addr(k));
                    let session = fx.manager.add_session(Zst).expect("admitted");
                    drop(black_box(session));
                },
                || {
                    fx.timer.advance(recalc_interval);
                    fx.manager.recalculate();
                },
            )
        })
    });
    let groups_after = fx.manager.groups().len();
    let mut next = 0u64;
    // The same refund per pass as the crate: recalc_interval × hard / 5000.
    let refund = recalc_interval.as_secs_f64() * 10000.0 / 5000.0;
    group.bench_function("baseline_add_remove", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                &mut next,
                |k| {
                    set_peer(addr(k));
                    let id = base.add_session(std::sync::Arc::new(Zst), fx.timer.now());
                    base.remove_session(black_box(id));
                },
                || base.refund(refund),
            )
        })
    });
    // Floors: what one add + remove pair cannot avoid. A session is one
    // allocation (304 B; the floor allocates 640 B, the same malloc bin
    // cost), an entry in the session table and one in the group table
    // (insert + remove each), uncontended lock pairs (the session table
    // twice, the ledger twice, the session's state and its mailbox once
    // each), and `Arc` clone + drop pairs (the session's in the table, the
    // manager's in the handle, the context's in the session).
    let mutex = std::sync::Mutex::new(0u64);
    let arc = std::sync::Arc::new(0u64);
    // 2,048 groups in 11.128.0.0/13, apart from the ones inserted.
    let mut table: hashbrown::HashMap<ipnetwork::IpNetwork, [u64; 4]> = (0x8000..0x8800u32)
        .map(|n| {
            (
                ipnetwork::IpNetwork::new(common::public_addr(n << 8).ip(), 24).unwrap(),
                [0; 4],
            )
        })
        .collect();
    let mut k = 0u64;
    group.bench_function("floor_mutex_lock_unlock", |b| {
        b.iter(|| *black_box(&mutex).lock().unwrap() += 1)
    });
    group.bench_function("floor_arc_clone_drop", |b| {
        b.iter(|| drop(black_box(black_box(&arc).clone())))
    });
    group.bench_function("floor_group_insert_remove", |b| {
        b.iter(|| {
            k += 1;
            let key = ipnetwork::IpNetwork::new(addr(k).ip(), 24).unwrap();
            let key = ipnetwork::IpNetwork::new(key.network(), 24).unwrap();
            table.insert(black_box(key), [k; 4]);
            black_box(table.remove(&key));
        })
    });
    group.bench_function("floor_alloc_session", |b| {
        b.iter(|| drop(black_box(Box::new([0u64; 80]))))
    });
    group.finish();
    println!("load average after: {}", common::load());
    println!("groups in the ledger after the run: {groups_after}");
    assert_eq!(fx.manager.session_count(), OTHERS as usize);
    report(
        group_name,
        "ours_add_remove",
        "baseline_add_remove",
        Target::RateAbove(5e6),
    );
    for id in [
        "floor_mutex_lock_unlock",
        "floor_arc_clone_drop",
        "floor_group_insert_remove",
        "floor_alloc_session",
    ] {
        if let Some(ns) = common::median_ns(group_name, id) {
            println!("SUMMARY {group_name}/{id}: median {}", common::fmt_ns(ns));
        }
    }
    c.final_summary();
}
