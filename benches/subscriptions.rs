//! One session's subscription list at size (issue 14, finding 4): subscribing
//! (and unsubscribing again) one more script when the session already holds
//! none, 100,000 and 1,000,000 (limits off), through
//! `SessionHandle::subscribe` / `unsubscribe`. The index lock is held for the
//! insert and the removal, so their cost at size is what every other
//! session's subscribe and every `notify` may wait for.
//!
//! Baseline, in the same process: what a sorted `Vec` of hashXs per session
//! (the list this crate kept before) costs for the same insert and removal
//! at the same sizes (a binary search, then shifting the tail).
//!
//! `cargo bench --features test-util --bench subscriptions`
//! (`SUBSCRIPTIONS_HELD=100000` to shrink the large case.)

mod common;

use common::{Fixture, Target, Zst, fmt_ns, median_ns, report, set_peer};
use criterion::black_box;
use futures::executor::block_on;
use indexer_sessions::testing::MemoryHost;
use indexer_sessions::{HashX, SessionHandle, encode_hex};
use std::time::{Duration, Instant};

/// The scripthash string of script `id`, spread over the key space.
fn alias(id: u64) -> String {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mixed = (id ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        chunk.copy_from_slice(&mixed.to_le_bytes());
    }
    encode_hex(&bytes)
}

fn hashx(id: u64) -> HashX {
    HashX::from_scripthash_hex(&alias(id)).expect("valid scripthash")
}

/// A session holding `held` subscriptions (ids `0..held`).
fn session_holding(fx: &Fixture, held: u64, peer: u32) -> SessionHandle<MemoryHost> {
    set_peer(common::public_addr(peer));
    let session = fx.manager.add_session(Zst).expect("admitted");
    for id in 0..held {
        block_on(session.subscribe(&alias(id))).expect("subscribed");
    }
    session
}

/// Subscribe + unsubscribe of one script not held, `iters` times.
fn ours(session: &SessionHandle<MemoryHost>, iters: u64, next: &mut u64) -> Duration {
    let started = Instant::now();
    for _ in 0..iters {
        *next += 1;
        let alias = alias(u64::MAX - *next);
        block_on(session.subscribe(black_box(&alias))).expect("subscribed");
        assert!(session.unsubscribe(&alias).expect("valid"));
    }
    started.elapsed()
}

/// The same on a sorted `Vec<HashX>`.
fn baseline(list: &mut Vec<HashX>, iters: u64, next: &mut u64) -> Duration {
    let started = Instant::now();
    for _ in 0..iters {
        *next += 1;
        let key = hashx(u64::MAX - *next);
        if let Err(at) = list.binary_search(&key) {
            list.insert(at, key);
        }
        if let Ok(at) = list.binary_search(black_box(&key)) {
            list.remove(at);
        }
    }
    started.elapsed()
}

fn main() {
    common::mark_start();
    let mut c = common::criterion();
    let held: u64 = std::env::var("SUBSCRIPTIONS_HELD")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut config = common::config(16);
    // The history cache is a fixed budget, not part of the list's cost.
    config.history_cache_bytes = 0;
    let fx = Fixture::new(config);
    println!("load average before: {}", common::load());
    let setup = Instant::now();
    let empty = session_holding(&fx, 0, 1);
    let tenth = session_holding(&fx, held / 10, 3);
    let full = session_holding(&fx, held, 2);
    let mut sorted: Vec<HashX> = (0..held).map(hashx).collect();
    sorted.sort();
    let mut sorted_tenth: Vec<HashX> = (0..held / 10).map(hashx).collect();
    sorted_tenth.sort();
    println!(
        "setup: {held} subscriptions in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let group_name = "subscribe_one_more";
    let mut group = c.benchmark_group(group_name);
    let mut next = 0u64;
    group.bench_function("ours_first", |b| {
        b.iter_custom(|iters| ours(&empty, iters, &mut next))
    });
    group.bench_function("ours_after_tenth", |b| {
        b.iter_custom(|iters| ours(&tenth, iters, &mut next))
    });
    group.bench_function("ours_after_held", |b| {
        b.iter_custom(|iters| ours(&full, iters, &mut next))
    });
    let mut small = Vec::new();
    group.bench_function("baseline_first", |b| {
        b.iter_custom(|iters| baseline(&mut small, iters, &mut next))
    });
    group.bench_function("baseline_after_tenth", |b| {
        b.iter_custom(|iters| baseline(&mut sorted_tenth, iters, &mut next))
    });
    group.bench_function("baseline_after_held", |b| {
        b.iter_custom(|iters| baseline(&mut sorted, iters, &mut next))
    });
    group.finish();
    println!("load average after: {}", common::load());
    assert_eq!(full.subscription_count(), held as usize);
    report(group_name, "ours_first", "baseline_first", Target::None);
    report(
        group_name,
        "ours_after_tenth",
        "baseline_after_tenth",
        Target::None,
    );
    report(group_name, "ours_after_held", "baseline_after_held", Target::None);
    if let (Some(first), Some(after)) = (
        median_ns(group_name, "ours_first"),
        median_ns(group_name, "ours_after_held"),
    ) {
        println!(
            "SUMMARY subscribe + unsubscribe, the {}th vs the 1st: {} vs {} (ratio {:.2})",
            held + 1,
            fmt_ns(after),
            fmt_ns(first),
            after / first
        );
    }
    c.final_summary();
}
