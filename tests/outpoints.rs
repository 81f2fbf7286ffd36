//! Protocol 1.7 through the public API: outpoint subscriptions, scripts
//! subscribed by scriptPubKey, and noise pings.

mod common;

use common::Fixture;
use futures::FutureExt;
use futures::executor::block_on;
use indexer_sessions::testing::{MemoryHost, TransportLog};
use indexer_sessions::{
    Changes, Config, ConfirmedOutpoint, ConfirmedSpender, Error, ExtendedNotification, HashX, Height,
    HistoryEntry, Limits, MempoolEntry, MempoolFunder, MempoolOutpoint, MempoolSpender, NoisePolicy,
    Notification, OutPoint, OutpointSpender, OutpointStatus, ParamError, SessionHandle, SubscriptionScope,
    Tip, TxHash, scripthash_of_scriptpubkey,
};
use std::time::Duration;

fn txid(n: u8) -> TxHash {
    let mut bytes = [n; 32];
    bytes[0] = 0xa0;
    TxHash(bytes)
}

fn outpoint(n: u8, vout: u32) -> OutPoint {
    OutPoint { txid: txid(n), vout }
}

/// An 80-byte header unique to `height` and `salt`.
fn header(height: u32, salt: u8) -> Vec<u8> {
    let mut header = vec![salt; 80];
    header[..4].copy_from_slice(&height.to_le_bytes());
    header
}

/// A chain of `blocks` blocks (heights 0 to `blocks - 1`), announced.
fn chain(fx: &Fixture, blocks: u32) -> Tip {
    for height in 0..blocks {
        fx.db.push_block(header(height, 0), vec![]);
    }
    let tip = fx.db.current_tip();
    block_on(fx.manager.notify(tip, &[]));
    tip
}

fn touched(outpoints: &[OutPoint]) -> Changes {
    let mut changes = Changes::new();
    changes.extend(outpoints.iter().copied());
    changes
}

/// Delivers what is queued for `session` and returns the 1.7 notifications sent.
fn deliver(session: &SessionHandle<MemoryHost>, log: &TransportLog) -> Vec<ExtendedNotification> {
    assert!(
        session.deliver().now_or_never().is_none(),
        "delivery runs until the session ends"
    );
    log.take_sent_extended()
}

fn outpoint_statuses(sent: &[ExtendedNotification]) -> Vec<(OutPoint, OutpointStatus)> {
    sent.iter()
        .filter_map(|n| match n {
            ExtendedNotification::OutpointStatus { outpoint, status } => Some((*outpoint, *status)),
            _ => None,
        })
        .collect()
}

fn spent(funder_height: i64, txid: TxHash, height: i64) -> OutpointStatus {
    OutpointStatus {
        funder_height: Some(funder_height),
        spender: Some(OutpointSpender { txid, height }),
    }
}

fn unspent(funder_height: i64) -> OutpointStatus {
    OutpointStatus {
        funder_height: Some(funder_height),
        spender: None,
    }
}

