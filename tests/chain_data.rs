//! Chain data through the public API: the caches (reorg-safe invalidation,
//! one daemon call per fee key, byte budgets, nothing failed cached), merkle
//! branches on a real 2,500-transaction block, checkpoint proofs of headers,
//! and histories.

mod common;

use common::{BLOCK_9, BLOCK_2500, Fixture, load_vector as load};
use futures::executor::block_on;
use futures::future::join_all;
use hashbrown::HashSet;
use indexer_sessions::merkle::{double_sha256, merkle_branch, merkle_root, root_from_branch};
use indexer_sessions::testing::MemoryHost;
use indexer_sessions::testing::{HostBehaviour, MemoryTransport};
use indexer_sessions::{
    Config, Error, HashX, Height, HistoryEntry, HistoryItem, MempoolEntry, SessionHandle, Tip, TxHash,
};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

/// The shared fixture, plus helpers for chain data.
struct Harness(Fixture);

impl std::ops::Deref for Harness {
    type Target = Fixture;

    fn deref(&self) -> &Fixture {
        &self.0
    }
}

impl Harness {
    fn new(config: Config) -> Self {
        Harness(Fixture::new(config))
    }

    fn session(&self, addr: &str) -> SessionHandle<MemoryHost> {
        let (transport, _log) = MemoryTransport::new(addr.parse().expect("socket address"));
        self.manager.add_session(transport).expect("admitted")
    }

    /// Pushes `count` blocks of distinct headers, each with one txid.
    fn push_blocks(&self, count: u32) -> Tip {
        let mut tip = self.db.current_tip();
        for _ in 0..count {
            let height = if tip == Tip::default() {
                0
            } else {
                tip.height.0 + 1
            };
            tip = self.db.push_block(header(height, 0), vec![txid(height, 0)]);
        }
        tip
    }

    fn notify(&self, tip: Tip, touched: &[HashX]) {
        let touched: HashSet<HashX> = touched.iter().copied().collect();
        block_on(self.manager.notify(tip, &touched));
    }
}

/// An 80-byte header unique to (height, variant).
fn header(height: u32, variant: u8) -> Vec<u8> {
    let mut header = vec![0u8; 80];
    header[..4].copy_from_slice(&height.to_le_bytes());
    header[4] = variant;
    header[79] = 0x42;
    header
}

fn txid(height: u32, index: u32) -> TxHash {
    let mut bytes = [0u8; 40];
    bytes[..4].copy_from_slice(&height.to_le_bytes());
    bytes[4..8].copy_from_slice(&index.to_le_bytes());
    TxHash(double_sha256(&bytes))
}

/// A scripthash string and the hashX it maps to.
fn script(n: u8) -> (String, HashX) {
    let alias = format!("{:02x}", n).repeat(32);
    let hashx = HashX::from_scripthash_hex(&alias).expect("valid scripthash");
    (alias, hashx)
}

fn confirmed(txid: TxHash, height: u32) -> HistoryEntry {
    HistoryEntry {
        txid,
        height: Height(height),
    }
}

fn cost(session: &SessionHandle<MemoryHost>) -> f64 {
    session.cost().own
}

fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
}

#[test]
fn request_futures_are_send() {
    fn assert_send<T: Send>(_: T) {}
    let h = Harness::new(Config::default());
    let session = h.session("203.0.113.7:50001");
    assert_send(session.history("00"));
    assert_send(session.mempool("00"));
    assert_send(session.block_header(Height(0), 0));
    assert_send(session.block_headers(Height(0), 1, 0));
    assert_send(session.merkle_branch(TxHash::default(), Height(0)));
    assert_send(session.id_from_pos(Height(0), 0, true));
    assert_send(session.estimate_fee(1, None));
    assert_send(session.relay_fee());
    assert_send(session.fee_histogram());
    assert_send(session.transaction_get(TxHash::default()));
    assert_send(session.broadcast_transaction(&[]));
}

