//! `RedisLedger` against a real `redis-server` (Debian's package; see
//! `scripts/test.sh`, which installs it and starts one for the run as
//! `INDEXER_SESSIONS_REDIS_URL`). The tests that stop and restart Redis
//! start their own on a free port. A missing `redis-server` fails them.

#[path = "support/redis_server.rs"]
mod redis_server;

use futures::FutureExt;
use indexer_sessions::redis_ledger::{RedisLedger, RedisLedgerConfig, RedisLedgerError};
use indexer_sessions::testing::{MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport};
use indexer_sessions::{
    Config, Cost, DisconnectReason, Error, HostParts, InProcessLedger, Refusal, SessionHandle,
    SessionManager, TokioTimer,
};
use redis_server::{RedisServer, free_port};
use std::time::{Duration, Instant};

type ClusterHost = HostParts<
    MemoryDb,
    MemoryDaemon,
    MemoryMempool,
    TokioTimer,
    indexer_sessions::StructuralValidator,
    RedisLedger,
>;
type LocalHost = HostParts<MemoryDb, MemoryDaemon, MemoryMempool, TokioTimer>;

/// The run's shared Redis, or one of the test's own when the tests run
/// without `scripts/test.sh`.
fn shared_redis() -> (String, Option<RedisServer>) {
    match std::env::var("INDEXER_SESSIONS_REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let server = RedisServer::start_anywhere();
            (server.url(), Some(server))
        }
    }
}

/// A prefix no other test (or earlier run) uses.
fn fresh_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{name}-{}-{nanos}", std::process::id())
}

fn ledger_config(url: &str, prefix: &str, node: &str, sync: Duration) -> RedisLedgerConfig {
    RedisLedgerConfig {
        prefix: prefix.to_owned(),
        sync_interval: sync,
        node_ttl: (sync * 8).max(Duration::from_secs(1)),
        ..RedisLedgerConfig::new(url, node)
    }
}

struct Node {
    manager: SessionManager<ClusterHost>,
    ledger: RedisLedger,
    sync: tokio::task::JoinHandle<()>,
}

fn node(config: RedisLedgerConfig) -> Node {
    node_with(Config::default(), config)
}

fn node_with(manager_config: Config, config: RedisLedgerConfig) -> Node {
    let ledger = RedisLedger::new(config).expect("a valid ledger configuration");
    let sync = tokio::spawn(ledger.clone().run());
    let manager = SessionManager::builder(manager_config)
        .timer(TokioTimer)
        .db(MemoryDb::new())
        .daemon(MemoryDaemon::new())
        .mempool(MemoryMempool::new())
        .ledger(ledger.clone())
        .build()
        .expect("valid configuration");
    Node {
        manager,
        ledger,
        sync,
    }
}

