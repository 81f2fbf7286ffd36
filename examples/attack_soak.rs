//! Attack soak for `examples/electrum_server`: runs hostile clients against
//! the release server, one attack after another, while a well-behaved client
//! in another /24 pings. Reports per attack the good client's ping p50/p99,
//! the server's peak RSS, and what became of the attackers.
//!
//! ```text
//! scripts/attack_soak.sh            # builds both examples in release, then runs this
//! target/release/examples/attack_soak [--server PATH] [--only NAME] [--flood N]
//! ```
//!
//! Each attack starts a fresh server process (so its peak RSS, `VmHWM`, is
//! the attack's) on 127.0.0.1 with `--exempt-networks none`, so loopback
//! addresses form groups: the good client connects from 127.0.0.1
//! (127.0.0.0/24), attackers from 127.0.1.0/24 and up. Every loop is bounded
//! in count and in time; only loopback addresses are used.
//!
//! Targets: the server never dies; the good client's p99 stays under 10 ms;
//! peak RSS stays under 256 MB; every attacker is throttled or disconnected.

#[allow(dead_code)]
#[path = "electrum_server/chain.rs"]
mod chain;
#[allow(dead_code)]
#[path = "electrum_server/wallet.rs"]
mod wallet;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Chain length for every attack but the checkpoint one.
const BLOCKS: u32 = 2200;
/// Chain length for the checkpoint attack (its cost grows with the chain).
const CHECKPOINT_BLOCKS: u32 = 20_000;
/// Longest any attack runs.
const ATTACK_TIME: Duration = Duration::from_secs(20);
/// Longest the subscription flood runs (1M subscriptions take about a minute).
const FLOOD_TIME: Duration = Duration::from_secs(90);
/// How long an attack's connections are given to be cut after it stops sending.
const GRACE: Duration = Duration::from_secs(8);
/// `--max-send-delay` for every run (the default is 20 s; shorter keeps the soak short).
const SEND_DELAY_SECS: &str = "5";
const PING_INTERVAL: Duration = Duration::from_millis(10);
/// The server's default concurrency target of an unthrottled session.
const INITIAL_CONCURRENT: u32 = 10;
/// The server's default cost soft limit (throttling starts above it).
const DEFAULT_SOFT_LIMIT: f64 = 1000.0;

// ---------------------------------------------------------------------------
// The server process