#[test]
fn same_height_reorg_refreshes_the_header_result_and_touched_histories() {
    let h = Harness::new(Config::default());
    let (alias, hashx) = script(1);
    let (other_alias, other) = script(2);
    let tip = h.push_blocks(3);
    h.db.set_history(hashx, vec![confirmed(txid(2, 0), 2)]);
    h.db.set_history(other, vec![confirmed(txid(1, 0), 1)]);
    h.notify(tip, &[]);
    let session = h.session("203.0.113.7:50001");

    block_on(async {
        assert_eq!(
            session.subscribe_headers().await.unwrap(),
            (Height(2), header(2, 0))
        );
        assert_eq!(session.history(&alias).await.unwrap()[0].txid, txid(2, 0));
        assert_eq!(session.history(&other_alias).await.unwrap()[0].txid, txid(1, 0));
        let proof = session.merkle_branch(txid(2, 0), Height(2)).await.unwrap();
        assert_eq!(proof.pos, 0);
    });
    let before = h.manager.info().caches;
    assert_eq!((before.history.misses, before.txids.misses), (2, 1));

    // A competing block replaces the tip: same height, another hash.
    let new_tip = h.db.replace_tip(header(2, 1), vec![txid(2, 7), txid(2, 8)]);
    assert_eq!(new_tip.height, tip.height);
    assert_ne!(new_tip.hash, tip.hash);
    h.db.set_history(hashx, vec![confirmed(txid(2, 8), 2)]);
    h.notify(new_tip, &[hashx]);

    block_on(async {
        assert_eq!(
            session.subscribe_headers().await.unwrap(),
            (Height(2), header(2, 1))
        );
        let history = session.history(&alias).await.unwrap();
        assert_eq!(
            history,
            vec![HistoryItem {
                txid: txid(2, 8),
                height: 2,
                fee: None
            }]
        );
        // The block caches were cleared: the old txid is gone, the new one proves.
        let error = session.merkle_branch(txid(2, 0), Height(2)).await.unwrap_err();
        assert!(
            matches!(&error, Error::BadRequest(m) if m.contains(&txid(2, 0).to_hex())),
            "{error}"
        );
        let proof = session.merkle_branch(txid(2, 8), Height(2)).await.unwrap();
        assert_eq!(proof.pos, 1);
        assert_eq!(
            root_from_branch(txid(2, 8), proof.pos, &proof.branch),
            merkle_root(&[txid(2, 7), txid(2, 8)]).unwrap()
        );
    });
    let after = h.manager.info().caches;
    // Touched history reloaded; the reorg also dropped the untouched ones.
    assert_eq!(after.history.misses, before.history.misses + 1);
    assert_eq!(after.history.hits, before.history.hits);
    assert_eq!(after.txids.misses, before.txids.misses + 1);
    assert_eq!(after.txids.hits, before.txids.hits + 1);
}

#[test]
fn extending_the_tip_keeps_untouched_caches() {
    let h = Harness::new(Config::default());
    let (alias, hashx) = script(1);
    let (other_alias, other) = script(2);
    let tip = h.push_blocks(3);
    h.db.set_history(hashx, vec![confirmed(txid(1, 0), 1)]);
    h.db.set_history(other, vec![confirmed(txid(2, 0), 2)]);
    h.notify(tip, &[]);
    let session = h.session("203.0.113.7:50001");
    block_on(async {
        session.history(&alias).await.unwrap();
        session.history(&other_alias).await.unwrap();
        session.merkle_branch(txid(1, 0), Height(1)).await.unwrap();
        session.block_header(Height(1), 2).await.unwrap();
    });
    let before = h.manager.info().caches;
    assert_eq!(before.history.misses, 2);
    assert_eq!(before.txids.misses, 1);
    assert_eq!(before.checkpoints.misses, 1);

    // The next block extends the chain and touches one script.
    let next = h.push_blocks(1);
    h.db.add_history(hashx, confirmed(txid(3, 0), 3));
    h.notify(next, &[hashx]);

    block_on(async {
        assert_eq!(session.history(&alias).await.unwrap().len(), 2);
        assert_eq!(session.history(&other_alias).await.unwrap().len(), 1);
        session.merkle_branch(txid(1, 0), Height(1)).await.unwrap();
        session.block_header(Height(1), 2).await.unwrap();
    });
    let after = h.manager.info().caches;
    // The touched script was reloaded, the other one and the block caches hit.
    assert_eq!(after.history.misses, before.history.misses + 1);
    assert_eq!(after.history.hits, before.history.hits + 1);
    assert_eq!(after.txids.misses, before.txids.misses);
    assert_eq!(after.txids.hits, before.txids.hits + 1);
    assert_eq!(after.checkpoints.misses, before.checkpoints.misses);
    assert_eq!(after.checkpoints.hits, before.checkpoints.hits + 1);
}

