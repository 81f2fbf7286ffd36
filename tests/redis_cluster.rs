//! Three `examples/electrum_server` processes behind one `redis-server`
//! (`--redis`), driven over TCP as an operator and clients would: an abuser
//! spreading its connections over the servers is throttled and cut off at
//! the total cost one server allows; a ban made on one server refuses the
//! network on the others within a second; a server killed with SIGKILL
//! leaves no cost behind once its TTL has passed.
//!
//! The servers are the built example, `target/debug/examples/electrum_server`:
//! `cargo test --all-features` builds it; before `--test redis_cluster` alone,
//! run `cargo build --all-features --example electrum_server`. Each test
//! starts its own `redis-server` on a free loopback port with persistence
//! off; a missing `redis-server` fails the test (Debian: `apt install
//! redis-server`; `scripts/test.sh` installs it).
//!
//! Clients connect from loopback addresses of their own /24 (Linux answers
//! all of 127.0.0.0/8) to servers started with `--exempt-networks none`, so
//! each /24 is an IP group.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

#[allow(dead_code)] // this test uses part of it
#[path = "support/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;

/// The tests run one at a time: each runs four processes on a small
/// machine, and the ban and TTL checks are timed.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long a client waits for any one reply.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `--initial-concurrent`'s default: a session below it is throttled.
const UNTHROTTLED: u32 = 10;

// ---------------------------------------------------------------------------
// Processes

/// The example server binary next to this test's: `…/target/debug/deps/<test>`
/// → `…/target/debug/examples/electrum_server`. Fails when it is missing or
/// older than the sources it is built from.
fn server_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test binary's path");
    let binary = test
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .join("examples")
        .join(format!("electrum_server{}", std::env::consts::EXE_SUFFIX));
    let rebuild = "build it with `cargo build --all-features --example electrum_server` \
                   (`cargo test --all-features` builds it too)";
    let built = std::fs::metadata(&binary)
        .and_then(|meta| meta.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {rebuild}", binary.display()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest = [root.join("src"), root.join("examples/electrum_server")]
        .iter()
        .filter_map(|dir| newest_file(dir))
        .max();
    if let Some((modified, source)) = newest {
        assert!(
            modified <= built,
            "{} is older than {}: {rebuild}",
            binary.display(),
            source.display()
        );
    }
    binary
}

/// The most recently modified file under `dir`.
fn newest_file(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let found = if path.is_dir() {
            newest_file(&path)
        } else {
            entry
                .metadata()
                .and_then(|meta| meta.modified())
                .ok()
                .map(|at| (at, path))
        };
        newest = newest.max(found);
    }
    newest
}

/// One example server process, killed (SIGKILL) when dropped.
struct Server {
    name: String,
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    /// Its stderr so far, for failure messages.
    stderr: Arc<Mutex<String>>,
}

/// A server that has been started and is building its chain.
struct Starting {
    name: String,
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Starting {
    /// Starts `electrum_server` on ephemeral loopback ports with `args`.
    fn spawn(name: &str, args: &[String]) -> Starting {
        let mut child = Command::new(server_binary())
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the example server starts");
        let lines = read_lines(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Starting {
            name: name.to_owned(),
            child,
            lines,
            stderr,
        }
    }

    /// Waits for the server's `listening on tcp://` line.
    fn ready(mut self) -> Server {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut admin = None;
        loop {
            let line = match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => panic!("{} did not start within 60 s", self.name),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("the server's exit status");
                    let stderr = self.stderr.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    panic!("{} exited at start ({status}):\n{stderr}", self.name);
                }
            };
            if let Some(addr) = line.strip_prefix("admin RPC on ") {
                admin = Some(addr.parse().expect("the admin address"));
            }
            if let Some(addr) = line.strip_prefix("listening on tcp://") {
                return Server {
                    name: self.name,
                    child: self.child,
                    listen: addr.parse().expect("the listening address"),
                    admin: admin.expect("the admin address is printed first"),
                    stderr: self.stderr,
                };
            }
        }
    }
}

/// Each line of `stdout`, as it comes.
fn read_lines(stdout: ChildStdout) -> Receiver<String> {
    let (send, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = send.send(line);
        }
    });
    lines
}