struct Server {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(path: &str, blocks: u32, extra: &[&str]) -> Server {
        let blocks = blocks.to_string();
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--blocks",
            &blocks,
            "--exempt-networks",
            "none",
            "--max-send-delay",
            SEND_DELAY_SECS,
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new(path)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {path}: {e} (run scripts/attack_soak.sh)"));
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let stderr = BufReader::new(child.stderr.take().expect("piped"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut addr = None;
        let mut admin = None;
        let mut stdout = stdout;
        for line in stdout.by_ref().lines().map_while(Result::ok) {
            if let Some(rpc) = line.strip_prefix("admin RPC on ") {
                admin = Some(rpc.trim().parse().expect("an address"));
            }
            if let Some(listen) = line.strip_prefix("listening on tcp://") {
                addr = Some(listen.trim().parse().expect("an address"));
                break;
            }
        }
        let addr = addr.expect("the server printed its address");
        let admin = admin.expect("the server printed its admin address");
        thread::spawn(move || for _ in stdout.lines() {});
        Server {
            child,
            addr,
            admin,
            log,
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn rss_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0)
    }

    /// Lines of the server's log containing `text`.
    fn log_count(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(text))
            .count()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Clients

/// Connects from `local` (an address in 127.0.0.0/8) to `server`.
fn connect_from(local: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{local}:0").parse().expect("an address"))?;
        let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(server))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

struct Line {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Line {
    fn new(stream: TcpStream, timeout: Duration) -> std::io::Result<Line> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Line {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn send(&mut self, line: &str) -> std::io::Result<()> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")
    }

    /// The next line; `None` at end of stream.
    fn recv(&mut self) -> std::io::Result<Option<String>> {
        let mut line = String::new();
        match self.reader.read_line(&mut line)? {
            0 => Ok(None),
            _ => Ok(Some(line)),
        }
    }

    fn call(&mut self, line: &str) -> std::io::Result<Option<String>> {
        self.send(line)?;
        self.recv()
    }

    fn handshake(&mut self, name: &str) -> std::io::Result<()> {
        let request = json!({"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": [name, "1.4"]});
        match self.call(&request.to_string())? {
            Some(reply) if reply.contains("\"1.4\"") => Ok(()),
            other => Err(std::io::Error::other(format!("handshake refused: {other:?}"))),
        }
    }

    /// Whether the server closed the connection within `wait` (reading and
    /// discarding whatever it still sends).
    fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let _ = self.writer.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = vec![0u8; 64 * 1024];
        while Instant::now() < deadline {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// The well-behaved client: pings every 10 ms from 127.0.0.1 until stopped.
struct GoodClient {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<(Vec<Duration>, usize)>,
}

impl GoodClient {
    fn start(server: SocketAddr) -> GoodClient {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let mut line = Line::new(
            connect_from("127.0.0.1", server).expect("connects"),
            Duration::from_secs(30),
        )
        .expect("a socket");
        line.handshake("soak-good").expect("handshake");
        let thread = thread::spawn(move || {
            let mut times = Vec::new();
            let mut failures = 0;
            let mut id = 1u64;
            while !stopping.load(Ordering::Relaxed) {
                let request = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"server.ping"}}"#);
                id += 1;
                let started = Instant::now();
                match line.call(&request) {
                    Ok(Some(reply)) if reply.contains("\"result\":null") => times.push(started.elapsed()),
                    _ => {
                        failures += 1;
                        if failures > 3 {
                            break;
                        }
                    }
                }
                thread::sleep(PING_INTERVAL);
            }
            (times, failures)
        });
        GoodClient { stop, thread }
    }

    fn finish(self) -> (Vec<Duration>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the good client does not panic")
    }
}

/// Polls the admin `sessions` table every 250 ms and notes every peer the
/// server throttled: its cost plus its group's over the soft limit (its
/// requests sleep first), or its concurrency target below 10.
struct ThrottleWatch {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<HashMap<String, u32>>,
}

impl ThrottleWatch {
    fn start(admin: SocketAddr, soft_limit: f64) -> ThrottleWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let mut lowest: HashMap<String, u32> = HashMap::new();
            let Ok(stream) = TcpStream::connect(admin) else {
                return lowest;
            };
            let Ok(mut line) = Line::new(stream, Duration::from_secs(10)) else {
                return lowest;
            };
            while !stopping.load(Ordering::Relaxed) {
                let Ok(Some(reply)) = line.call(r#"{"id":1,"method":"sessions"}"#) else {
                    break;
                };
                let rows: Value = serde_json::from_str(&reply).unwrap_or(Value::Null);
                for row in rows["result"].as_array().into_iter().flatten() {
                    let (Some(peer), Some(flags)) = (row["peer"].as_str(), row["flags"].as_str()) else {
                        continue;
                    };
                    let digits: String = flags.chars().filter(char::is_ascii_digit).collect();
                    let cost =
                        row["cost"].as_f64().unwrap_or(0.0) + row["extra_cost"].as_f64().unwrap_or(0.0);
                    let mut target = digits.parse::<u32>().unwrap_or(INITIAL_CONCURRENT);
                    if soft_limit > 0.0 && cost > soft_limit {
                        // Sleeping before each request, whatever its target.
                        target = target.min(INITIAL_CONCURRENT - 1);
                    }
                    let entry = lowest.entry(peer.to_owned()).or_insert(target);
                    *entry = (*entry).min(target);
                }
                thread::sleep(Duration::from_millis(250));
            }
            lowest
        });
        ThrottleWatch { stop, thread }
    }

    /// Peers seen throttled (target below 10).
    fn finish(self) -> HashSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        let lowest = self.thread.join().unwrap_or_default();
        lowest
            .into_iter()
            .filter(|(_, target)| *target < INITIAL_CONCURRENT)
            .map(|(peer, _)| peer)
            .collect()
    }
}