#[test]
fn one_hundred_concurrent_estimates_make_one_daemon_call() {
    let h = Harness::new(Config::default());
    let tip = h.push_blocks(2);
    h.notify(tip, &[]);
    h.daemon.set_fee(6, 0.000_25);
    h.daemon.set_fee(144, 0.000_01);
    h.daemon
        .set_estimate_delay(h.timer.clone(), Duration::from_secs(2));
    let session = h.session("203.0.113.7:50001");
    let start = cost(&session);

    let rates = block_on(async {
        let mut calls = pin!(join_all((0..100).map(|i| {
            let mode = ["economical", "ECONOMICAL", "Economical"][i % 3];
            session.estimate_fee(6, Some(mode))
        })));
        // Every call is waiting: one on the daemon, 99 on that call.
        assert!(futures::poll!(calls.as_mut()).is_pending());
        assert_eq!(h.daemon.estimate_calls(), 1);
        h.timer.advance(Duration::from_secs(2));
        calls.await
    });
    assert!(
        rates
            .iter()
            .all(|rate| matches!(rate, Ok(Some(r)) if *r == 0.000_25))
    );
    assert_eq!(h.daemon.estimate_calls(), 1);
    let fees = h.manager.info().caches.fees;
    assert_eq!((fees.misses, fees.hits), (1, 99));
    // 0.1 each, plus 2.0 once for the daemon call.
    assert_close(cost(&session) - start, 100.0 * 0.1 + 2.0);

    // 150 and 144 share a bucket; 7 does not share one with 6.
    let answer = |blocks: u32| {
        block_on(async {
            let mut call = pin!(session.estimate_fee(blocks, None));
            match futures::poll!(call.as_mut()) {
                Poll::Ready(rate) => rate.unwrap(),
                Poll::Pending => {
                    h.timer.advance(Duration::from_secs(2));
                    call.await.unwrap()
                }
            }
        })
    };
    assert_eq!(answer(150), Some(0.000_01));
    assert_eq!(answer(144), Some(0.000_01));
    assert_eq!(answer(7), None);
    assert_eq!(h.daemon.estimate_calls(), 3);

    // A new tip hash invalidates every estimate.
    let next = h.push_blocks(1);
    h.notify(next, &[]);
    assert_eq!(answer(144), Some(0.000_01));
    assert_eq!(h.daemon.estimate_calls(), 4);

    // The mode whitelist: refused before any cost or daemon call.
    let before = cost(&session);
    let error = block_on(session.estimate_fee(6, Some("UNSET"))).unwrap_err();
    assert!(
        matches!(&error, Error::BadRequest(m) if m.contains("UNSET")),
        "{error}"
    );
    assert_eq!(error.rpc_code(), 1);
    assert_close(cost(&session), before);
    assert_eq!(h.daemon.estimate_calls(), 4);
}