#[test]
fn an_outpoint_is_followed_from_unspent_to_mempool_spend_to_block_to_reorg() {
    let fx = Fixture::new(Config::default());
    chain(&fx, 2);
    let funding = outpoint(1, 0);
    fx.db.set_outpoint(
        funding,
        Some(ConfirmedOutpoint {
            height: Height(1),
            spender: None,
        }),
    );
    let (session, log) = fx.connect("203.0.113.1:1");
    let tx_hash = funding.txid.to_hex();
    let status = block_on(session.subscribe_outpoint(&tx_hash, 0, Some("76a914"))).unwrap();
    assert_eq!(status, unspent(1));
    assert_eq!(session.subscription_count(), 1);

    // A broadcast transaction spends it: the mempool refresh touches it.
    let spender = txid(2);
    fx.mempool.set_outpoint(
        funding,
        MempoolOutpoint {
            funder: None,
            spender: Some(MempoolSpender {
                txid: spender,
                has_unconfirmed_inputs: false,
            }),
        },
    );
    let tip = fx.db.current_tip();
    let report = block_on(fx.manager.notify(tip, &touched(&[funding])));
    assert_eq!((report.outpoints_computed, report.outpoint_notifications), (1, 1));
    assert_eq!(
        outpoint_statuses(&deliver(&session, &log)),
        vec![(funding, spent(1, spender, 0))]
    );

    // A block mines the spender at height 2.
    fx.mempool.remove(spender);
    let confirmed = ConfirmedOutpoint {
        height: Height(1),
        spender: Some(ConfirmedSpender {
            txid: spender,
            height: Height(2),
        }),
    };
    fx.db.set_outpoint(funding, Some(confirmed));
    let tip = fx.db.push_block(header(2, 0), vec![spender]);
    block_on(fx.manager.notify(tip, &touched(&[funding])));
    assert_eq!(
        outpoint_statuses(&deliver(&session, &log)),
        vec![(funding, spent(1, spender, 2))]
    );
    // The same event again sends nothing.
    block_on(fx.manager.notify(tip, &touched(&[funding])));
    assert!(deliver(&session, &log).is_empty());

    // A reorg at the same height replaces block 2 with one that mines
    // another spender (a double spend).
    let double = txid(3);
    fx.db.set_outpoint(
        funding,
        Some(ConfirmedOutpoint {
            spender: Some(ConfirmedSpender {
                txid: double,
                height: Height(2),
            }),
            ..confirmed
        }),
    );
    let reorged = fx.db.replace_tip(header(2, 9), vec![double]);
    assert_eq!(reorged.height, tip.height);
    block_on(fx.manager.notify(reorged, &touched(&[funding])));
    assert_eq!(
        outpoint_statuses(&deliver(&session, &log)),
        vec![(funding, spent(1, double, 2))]
    );
    // Outpoint notifications carry the outpoint as subscribed, through
    // `send_extended`: the 1.4 channel saw nothing.
    assert!(log.sent().is_empty());
    assert_eq!(
        block_on(session.outpoint_status(&tx_hash, 0, None)).unwrap(),
        spent(1, double, 2)
    );
    assert!(session.unsubscribe_outpoint(&tx_hash, 0).unwrap());
    assert!(!session.unsubscribe_outpoint(&tx_hash, 0).unwrap());
    assert_eq!(session.subscription_count(), 0);
}

#[test]
fn statuses_follow_the_protocol_for_mempool_funders_and_unknown_outputs() {
    let fx = Fixture::new(Config::default());
    chain(&fx, 1);
    let (session, _log) = fx.connect("203.0.113.1:1");
    // Never existed.
    let nothing = block_on(session.outpoint_status(&txid(9).to_hex(), 3, None)).unwrap();
    assert_eq!(nothing, OutpointStatus::default());
    assert!(nothing.is_unknown() && !nothing.involves_mempool());
    // Created by a mempool transaction with unconfirmed parents, spent by another.
    let child = outpoint(4, 1);
    fx.mempool.set_outpoint(
        child,
        MempoolOutpoint {
            funder: Some(MempoolFunder {
                has_unconfirmed_inputs: true,
            }),
            spender: Some(MempoolSpender {
                txid: txid(5),
                has_unconfirmed_inputs: true,
            }),
        },
    );
    let status = block_on(session.outpoint_status(&child.txid.to_hex(), 1, None)).unwrap();
    assert_eq!(status, spent(-1, txid(5), -1));
    assert!(status.involves_mempool());
    // A spender is never shown for an output not known to exist.
    let orphan = outpoint(6, 0);
    fx.mempool.set_outpoint(
        orphan,
        MempoolOutpoint {
            funder: None,
            spender: Some(MempoolSpender {
                txid: txid(7),
                has_unconfirmed_inputs: false,
            }),
        },
    );
    let status = block_on(session.outpoint_status(&orphan.txid.to_hex(), 0, None)).unwrap();
    assert_eq!(status, OutpointStatus::default());
    // A confirmed funder wins over a mempool that lags behind.
    fx.db.set_outpoint(
        child,
        Some(ConfirmedOutpoint {
            height: Height(0),
            spender: None,
        }),
    );
    let tip = fx.db.current_tip();
    block_on(fx.manager.notify(tip, &touched(&[child])));
    let status = block_on(session.outpoint_status(&child.txid.to_hex(), 1, None)).unwrap();
    assert_eq!(status, spent(0, txid(5), -1));
}