/// Samples the server's VmRSS every 10 ms until stopped; the largest seen (kB).
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (stopping, peaking) = (stop.clone(), peak.clone());
        let thread = thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kb) = status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmRSS:"))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|kb| kb.parse::<u64>().ok())
                {
                    peaking.fetch_max(kb, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler { stop, peak, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------
// Attacks

/// What an attack did to its attackers.
#[derive(Default)]
struct Outcome {
    /// Attackers' local addresses (the server's view of their peer address).
    attackers: Vec<String>,
    /// Attackers whose connection the server closed.
    cut: HashSet<String>,
    /// Attackers that saw −101 or −102, or whose requests were slowed.
    refused: HashSet<String>,
    notes: Vec<String>,
}

impl Outcome {
    fn attacker(&mut self, stream: &TcpStream) -> String {
        let local = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
        self.attackers.push(local.clone());
        local
    }
}

fn mining_scripthash() -> String {
    let key = wallet::TestKey::from_seed(chain::CHAIN_KEY_SEED);
    let mut hash = key.scripthash();
    hash.reverse();
    indexer_sessions::encode_hex(&hash)
}

fn deadline_passed(started: Instant) -> bool {
    started.elapsed() >= ATTACK_TIME
}

/// Shared bookkeeping for attacks run from many threads.
#[derive(Default)]
struct Tally {
    cut: Mutex<HashSet<String>>,
    refused: Mutex<HashSet<String>>,
}

impl Tally {
    fn cut(&self, who: &str) {
        self.cut.lock().unwrap().insert(who.to_owned());
    }

    fn refused(&self, who: &str) {
        self.refused.lock().unwrap().insert(who.to_owned());
    }

    fn into_outcome(self, attackers: Vec<String>) -> Outcome {
        Outcome {
            attackers,
            cut: self.cut.into_inner().unwrap(),
            refused: self.refused.into_inner().unwrap(),
            notes: Vec::new(),
        }
    }
}

fn is_refusal(reply: &str) -> bool {
    reply.contains("\"code\":-101") || reply.contains("\"code\":-102")
}

/// 1. Connections from one /24 in turn send, again and again, one line: a
///    batch of 3,000 `get_history` calls for the mining address (one
///    history entry per block).
fn big_batch(server: &Server) -> Outcome {
    let scripthash = mining_scripthash();
    let calls: Vec<Value> = (0..3000)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "blockchain.scripthash.get_history", "params": [scripthash]}))
        .collect();
    let line = Value::Array(calls).to_string();
    let mut outcome = Outcome::default();
    let started = Instant::now();
    let (mut largest, mut batches, mut served) = (0, 0, 0);
    let mut slowest = Duration::ZERO;
    for i in 0..3 {
        if deadline_passed(started) {
            break;
        }
        let Ok(stream) = connect_from(&format!("127.0.1.{}", i + 1), server.addr) else {
            outcome.notes.push("connect refused".into());
            continue;
        };
        let who = outcome.attacker(&stream);
        let mut client = Line::new(stream, ATTACK_TIME).expect("a socket");
        if client.handshake("soak-batch").is_err() {
            outcome.cut.insert(who);
            continue;
        }
        for _ in 0..10 {
            if deadline_passed(started) {
                break;
            }
            let asked = Instant::now();
            match client.call(&line) {
                Ok(Some(reply)) => {
                    batches += 1;
                    slowest = slowest.max(asked.elapsed());
                    largest = largest.max(reply.len());
                    served += reply.matches("\"result\":[").count();
                    if is_refusal(&reply) {
                        outcome.refused.insert(who.clone());
                        break;
                    }
                }
                Ok(None) => break,
                // Still sleeping through its throttled requests when time ran out.
                Err(_) => {
                    outcome.refused.insert(who.clone());
                    break;
                }
            }
        }
        if client.closed_within(Duration::from_secs(2)) {
            outcome.cut.insert(who);
        }
    }
    outcome.notes.push(format!(
        "{} KB line; {batches} batches answered, {served} histories served in all; largest reply {:.1} MB, slowest batch {:.1} s",
        line.len() / 1000,
        largest as f64 / 1e6,
        slowest.as_secs_f64()
    ));
    outcome
}

