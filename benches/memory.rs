//! Memory held by the crate (DESIGN §7 and issue 13: < 1 KiB per idle
//! session, ≤ 64 B per subscription, ≤ 1 GiB for 1M sessions × 10
//! subscriptions to distinct scripts), counted by a
//! global allocator: live bytes requested from the allocator (malloc's own
//! per-block overhead, about 8–16 B, is not included; allocation counts are
//! printed so it can be estimated) and the process RSS.
//!
//! The transport is zero-sized (`common::Zst`) and the host's `Vec` of
//! handles is reserved before counting, so only the crate's allocations are
//! measured. Sessions come from public addresses.
//!
//! The subscription index keeps one shared entry per distinct script (a
//! 48-byte slab entry found through a hash table of `u32` slots) and per
//! session an exact-capacity list of slots, so the cost per subscription depends
//! on how many sessions share a script; both extremes are measured:
//! *distinct* (every subscription a new script, the worst case) and
//! *shared* (10,000 scripts, each subscribed by N/1,000 sessions).
//! Per-subscription figures use `history_cache_bytes = 0` so that the
//! history cache (a fixed byte budget, not per subscription) does not count;
//! the 1M × 10 totals use the default configuration, cache included, and
//! the cache's share is printed.
//!
//! The floor of a distinct-script subscription is measured beside it with
//! the same allocator: the least any index must hold per distinct script
//! (its 32-byte scripthash, the 8-byte status fingerprint, one
//! pointer-sized subscriber: 48 B in a slab of exact size), one `u32` slot
//! per subscription in its session's list, and a `hashbrown` table of `u32`
//! slots at the load hashbrown gives that many entries.
//!
//! `cargo bench --features test-util --bench memory`
//! (`MEMORY_TOTAL_SESSIONS=100000` to shrink the 1M runs.)

mod common;

use common::{Fixture, Zst, set_peer};
use futures::executor::block_on;
use indexer_sessions::testing::MemoryHost;
use indexer_sessions::{Config, SessionHandle, encode_hex};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::Instant;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the same arguments; the
// counters are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            BLOCKS.fetch_add(1, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            BLOCKS.fetch_add(1, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Live bytes and live blocks now.
#[derive(Clone, Copy)]
struct Snapshot {
    bytes: isize,
    blocks: isize,
}

fn snapshot() -> Snapshot {
    Snapshot {
        bytes: LIVE.load(Ordering::Relaxed),
        blocks: BLOCKS.load(Ordering::Relaxed),
    }
}