#[test]
fn failing_hosts_return_host_errors_and_nothing_is_cached() {
    let h = Harness::new(Config::default());
    let (alias, hashx) = script(1);
    let tip = h.push_blocks(3);
    h.db.set_history(hashx, vec![confirmed(txid(1, 0), 1)]);
    h.notify(tip, &[]);
    h.daemon.set_fee(2, 0.0001);
    let session = h.session("203.0.113.7:50001");

    h.db.set_behaviour(HostBehaviour::Failing);
    h.daemon.set_behaviour(HostBehaviour::Failing);
    block_on(async {
        let error = session.history(&alias).await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Host {
                    operation: "history",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(error.rpc_code(), 2);
        let error = session.merkle_branch(txid(1, 0), Height(1)).await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Host {
                    operation: "block txids",
                    ..
                }
            ),
            "{error}"
        );
        let error = session.block_header(Height(1), 0).await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Host {
                    operation: "header",
                    ..
                }
            ),
            "{error}"
        );
        let error = session.block_header(Height(1), 2).await.unwrap_err();
        assert!(matches!(error, Error::Host { .. }), "{error}");
        let error = session.estimate_fee(2, None).await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Host {
                    operation: "estimatefee",
                    ..
                }
            ),
            "{error}"
        );
        let error = session.relay_fee().await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Host {
                    operation: "relayfee",
                    ..
                }
            ),
            "{error}"
        );
        let error = session.transaction_get(txid(1, 0)).await.unwrap_err();
        assert!(matches!(error, Error::Host { .. }), "{error}");
    });
    let caches = h.manager.info().caches;
    for stats in [caches.history, caches.txids, caches.fees, caches.checkpoints] {
        assert_eq!((stats.hits, stats.misses, stats.entries), (0, 0, 0), "{caches:?}");
    }

    // The hosts recover: the next calls succeed, each a miss.
    h.db.set_behaviour(HostBehaviour::Normal);
    h.daemon.set_behaviour(HostBehaviour::Normal);
    block_on(async {
        assert_eq!(session.history(&alias).await.unwrap().len(), 1);
        session.merkle_branch(txid(1, 0), Height(1)).await.unwrap();
        assert_eq!(session.estimate_fee(2, None).await.unwrap(), Some(0.0001));
        assert!(session.block_header(Height(1), 2).await.unwrap().proof.is_some());
    });
    let caches = h.manager.info().caches;
    for stats in [caches.history, caches.txids, caches.fees, caches.checkpoints] {
        assert_eq!((stats.hits, stats.misses), (0, 1), "{caches:?}");
    }

    // A failing mempool fails the history (the confirmed part stays cached).
    h.mempool.set_behaviour(HostBehaviour::Failing);
    let error = block_on(session.history(&alias)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Host {
                operation: "mempool entries",
                ..
            }
        ),
        "{error}"
    );
    let error = block_on(session.fee_histogram()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Host {
                operation: "fee histogram",
                ..
            }
        ),
        "{error}"
    );
    h.mempool.set_behaviour(HostBehaviour::Normal);
    assert_eq!(block_on(session.history(&alias)).unwrap().len(), 1);
}

#[test]
fn hanging_hosts_time_out_and_nothing_is_cached() {
    let config = Config {
        host_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let h = Harness::new(config);
    let (alias, hashx) = script(1);
    let tip = h.push_blocks(2);
    h.db.set_history(hashx, vec![confirmed(txid(1, 0), 1)]);
    h.notify(tip, &[]);
    h.daemon.set_fee(1, 0.0002);
    let session = h.session("203.0.113.7:50001");

    h.db.set_behaviour(HostBehaviour::Hanging);
    h.daemon.set_behaviour(HostBehaviour::Hanging);
    block_on(async {
        let mut history = pin!(session.history(&alias));
        assert!(futures::poll!(history.as_mut()).is_pending());
        h.timer.advance(Duration::from_millis(500));
        let error = history.await.unwrap_err();
        assert!(
            matches!(error, Error::HostTimeout { operation: "history", after } if after == Duration::from_millis(500)),
            "{error}"
        );

        let mut txids = pin!(session.id_from_pos(Height(1), 0, false));
        assert!(futures::poll!(txids.as_mut()).is_pending());
        h.timer.advance(Duration::from_millis(500));
        let error = txids.await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::HostTimeout {
                    operation: "block txids",
                    ..
                }
            ),
            "{error}"
        );

        let mut fee = pin!(session.estimate_fee(1, None));
        assert!(futures::poll!(fee.as_mut()).is_pending());
        h.timer.advance(Duration::from_millis(500));
        let error = fee.await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::HostTimeout {
                    operation: "estimatefee",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(error.rpc_code(), 2);
    });
    let caches = h.manager.info().caches;
    for stats in [caches.history, caches.txids, caches.fees] {
        assert_eq!((stats.hits, stats.misses, stats.entries), (0, 0, 0), "{caches:?}");
    }

    h.db.set_behaviour(HostBehaviour::Normal);
    h.daemon.set_behaviour(HostBehaviour::Normal);
    block_on(async {
        assert_eq!(session.history(&alias).await.unwrap().len(), 1);
        assert_eq!(
            session.id_from_pos(Height(1), 0, false).await.unwrap().txid,
            txid(1, 0)
        );
        assert_eq!(session.estimate_fee(1, None).await.unwrap(), Some(0.0002));
    });
    let caches = h.manager.info().caches;
    for stats in [caches.history, caches.txids, caches.fees] {
        assert_eq!((stats.hits, stats.misses), (0, 1), "{caches:?}");
    }
}

