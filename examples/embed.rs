//! A minimal embedding: a manager on tokio with in-memory hosts, a few
//! sessions doing requests, a block notification, and the admin tables.
//!
//! Run: `cargo run --example embed --features tokio,test-util`

use indexer_sessions::testing::{MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport};
use indexer_sessions::{
    Config, DisconnectReason, HashX, Height, HistoryEntry, HostParts, Limits, Refusal, SessionManager,
    TokioTimer, TxHash, cost,
};

/// The manager's type, named once: generic over its parts, so every call to
/// the index, node and mempool is statically dispatched.
type Manager = SessionManager<HostParts<MemoryDb, MemoryDaemon, MemoryMempool, TokioTimer>>;

// One thread and tokio's paused clock: the output is the same on every run.
#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = MemoryDb::new();
    let tip = db.push_block(vec![0u8; 80], vec![]);
    // At most two sessions per /24: a third is refused.
    let config = Config {
        limits: Limits {
            max_sessions_per_group: Some(2),
            ..Limits::default()
        },
        ..Config::default()
    };
    let manager: Manager = SessionManager::builder(config)
        .timer(TokioTimer)
        .db(db.clone())
        .daemon(MemoryDaemon::new())
        .mempool(MemoryMempool::new())
        .build()?;
    tokio::spawn({
        let manager = manager.clone();
        async move { manager.run_housekeeping().await }
    });
    manager.notify(tip, &[]).await;

    // Three clients: two share 203.0.113.0/24, one is local (exempt).
    let mut sessions = Vec::new();
    for addr in ["203.0.113.10:50001", "203.0.113.11:50001", "127.0.0.1:50001"] {
        let (transport, log) = MemoryTransport::new(addr.parse()?);
        let session = manager.add_session(transport)?;
        tokio::spawn(session.deliver());
        sessions.push((session, log));
    }

    match manager.add_session(MemoryTransport::new("203.0.113.12:50001".parse()?).0) {
        Err(Refusal::GroupFull { group, max }) => println!("refused: {group} already has {max} sessions"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }

    let scripthash = "5b3a0c7f06e3c8a2dfa0d12d1e9f8c5ab4e0cfd2f1b8a1c7d3e9f00112233445";
    for (i, (session, _)) in sessions.iter().enumerate() {
        session.set_client(format!("example-client/{i}"), "1.4");
        session.record_received(120);
        let permit = session.admit().await?;
        let status = session.subscribe(scripthash).await?;
        drop(permit);
        session.record_sent(90);
        println!("session {} subscribed, status {:?}", session.id(), status);
    }
    // A heavy client pays for its requests; its group neighbour feels it.
    sessions[0].0.charge(cost::TRANSACTION_GET * 3000);

    // A block touches the subscribed script: every subscriber is told once.
    let hashx = HashX::from_scripthash_hex(scripthash).ok_or("bad scripthash")?;
    db.add_history(
        hashx,
        HistoryEntry {
            txid: TxHash([7; 32]),
            height: Height(1),
        },
    );
    let tip = db.push_block(vec![1u8; 80], vec![TxHash([7; 32])]);
    let report = manager.notify(tip, &[hashx]).await;
    println!(
        "notify: {} status computed, {} notifications queued",
        report.statuses_computed, report.status_notifications
    );
    // Each session's delivery task sends what was queued: wait until every
    // outbox is empty (a notification leaves it once its send completed).
    while sessions
        .iter()
        .any(|(session, _)| session.pending_notifications() > 0)
    {
        tokio::task::yield_now().await;
    }
    for (session, log) in &sessions {
        println!("session {} received {:?}", session.id(), log.sent());
    }
    manager.recalculate();

    println!(
        "\n{:>4} {:<6} {:<18} {:>9} {:>9} {:>5} {:>5} {:<22} group",
        "id", "flags", "client", "cost", "xcost", "reqs", "subs", "peer"
    );
    for row in manager.sessions() {
        println!(
            "{:>4} {:<6} {:<18} {:>9.2} {:>9.2} {:>5} {:>5} {:<22} {}",
            row.id,
            row.flags,
            row.client.unwrap_or_default(),
            row.cost,
            row.extra_cost,
            row.counters.requests,
            row.subs,
            row.peer,
            row.group
                .map_or_else(|| "(exempt)".to_owned(), |group| group.to_string())
        );
    }
    println!(
        "\n{:<18} {:>8} {:>10} {:>10}",
        "group", "sessions", "cost", "retained"
    );
    for group in manager.groups() {
        println!(
            "{:<18} {:>8} {:>10.2} {:>10.2}",
            group.network, group.sessions, group.cost, group.retained_cost
        );
    }
    // The host ends one session itself: `Transport::close` is called once.
    let (session, log) = sessions.pop().ok_or("three sessions")?;
    session.close(DisconnectReason::Admin).await;
    println!("\nclosed session {}: {:?}", session.id(), log.closed());

    let info = manager.info();
    println!(
        "\ninfo: {} sessions, {} groups, {} subscriptions, {} requests, uptime {:?}",
        info.sessions, info.groups, info.subs, info.counters.requests, info.uptime
    );
    println!("closed {} sessions at shutdown", manager.shutdown().await);
    Ok(())
}