#[test]
fn a_mempool_status_is_checked_again_on_a_tip_change() {
    let fx = Fixture::new(Config::default());
    chain(&fx, 1);
    let op = outpoint(1, 0);
    fx.db.set_outpoint(
        op,
        Some(ConfirmedOutpoint {
            height: Height(0),
            spender: None,
        }),
    );
    fx.mempool.set_outpoint(
        op,
        MempoolOutpoint {
            funder: None,
            spender: Some(MempoolSpender {
                txid: txid(2),
                has_unconfirmed_inputs: true,
            }),
        },
    );
    let (session, log) = fx.connect("203.0.113.1:1");
    let status = block_on(session.subscribe_outpoint(&op.txid.to_hex(), 0, None)).unwrap();
    assert_eq!(status, spent(0, txid(2), -1));
    // A block confirms the spender's parent: its height goes from −1 to 0,
    // and the host does not list the outpoint as touched.
    fx.mempool.set_outpoint(
        op,
        MempoolOutpoint {
            funder: None,
            spender: Some(MempoolSpender {
                txid: txid(2),
                has_unconfirmed_inputs: false,
            }),
        },
    );
    let tip = fx.db.push_block(header(1, 0), vec![]);
    let report = block_on(fx.manager.notify(tip, &[]));
    assert_eq!(report.outpoints_computed, 1);
    assert_eq!(
        outpoint_statuses(&deliver(&session, &log)),
        vec![(op, spent(0, txid(2), 0))]
    );
}

#[test]
fn the_confirmed_part_is_cached_until_touched_or_the_tip_changes() {
    let fx = Fixture::new(Config::default());
    chain(&fx, 1);
    let op = outpoint(1, 2);
    let funded = |height| {
        Some(ConfirmedOutpoint {
            height: Height(height),
            spender: None,
        })
    };
    fx.db.set_outpoint(op, funded(0));
    let (session, _log) = fx.connect("203.0.113.1:1");
    let tx = op.txid.to_hex();
    let cost = |f: &dyn Fn()| {
        let before = session.cost().own;
        f();
        session.cost().own - before
    };
    let miss = cost(&|| {
        assert_eq!(
            block_on(session.outpoint_status(&tx, 2, None)).unwrap(),
            unspent(0)
        )
    });
    assert!((miss - 2.2).abs() < 1e-9, "0.1 + 2 lookups + mempool: {miss}");
    let calls = fx.db.outpoint_calls();
    let hit = cost(&|| {
        assert_eq!(
            block_on(session.outpoint_status(&tx, 2, None)).unwrap(),
            unspent(0)
        )
    });
    assert!((hit - 0.2).abs() < 1e-9, "0.1 + mempool: {hit}");
    assert_eq!(fx.db.outpoint_calls(), calls, "served from the cache");
    // The index changes: the cache answers until the outpoint is touched...
    fx.db.set_outpoint(op, funded(7));
    assert_eq!(
        block_on(session.outpoint_status(&tx, 2, None)).unwrap(),
        unspent(0)
    );
    let tip = fx.db.current_tip();
    block_on(fx.manager.notify(tip, &touched(&[op])));
    assert_eq!(
        block_on(session.outpoint_status(&tx, 2, None)).unwrap(),
        unspent(7)
    );
    // ...or the tip hash changes, even untouched and at the same height.
    fx.db.set_outpoint(op, None);
    let reorged = fx.db.replace_tip(header(0, 5), vec![]);
    block_on(fx.manager.notify(reorged, &[]));
    let gone = cost(&|| {
        assert_eq!(
            block_on(session.outpoint_status(&tx, 2, None)).unwrap(),
            OutpointStatus::default()
        )
    });
    assert!(
        (gone - 1.2).abs() < 1e-9,
        "one lookup for an output that never existed: {gone}"
    );
    assert_eq!(fx.manager.info().caches.outpoints.misses, 3);
}

