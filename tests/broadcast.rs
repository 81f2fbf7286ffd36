//! Broadcast through the public API: the default validator refuses malformed
//! bytes before the node sees them, a custom validator's refusal and a
//! daemon's rejection carry their messages, host failures are typed, and
//! the `txs_sent` counters add up per session, per group and overall.

use async_trait::async_trait;
use futures::executor::block_on;
use indexer_sessions::testing::{
    HostBehaviour, ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport,
};
use indexer_sessions::{
    Config, DynHost, DynSessionManager, Error, SessionHandle, SessionManager, TxHash, TxValidator, decode_hex,
};
use std::pin::pin;
use std::time::Duration;

/// A legacy mainnet transaction: one input, two outputs.
const LEGACY: &str = "0100000001cdaf2f758e91c514655e2dc50633d1e4c84989f8aa90a0dbc883f0d23ed5c2fa010000008b48304502207ab51be6f12a1962ba0aaaf24a20e0b69b27a94fac5adf45aa7d2d18ffd9236102210086ae728b370e5329eead9accd880d0cb070aea0c96255fae6c4f1ddcce1fd56e014104462e76fd4067b3a0aa42070082dcb0bf2f388b6495cf33d789904f07d0f55c40fbd4b82963c69b3dc31895d0c772c812b1d5fbcade15312ef1c0e8ebbb12dcd4ffffffff02404b4c00000000001976a9142b6ba7c9d796b75eef7942fc9288edd37c32f5c388ac002d3101000000001976a9141befba0cdc1ad56529371864d9f6cb042faa06b588ac00000000";
const LEGACY_TXID: &str = "71b3dbaca67e9f9189dad3617138c19725ab541ef0b49c05a94913e9f28e3f4e";

/// A segwit (P2WPKH) mainnet transaction.
const SEGWIT: &str = "0100000000010104369f5c54d0c8a60448e76ed47ec250a2dee5158d3a6b3598156c8af6e4faae0000000000ffffffff02201d9a0000000000160014a2ead2bb6f97ae26be95ea389cd72306cce9db198038010000000000160014028cf61a8dbeea74108326ca2524a0009e970574024730440220039f5cb0b5416c048e2d4d68ee514d633e3c1007efa55ca6671c8a91fe9a7fb302203fa8cbca1ff88295101f233a30e23c749d6945e4c510c911b8bb632236713ff40121032992c08b3e98a7346b2d6e9df43e0c1f14f05027085d2920e5136c84a2faaacf00000000";

fn raw(hex: &str) -> Vec<u8> {
    decode_hex(hex).expect("valid hex")
}

struct Harness {
    timer: ManualTimer,
    daemon: MemoryDaemon,
    /// The dynamic form: one type whichever validator the test picks.
    manager: DynSessionManager,
}

fn harness(config: Config, validator: Option<BurnCheck>) -> Harness {
    let timer = ManualTimer::new();
    let daemon = MemoryDaemon::new();
    let builder = SessionManager::builder(config)
        .timer(timer.clone())
        .db(MemoryDb::new())
        .daemon(daemon.clone())
        .mempool(MemoryMempool::new());
    let manager = match validator {
        Some(validator) => builder.validator(validator).build_dyn(),
        None => builder.build_dyn(),
    };
    Harness {
        timer,
        daemon,
        manager: manager.expect("valid configuration"),
    }
}

impl Harness {
    fn session(&self, addr: &str) -> SessionHandle<DynHost> {
        let (transport, _log) = MemoryTransport::new(addr.parse().expect("socket address"));
        self.manager.add_session(transport).expect("admitted")
    }
}

/// A stand-in for a token-protocol check: refuses transactions whose first
/// output pays more than a limit ("would burn tokens").
struct BurnCheck {
    max_first_output: u64,
}

#[async_trait]
impl TxValidator for BurnCheck {
    async fn validate(&self, raw: &[u8]) -> Result<(), String> {
        let tx = indexer_sessions::tx::parse_transaction(raw).map_err(|e| e.to_string())?;
        if tx.outputs[0].value > self.max_first_output {
            return Err(format!(
                "transfer would burn {} sats of tokens",
                tx.outputs[0].value
            ));
        }
        Ok(())
    }
}

fn rejected(result: Result<TxHash, Error>) -> String {
    match result {
        Err(Error::TxRejected(message)) => message,
        other => panic!("expected TxRejected, got {other:?}"),
    }
}

#[test]
fn valid_transactions_reach_the_daemon() {
    let h = harness(Config::default(), None);
    let session = h.session("203.0.113.7:50001");
    let start = session.cost().own;
    let txid = block_on(session.broadcast_transaction(&raw(LEGACY))).unwrap();
    assert_eq!(txid.to_hex(), LEGACY_TXID);
    let hex_len = LEGACY.len() as f64;
    assert!((session.cost().own - start - (0.25 + hex_len / 5000.0)).abs() < 1e-9);
    block_on(session.broadcast_transaction(&raw(SEGWIT))).unwrap();
    assert_eq!(h.daemon.broadcasts(), vec![raw(LEGACY), raw(SEGWIT)]);
    assert_eq!(h.manager.sessions()[0].counters.txs_sent, 2);
}