#[test]
fn the_history_cache_holds_its_byte_budget() {
    let budget = 200_000;
    let config = Config {
        history_cache_bytes: budget,
        ..Config::default()
    };
    let h = Harness::new(config);
    let tip = h.push_blocks(1);
    h.notify(tip, &[]);
    let session = h.session("203.0.113.7:50001");
    let mut aliases = Vec::new();
    for n in 0..8u8 {
        let (alias, hashx) = script(n + 10);
        // 3,000 entries: about 108 KB each as weighed, 8 of them over four times the budget.
        let history = (0..3000).map(|i| confirmed(txid(u32::from(n), i), 0)).collect();
        h.db.set_history(hashx, history);
        aliases.push(alias);
    }
    block_on(async {
        for alias in &aliases {
            assert_eq!(session.history(alias).await.unwrap().len(), 3000);
        }
        h.manager.run_pending_cache_tasks().await;
    });
    let stats = h.manager.info().caches.history;
    assert_eq!(stats.budget, budget);
    assert_eq!(stats.misses, 8);
    assert!(stats.bytes <= budget, "{stats:?}");
    assert!(stats.entries >= 1 && stats.entries < 8, "{stats:?}");
}

#[test]
fn a_history_too_large_is_refused_from_the_cache() {
    let config = Config {
        max_send: 100_000,
        ..Config::default()
    };
    let limit = config.max_history_len();
    let h = Harness::new(config);
    let (alias, hashx) = script(3);
    let tip = h.push_blocks(1);
    h.notify(tip, &[]);
    h.db.set_history(hashx, (0..5000).map(|i| confirmed(txid(0, i), 0)).collect());
    let session = h.session("203.0.113.7:50001");

    let start = cost(&session);
    let error = block_on(session.history(&alias)).unwrap_err();
    assert!(
        matches!(error, Error::HistoryTooLarge { len, limit: l } if len == limit && l == limit),
        "{error}"
    );
    assert_eq!(error.rpc_code(), 10001);
    // Charged as ElectrumX does: the lookup, on a miss.
    assert_close(cost(&session) - start, 0.2 + limit as f64 * 0.001);

    let calls = h.db.calls();
    let error = block_on(session.history(&alias)).unwrap_err();
    assert_eq!(error.rpc_code(), 10001);
    assert_eq!(h.db.calls(), calls, "answered from the cache");
    let stats = h.manager.info().caches.history;
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

#[test]
fn merkle_branches_on_the_2500_transaction_block() {
    let big = load(BLOCK_2500);
    let small = load(BLOCK_9);
    assert_eq!(big.txids.len(), 2500);
    let h = Harness::new(Config::default());
    h.db.push_block(header(0, 0), vec![txid(0, 0)]);
    h.db.push_block(big.header(), big.txids.clone());
    let tip = h.db.push_block(small.header(), small.txids.clone());
    h.notify(tip, &[]);
    let session = h.session("203.0.113.7:50001");
    assert_eq!(TxHash(big.raw[36..68].try_into().unwrap()), big.merkle_root);

    // First lookup: txids and middle level built. Then from the caches.
    let mut costs = Vec::new();
    for (i, &pos) in [1234usize, 0, 1, 2499, 1234].iter().enumerate() {
        let txid = big.txids[pos];
        let before = cost(&session);
        let proof = block_on(session.merkle_branch(txid, Height(1))).unwrap();
        costs.push(cost(&session) - before);
        assert_eq!((proof.block_height, proof.pos), (Height(1), pos));
        assert_eq!(proof.branch.len(), 12);
        assert_eq!(
            root_from_branch(txid, pos, &proof.branch),
            big.merkle_root,
            "lookup {i}"
        );
        assert_eq!(Some(proof.branch), merkle_branch(&big.txids, pos));
    }
    // Miss: 0.25 + 0.0001 × 2500 for the txids, 2500 / 2500 for the branch.
    assert_close(costs[0], 0.5 + 1.0);
    // Hit: 0.1 for the txids, 10·√2500 / 2500 for the branch.
    for &c in &costs[1..] {
        assert_close(c, 0.1 + 0.2);
    }
    block_on(h.manager.run_pending_cache_tasks());
    let caches = h.manager.info().caches;
    assert_eq!((caches.merkle.misses, caches.merkle.hits), (1, 4));
    assert_eq!((caches.txids.misses, caches.txids.hits), (1, 4));
    assert_eq!(caches.merkle.entries, 1);

    // By position, with the branch.
    let at = block_on(session.id_from_pos(Height(1), 777, true)).unwrap();
    assert_eq!(at.txid, big.txids[777]);
    assert_eq!(
        root_from_branch(at.txid, 777, at.branch.as_ref().unwrap()),
        big.merkle_root
    );
    let at = block_on(session.id_from_pos(Height(1), 5, false)).unwrap();
    assert_eq!((at.txid, at.branch), (big.txids[5], None));
    let error = block_on(session.id_from_pos(Height(1), 2500, false)).unwrap_err();
    assert!(
        matches!(&error, Error::BadRequest(m) if m.contains("2500")),
        "{error}"
    );

    // A small block (odd count) takes the naive path and leaves the merkle cache alone.
    for pos in 0..small.txids.len() {
        let proof = block_on(session.merkle_branch(small.txids[pos], Height(2))).unwrap();
        assert_eq!(
            root_from_branch(small.txids[pos], pos, &proof.branch),
            small.merkle_root
        );
    }
    block_on(h.manager.run_pending_cache_tasks());
    let merkle = h.manager.info().caches.merkle;
    assert_eq!((merkle.misses, merkle.hits, merkle.entries), (1, 5, 1));

    // Errors: a txid not in the block is named; heights above the tip are typed.
    let stranger = small.txids[3];
    let error = block_on(session.merkle_branch(stranger, Height(1))).unwrap_err();
    assert!(
        matches!(&error, Error::BadRequest(m) if m.contains(&stranger.to_hex())),
        "{error}"
    );
    let error = block_on(session.merkle_branch(stranger, Height(3))).unwrap_err();
    assert!(
        matches!(
            error,
            Error::HeightOutOfRange {
                height: Height(3),
                tip: Height(2)
            }
        ),
        "{error}"
    );
    let error = block_on(session.id_from_pos(Height(9), 0, true)).unwrap_err();
    assert!(matches!(error, Error::HeightOutOfRange { .. }), "{error}");
}

#[test]
fn headers_with_checkpoint_proofs() {
    let h = Harness::new(Config::default());
    let tip = h.push_blocks(300);
    assert_eq!(tip.height, Height(299));
    h.notify(tip, &[]);
    let session = h.session("203.0.113.7:50001");
    let hashes: Vec<TxHash> = (0..300).map(|i| TxHash(double_sha256(&header(i, 0)))).collect();

    let before = cost(&session);
    let plain = block_on(session.block_header(Height(17), 0)).unwrap();
    assert_eq!((plain.header, plain.proof), (header(17, 0), None));
    assert_close(cost(&session) - before, 0.25);

    // Headers the levels hold: a proof beyond them reads the headers from
    // the last one held up to its checkpoint, at 1 per 1,000.
    let mut held = 0u32;
    for (height, cp) in [
        (0u32, 0u32),
        (0, 1),
        (5, 5),
        (17, 100),
        (100, 100),
        (250, 299),
        (299, 299),
        (3, 257),
    ] {
        if cp == 0 {
            continue;
        }
        let read = if cp < held {
            0
        } else {
            cp + 1 - held.saturating_sub(1)
        };
        held = held.max(cp + 1);
        let before = cost(&session);
        let reply = block_on(session.block_header(Height(height), cp)).unwrap();
        assert_close(cost(&session) - before, 1.25 + f64::from(read) / 1000.0);
        assert_eq!(reply.header, header(height, 0));
        let proof = reply.proof.expect("a proof");
        let leaves = &hashes[..=cp as usize];
        assert_eq!(Some(proof.root), merkle_root(leaves), "height {height} cp {cp}");
        assert_eq!(Some(proof.branch.clone()), merkle_branch(leaves, height as usize));
        assert_eq!(
            root_from_branch(hashes[height as usize], height as usize, &proof.branch),
            proof.root
        );
    }
    let checkpoints = h.manager.info().caches.checkpoints;
    // Requests beyond the levels (cp 1, 5, 100, 299) grow them; the rest
    // (the second at cp 100 and at cp 299, and cp 257 below them) are hits.
    assert_eq!((checkpoints.misses, checkpoints.hits), (4, 3));
    assert_eq!(checkpoints.entries, 300);
    assert!(checkpoints.bytes >= 300 * 32 * 2 - 32 * 9, "{checkpoints:?}");

    let error = block_on(session.block_header(Height(20), 10)).unwrap_err();
    assert!(matches!(error, Error::BadRequest(_)), "{error}");
    let error = block_on(session.block_header(Height(20), 300)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::HeightOutOfRange {
                height: Height(300),
                ..
            }
        ),
        "{error}"
    );
    let error = block_on(session.block_header(Height(300), 0)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::HeightOutOfRange {
                height: Height(300),
                tip: Height(299)
            }
        ),
        "{error}"
    );

    // Chunks: capped at the tip, with the proof of the last header.
    let before = cost(&session);
    let chunk = block_on(session.block_headers(Height(290), 20, 299)).unwrap();
    assert_close(cost(&session) - before, 20.0 / 50.0 + 1.0);
    assert_eq!((chunk.count, chunk.max), (10, 2016));
    assert_eq!(
        chunk.headers,
        (290..300).flat_map(|i| header(i, 0)).collect::<Vec<u8>>()
    );
    let proof = chunk.proof.unwrap();
    assert_eq!(Some(proof.branch), merkle_branch(&hashes, 299));
    let chunk = block_on(session.block_headers(Height(0), 5000, 0)).unwrap();
    assert_eq!(
        (chunk.count, chunk.headers.len(), chunk.proof),
        (300, 300 * 80, None)
    );
    let chunk = block_on(session.block_headers(Height(300), 10, 299)).unwrap();
    assert_eq!((chunk.count, chunk.headers.len(), chunk.proof), (0, 0, None));
    let error = block_on(session.block_headers(Height(10), 10, 15)).unwrap_err();
    assert!(matches!(error, Error::BadRequest(_)), "{error}");
}