/// Everything written to `stderr` (at most its first 64 KiB).
fn collect(mut stderr: ChildStderr) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buffer = [0; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buffer) {
            let mut text = sink.lock().unwrap_or_else(PoisonError::into_inner);
            if text.len() < 64 * 1024 {
                text.push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        }
    });
    text
}

impl Server {
    /// One admin call's `result`; panics on an error.
    fn admin(&self, method: &str, params: Value) -> Value {
        let mut client = Client::new(TcpStream::connect(self.admin).expect("the admin listener"));
        let reply = client
            .request(&json!({ "id": 1, "method": method, "params": params }))
            .unwrap_or_else(|| {
                panic!(
                    "{} closed the admin connection; stderr:\n{}",
                    self.name,
                    self.stderr()
                )
            });
        assert!(
            reply.get("error").is_none(),
            "{} admin {method}: {reply}",
            self.name
        );
        reply["result"].clone()
    }

    /// The admin `groups` row of `group`, if the server has one.
    fn group(&self, group: &str) -> Option<Value> {
        let rows = self.admin("groups", json!([]));
        rows.as_array()
            .expect("groups is an array")
            .iter()
            .find(|row| row["name"] == group)
            .cloned()
    }

    /// The concurrency target of the session whose client end is `peer`
    /// (the admin `sessions` flags: `T` and the target).
    fn target_of(&self, peer: SocketAddr) -> Option<u32> {
        let rows = self.admin("sessions", json!([]));
        let row = rows
            .as_array()
            .expect("sessions is an array")
            .iter()
            .find(|row| row["peer"] == peer.to_string())?;
        row["flags"]
            .as_str()?
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .ok()
    }

    /// Waits until the server's first sync with Redis has worked, and
    /// then for `syncs` syncs in all.
    fn wait_synced(&self, syncs: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ledger = &self.admin("getinfo", json!([]))["ledger"];
            assert_eq!(ledger["kind"], "redis", "{}: {ledger}", self.name);
            if ledger["healthy"] == true && ledger["syncs"].as_u64() >= Some(syncs) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} is not synced with Redis: {ledger}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the server gets no chance to tell anyone.
    fn kill(&mut self) {
        self.child.kill().expect("the server is running");
        let _ = self.child.wait();
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Servers `node-1`, `node-2`, `node-3` sharing `redis`, each with `flags`,
/// started together; returns once every one has synced with Redis.
fn cluster(redis: &RedisServer, flags: &[&str], more: &[&str]) -> Vec<Server> {
    let servers: Vec<Server> = (1..=3)
        .map(|n| {
            let name = format!("node-{n}");
            let mut args: Vec<String> = flags.iter().chain(more).map(|flag| (*flag).to_owned()).collect();
            args.extend([
                "--redis".to_owned(),
                redis.url(),
                "--node-name".to_owned(),
                name.clone(),
            ]);
            Starting::spawn(&name, &args)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(Starting::ready)
        .collect();
    for server in &servers {
        server.wait_synced(1);
    }
    servers
}

// ---------------------------------------------------------------------------
// Clients

/// A newline JSON-RPC client over a blocking socket.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_id: u64,
}

impl Client {
    fn new(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            next_id: 0,
        }
    }

    /// Connects to `server` from `source`, an address of 127.0.0.0/8.
    fn connect_from(source: &str, server: SocketAddr) -> Client {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let stream = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
            let stream = socket.connect(server).await.expect("connects");
            stream.into_std().unwrap()
        });
        stream.set_nonblocking(false).unwrap();
        Client::new(stream)
    }

    fn local_addr(&self) -> SocketAddr {
        self.writer.local_addr().unwrap()
    }