impl Snapshot {
    fn since(self, before: Snapshot) -> Snapshot {
        Snapshot {
            bytes: self.bytes - before.bytes,
            blocks: self.blocks - before.blocks,
        }
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

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

/// The scripthash string of script `id` (its hashX starts with `id`).
fn alias(id: u64) -> String {
    let mut bytes = [0xa5u8; 32];
    bytes[..8].copy_from_slice(&id.to_le_bytes());
    bytes.reverse();
    encode_hex(&bytes)
}

#[derive(Clone, Copy, PartialEq)]
enum Scripts {
    /// Every subscription a script of its own.
    Distinct,
    /// 10,000 scripts shared by all sessions.
    Shared,
}

impl Scripts {
    fn id(self, session: usize, sub: u64, sessions: usize) -> u64 {
        match self {
            Scripts::Distinct => session as u64 * 10 + sub,
            // Session i takes scripts (i mod 1000)·10 + sub: each of the
            // 10,000 scripts is shared by sessions / 1000 sessions.
            Scripts::Shared => {
                let _ = sessions;
                (session % 1000) as u64 * 10 + sub
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scripts::Distinct => "distinct scripts",
            Scripts::Shared => "shared scripts (10,000 scripts)",
        }
    }
}

fn config(sessions: usize, history_cache_bytes: u64) -> Config {
    let mut config = common::config(sessions + 1);
    config.history_cache_bytes = history_cache_bytes;
    config
}

/// Adds `n` sessions from `groups` /24 groups round robin; `None`: a group
/// of its own for each session (in 11.0.0.0/8 … 26.0.0.0/8).
fn add_sessions(fx: &Fixture, handles: &mut Vec<SessionHandle<MemoryHost>>, n: usize, groups: Option<u32>) {
    for i in 0..n {
        let addr = match groups {
            Some(groups) => common::grouped_addr(i as u32, groups),
            None => {
                let [_, a, b, c] = (i as u32).to_be_bytes();
                assert!(a < 16, "address space exhausted");
                SocketAddr::from(([11 + a, b, c, 1], 50001))
            }
        };
        set_peer(addr);
        handles.push(fx.manager.add_session(Zst).expect("admitted"));
    }
}

fn subscribe_all(fx: &Fixture, handles: &[SessionHandle<MemoryHost>], subs: u64, scripts: Scripts) {
    for (i, session) in handles.iter().enumerate() {
        for j in 0..subs {
            block_on(session.subscribe(&alias(scripts.id(i, j, handles.len())))).expect("subscribed");
        }
    }
    block_on(fx.manager.run_pending_cache_tasks());
}

/// Bytes per idle session, with `groups` /24 groups for `n` sessions.
fn idle_sessions(n: usize, groups: Option<u32>) -> f64 {
    let fx = Fixture::new(config(n, 0));
    let mut handles = Vec::with_capacity(n);
    // Warm up: one session in and out, so lazily built state is not counted.
    add_sessions(&fx, &mut handles, 1, Some(1));
    handles.clear();
    let before = snapshot();
    add_sessions(&fx, &mut handles, n, groups);
    let used = snapshot().since(before);
    let per = used.bytes as f64 / n as f64;
    println!(
        "idle sessions: {n} sessions in {} groups: {} bytes, {:.1} B per session ({:.2} blocks per session)",
        fx.manager.groups().len(),
        used.bytes,
        per,
        used.blocks as f64 / n as f64
    );
    per
}

/// Bytes per subscription: `n` sessions × 10, cache budget 0.
fn per_subscription(n: usize, scripts: Scripts) -> f64 {
    let fx = Fixture::new(config(n, 0));
    let mut handles = Vec::with_capacity(n);
    add_sessions(&fx, &mut handles, n, Some(4096));
    block_on(handles[0].subscribe(&alias(u64::MAX / 2))).unwrap();
    assert!(handles[0].unsubscribe(&alias(u64::MAX / 2)).unwrap());
    block_on(fx.manager.run_pending_cache_tasks());
    let before = snapshot();
    subscribe_all(&fx, &handles, 10, scripts);
    let used = snapshot().since(before);
    let subs = n as f64 * 10.0;
    let per = used.bytes as f64 / subs;
    println!(
        "subscriptions, {}: {n} sessions × 10: {} bytes, {:.1} B per subscription ({:.2} blocks per subscription)",
        scripts.name(),
        used.bytes,
        per,
        used.blocks as f64 / subs
    );
    per
}

/// 1M sessions × 10 subscriptions in one process, default configuration
/// (64 MiB history cache). Returns (total bytes, cache bytes).
fn total(n: usize, scripts: Scripts) -> (f64, f64) {
    let started = Instant::now();
    let rss_before = rss_mib();
    let before = snapshot();
    let fx = Fixture::new(config(n, Config::default().history_cache_bytes));
    let mut handles = Vec::with_capacity(n);
    let handles_bytes = (n * std::mem::size_of::<SessionHandle<MemoryHost>>()) as isize;
    add_sessions(&fx, &mut handles, n, Some(4096));
    subscribe_all(&fx, &handles, 10, scripts);
    let used = snapshot().since(before);
    let crate_bytes = (used.bytes - handles_bytes) as f64;
    let rss = rss_mib();
    // The history cache's share: what invalidating every history releases.
    let history = fx.manager.info().caches.history;
    let with_cache = snapshot();
    let tip = fx.db.push_block(vec![0; 80], Vec::new());
    block_on(fx.manager.notify(tip, &[]));
    let tip = fx.db.replace_tip(vec![1; 80], Vec::new());
    // A same-height reorg clears every history.
    block_on(fx.manager.notify(tip, &[]));
    block_on(fx.manager.run_pending_cache_tasks());
    let cache = (with_cache.bytes - snapshot().bytes) as f64;
    println!(
        "history cache: {} entries weighing {:.1} MiB of its {:.0} MiB budget hold {:.1} MiB ({:.0} B per entry)",
        history.entries,
        history.bytes as f64 / MIB,
        history.budget as f64 / MIB,
        cache / MIB,
        cache / history.entries.max(1) as f64
    );
    println!(
        "total, {}: {n} sessions × 10 subscriptions: {:.3} GiB crate-owned ({:.0} B per session), \
         of which history cache {:.1} MiB; RSS {:.0} → {:.0} MiB; {:.0} s",
        scripts.name(),
        crate_bytes / GIB,
        crate_bytes / n as f64,
        cache / MIB,
        rss_before,
        rss,
        started.elapsed().as_secs_f64()
    );
    (crate_bytes, cache)
}

/// The floor of `n` sessions × 10 distinct-script subscriptions, in bytes
/// per subscription: (packed entries, table of slots, per-session slot
/// lists), measured with the counting allocator.
fn floor_distinct(n: usize) -> (f64, f64, f64) {
    use std::hash::BuildHasher;
    let subs = n * 10;
    let measure = |f: &mut dyn FnMut()| {
        let before = snapshot();
        f();
        snapshot().since(before).bytes as f64 / subs as f64
    };
    /// Scripthash, status fingerprint, subscriber.
    type Packed = ([u8; 32], u64, std::sync::Arc<()>);
    assert_eq!(std::mem::size_of::<Packed>(), 48);
    let subscriber = std::sync::Arc::new(());
    let mut entries: Vec<Packed> = Vec::new();
    let scripthash = |i: usize| {
        let mut hash = [0xa5u8; 32];
        hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
        hash
    };
    let entry_bytes = measure(&mut || {
        entries.reserve_exact(subs);
        entries.extend((0..subs).map(|i| (scripthash(i), 0, subscriber.clone())));
    });
    let hasher = foldhash::fast::RandomState::default();
    let mut table = hashbrown::HashTable::<u32>::new();
    let table_bytes = measure(&mut || {
        for slot in 0..subs as u32 {
            let hash = |slot: &u32| hasher.hash_one(&entries[*slot as usize].0[..11]);
            table.insert_unique(hash(&slot), slot, hash);
        }
    });
    let mut lists: Vec<Box<[u32]>> = Vec::with_capacity(n);
    let list_bytes = measure(&mut || {
        lists.extend((0..n).map(|i| (0..10).map(|j| (i * 10 + j) as u32).collect()));
    });
    println!(
        "floor, distinct scripts: {n} sessions × 10: packed entry {entry_bytes:.1} B, table of u32 slots {table_bytes:.1} B \
         ({} buckets for {subs} entries), the session's slot {list_bytes:.1} B per subscription",
        table.capacity().next_power_of_two()
    );
    drop((entries, table, lists));
    (entry_bytes, table_bytes, list_bytes)
}

fn main() {
    println!("load average before: {}", common::load());
    let (floor_entry, floor_table, floor_list) = floor_distinct(100_000);
    let idle_own = idle_sessions(100_000, None);
    let idle_shared = idle_sessions(100_000, Some(391));
    let distinct = per_subscription(100_000, Scripts::Distinct);
    let shared = per_subscription(100_000, Scripts::Shared);
    let n = std::env::var("MEMORY_TOTAL_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let (total_distinct, cache_distinct) = total(n, Scripts::Distinct);
    let (total_shared, cache_shared) = total(n, Scripts::Shared);
    println!("load average after: {}", common::load());
    println!(
        "SUMMARY memory per idle session: {idle_own:.0} B (one group per session), {idle_shared:.0} B \
         (256 sessions per group); target < 1024 B: {}",
        verdict(idle_own.max(idle_shared) < 1024.0)
    );
    println!(
        "SUMMARY memory per subscription: {distinct:.1} B (distinct scripts), {shared:.1} B (shared scripts); \
         target ≤ 64 B: distinct {}, shared {}",
        verdict(distinct <= 64.0),
        verdict(shared <= 64.0)
    );
    let floor = floor_entry + floor_table + floor_list;
    println!(
        "SUMMARY floor per distinct-script subscription (100000 × 10): {floor:.1} B = packed entry {floor_entry:.1} B \
         + table of u32 slots {floor_table:.1} B + the session's slot {floor_list:.1} B; ours {distinct:.1} B = floor \
         + {:.1} B ({:.2}× the floor)",
        distinct - floor,
        distinct / floor
    );
    println!(
        "SUMMARY {n} sessions × 10 subscriptions: {:.3} GiB (distinct scripts, cache {:.0} MiB), {:.3} GiB \
         (shared scripts, cache {:.0} MiB); target ≤ 1 GiB: distinct {}, shared {}",
        total_distinct / GIB,
        cache_distinct / MIB,
        total_shared / GIB,
        cache_shared / MIB,
        verdict(total_distinct <= GIB),
        verdict(total_shared <= GIB)
    );
    println!(
        "SUMMARY {n} sessions × 10 distinct: per session {:.0} B = idle session {idle_own:.0} B + 10 × {distinct:.1} B \
         + history cache share {:.0} B; ≤ 1 GiB needs ≤ {:.0} B per session",
        total_distinct / n as f64,
        cache_distinct / n as f64,
        GIB / n as f64
    );
}