#[test]
fn the_default_validator_refuses_malformed_bytes_before_the_daemon() {
    let h = harness(Config::default(), None);
    let session = h.session("203.0.113.7:50001");
    let good = raw(LEGACY);
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0xde, 0xad]);
    let coinbase = raw(
        "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff0704ffff001d0104ffffffff0100f2052a010000000000000000",
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "truncated at byte 0"),
        (
            "garbage",
            b"hello, node".to_vec(),
            "input count 111 at byte 4 is more than",
        ),
        ("truncated", good[..good.len() - 1].to_vec(), "truncated at byte"),
        ("cut in the inputs", good[..60].to_vec(), "truncated at byte"),
        (
            "trailing garbage",
            trailing,
            "2 trailing bytes after the transaction",
        ),
        (
            "huge count",
            vec![1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff],
            "more than",
        ),
        ("coinbase", coinbase, "coinbase"),
    ];
    for (what, bytes, expect) in cases {
        let message = rejected(block_on(session.broadcast_transaction(&bytes)));
        assert!(message.contains(expect), "{what}: {message:?}");
        let error = Error::TxRejected(message);
        assert_eq!(error.rpc_code(), 1, "{what}");
        assert!(error.to_string().starts_with("the transaction was rejected: "));
    }
    assert!(h.daemon.broadcasts().is_empty());
    assert_eq!(h.daemon.calls(), 0, "the daemon never saw them");
    assert_eq!(h.manager.sessions()[0].counters.txs_sent, 0);
}

#[test]
fn a_custom_validators_refusal_carries_its_message() {
    let h = harness(
        Config::default(),
        Some(BurnCheck {
            max_first_output: 1_000_000,
        }),
    );
    let session = h.session("203.0.113.7:50001");
    // LEGACY's first output pays 5,000,000 sats.
    let message = rejected(block_on(session.broadcast_transaction(&raw(LEGACY))));
    assert_eq!(message, "transfer would burn 5000000 sats of tokens");
    assert_eq!(h.daemon.calls(), 0);
    // Malformed bytes still get the parser's message.
    let message = rejected(block_on(session.broadcast_transaction(&[1, 2, 3])));
    assert!(message.contains("truncated"), "{message}");
    assert!(h.daemon.broadcasts().is_empty());

    let h = harness(
        Config::default(),
        Some(BurnCheck {
            max_first_output: u64::MAX,
        }),
    );
    let session = h.session("203.0.113.7:50001");
    assert_eq!(
        block_on(session.broadcast_transaction(&raw(LEGACY)))
            .unwrap()
            .to_hex(),
        LEGACY_TXID
    );
    assert_eq!(h.daemon.broadcasts().len(), 1);
}

#[test]
fn daemon_rejections_and_failures_are_typed() {
    let config = Config {
        host_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let h = harness(config, None);
    let session = h.session("203.0.113.7:50001");

    h.daemon
        .set_reject(Some("min relay fee not met, 100 < 141".to_owned()));
    match block_on(session.broadcast_transaction(&raw(LEGACY))) {
        Err(error @ Error::DaemonRejected(_)) => {
            assert!(
                error.to_string().contains("min relay fee not met, 100 < 141"),
                "{error}"
            );
            assert_eq!(error.rpc_code(), 1);
        }
        other => panic!("expected DaemonRejected, got {other:?}"),
    }
    h.daemon.set_reject(None);

    h.daemon.set_behaviour(HostBehaviour::Failing);
    let error = block_on(session.broadcast_transaction(&raw(LEGACY))).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Host {
                operation: "broadcast",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.rpc_code(), 2);

    h.daemon.set_behaviour(HostBehaviour::Hanging);
    let error = block_on(async {
        let bytes = raw(LEGACY);
        let mut call = pin!(session.broadcast_transaction(&bytes));
        assert!(futures::poll!(call.as_mut()).is_pending());
        h.timer.advance(Duration::from_secs(2));
        call.await.unwrap_err()
    });
    assert!(
        matches!(
            error,
            Error::HostTimeout {
                operation: "broadcast",
                ..
            }
        ),
        "{error}"
    );

    assert!(h.daemon.broadcasts().is_empty());
    assert_eq!(h.manager.sessions()[0].counters.txs_sent, 0);
    assert_eq!(h.manager.info().counters.txs_sent, 0);
}

#[test]
fn txs_sent_counters_add_up() {
    let h = harness(Config::default(), None);
    let a1 = h.session("203.0.113.7:50001");
    let a2 = h.session("203.0.113.8:50001");
    let b = h.session("198.51.100.1:50001");
    let local = h.session("127.0.0.1:50001");
    let send = |session: &SessionHandle<DynHost>, times: usize| {
        for _ in 0..times {
            block_on(session.broadcast_transaction(&raw(LEGACY))).unwrap();
        }
        // A refused one is not counted.
        assert!(block_on(session.broadcast_transaction(&[0])).is_err());
    };
    send(&a1, 2);
    send(&a2, 1);
    send(&b, 3);
    send(&local, 1);

    let sent: Vec<(u64, u64)> = h
        .manager
        .sessions()
        .iter()
        .map(|row| (row.id.0, row.counters.txs_sent))
        .collect();
    assert_eq!(
        sent,
        vec![(a1.id().0, 2), (a2.id().0, 1), (b.id().0, 3), (local.id().0, 1)]
    );
    let groups = h.manager.groups();
    let group = |name: &str| {
        groups
            .iter()
            .find(|g| g.network.to_string() == name)
            .expect("group")
            .counters
            .txs_sent
    };
    assert_eq!(group("203.0.113.0/24"), 3);
    assert_eq!(group("198.51.100.0/24"), 3);
    assert_eq!(h.manager.info().counters.txs_sent, 7);
    assert_eq!(h.daemon.broadcasts().len(), 7);

    // Ended sessions still count in the total.
    drop(b);
    drop(local);
    assert_eq!(h.manager.info().counters.txs_sent, 7);
}