    /// Sends `message` and reads one line; `None` when the server closed
    /// the connection instead.
    fn request(&mut self, message: &Value) -> Option<Value> {
        let mut bytes = serde_json::to_vec(message).unwrap();
        bytes.push(b'\n');
        if self.writer.write_all(&bytes).is_err() {
            return None;
        }
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("the server sends JSON")),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// One Electrum call; `None` when the server closed the connection.
    fn call(&mut self, method: &str, params: Value) -> Option<Value> {
        self.next_id += 1;
        self.request(&json!({ "jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params }))
    }

    /// `server.version`; false when the server refused the connection
    /// (closed it without a reply).
    fn handshake(&mut self) -> bool {
        match self.call("server.version", json!(["redis cluster test", "1.4"])) {
            Some(reply) => {
                assert_eq!(reply["result"][1], "1.4", "{reply}");
                true
            }
            None => false,
        }
    }

    fn ping(&mut self) {
        let reply = self
            .call("server.ping", json!([]))
            .expect("a reply to server.ping");
        assert_eq!(reply["result"], Value::Null, "{reply}");
    }

    /// Whether the server closes the connection within `wait`.
    fn closed_within(&mut self, wait: Duration) -> bool {
        self.writer.set_read_timeout(Some(wait)).unwrap();
        let mut line = String::new();
        let closed = match self.reader.read_line(&mut line) {
            Ok(0) => true,
            Ok(_) => panic!("unexpected message {line}"),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        self.writer.set_read_timeout(Some(TIMEOUT)).unwrap();
        closed
    }
}

/// Polls `done` every 20 ms until it holds; panics after `limit`.
fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------
// Abuse over three servers

const ABUSERS: &str = "127.0.1.0/24";

/// Every request costs about 165 (101 headers, mostly their 16 KB of
/// reply at 100 bytes per cost unit), so every request recalculates the
/// session's throttle (past 100 of drift) and the limits are crossed in
/// about fifty requests; at full throttle a request sleeps 250 ms, longer
/// than a few syncs.
const ABUSE_FLAGS: &[&str] = &[
    "--blocks",
    "100",
    "--exempt-networks",
    "none",
    "--cost-soft-limit",
    "4000",
    "--cost-hard-limit",
    "8000",
    "--request-sleep-ms",
    "250",
    "--bandwidth-unit-cost",
    "100",
];

/// The abuser: one connection per entry of `servers` (an index into
/// `all`), from 127.0.1.1, .2, …, each asking for headers in turn as fast
/// as it is answered, until every connection has been answered −101 and
/// closed. Meanwhile a neighbour from 127.0.2.0/24 on every server pings
/// between the abuser's requests and must be served. Returns whether the
/// abuser was throttled before its first −101.
fn abuse(all: &[Server], servers: &[usize]) -> bool {
    let mut abusers: Vec<(Client, &Server)> = servers
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut client = Client::connect_from(&format!("127.0.1.{}", i + 1), all[n].listen);
            assert!(client.handshake(), "the abuser connects to {}", all[n].name);
            (client, &all[n])
        })
        .collect();
    let mut neighbours: Vec<(Client, &Server)> = all
        .iter()
        .map(|server| {
            let mut client = Client::connect_from("127.0.2.1", server.listen);
            assert!(client.handshake(), "the neighbour connects to {}", server.name);
            (client, server)
        })
        .collect();

    let mut throttled = false;
    let mut cut = false;
    for _round in 0..1000 {
        let mut i = 0;
        while i < abusers.len() {
            let (client, server) = &mut abusers[i];
            let peer = client.local_addr();
            match client.call("blockchain.block.headers", json!([0, 2016])) {
                None => panic!("{} closed the abuser's connection without −101", server.name),
                Some(reply) if reply.get("error").is_some() => {
                    assert_eq!(reply["error"]["code"], -101, "{reply}");
                    assert!(client.closed_within(Duration::from_secs(5)), "closed after −101");
                    cut = true;
                    abusers.remove(i);
                }
                Some(reply) => {
                    assert_eq!(reply["result"]["count"], 101, "{reply}");
                    if !cut {
                        let target = server.target_of(peer).expect("the abuser's session");
                        throttled |= target < UNTHROTTLED;
                    }
                    i += 1;
                }
            }
        }
        for (client, _) in &mut neighbours {
            client.ping();
        }
        if abusers.is_empty() {
            // The neighbour is still served, unthrottled, on every server.
            for (client, server) in &neighbours {
                assert_eq!(
                    server.target_of(client.local_addr()),
                    Some(UNTHROTTLED),
                    "{}",
                    server.name
                );
            }
            return throttled;
        }
    }
    panic!("the abuser was never cut off");
}

/// The abuser's group's cost once every server agrees that it has no
/// session left (each server's retained cost has reached Redis).
fn settled_cost(servers: &[&Server]) -> f64 {
    let mut cost = 0.0;
    until(
        "every server settles the abuser's cost",
        Duration::from_secs(5),
        || {
            let rows: Vec<Value> = servers
                .iter()
                .map(|server| server.group(ABUSERS).expect("the abuser's group"))
                .collect();
            let costs: Vec<f64> = rows.iter().map(|row| row["cost"].as_f64().unwrap()).collect();
            cost = costs[0];
            rows.iter().all(|row| row["sessions"] == 0) && costs.iter().all(|c| (c - cost).abs() < 2.0)
        },
    );
    cost
}

#[test]
fn an_abuser_spread_over_three_servers_is_cut_off_at_the_single_server_total() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let hard = 8000.0;

    // The same abuse against one server: three connections to it.
    let single = {
        let args: Vec<String> = ABUSE_FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
        let server = Starting::spawn("single", &args).ready();
        let throttled = abuse(std::slice::from_ref(&server), &[0, 0, 0]);
        assert!(throttled, "throttled before the cut on one server");
        let row = server.group(ABUSERS).expect("the abuser's group");
        assert_eq!(row.get("nodes"), None, "one server has no shares: {row}");
        settled_cost(&[&server])
    };
    assert!(
        (hard..hard * 1.15).contains(&single),
        "one server cut the abuser at {single}"
    );

    // Three servers behind one Redis: one connection to each.
    let redis = RedisServer::start_anywhere();
    let servers = cluster(&redis, ABUSE_FLAGS, &["--redis-sync-ms", "50"]);
    let throttled = abuse(&servers, &[0, 1, 2]);
    assert!(throttled, "throttled before the cut over three servers");
    let spread = settled_cost(&servers.iter().collect::<Vec<_>>());
    assert!(
        (spread - single).abs() <= 0.10 * single,
        "cut off at a total of {spread} over three servers, {single} on one"
    );
}

#[test]
fn every_server_shows_the_cluster_wide_cost_and_each_servers_share() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let redis = RedisServer::start_anywhere();
    let servers = cluster(&redis, ABUSE_FLAGS, &["--redis-sync-ms", "50"]);
    // Two requests on node-1, one on node-2, from one /24.
    let mut clients = Vec::new();
    for (n, requests) in [(0, 2), (1, 1)] {
        let mut client = Client::connect_from(&format!("127.0.1.{}", n + 1), servers[n].listen);
        assert!(client.handshake());
        for _ in 0..requests {
            let reply = client
                .call("blockchain.block.headers", json!([0, 2016]))
                .expect("a reply");
            assert_eq!(reply["result"]["count"], 101, "{reply}");
        }
        clients.push(client);
    }
    let share = |row: &Value, node: &str| {
        row["nodes"]
            .as_array()
            .and_then(|shares| shares.iter().find(|share| share["node"] == node))
            .and_then(|share| share["live_cost"].as_f64())
    };
    for server in &servers {
        let mut row = Value::Null;
        // Each server's share once it holds its requests (about 200 each).
        until(
            &format!("{} sees both shares", server.name),
            Duration::from_secs(5),
            || {
                row = server.group(ABUSERS).unwrap_or(Value::Null);
                match (share(&row, "node-1"), share(&row, "node-2")) {
                    (Some(one), Some(two)) => one > 300.0 && two > 150.0,
                    _ => false,
                }
            },
        );
        let (one, two) = (share(&row, "node-1").unwrap(), share(&row, "node-2").unwrap());
        assert!(one < 600.0 && two < 300.0, "{}: {row}", server.name);
        assert_eq!(row["sessions"], 2, "{}: {row}", server.name);
        let cost = row["cost"].as_f64().unwrap();
        let retained = row["retained_cost"].as_f64().unwrap();
        assert!(
            (cost - (retained + one + two)).abs() < 1e-6,
            "{}: {row}",
            server.name
        );
        let info = server.admin("getinfo", json!([]));
        assert_eq!(info["ledger"]["node"], server.name.as_str(), "{info}");
        assert_eq!(info["ledger"]["healthy"], true, "{info}");
    }