#[test]
fn many_subscribers_of_one_outpoint_cost_one_status_computation() {
    let fx = Fixture::new(Config::default());
    chain(&fx, 1);
    let op = outpoint(1, 0);
    fx.db.set_outpoint(
        op,
        Some(ConfirmedOutpoint {
            height: Height(0),
            spender: None,
        }),
    );
    let sessions: Vec<_> = (0..200)
        .map(|i| {
            let (session, log) = fx.connect(&format!("198.51.{}.{}:1", i / 250, i % 250 + 1));
            block_on(session.subscribe_outpoint(&op.txid.to_hex(), 0, None)).unwrap();
            (session, log)
        })
        .collect();
    assert_eq!(fx.manager.info().distinct_outpoint_subs, 1);
    fx.mempool.set_outpoint(
        op,
        MempoolOutpoint {
            funder: None,
            spender: Some(MempoolSpender {
                txid: txid(2),
                has_unconfirmed_inputs: false,
            }),
        },
    );
    let (db_calls, mempool_calls) = (fx.db.outpoint_calls(), fx.mempool.outpoint_calls());
    let report = block_on(fx.manager.notify(fx.db.current_tip(), &touched(&[op])));
    assert_eq!(fx.db.outpoint_calls() - db_calls, 1, "one confirmed lookup");
    assert_eq!(
        fx.mempool.outpoint_calls() - mempool_calls,
        1,
        "one mempool lookup"
    );
    assert_eq!(
        (
            report.outpoints_computed,
            report.outpoints_changed,
            report.outpoint_notifications
        ),
        (1, 1, 200)
    );
    for (session, log) in &sessions {
        assert_eq!(
            outpoint_statuses(&deliver(session, log)),
            vec![(op, spent(0, txid(2), 0))]
        );
    }
    // Each session is charged for its notification (0.1), not for the lookups.
    let (session, _) = &sessions[7];
    let before = session.cost().own;
    fx.mempool.remove(txid(2));
    block_on(fx.manager.notify(fx.db.current_tip(), &touched(&[op])));
    assert!((session.cost().own - before - 0.1).abs() < 1e-9);
    // Sessions that end take their subscriptions with them.
    drop(sessions);
    let info = fx.manager.info();
    assert_eq!((info.subs, info.distinct_outpoint_subs), (0, 0));
}

#[test]
fn a_stalled_client_holds_one_pending_status_per_outpoint_the_newest() {
    let fx = Fixture::new(Config::default());
    chain(&fx, 1);
    let op = outpoint(1, 0);
    fx.db.set_outpoint(
        op,
        Some(ConfirmedOutpoint {
            height: Height(0),
            spender: None,
        }),
    );
    let (session, log) = fx.connect("203.0.113.1:1");
    block_on(session.subscribe_outpoint(&op.txid.to_hex(), 0, None)).unwrap();
    log.set_stalled(true);
    for spender in [2, 3, 4] {
        fx.mempool.set_outpoint(
            op,
            MempoolOutpoint {
                funder: None,
                spender: Some(MempoolSpender {
                    txid: txid(spender),
                    has_unconfirmed_inputs: false,
                }),
            },
        );
        block_on(fx.manager.notify(fx.db.current_tip(), &touched(&[op])));
    }
    assert_eq!(session.pending_notifications(), 1);
    log.set_stalled(false);
    assert_eq!(
        outpoint_statuses(&deliver(&session, &log)),
        vec![(op, spent(0, txid(4), 0))]
    );
}