fn connect<H: indexer_sessions::Host>(
    manager: &SessionManager<H>,
    addr: &str,
) -> Result<SessionHandle<H>, Refusal> {
    manager.add_session(MemoryTransport::new(addr.parse().unwrap()).0)
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// Whether the session's next request is refused for excessive cost.
fn cut_off<H: indexer_sessions::Host>(session: &SessionHandle<H>) -> bool {
    matches!(session.admit().now_or_never(), Some(Err(Error::ExcessiveCost)))
}

/// Charges `step` to each abuser session in turn, letting `settle` run
/// after each round, until one is throttled and until one is cut off;
/// returns the total charged at each point.
async fn abuse<H: indexer_sessions::Host>(
    abusers: &[SessionHandle<H>],
    step: f64,
    mut settle: impl AsyncFnMut(),
) -> (f64, f64) {
    let mut total = 0.0;
    let mut throttled_at = None;
    for _ in 0..1000 {
        for session in abusers {
            session.charge(Cost::new(step).unwrap());
            total += step;
        }
        settle().await;
        if throttled_at.is_none() && abusers.iter().any(|s| s.throttle().fraction > 0.0) {
            throttled_at = Some(total);
        }
        if abusers.iter().any(cut_off) {
            return (throttled_at.unwrap_or(total), total);
        }
    }
    panic!("never cut off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abuser_spread_over_three_nodes_is_cut_off_at_the_single_node_total() {
    let (url, _own) = shared_redis();
    let step = 150.0;

    // One node: three connections from one /24.
    let single: SessionManager<LocalHost> = SessionManager::builder(Config::default())
        .timer(TokioTimer)
        .db(MemoryDb::new())
        .daemon(MemoryDaemon::new())
        .mempool(MemoryMempool::new())
        .ledger(InProcessLedger::new())
        .build()
        .unwrap();
    let abusers: Vec<_> = (1..=3)
        .map(|n| connect(&single, &format!("203.0.113.{n}:1")).unwrap())
        .collect();
    let (single_throttled, single_cut) = abuse(&abusers, step, async || single.recalculate()).await;
    drop(abusers);

    // Three nodes behind one Redis: one connection each.
    let sync = Duration::from_millis(50);
    let prefix = fresh_prefix("abuse");
    let nodes: Vec<Node> = (1..=3)
        .map(|n| node(ledger_config(&url, &prefix, &format!("node-{n}"), sync)))
        .collect();
    for node in &nodes {
        until("first sync", Duration::from_secs(5), || {
            node.ledger.health().is_ok()
        })
        .await;
    }
    let abusers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| connect(&node.manager, &format!("203.0.113.{}:1", n + 1)).unwrap())
        .collect();
    let neighbour = connect(&nodes[0].manager, "198.51.100.7:1").unwrap();
    let (cluster_throttled, cluster_cut) = abuse(&abusers, step, async || {
        // Every node syncs, then recalculates against the others' shares.
        tokio::time::sleep(sync * 3).await;
        for node in &nodes {
            node.manager.recalculate();
        }
    })
    .await;

    let within = |cluster: f64, single: f64| (cluster - single).abs() <= 0.10 * single;
    assert!(
        within(cluster_throttled, single_throttled),
        "throttled at {cluster_throttled} over three nodes, {single_throttled} on one"
    );
    assert!(
        within(cluster_cut, single_cut),
        "cut off at {cluster_cut} over three nodes, {single_cut} on one"
    );
    // The other /24 is served normally on the abusers' node.
    assert_eq!(neighbour.throttle().fraction, 0.0);
    assert!(matches!(neighbour.admit().now_or_never(), Some(Ok(_))));
    // Every node sees the whole group and each node's share.
    let group = nodes[1]
        .ledger
        .cluster_groups()
        .into_iter()
        .find(|g| g.network.to_string() == "203.0.113.0/24")
        .expect("the abusers' group");
    assert_eq!(group.nodes.len(), 3, "{group:?}");
    assert!(group.cost >= 0.9 * cluster_cut, "{group:?}");
    for node in nodes {
        node.sync.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_on_one_node_refuses_its_network_on_the_others_within_a_second() {
    let (url, _own) = shared_redis();
    let prefix = fresh_prefix("ban");
    // A slow periodic sync: only the ban announcement can be this fast.
    let sync = Duration::from_secs(5);
    let nodes: Vec<Node> = (1..=3)
        .map(|n| {
            node(RedisLedgerConfig {
                node_ttl: Duration::from_secs(30),
                ..ledger_config(&url, &prefix, &format!("node-{n}"), sync)
            })
        })
        .collect();
    for node in &nodes {
        until("first sync", Duration::from_secs(5), || {
            node.ledger.health().is_ok()
        })
        .await;
    }
    // Let the pub/sub subscriptions settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live = connect(&nodes[2].manager, "198.51.100.9:1").unwrap();

    let network = "198.51.100.0/24".parse().unwrap();
    nodes[0].manager.ban(network, None).await.unwrap();
    assert!(
        matches!(
            connect(&nodes[0].manager, "198.51.100.13:1"),
            Err(Refusal::Banned { .. })
        ),
        "refused at once where it was made"
    );
    for node in &nodes[1..] {
        let took = until("the ban reaches the other node", Duration::from_secs(1), || {
            matches!(
                connect(&node.manager, "198.51.100.10:1"),
                Err(Refusal::Banned { .. })
            )
        })
        .await;
        assert!(took < Duration::from_secs(1));
        assert!(node.manager.bans().iter().any(|row| row.network == network));
    }
    // The other node's live session in the network ends at its sweep.
    assert_eq!(nodes[2].manager.sweep().await, 1);
    assert!(live.is_closed());

    // Lifted on another node than the one that made it: lifted everywhere.
    assert!(nodes[2].manager.unban(network), "node 3 knows the ban");
    for node in [&nodes[0], &nodes[1]] {
        until("the unban reaches the other node", Duration::from_secs(1), || {
            connect(&node.manager, "198.51.100.11:1").is_ok()
        })
        .await;
    }
    assert!(
        connect(&nodes[2].manager, "198.51.100.12:1").is_ok(),
        "lifted at once where it was lifted"
    );
    for node in nodes {
        node.sync.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_and_restarted_mid_run_loses_no_session_and_the_ledger_converges() {
    let port = free_port();
    let mut redis = RedisServer::start(port);
    let prefix = fresh_prefix("restart");
    let sync = Duration::from_millis(50);
    let a = node(ledger_config(&redis.url(), &prefix, "a", sync));
    let b = node(ledger_config(&redis.url(), &prefix, "b", sync));
    let group = "203.0.113.0/24".parse().unwrap();
    let on_a = connect(&a.manager, "203.0.113.1:1").unwrap();
    let leaving = connect(&a.manager, "203.0.113.2:1").unwrap();
    let on_b = connect(&b.manager, "203.0.113.3:1").unwrap();
    on_a.charge(Cost::constant(1000.0));
    leaving.charge(Cost::constant(2000.0));
    on_b.charge(Cost::constant(500.0));
    a.manager.recalculate();
    b.manager.recalculate();
    let expected = 1005.0 + 2005.0 + 505.0;
    let cost_on = |node: &Node| indexer_sessions::GroupLedger::cost(&node.ledger, group);
    until("both nodes see the whole group", Duration::from_secs(5), || {
        (cost_on(&a) - expected).abs() < 5.0 && (cost_on(&b) - expected).abs() < 5.0
    })
    .await;

    redis.kill();
    until("a notices", Duration::from_secs(3), || {
        matches!(a.ledger.health(), Err(RedisLedgerError::Unreachable { .. }))
    })
    .await;
    // Requests never wait on Redis; costs are still reported; sessions
    // come and go.
    let light = connect(&a.manager, "198.51.100.1:1").unwrap();
    for _ in 0..100 {
        let permit = light.admit().now_or_never().expect("admitted at once").unwrap();
        drop(permit);
    }
    on_a.charge(Cost::constant(1.0));
    a.manager.recalculate();
    drop(leaving); // its 2005 becomes retained cost, sent once Redis is back
    let joined = connect(&b.manager, "203.0.113.4:1").unwrap();

    let _redis = RedisServer::start(port); // empty: no persistence
    for node in [&a, &b] {
        until("reconnected", Duration::from_secs(6), || {
            node.ledger.health().is_ok()
        })
        .await;
    }
    let expected = expected + 1.0 + 5.0; // the charge during the outage, the new session
    until(
        "both views converge, nothing lost or doubled",
        Duration::from_secs(5),
        || (cost_on(&a) - expected).abs() < 15.0 && (cost_on(&b) - expected).abs() < 15.0,
    )
    .await;
    // And stay converged (a retried batch is not applied twice).
    tokio::time::sleep(sync * 10).await;
    assert!((cost_on(&a) - expected).abs() < 15.0, "a: {}", cost_on(&a));
    assert!((cost_on(&b) - expected).abs() < 15.0, "b: {}", cost_on(&b));
    for session in [&on_a, &on_b, &joined] {
        assert!(!session.is_closed());
    }
    a.sync.abort();
    b.sync.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_leaves_no_cost_behind_after_its_ttl() {
    let (url, _own) = shared_redis();
    let prefix = fresh_prefix("ttl");
    let sync = Duration::from_millis(50);
    let config = |node: &str| RedisLedgerConfig {
        node_ttl: Duration::from_secs(1),
        ..ledger_config(&url, &prefix, node, sync)
    };
    let dying = node(config("dying"));
    let survivor = node(config("survivor"));
    let group = "203.0.113.0/24".parse().unwrap();
    let heavy = connect(&dying.manager, "203.0.113.1:1").unwrap();
    heavy.charge(Cost::constant(3000.0));
    dying.manager.recalculate();
    let cost = |node: &Node| indexer_sessions::GroupLedger::cost(&node.ledger, group);
    until(
        "the survivor sees the heavy session",
        Duration::from_secs(5),
        || cost(&survivor) > 3000.0,
    )
    .await;

    // SIGKILL, as far as Redis can tell: the node stops syncing and never
    // says its session ended.
    dying.sync.abort();
    std::mem::forget(heavy);
    let gone = until("the dead node's share expires", Duration::from_secs(4), || {
        cost(&survivor) == 0.0
    })
    .await;
    assert!(
        gone >= Duration::from_millis(500),
        "not before the TTL ({gone:?})"
    );
    survivor.sync.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_redis_serves_locally_and_joins_when_redis_comes_up() {
    let port = free_port();
    let prefix = fresh_prefix("late");
    let url = format!("redis://127.0.0.1:{port}/");
    let early = node(ledger_config(&url, &prefix, "early", Duration::from_millis(50)));
    assert!(early.ledger.health().is_err(), "no Redis yet");
    let session = connect(&early.manager, "203.0.113.1:1").unwrap();
    session.charge(Cost::constant(700.0));
    assert!(matches!(session.admit().now_or_never(), Some(Ok(_))));
    until("the failure is reported", Duration::from_secs(3), || {
        matches!(early.ledger.health(), Err(RedisLedgerError::Unreachable { .. }))
    })
    .await;
    let round_trips = early.ledger.round_trips();

    let redis = RedisServer::start(port);
    until("joined", Duration::from_secs(5), || early.ledger.health().is_ok()).await;
    let other = node(ledger_config(
        &redis.url(),
        &prefix,
        "other",
        Duration::from_millis(50),
    ));
    let group = "203.0.113.0/24".parse().unwrap();
    until(
        "the other node sees the early node's share",
        Duration::from_secs(5),
        || indexer_sessions::GroupLedger::cost(&other.ledger, group) >= 700.0,
    )
    .await;
    // Backoff bounded the attempts while Redis was down (≤ 100 ms apart at first, then 2 s).
    assert!(round_trips < 40, "{round_trips} attempts");
    session.close(DisconnectReason::Admin).await;
    early.sync.abort();
    other.sync.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_group_session_limit_holds_across_the_cluster() {
    let (url, _own) = shared_redis();
    let prefix = fresh_prefix("group-limit");
    let sync = Duration::from_millis(50);
    let mut config = Config::default();
    config.limits.max_sessions_per_group = Some(3);
    let a = node_with(config.clone(), ledger_config(&url, &prefix, "a", sync));
    let b = node_with(config, ledger_config(&url, &prefix, "b", sync));
    let on_a: Vec<_> = (1..=2)
        .map(|n| connect(&a.manager, &format!("203.0.113.{n}:1")).unwrap())
        .collect();
    let group = "203.0.113.0/24".parse().unwrap();
    until("b sees a's two sessions", Duration::from_secs(5), || {
        indexer_sessions::GroupLedger::entry(&b.ledger, group).is_some_and(|entry| entry.sessions == 2)
    })
    .await;
    let third = connect(&b.manager, "203.0.113.3:1").expect("the third of three");
    assert!(matches!(
        connect(&b.manager, "203.0.113.4:1"),
        Err(Refusal::GroupFull { max: 3, .. })
    ));
    until(
        "a sees b's session and refuses a fourth",
        Duration::from_secs(5),
        || {
            matches!(
                connect(&a.manager, "203.0.113.5:1"),
                Err(Refusal::GroupFull { .. })
            )
        },
    )
    .await;
    // Another /24 is not affected.
    assert!(connect(&a.manager, "198.51.100.1:1").is_ok());
    drop((on_a, third));
    a.sync.abort();
    b.sync.abort();
}

#[test]
fn a_bad_configuration_is_refused_before_anything_runs() {
    let bad =
        |config: RedisLedgerConfig| matches!(RedisLedger::new(config), Err(RedisLedgerError::Config(_)));
    let ok = RedisLedgerConfig::new("redis://127.0.0.1:1/", "n");
    assert!(RedisLedger::new(ok.clone()).is_ok());
    assert!(bad(RedisLedgerConfig::new("not a url", "n")));
    assert!(bad(RedisLedgerConfig::new("redis://127.0.0.1:1/", "")));
    assert!(bad(RedisLedgerConfig {
        prefix: "a{b}".into(),
        ..ok.clone()
    }));
    assert!(bad(RedisLedgerConfig {
        sync_interval: Duration::ZERO,
        ..ok.clone()
    }));
    assert!(bad(RedisLedgerConfig {
        node_ttl: Duration::from_millis(100),
        ..ok.clone()
    }));
    assert!(bad(RedisLedgerConfig {
        refund_per_sec: f64::NAN,
        ..ok
    }));
}