    // Redis goes away: each server says so, and keeps serving.
    drop(redis);
    for server in &servers {
        until(
            &format!("{} reports the lost sync", server.name),
            Duration::from_secs(5),
            || server.admin("getinfo", json!([]))["ledger"]["healthy"] == false,
        );
        let error = server.admin("getinfo", json!([]))["ledger"]["error"].clone();
        assert!(
            error.as_str().is_some_and(|e| e.contains("unreachable")),
            "{error}"
        );
    }
    clients[0].ping();
}

// ---------------------------------------------------------------------------
// Bans and a dead server

#[test]
fn a_ban_on_one_server_refuses_its_network_on_the_others_within_a_second() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let redis = RedisServer::start_anywhere();
    // A slow periodic sync: only the ban's announcement can be this fast.
    let servers = cluster(
        &redis,
        &[
            "--blocks",
            "1",
            "--exempt-networks",
            "none",
            "--sweep-interval",
            "0.2",
        ],
        &["--redis-sync-ms", "5000", "--redis-node-ttl", "30"],
    );
    // The second sync follows the subscription to ban announcements
    // (or the periodic sync, 5 s later).
    for server in &servers {
        server.wait_synced(2);
    }
    let mut live_on_one = Client::connect_from("127.0.3.8", servers[0].listen);
    let mut live_on_three = Client::connect_from("127.0.3.9", servers[2].listen);
    assert!(live_on_one.handshake() && live_on_three.handshake());
    let mut other_group = Client::connect_from("127.0.0.1", servers[1].listen);
    assert!(other_group.handshake());

    let banned = servers[0].admin("ban", json!(["127.0.3.0/24"]));
    let at = Instant::now();
    assert_eq!(banned, json!({ "banned": "127.0.3.0/24", "disconnected": 1 }));
    assert!(
        live_on_one.closed_within(Duration::from_secs(1)),
        "closed by the ban"
    );
    for server in &servers[1..] {
        until(
            &format!("the ban reaches {}", server.name),
            Duration::from_secs(1),
            || !Client::connect_from("127.0.3.1", server.listen).handshake(),
        );
        assert!(
            at.elapsed() < Duration::from_secs(1),
            "{} refused after {:?}",
            server.name,
            at.elapsed()
        );
    }
    // A live session in the network ends at the other server's next sweep.
    assert!(
        live_on_three.closed_within(Duration::from_secs(2)),
        "closed at node-3's sweep"
    );
    other_group.ping();

    servers[0].admin("unban", json!(["127.0.3.0/24"]));
    let at = Instant::now();
    for server in &servers[1..] {
        until(
            &format!("the unban reaches {}", server.name),
            Duration::from_secs(1),
            || Client::connect_from("127.0.3.1", server.listen).handshake(),
        );
    }
    assert!(
        at.elapsed() < Duration::from_secs(1),
        "accepted again after {:?}",
        at.elapsed()
    );
}