#[test]
fn outpoint_subscriptions_count_toward_every_subscription_limit() {
    let fx = Fixture::new(Config {
        limits: Limits {
            max_subs_per_session: Some(2),
            max_subs_per_group: Some(3),
            max_subs: Some(4),
            ..Limits::default()
        },
        ..Config::default()
    });
    chain(&fx, 1);
    let script = "51";
    let tx = |n| txid(n).to_hex();
    let (a, _) = fx.connect("203.0.113.1:1");
    block_on(a.subscribe_scriptpubkey(script)).unwrap();
    block_on(a.subscribe_outpoint(&tx(1), 0, None)).unwrap();
    let refused = block_on(a.subscribe_outpoint(&tx(1), 1, None)).unwrap_err();
    assert!(matches!(
        refused,
        Error::SubscriptionLimit {
            scope: SubscriptionScope::Session,
            max: 2
        }
    ));
    // Subscribing again is not a new subscription.
    block_on(a.subscribe_outpoint(&tx(1), 0, None)).unwrap();
    let (b, _) = fx.connect("203.0.113.2:1");
    block_on(b.subscribe_outpoint(&tx(2), 0, None)).unwrap();
    let refused = block_on(b.subscribe_outpoint(&tx(2), 1, None)).unwrap_err();
    assert!(matches!(
        refused,
        Error::SubscriptionLimit {
            scope: SubscriptionScope::Group,
            max: 3
        }
    ));
    let (c, _) = fx.connect("198.51.100.1:1");
    block_on(c.subscribe_outpoint(&tx(3), 0, None)).unwrap();
    let refused = block_on(c.subscribe(&"ab".repeat(32))).unwrap_err();
    assert!(matches!(
        refused,
        Error::SubscriptionLimit {
            scope: SubscriptionScope::Global,
            max: 4
        }
    ));
    assert_eq!(fx.manager.info().subs, 4);
    assert_eq!((a.subscription_count(), b.subscription_count()), (2, 1));
    // The admin table counts them too (and the cost decay with it).
    let row = fx
        .manager
        .sessions()
        .into_iter()
        .find(|r| r.id == a.id())
        .unwrap();
    assert_eq!(row.subs, 2);
    // Freed by unsubscribing.
    assert!(a.unsubscribe_outpoint(&tx(1), 0).unwrap());
    block_on(c.subscribe_outpoint(&tx(3), 1, None)).unwrap();
}