#[test]
fn history_lists_confirmed_then_mempool_in_status_order() {
    let h = Harness::new(Config::default());
    let (alias, hashx) = script(5);
    let tip = h.push_blocks(3);
    h.notify(tip, &[]);
    let (a, b, c, d) = (txid(1, 0), txid(2, 0), txid(9, 1), txid(9, 2));
    h.db.set_history(hashx, vec![confirmed(a, 1), confirmed(b, 2)]);
    let entry = |txid, fee, has_unconfirmed_inputs| MempoolEntry {
        txid,
        fee,
        has_unconfirmed_inputs,
    };
    // `b` confirmed while the mempool lagged: listed once, as confirmed.
    h.mempool.add(hashx, entry(b, 300, false));
    h.mempool.add(hashx, entry(c, 100, true));
    h.mempool.add(hashx, entry(d, 200, false));
    let session = h.session("203.0.113.7:50001");

    let start = cost(&session);
    let history = block_on(session.history(&alias)).unwrap();
    let item = |txid, height, fee| HistoryItem { txid, height, fee };
    assert_eq!(
        history,
        vec![
            item(a, 1, None),
            item(b, 2, None),
            item(d, 0, Some(200)),
            item(c, -1, Some(100))
        ]
    );
    // History miss (0.2 + 2 × 0.001) and mempool (0.25 + 2 / 50).
    assert_close(cost(&session) - start, 0.202 + 0.29);

    let mempool = block_on(session.mempool(&alias)).unwrap();
    let mut expect = vec![
        item(b, 0, Some(300)),
        item(d, 0, Some(200)),
        item(c, -1, Some(100)),
    ];
    expect[..2].sort_by_key(|i| i.txid.0);
    assert_eq!(mempool, expect);

    // The list hashes to the subscription status.
    let status = block_on(session.subscribe(&alias)).unwrap().unwrap();
    let preimage: String = history
        .iter()
        .map(|i| format!("{}:{}:", i.txid, i.height))
        .collect();
    let expect = indexer_sessions::status::status_hex(&sha256(preimage.as_bytes()));
    assert_eq!(status, expect);

    let error = block_on(session.history("zz")).unwrap_err();
    assert!(matches!(error, Error::BadRequest(_)), "{error}");
    assert!(block_on(session.history(&script(6).0)).unwrap().is_empty());
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[test]
fn relay_fee_histogram_and_raw_transactions() {
    let h = Harness::new(Config::default());
    let tip = h.push_blocks(1);
    h.notify(tip, &[]);
    h.mempool.set_histogram(vec![(50.0, 100_000), (10.0, 900_000)]);
    h.daemon.add_transaction(txid(0, 0), vec![1, 2, 3]);
    let session = h.session("203.0.113.7:50001");
    let start = cost(&session);
    block_on(async {
        assert_eq!(session.relay_fee().await.unwrap(), 0.00001);
        assert_eq!(
            session.fee_histogram().await.unwrap(),
            vec![(50.0, 100_000), (10.0, 900_000)]
        );
        assert_eq!(session.transaction_get(txid(0, 0)).await.unwrap(), vec![1, 2, 3]);
        let error = session.transaction_get(txid(0, 1)).await.unwrap_err();
        assert!(
            matches!(&error, Error::BadRequest(m) if m.contains(&txid(0, 1).to_hex())),
            "{error}"
        );
    });
    assert_close(cost(&session) - start, 1.0 + 1.0 + 1.0 + 1.0);
}

#[test]
fn a_big_block_yields_while_its_merkle_levels_are_built() {
    let h = Harness::new(Config::default());
    let txids: Vec<TxHash> = (0..10_000).map(|i| txid(1, i)).collect();
    h.db.push_block(header(0, 0), vec![txid(0, 0)]);
    let tip = h.db.push_block(header(1, 0), txids.clone());
    h.notify(tip, &[]);
    let session = h.session("203.0.113.7:50001");
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut request = pin!(session.merkle_branch(txids[6789], Height(1)));
    // The in-memory `Db` answers at once: only the yields between steps of
    // 2048 leaves (five steps for 10,000) can make the request pending.
    let mut pending = 0;
    let proof = loop {
        match request.as_mut().poll(&mut cx) {
            Poll::Ready(proof) => break proof.unwrap(),
            Poll::Pending => pending += 1,
        }
    };
    assert_eq!(pending, 4);
    assert_eq!(Some(proof.branch), merkle_branch(&txids, 6789));
    // Cached now: the next branch builds nothing and does not yield.
    let mut again = pin!(session.merkle_branch(txids[5], Height(1)));
    let Poll::Ready(proof) = again.as_mut().poll(&mut cx) else {
        panic!("a cached branch yields");
    };
    assert_eq!(Some(proof.unwrap().branch), merkle_branch(&txids, 5));
}

/// An index whose history lookups fail with an I/O error after yielding
/// once (so concurrent requests share one failing load).
struct BrokenIndex {
    inner: indexer_sessions::testing::MemoryDb,
    history_calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl indexer_sessions::Db for BrokenIndex {
    async fn tip(&self) -> Result<indexer_sessions::Tip, indexer_sessions::HostError> {
        self.inner.tip().await
    }
    async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, indexer_sessions::HostError> {
        self.inner.header(height).await
    }
    async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, indexer_sessions::HostError> {
        self.inner.headers(start, count).await
    }
    async fn history(
        &self,
        _hashx: HashX,
        _limit: usize,
    ) -> Result<Vec<indexer_sessions::HistoryEntry>, indexer_sessions::HostError> {
        self.history_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await;
        Err(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "index gone",
        )))
    }
    async fn block_txids(&self, height: Height) -> Result<Option<Vec<TxHash>>, indexer_sessions::HostError> {
        self.inner.block_txids(height).await
    }
}