#[test]
fn a_server_killed_with_sigkill_leaves_no_cost_behind_after_its_ttl() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let redis = RedisServer::start_anywhere();
    let ttl = Duration::from_secs(2);
    let mut servers = cluster(
        &redis,
        ABUSE_FLAGS,
        &["--redis-sync-ms", "50", "--redis-node-ttl", "2"],
    );
    let group = "127.0.4.0/24";
    let mut client = Client::connect_from("127.0.4.1", servers[2].listen);
    assert!(client.handshake());
    for _ in 0..3 {
        let reply = client
            .call("blockchain.block.headers", json!([0, 2016]))
            .expect("a reply");
        assert_eq!(reply["result"]["count"], 101, "{reply}");
    }
    for server in &servers[..2] {
        until(
            &format!("{} sees node-3's share", server.name),
            Duration::from_secs(5),
            || {
                server.group(group).is_some_and(|row| {
                    row["nodes"][0]["node"] == "node-3" && row["nodes"][0]["live_cost"].as_f64() > Some(400.0)
                })
            },
        );
    }

    servers[2].kill();
    let killed = Instant::now();
    for server in &servers[..2] {
        until(
            &format!("node-3's share expires on {}", server.name),
            ttl + Duration::from_secs(3),
            || {
                server
                    .group(group)
                    .is_none_or(|row| row["cost"].as_f64() == Some(0.0))
            },
        );
    }
    let gone = killed.elapsed();
    assert!(
        gone >= ttl - Duration::from_millis(500),
        "gone after {gone:?}, before the TTL of {ttl:?}"
    );
    drop(client);
}
