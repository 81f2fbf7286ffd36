//! Checkpoint proofs (issue 14, finding 3): `blockchain.block.header` with a
//! `cp_height` no client asked for before, on a chain of 100,000 headers,
//! through `SessionHandle::block_header` once the header merkle levels are
//! grown (`SessionManager::prepare_checkpoint_proofs`).
//!
//! Baseline, in the same process: what a proof for a fresh checkpoint cost
//! before the levels (and what ElectrumX-shaped code does without a cache):
//! read headers `0..=cp_height` from the same in-memory `Db`, hash them, and
//! compute the merkle branch and root over them.
//!
//! The growth itself (hashing every header once) is timed once and printed.
//!
//! `cargo bench --features test-util --bench checkpoints`
//! (`CHECKPOINT_BLOCKS=20000` to shrink the chain.)

mod common;

use common::{Fixture, Target, Zst, report, set_peer};
use criterion::black_box;
use futures::executor::block_on;
use indexer_sessions::merkle::{double_sha256, merkle_branch, merkle_root};
use indexer_sessions::{Db, Height, TxHash};
use std::time::{Duration, Instant};

fn header(height: u32) -> Vec<u8> {
    let mut header = vec![0u8; 80];
    header[..4].copy_from_slice(&height.to_le_bytes());
    header[79] = 0x42;
    header
}

/// Checkpoint and height of the `k`th request: spread over the chain, a
/// checkpoint per request (`k` < blocks).
fn request(k: u64, blocks: u32) -> (u32, u32) {
    let cp = 1 + (k.wrapping_mul(2_654_435_761) % u64::from(blocks - 1)) as u32;
    let height = (k.wrapping_mul(40_503) % u64::from(cp + 1)) as u32;
    (height, cp)
}

fn main() {
    common::mark_start();
    let mut c = common::criterion();
    let blocks: u32 = std::env::var("CHECKPOINT_BLOCKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let fx = Fixture::new(common::config(16));
    let mut tip = fx.db.current_tip();
    for height in 0..blocks {
        tip = fx.db.push_block(header(height), Vec::new());
    }
    block_on(fx.manager.notify(tip, &[]));
    set_peer(common::public_addr(1));
    let session = fx.manager.add_session(Zst).expect("admitted");
    println!("load average before: {}", common::load());
    let started = Instant::now();
    let read = block_on(fx.manager.prepare_checkpoint_proofs()).expect("levels grown");
    println!(
        "growing the levels over {blocks} headers: {read} headers read in {:.1} ms; {} bytes held",
        started.elapsed().as_secs_f64() * 1e3,
        fx.manager.info().caches.checkpoints.bytes
    );

    let group_name = "checkpoint_fresh_cp";
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    let mut next = 0u64;
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                next += 1;
                let (height, cp) = request(next, blocks);
                let reply = block_on(session.block_header(Height(height), black_box(cp))).expect("proof");
                black_box(reply.proof);
            }
            started.elapsed()
        })
    });
    let db = fx.db.clone();
    group.bench_function("baseline_rebuild", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                next += 1;
                let (height, cp) = request(next, blocks);
                let mut hashes = Vec::with_capacity(cp as usize + 1);
                while hashes.len() <= cp as usize {
                    let from = hashes.len() as u32;
                    let count = (cp + 1 - from).min(2016);
                    let headers = block_on(db.headers(Height(from), count)).expect("headers");
                    hashes.extend(headers.iter().map(|h| TxHash(double_sha256(h))));
                }
                black_box((merkle_branch(&hashes, height as usize), merkle_root(&hashes)));
            }
            started.elapsed()
        })
    });
    group.finish();
    println!("load average after: {}", common::load());
    report(group_name, "ours", "baseline_rebuild", Target::Below(1_000_000.0));
    c.final_summary();
}