#[test]
fn malformed_outpoint_and_script_parameters_are_typed_errors() {
    let fx = Fixture::new(Config::default());
    chain(&fx, 1);
    let (session, _) = fx.connect("203.0.113.1:1");
    let good = txid(1).to_hex();
    let bad_param = |error: Error| match error {
        Error::BadParam(param) => {
            assert_eq!(Error::BadParam(param).rpc_code(), 1);
            param
        }
        other => panic!("expected a bad parameter, got {other:?}"),
    };
    let cases: Vec<(Error, ParamError)> = vec![
        (
            block_on(session.subscribe_outpoint(&good[..63], 0, None)).unwrap_err(),
            ParamError::Length {
                param: "tx_hash",
                expected: 64,
                found: 63,
            },
        ),
        (
            block_on(session.subscribe_outpoint(&"zz".repeat(32), 0, None)).unwrap_err(),
            ParamError::NotHex { param: "tx_hash" },
        ),
        (
            block_on(session.subscribe_outpoint(&good, -1, None)).unwrap_err(),
            ParamError::IndexOutOfRange {
                param: "txout_idx",
                index: -1,
            },
        ),
        (
            block_on(session.outpoint_status(&good, 1 << 32, None)).unwrap_err(),
            ParamError::IndexOutOfRange {
                param: "txout_idx",
                index: 1 << 32,
            },
        ),
        (
            block_on(session.subscribe_outpoint(&good, 0, Some("abc"))).unwrap_err(),
            ParamError::NotHex { param: "spk_hint" },
        ),
        (
            session.unsubscribe_outpoint("", 0).unwrap_err(),
            ParamError::Length {
                param: "tx_hash",
                expected: 64,
                found: 0,
            },
        ),
        (
            block_on(session.subscribe_scriptpubkey("0g")).unwrap_err(),
            ParamError::NotHex {
                param: "scriptpubkey",
            },
        ),
        (
            session
                .unsubscribe_scriptpubkey(&"00".repeat(10_001))
                .unwrap_err(),
            ParamError::TooLong {
                param: "scriptpubkey",
                max: 20_000,
                found: 20_002,
            },
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(bad_param(error), expected);
    }
    assert_eq!(fx.manager.info().subs, 0);
    // A multi-byte character is not hex either (and does not panic).
    assert!(block_on(session.subscribe_outpoint(&"é".repeat(32), 0, None)).is_err());
    assert!(scripthash_of_scriptpubkey("é").is_err());
}

#[test]
fn a_host_without_outpoint_lookups_answers_unsupported() {
    use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport};
    use indexer_sessions::{Db, HostError, SessionManager};

    /// An index written before outpoints existed: no `outpoint` method.
    struct OldDb(MemoryDb);

    #[async_trait::async_trait]
    impl Db for OldDb {
        async fn tip(&self) -> Result<Tip, HostError> {
            self.0.tip().await
        }
        async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, HostError> {
            self.0.header(height).await
        }
        async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, HostError> {
            self.0.headers(start, count).await
        }
        async fn history(&self, hashx: HashX, limit: usize) -> Result<Vec<HistoryEntry>, HostError> {
            self.0.history(hashx, limit).await
        }
        async fn block_txids(&self, height: Height) -> Result<Option<Vec<TxHash>>, HostError> {
            self.0.block_txids(height).await
        }
    }

    let manager = SessionManager::builder(Config::default())
        .timer(ManualTimer::new())
        .db(OldDb(MemoryDb::new()))
        .daemon(MemoryDaemon::new())
        .mempool(MemoryMempool::new())
        .build()
        .unwrap();
    let (transport, _) = MemoryTransport::new("203.0.113.1:1".parse().unwrap());
    let session = manager.add_session(transport).unwrap();
    let error = block_on(session.subscribe_outpoint(&txid(1).to_hex(), 0, None)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Unsupported {
                operation: "outpoint"
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.rpc_code(), -32601);
    assert_eq!(manager.info().subs, 0);
}

// ---- Scripts by scriptPubKey ----

/// A P2WPKH script in the spelling a client might use (upper case).
const SCRIPT: &str = "0014ABABABABABABABABABABABABABABABABABABABAB";

fn script_hashx() -> HashX {
    HashX::from_scripthash_hex(&scripthash_of_scriptpubkey(SCRIPT).unwrap()).unwrap()
}

fn pay_script(fx: &Fixture, n: u8) -> Tip {
    let entry = HistoryEntry {
        txid: txid(n),
        height: Height(fx.db.current_tip().height.0 + 1),
    };
    fx.db.add_history(script_hashx(), entry);
    fx.db.push_block(header(entry.height.0, n), vec![entry.txid])
}

#[test]
fn a_scriptpubkey_subscription_is_notified_with_the_clients_spelling_and_method() {
    let fx = Fixture::new(Config::default());
    chain(&fx, 1);
    let (by_script, script_log) = fx.connect("203.0.113.1:1");
    let (by_hash, hash_log) = fx.connect("203.0.113.2:1");
    let scripthash = scripthash_of_scriptpubkey(SCRIPT).unwrap();
    assert_eq!(
        scripthash,
        scripthash_of_scriptpubkey(&SCRIPT.to_lowercase()).unwrap()
    );
    assert_eq!(block_on(by_script.subscribe_scriptpubkey(SCRIPT)).unwrap(), None);
    assert_eq!(block_on(by_hash.subscribe(&scripthash)).unwrap(), None);
    assert_eq!(fx.manager.info().distinct_subs, 1, "one shared entry");
    let tip = pay_script(&fx, 5);
    let report = block_on(fx.manager.notify(tip, &[script_hashx()]));
    assert_eq!((report.statuses_computed, report.status_notifications), (1, 2));
    let sent = deliver(&by_script, &script_log);
    let status = match sent.as_slice() {
        [ExtendedNotification::ScriptPubKeyStatus { script, status }] => {
            assert_eq!(script, SCRIPT, "the client's own spelling");
            status.clone()
        }
        other => panic!("expected one scriptpubkey status, got {other:?}"),
    };
    assert!(status.is_some());
    assert!(script_log.sent().is_empty());
    // The scripthash subscriber gets the same status the 1.4 way.
    deliver(&by_hash, &hash_log);
    assert_eq!(
        hash_log.take_sent(),
        vec![Notification::ScriptHashStatus {
            alias: scripthash.clone(),
            status: status.clone()
        }]
    );
    // The history a 1.7 host serves by script is the scripthash's.
    let history = block_on(by_script.history(&scripthash)).unwrap();
    assert_eq!(history.len(), 1);
}

#[test]
fn a_script_subscribed_both_ways_is_one_subscription_notified_the_last_way() {
    let fx = Fixture::new(Config::default());
    chain(&fx, 1);
    let (session, log) = fx.connect("203.0.113.1:1");
    let scripthash = scripthash_of_scriptpubkey(SCRIPT).unwrap();
    block_on(session.subscribe(&scripthash)).unwrap();
    block_on(session.subscribe_scriptpubkey(SCRIPT)).unwrap();
    assert_eq!(session.subscription_count(), 1);
    let tip = pay_script(&fx, 5);
    block_on(fx.manager.notify(tip, &[script_hashx()]));
    let sent = deliver(&session, &log);
    assert_eq!(sent.len(), 1);
    assert!(log.sent().is_empty(), "not notified the scripthash way too");
    // Back to the scripthash way.
    block_on(session.subscribe(&scripthash)).unwrap();
    let tip = pay_script(&fx, 6);
    block_on(fx.manager.notify(tip, &[script_hashx()]));
    assert!(deliver(&session, &log).is_empty());
    assert_eq!(log.take_sent().len(), 1);
    // Unsubscribing either way ends the one subscription.
    assert!(session.unsubscribe_scriptpubkey(&SCRIPT.to_lowercase()).unwrap());
    assert!(!session.unsubscribe(&scripthash).unwrap());
    assert_eq!(session.subscription_count(), 0);
}

// ---- Noise ----

fn noise_fixture(seed: u64) -> Fixture {
    Fixture::new(Config {
        noise: Some(NoisePolicy {
            seed: Some(seed),
            ..NoisePolicy::default()
        }),
        ..Config::default()
    })
}

fn pings(sent: &[ExtendedNotification]) -> usize {
    sent.iter()
        .filter(|n| match n {
            ExtendedNotification::Ping { padding } => {
                assert_eq!(*padding, 128);
                true
            }
            _ => false,
        })
        .count()
}

/// Runs `blocks` blocks, then `refreshes` mempool refreshes a minute
/// apart, with three sessions: a quiet one with noise, one with noise
/// that is sent two notifications per block (a header and a status), and
/// one without noise. Returns the pings each was sent, per event.
fn noise_run(seed: u64, blocks: u32, refreshes: u32) -> [Vec<usize>; 3] {
    let fx = noise_fixture(seed);
    chain(&fx, 1);
    let (quiet, quiet_log) = fx.connect("203.0.113.1:1");
    let (busy, busy_log) = fx.connect("203.0.113.2:1");
    let (off, off_log) = fx.connect("203.0.113.3:1");
    assert!(quiet.set_noise(true) && busy.set_noise(true));
    assert!(!busy.set_noise(true), "already on");
    block_on(busy.subscribe_headers()).unwrap();
    block_on(busy.subscribe_scriptpubkey(SCRIPT)).unwrap();
    block_on(off.subscribe_headers()).unwrap();
    let mut out: [Vec<usize>; 3] = Default::default();
    let record = |out: &mut [Vec<usize>; 3]| {
        for (i, (session, log)) in [(&quiet, &quiet_log), (&busy, &busy_log), (&off, &off_log)]
            .into_iter()
            .enumerate()
        {
            out[i].push(pings(&deliver(session, log)));
            log.take_sent();
        }
    };
    for n in 0..blocks {
        let tip = pay_script(&fx, n as u8);
        let report = block_on(fx.manager.notify(tip, &[script_hashx()]));
        assert_eq!(report.header_notifications, 2);
        record(&mut out);
    }
    for _ in 0..refreshes {
        fx.timer.advance(Duration::from_secs(60));
        let report = block_on(fx.manager.notify(fx.db.current_tip(), &[]));
        assert_eq!(report.header_notifications, 0);
        record(&mut out);
    }
    out
}

#[test]
fn noise_follows_the_policy_and_a_seed_replays_it() {
    let (blocks, refreshes) = (200, 1000);
    let [quiet, busy, off] = noise_run(42, blocks, refreshes);
    let (quiet_blocks, quiet_mempool) = quiet.split_at(blocks as usize);
    let (busy_blocks, busy_mempool) = busy.split_at(blocks as usize);
    // A session sent fewer than two notifications gets a ping on every block.
    assert!(quiet_blocks.iter().all(|&p| p >= 1), "{quiet_blocks:?}");
    // Beyond that, one more with probability 0.1 each: about 0.11 per block.
    let extra = |pings: &[usize], base: usize| {
        pings.iter().map(|p| p - base).sum::<usize>() as f64 / pings.len() as f64
    };
    let (quiet_extra, busy_extra) = (extra(quiet_blocks, 1), extra(busy_blocks, 0));
    assert!((0.03..0.25).contains(&quiet_extra), "{quiet_extra}");
    assert!((0.03..0.25).contains(&busy_extra), "{busy_extra}");
    assert!(
        busy_blocks.contains(&0),
        "a session sent two notifications gets no certain ping"
    );
    // On mempool refreshes a minute apart: probability 60 s / 600 s each.
    for mempool in [quiet_mempool, busy_mempool] {
        let rate = mempool.iter().sum::<usize>() as f64 / mempool.len() as f64;
        assert!((0.06..0.14).contains(&rate), "{rate}");
        assert!(mempool.iter().all(|&p| p <= 1));
    }
    // A session that did not ask for noise gets none.
    assert!(off.iter().all(|&p| p == 0));
    // The same seed replays exactly; another seed differs.
    assert_eq!(noise_run(42, blocks, refreshes), [quiet, busy, off.clone()]);
    assert_ne!(
        noise_run(43, blocks, refreshes)[0],
        noise_run(42, blocks, refreshes)[0]
    );
}

#[test]
fn noise_is_off_without_a_policy_and_a_session_can_turn_it_off() {
    let fx = Fixture::new(Config::default());
    chain(&fx, 1);
    let (session, log) = fx.connect("203.0.113.1:1");
    assert!(session.set_noise(true));
    let tip = fx.db.push_block(header(1, 0), vec![]);
    assert_eq!(block_on(fx.manager.notify(tip, &[])).noise_pings, 0);
    assert!(deliver(&session, &log).is_empty());

    let fx = noise_fixture(1);
    chain(&fx, 1);
    let (session, log) = fx.connect("203.0.113.1:1");
    session.set_noise(true);
    let tip = fx.db.push_block(header(1, 0), vec![]);
    assert!(block_on(fx.manager.notify(tip, &[])).noise_pings >= 1);
    assert!(pings(&deliver(&session, &log)) >= 1);
    assert!(session.set_noise(false));
    let tip = fx.db.push_block(header(2, 0), vec![]);
    assert_eq!(block_on(fx.manager.notify(tip, &[])).noise_pings, 0);
    assert!(deliver(&session, &log).is_empty());
}

#[test]
fn an_invalid_noise_policy_is_refused_at_build() {
    let config = Config {
        noise: Some(NoisePolicy {
            block_extra_probability: 2.0,
            ..NoisePolicy::default()
        }),
        ..Config::default()
    };
    let error = config.validate().unwrap_err();
    assert_eq!(error.field, "noise.block_extra_probability");
}

#[test]
fn mempool_entries_do_not_affect_outpoint_statuses_and_scripts_stay_independent() {
    // An outpoint and a script touched by the same transaction, in one
    // `Changes`: each is computed once and notified its own way.
    let fx = Fixture::new(Config::default());
    chain(&fx, 1);
    let op = outpoint(1, 0);
    fx.db.set_outpoint(
        op,
        Some(ConfirmedOutpoint {
            height: Height(0),
            spender: None,
        }),
    );
    let (session, log) = fx.connect("203.0.113.1:1");
    block_on(session.subscribe_outpoint(&op.txid.to_hex(), 0, None)).unwrap();
    block_on(session.subscribe_scriptpubkey(SCRIPT)).unwrap();
    fx.mempool.add(
        script_hashx(),
        MempoolEntry {
            txid: txid(2),
            fee: 1000,
            has_unconfirmed_inputs: false,
        },
    );
    fx.mempool.set_outpoint(
        op,
        MempoolOutpoint {
            funder: None,
            spender: Some(MempoolSpender {
                txid: txid(2),
                has_unconfirmed_inputs: false,
            }),
        },
    );
    let mut changes = touched(&[op]);
    changes.add_script(script_hashx());
    let report = block_on(fx.manager.notify(fx.db.current_tip(), changes));
    assert_eq!((report.statuses_changed, report.outpoints_changed), (1, 1));
    let sent = deliver(&session, &log);
    assert_eq!(sent.len(), 2);
    assert!(matches!(sent[0], ExtendedNotification::ScriptPubKeyStatus { .. }));
    assert_eq!(outpoint_statuses(&sent), vec![(op, spent(0, txid(2), 0))]);
}