#[test]
fn a_host_error_keeps_its_type_and_source_for_every_request_that_shared_it() {
    use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool};
    let db = MemoryDb::new();
    db.push_block(vec![0; 80], vec![]);
    let index = std::sync::Arc::new(BrokenIndex {
        inner: db,
        history_calls: Default::default(),
    });
    let manager = indexer_sessions::SessionManager::builder(Config::default())
        .timer(ManualTimer::new())
        .db(index.clone()) // an `Arc` of a `Db` is a `Db`
        .daemon(MemoryDaemon::new())
        .mempool(MemoryMempool::new())
        .build()
        .unwrap();
    let connect = |addr: &str| {
        manager
            .add_session(MemoryTransport::new(addr.parse().unwrap()).0)
            .unwrap()
    };
    let (a, b) = (connect("203.0.113.1:1"), connect("198.51.100.1:1"));
    let alias = "11".repeat(32);
    let (first, second) = block_on(futures::future::join(a.history(&alias), b.history(&alias)));
    assert_eq!(
        index.history_calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one load, shared by both requests"
    );
    for result in [first, second] {
        let error = result.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Host {
                    operation: "history",
                    ..
                }
            ),
            "{error}"
        );
        let io = error
            .host_source()
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .expect("the host's own error, not its text");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
        let source = std::error::Error::source(&error).expect("a source");
        assert_eq!(source.to_string(), "index gone");
        assert_eq!(error.rpc_code(), indexer_sessions::codes::DAEMON_ERROR);
    }
}