/// 2. 100 clients send `blockchain.block.headers [0, 2016]` (322 KB replies)
///    as fast as they can write and never read.
fn non_reading(server: &Server) -> Outcome {
    let request =
        json!({"jsonrpc": "2.0", "id": 1, "method": "blockchain.block.headers", "params": [0, 2016]})
            .to_string()
            + "\n";
    let tally = Arc::new(Tally::default());
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut threads = Vec::new();
    let mut attackers = Vec::new();
    for i in 0..100 {
        let Ok(stream) = connect_from(&format!("127.0.2.{}", i + 1), server.addr) else {
            continue;
        };
        let who = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
        attackers.push(who.clone());
        let (tally, sent, request) = (tally.clone(), sent.clone(), request.clone());
        threads.push(thread::spawn(move || {
            let mut client = Line::new(stream, Duration::from_secs(10)).expect("a socket");
            if client.handshake("soak-nonreader").is_err() {
                tally.cut(&who);
                return;
            }
            let _ = client.writer.set_write_timeout(Some(Duration::from_millis(500)));
            // 100 requests per write, 50 writes a second at most: the attack is
            // on the server's memory, not on this machine's CPU.
            let chunk = request.repeat(100);
            while !deadline_passed(started) {
                match client.writer.write_all(chunk.as_bytes()) {
                    Ok(()) => {
                        sent.fetch_add(100, Ordering::Relaxed);
                        thread::sleep(Duration::from_millis(20));
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        // The server stopped reading us: wait, still not reading.
                        thread::sleep(Duration::from_millis(100));
                    }
                    Err(_) => {
                        tally.cut(&who);
                        return;
                    }
                }
            }
            // Only now read: has the server closed the connection?
            if client.closed_within(GRACE) {
                tally.cut(&who);
            }
        }));
    }
    for thread in threads {
        let _ = thread.join();
    }
    let tally = Arc::try_unwrap(tally).unwrap_or_default();
    let mut outcome = tally.into_outcome(attackers);
    outcome.notes.push(format!(
        "{} requests written; server log: {} not reading, {} excessive usage",
        sent.load(Ordering::Relaxed),
        server.log_count("stopped reading") + server.log_count("not reading"),
        server.log_count("excessive resource usage")
    ));
    outcome
}

/// 3. Ten sessions ask `blockchain.block.header` with a fresh `cp_height` each time.
fn checkpoints(server: &Server) -> Outcome {
    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let answered = Arc::new(AtomicUsize::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    let mut attackers = Vec::new();
    for i in 0..10u32 {
        let Ok(stream) = connect_from(&format!("127.0.3.{}", i + 1), server.addr) else {
            continue;
        };
        let who = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
        attackers.push(who.clone());
        let (tally, answered, slowest) = (tally.clone(), answered.clone(), slowest.clone());
        threads.push(thread::spawn(move || {
            let mut client = Line::new(stream, ATTACK_TIME).expect("a socket");
            if client.handshake("soak-checkpoint").is_err() {
                tally.cut(&who);
                return;
            }
            let mut cp = CHECKPOINT_BLOCKS - i * 1000;
            while !deadline_passed(started) {
                cp -= 1;
                let request = format!(
                    r#"{{"jsonrpc":"2.0","id":{cp},"method":"blockchain.block.header","params":[1,{cp}]}}"#
                );
                let asked = Instant::now();
                match client.call(&request) {
                    Ok(Some(reply)) => {
                        slowest.fetch_max(asked.elapsed().as_micros() as u64, Ordering::Relaxed);
                        if is_refusal(&reply) {
                            tally.refused(&who);
                        } else {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(None) => {
                        tally.cut(&who);
                        return;
                    }
                    Err(_) => {
                        tally.refused(&who);
                        break;
                    }
                }
            }
            if client.closed_within(Duration::from_millis(500)) {
                tally.cut(&who);
            }
        }));
    }
    for thread in threads {
        let _ = thread.join();
    }
    let tally = Arc::try_unwrap(tally).unwrap_or_default();
    let mut outcome = tally.into_outcome(attackers);
    let answered = answered.load(Ordering::Relaxed);
    outcome.notes.push(format!(
        "{answered} proofs served ({:.0}/s), slowest answer {} ms",
        answered as f64 / started.elapsed().as_secs_f64(),
        slowest.load(Ordering::Relaxed) / 1000
    ));
    outcome
}

/// 4. One client subscribes to `total` distinct scripthashes, 1,000 per batch line.
fn subscription_flood(server: &Server, total: usize) -> Outcome {
    let mut outcome = Outcome::default();
    let Ok(stream) = connect_from("127.0.4.1", server.addr) else {
        outcome.notes.push("connect refused".into());
        return outcome;
    };
    let who = outcome.attacker(&stream);
    let mut client = Line::new(stream, ATTACK_TIME).expect("a socket");
    if client.handshake("soak-flood").is_err() {
        outcome.cut.insert(who);
        return outcome;
    }
    let started = Instant::now();
    let mut done = 0;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    while done < total && started.elapsed() < FLOOD_TIME {
        let mut line = String::with_capacity(1000 * 120);
        line.push('[');
        for i in 0..1000 {
            // splitmix64: distinct pseudo-random scripthashes.
            let mut hex = String::with_capacity(64);
            for _ in 0..4 {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                hex.push_str(&format!("{:016x}", z ^ (z >> 31)));
            }
            if i > 0 {
                line.push(',');
            }
            line.push_str(&format!(
                r#"{{"jsonrpc":"2.0","id":{},"method":"blockchain.scripthash.subscribe","params":["{hex}"]}}"#,
                done + i
            ));
        }
        line.push(']');
        match client.call(&line) {
            Ok(Some(reply)) => {
                done += reply.matches("\"result\":").count();
                if is_refusal(&reply) {
                    outcome.refused.insert(who.clone());
                    break;
                }
            }
            Ok(None) => {
                outcome.cut.insert(who.clone());
                break;
            }
            Err(_) => {
                outcome.refused.insert(who.clone());
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    outcome.notes.push(format!(
        "{done} of {total} subscriptions in {:.1} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64()
    ));
    outcome
}

/// 5. 200 connections each dribble a request one byte every 50 ms and never
///    finish a line (session timeout 10 s for this run).
fn slowloris(server: &Server) -> Outcome {
    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let mut threads = Vec::new();
    let mut attackers = Vec::new();
    for i in 0..200 {
        let Ok(stream) = connect_from(&format!("127.0.5.{}", i + 1), server.addr) else {
            continue;
        };
        let who = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
        attackers.push(who.clone());
        let tally = tally.clone();
        threads.push(thread::spawn(move || {
            let mut client = Line::new(stream, Duration::from_secs(5)).expect("a socket");
            let partial = br#"{"jsonrpc":"2.0","id":1,"method":"server.ping","params":["#;
            let mut bytes = partial.iter().copied().chain(std::iter::repeat(b' '));
            while !deadline_passed(started) {
                let byte = bytes.next().unwrap_or(b' ');
                if client.writer.write_all(&[byte]).is_err() {
                    tally.cut(&who);
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            if client.closed_within(GRACE) {
                tally.cut(&who);
            }
        }));
    }
    for thread in threads {
        let _ = thread.join();
    }
    let tally = Arc::try_unwrap(tally).unwrap_or_default();
    let mut outcome = tally.into_outcome(attackers);
    outcome
        .notes
        .push(format!("server log: {} stale", server.log_count("stale")));
    outcome
}

/// 6. Clients send a 900 KB client name, then 900 KB method names and
///    parameters, again and again.
fn huge_echo(server: &Server) -> Outcome {
    let huge = "A".repeat(900_000);
    let requests = [
        json!({"jsonrpc": "2.0", "id": 1, "method": huge, "params": []}).to_string(),
        json!({"jsonrpc": "2.0", "id": 2, "method": "blockchain.scripthash.get_history", "params": [huge]})
            .to_string(),
        json!({"jsonrpc": "2.0", "id": 3, "method": "blockchain.transaction.get", "params": [huge]})
            .to_string(),
    ];
    let version =
        json!({"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": [huge, "1.4"]}).to_string();
    let started = Instant::now();
    let mut outcome = Outcome::default();
    let (mut largest, mut sent) = (0, 0);
    for i in 0..4 {
        if deadline_passed(started) {
            break;
        }
        let Ok(stream) = connect_from(&format!("127.0.6.{}", i + 1), server.addr) else {
            continue;
        };
        let who = outcome.attacker(&stream);
        let mut client = Line::new(stream, ATTACK_TIME).expect("a socket");
        match client.call(&version) {
            Ok(Some(reply)) => largest = largest.max(reply.len()),
            _ => {
                outcome.cut.insert(who);
                continue;
            }
        }
        'requests: for _ in 0..100 {
            for request in &requests {
                if deadline_passed(started) {
                    break 'requests;
                }
                sent += 1;
                match client.call(request) {
                    Ok(Some(reply)) => {
                        largest = largest.max(reply.len());
                        if is_refusal(&reply) {
                            outcome.refused.insert(who.clone());
                            break 'requests;
                        }
                    }
                    Ok(None) => break 'requests,
                    Err(_) => {
                        outcome.refused.insert(who.clone());
                        break 'requests;
                    }
                }
            }
        }
        if client.closed_within(Duration::from_secs(2)) {
            outcome.cut.insert(who);
        }
    }
    outcome
        .notes
        .push(format!("{sent} huge requests, largest reply {largest} bytes"));
    outcome
}

// ---------------------------------------------------------------------------

struct Row {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    max: Duration,
    pings: usize,
    good_failures: usize,
    rss_start_mb: f64,
    rss_peak_mb: f64,
    alive: bool,
    outcome: Outcome,
    /// Attackers the server throttled (concurrency target below 10 in its `sessions` table).
    throttled: HashSet<String>,
}

impl Row {
    /// Attackers cut, and attackers throttled or refused but not cut.
    fn contained(&self) -> (usize, usize) {
        let o = &self.outcome;
        let cut = o.attackers.iter().filter(|a| o.cut.contains(*a)).count();
        let slowed = o
            .attackers
            .iter()
            .filter(|a| !o.cut.contains(*a) && (o.refused.contains(*a) || self.throttled.contains(*a)))
            .count();
        (cut, slowed)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn run(
    name: &'static str,
    path: &str,
    blocks: u32,
    flags: &[&str],
    attack: impl FnOnce(&Server) -> Outcome,
) -> Row {
    eprintln!("== {name}: starting the server ({blocks} blocks, flags {flags:?})");
    let mut server = Server::start(path, blocks, flags);
    let rss_start = server.rss_kb("VmRSS:");
    let sampler = RssSampler::start(server.child.id());
    let good = GoodClient::start(server.addr);
    let soft_limit = flags
        .iter()
        .position(|flag| *flag == "--cost-soft-limit")
        .and_then(|i| flags.get(i + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_SOFT_LIMIT);
    let watch = ThrottleWatch::start(server.admin, soft_limit);
    thread::sleep(Duration::from_millis(300));
    let attack_started = Instant::now();
    let outcome = attack(&server);
    eprintln!("   attack ran {:.1} s", attack_started.elapsed().as_secs_f64());
    thread::sleep(Duration::from_millis(300));
    let throttled = watch.finish();
    let (mut times, good_failures) = good.finish();
    let peak = sampler.finish().max(server.rss_kb("VmHWM:"));
    let alive = server.alive();
    times.sort();
    let row = Row {
        name,
        p50: percentile(&times, 50.0),
        p99: percentile(&times, 99.0),
        max: times.last().copied().unwrap_or_default(),
        pings: times.len(),
        good_failures,
        rss_start_mb: rss_start as f64 / 1024.0,
        rss_peak_mb: peak as f64 / 1024.0,
        alive,
        outcome,
        throttled,
    };
    server.stop();
    row
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut server = None;
    let mut only = None;
    let mut flood = 1_000_000usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--server" => server = args.next(),
            "--only" => only = args.next(),
            "--flood" => flood = args.next().and_then(|n| n.parse().ok()).unwrap_or(flood),
            _ => {
                eprintln!("usage: attack_soak [--server PATH] [--only NAME] [--flood N]");
                return ExitCode::from(2);
            }
        }
    }
    let server = server.unwrap_or_else(|| {
        let me = std::env::current_exe().expect("own path");
        me.with_file_name("electrum_server")
            .to_string_lossy()
            .into_owned()
    });
    let selected = |name: &str| only.as_deref().is_none_or(|only| only == name);
    let mut rows = Vec::new();
    if selected("batch") {
        rows.push(run(
            "3,000-item get_history batch",
            &server,
            BLOCKS,
            &[],
            big_batch,
        ));
    }
    if selected("nonreading") {
        rows.push(run("100 non-reading clients", &server, BLOCKS, &[], non_reading));
    }
    if selected("checkpoint") {
        rows.push(run(
            "10 sessions, fresh cp_height",
            &server,
            CHECKPOINT_BLOCKS,
            &[],
            checkpoints,
        ));
    }
    if selected("flood") {
        let flags = ["--max-subs-per-session", "none"];
        rows.push(run(
            "subscription flood (subscription limits off)",
            &server,
            BLOCKS,
            &flags,
            |s| subscription_flood(s, flood),
        ));
        let flags = [
            "--cost-soft-limit",
            "0",
            "--cost-hard-limit",
            "0",
            "--max-subs-per-session",
            "none",
        ];
        rows.push(run(
            "subscription flood (all limits off)",
            &server,
            BLOCKS,
            &flags,
            |s| subscription_flood(s, flood),
        ));
    }
    if selected("slowloris") {
        let flags = ["--session-timeout", "10", "--sweep-interval", "1"];
        rows.push(run(
            "slowloris (200 conns, 1 B/50 ms)",
            &server,
            BLOCKS,
            &flags,
            slowloris,
        ));
    }
    if selected("echo") {
        rows.push(run(
            "huge client name / parameter echo",
            &server,
            BLOCKS,
            &[],
            huge_echo,
        ));
    }

    println!();
    println!(
        "| attack | good ping p50 / p99 / max ms | pings | server alive | RSS start → peak MB | attackers | cut | throttled, not cut | notes |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut failed = false;
    for row in &rows {
        let (cut, slowed) = row.contained();
        let attackers = row.outcome.attackers.len();
        println!(
            "| {} | {} / {} / {} | {}{} | {} | {:.0} → {:.0} | {} | {} | {} | {} |",
            row.name,
            ms(row.p50),
            ms(row.p99),
            ms(row.max),
            row.pings,
            if row.good_failures > 0 {
                format!(" ({} failed)", row.good_failures)
            } else {
                String::new()
            },
            if row.alive { "yes" } else { "**no**" },
            row.rss_start_mb,
            row.rss_peak_mb,
            attackers,
            cut,
            slowed,
            row.outcome.notes.join("; ")
        );
        let mut misses = Vec::new();
        if !row.alive {
            misses.push("server died");
        }
        if row.p99 >= Duration::from_millis(10) || row.good_failures > 0 {
            misses.push("good p99 ≥ 10 ms");
        }
        if row.rss_peak_mb >= 256.0 {
            misses.push("peak RSS ≥ 256 MB");
        }
        if attackers == 0 || cut + slowed < attackers {
            misses.push("an attacker neither throttled nor cut");
        }
        if !misses.is_empty() {
            eprintln!("target missed — {}: {}", row.name, misses.join(", "));
            failed |= !row.alive;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
