//! `examples/electrum_server` against hostile clients (the non-timing parts
//! of the attack soak, `scripts/attack_soak.sh`): a huge batch, a client that
//! never reads, ids that a float would change, huge names and parameters,
//! absurd admin parameters. Each runs the server in-process on 127.0.0.1:0
//! and checks that it stays up, bounded, and keeps serving a good client.
#![cfg(feature = "tokio")]

include!("support/example_server.rs");

use crate::server::ServerHandle;
use crate::support::{TIMEOUT, blocking, start};

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A newline client over a blocking socket, reading raw lines.
struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).expect("connects"))
    }

    fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        LineClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("writes");
    }

    /// The next line as sent, newline excluded; `None` at end of stream.
    fn recv_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    fn call_raw(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\n").as_bytes());
        self.recv_line().expect("a reply")
    }

    fn call(&mut self, message: Value) -> Value {
        let reply = self.call_raw(&message.to_string());
        serde_json::from_str(&reply).expect("the server sends JSON")
    }

    fn handshake(&mut self) {
        let reply = self
            .call(json!({"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": ["test", "1.4"]}));
        assert_eq!(reply["result"][1], "1.4", "{reply}");
    }
}

/// Connects from `local` (any 127.0.0.0/8 address is local on Linux), with
/// a small receive buffer so a client that does not read fills up fast.
async fn connect_from(local: &str, server: SocketAddr, recv_buffer: Option<u32>) -> LineClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server).await.unwrap().into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    LineClient::from_stream(stream)
}

fn ping(client: &mut LineClient) {
    let reply = client.call(json!({"jsonrpc": "2.0", "id": 1, "method": "server.ping"}));
    assert_eq!(reply["result"], Value::Null, "{reply}");
}

fn mining_scripthash(server: &ServerHandle) -> String {
    let address = server.node().chain().mining_address();
    let script = chain::address_script(&address).unwrap();
    let mut hash = chain::script_hash(script.as_bytes());
    hash.reverse();
    indexer_sessions::encode_hex(&hash)
}

// ---------------------------------------------------------------------------

/// A batch of 3,000 `get_history` calls for a script with a history of
/// several hundred entries: the replies stop growing at `--max-send`, and
/// the items past it are answered with short errors without being run; the
/// server stays up and serves another client meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_history_batch_stops_growing_at_max_send_and_the_server_keeps_serving() {
    let server = start(&["--blocks", "300", "--max-send", "100000"]).await;
    let addr = server.listen_addr();
    let scripthash = mining_scripthash(&server);
    let manager = server.manager().clone();
    blocking(move || {
        let mut good = LineClient::connect(addr);
        good.handshake();
        let mut attacker = LineClient::connect(addr);
        attacker.handshake();
        let calls: Vec<Value> = (0..3000)
            .map(|i| {
                json!({"jsonrpc": "2.0", "id": i, "method": "blockchain.scripthash.get_history",
                       "params": [scripthash]})
            })
            .collect();
        let line = Value::Array(calls).to_string();
        assert!(line.len() > 300_000);
        let started = Instant::now();
        let reply = attacker.call_raw(&line);
        let elapsed = started.elapsed();
        let replies: Vec<Value> = serde_json::from_str(&reply).expect("a batch reply");
        assert_eq!(replies.len(), 3000, "every request is answered");
        for (i, r) in replies.iter().enumerate() {
            assert_eq!(r["id"], i, "in order: {r}");
        }
        let first = replies[0]["result"].as_array().expect("the first item is served");
        assert!(first.len() >= 300, "one history entry per block: {}", first.len());
        let served = replies.iter().take_while(|r| r.get("result").is_some()).count();
        let raw: Vec<&serde_json::value::RawValue> = serde_json::from_str(&reply).unwrap();
        let served_bytes: usize = raw[..served].iter().map(|item| item.get().len() + 1).sum();
        assert!(
            (1..5).contains(&served),
            "{served} histories of ~{} bytes fit in 100,000",
            first.len() * 90
        );
        // The rest: short errors, none of them run.
        for r in &replies[served..] {
            assert_eq!(r["error"]["code"], 1, "{r}");
        }
        assert!(
            replies[served + 1]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not run"),
            "{}",
            replies[served + 1]
        );
        assert!(
            served_bytes < 100_000,
            "results within --max-send: {served_bytes}"
        );
        // Each short error is about a hundred bytes.
        assert!(
            reply.len() < 100_000 + 3000 * 150,
            "batch reply of {} bytes",
            reply.len()
        );
        assert!(elapsed < Duration::from_secs(5), "answered in {elapsed:?}");
        // Histories looked up: the served ones and the one that did not fit, not 3,000.
        let lookups = manager.info().caches.history;
        assert!(
            lookups.hits + lookups.misses <= served as u64 + 1,
            "history looked up {} times",
            lookups.hits + lookups.misses
        );
        ping(&mut good);
        // The session still works.
        ping(&mut attacker);
    })
    .await;
    server.shutdown().await;
}

/// Each batch item is admitted before it runs, and a batch stops at the
/// first refusal: 3,000 invalid requests (each charged as an error) end at
/// −101 after about a hundred, and the client is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_stops_at_the_first_refusal() {
    let server = start(&["--blocks", "1", "--request-sleep-ms", "1"]).await;
    let addr = server.listen_addr();
    blocking(move || {
        let mut good = LineClient::connect(addr);
        good.handshake();
        let mut attacker = LineClient::connect(addr);
        attacker.handshake();
        let items: Vec<String> = (0..3000)
            .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i}}}"#))
            .collect();
        let reply = attacker.call_raw(&format!("[{}]", items.join(",")));
        let replies: Vec<Value> = serde_json::from_str(&reply).expect("a batch reply");
        let last = replies.last().unwrap();
        assert_eq!(last["error"]["code"], -101, "{last}");
        assert!(
            (50..200).contains(&replies.len()),
            "stopped after {} items",
            replies.len()
        );
        for r in &replies[..replies.len() - 1] {
            assert_eq!(r["error"]["code"], -32600, "{r}");
        }
        assert!(attacker.recv_line().is_none(), "disconnected after -101");
        ping(&mut good);
    })
    .await;
    server.shutdown().await;
}

/// A client that sends requests and never reads the replies is cut within
/// `--max-send-delay` (limits off, so only the send deadline can cut it),
/// while another client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_replies_is_cut_within_max_send_delay() {
    let server = start(&[
        "--blocks",
        "300",
        "--cost-soft-limit",
        "0",
        "--cost-hard-limit",
        "0",
        "--max-send-delay",
        "1",
        "--max-queued",
        "200000",
    ])
    .await;
    let addr = server.listen_addr();
    let manager = server.manager().clone();
    let mut attacker = connect_from("127.0.0.2", addr, Some(4096)).await;
    let attacker_addr = attacker.writer.local_addr().unwrap();
    blocking(move || {
        let mut good = LineClient::connect(addr);
        good.handshake();
        attacker.handshake();
        // Each reply is 301 headers (about 48 KB); none is read.
        attacker
            .writer
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let request =
            json!({"jsonrpc": "2.0", "id": 1, "method": "blockchain.block.headers", "params": [0, 2016]})
                .to_string()
                + "\n";
        let started = Instant::now();
        let mut sent = 0;
        while started.elapsed() < Duration::from_secs(5) {
            if attacker.writer.write_all(request.as_bytes()).is_err() {
                break;
            }
            sent += 1;
            if manager.sessions().iter().all(|row| row.peer != attacker_addr) {
                break;
            }
        }
        assert!(sent > 20, "sent {sent} requests");
        let cut = loop {
            if manager.sessions().iter().all(|row| row.peer != attacker_addr) {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "the client that never reads is still connected after {:?}",
                started.elapsed()
            );
            ping(&mut good);
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(cut < Duration::from_secs(8), "cut after {cut:?}");
        assert_eq!(manager.session_count(), 1);
        ping(&mut good);
        drop(attacker);
    })
    .await;
    server.shutdown().await;
}

/// Ids come back exactly as sent, singly and in batches: numbers a float
/// would change, strings with escapes, null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_echoed_byte_for_byte() {
    let server = start(&["--blocks", "1"]).await;
    let addr = server.listen_addr();
    blocking(move || {
        let mut client = LineClient::connect(addr);
        client.handshake();
        let ids = [
            "123456789012345678901234567890123456789",
            "1e2",
            "-0",
            "1.50",
            "-12.5E-3",
            r#""caf\u00e9 \"x\"""#,
            "null",
        ];
        for id in ids {
            let reply = client.call_raw(&format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"server.ping"}}"#
            ));
            assert!(reply.ends_with(&format!(r#","id":{id}}}"#)), "id {id}: {reply}");
            // Errors too.
            let reply = client.call_raw(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"nope"}}"#));
            assert!(reply.ends_with(&format!(r#","id":{id}}}"#)), "id {id}: {reply}");
        }
        let batch: Vec<String> = ids
            .iter()
            .map(|id| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"server.ping"}}"#))
            .collect();
        let reply = client.call_raw(&format!("[{}]", batch.join(",")));
        for id in ids {
            assert!(reply.contains(&format!(r#","id":{id}}}"#)), "id {id}: {reply}");
        }
    })
    .await;
    server.shutdown().await;
}

/// Input is never echoed whole: a huge client name is kept as its first 64
/// characters, error texts quote at most 100 characters of a parameter or
/// method, and the admin `sessions` table stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_names_and_parameters_are_not_echoed_whole() {
    let server = start(&["--blocks", "1"]).await;
    let (addr, admin_addr) = (server.listen_addr(), server.admin_addr());
    blocking(move || {
        let huge = "A".repeat(600_000);
        let mut client = LineClient::connect(addr);
        let reply = client.call_raw(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": [huge, "1.4"]}).to_string(),
        );
        assert!(reply.len() < 200, "{} bytes", reply.len());
        // A huge version string is refused with a bounded message.
        let mut other = LineClient::connect(addr);
        let reply = other.call_raw(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": ["x", huge]}).to_string(),
        );
        let value: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(value["error"]["code"], -32602, "{value}");
        assert!(reply.len() < 600, "{} bytes", reply.len());
        for message in [
            json!({"jsonrpc": "2.0", "id": 1, "method": "blockchain.scripthash.get_history", "params": [huge]}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "blockchain.transaction.get", "params": [huge]}),
            json!({"jsonrpc": "2.0", "id": 3, "method": huge}),
            json!({"jsonrpc": "2.0", "id": 4, "method": "blockchain.block.header", "params": {huge.clone(): 1}}),
            json!({"jsonrpc": "2.0", "id": 5, "method": "blockchain.block.header", "params": [huge]}),
        ] {
            let reply = client.call_raw(&message.to_string());
            let value: Value = serde_json::from_str(&reply).unwrap();
            assert!(value["error"]["code"].is_i64(), "{value}");
            let text = value["error"]["message"].as_str().unwrap();
            assert!(text.contains("AAAA"), "the input is quoted: {text}");
            assert!(text.chars().count() < 300, "{} characters echoed", text.chars().count());
        }
        let mut admin = LineClient::connect(admin_addr);
        let sessions = admin.call_raw(r#"{"id":1,"method":"sessions"}"#);
        assert!(sessions.len() < 2_000, "sessions table of {} bytes", sessions.len());
        let sessions: Value = serde_json::from_str(&sessions).unwrap();
        let name = sessions["result"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|row| row["client"].as_str().filter(|c| c.starts_with('A')))
            .expect("the client's name")
            .to_owned();
        assert_eq!(name, format!("{}…", "A".repeat(64)));
    })
    .await;
    server.shutdown().await;
}

/// Admin `ban` answers any JSON number for its seconds with an error or a
/// ban, never a panic; the admin interface keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ban_with_absurd_seconds_is_an_error_not_a_panic() {
    let server = start(&["--blocks", "1"]).await;
    let admin_addr = server.admin_addr();
    blocking(move || {
        let mut admin = LineClient::connect(admin_addr);
        for seconds in [
            "1e300",
            "-5",
            "0",
            "-0",
            "123456789012345678901234567890",
            "\"ten\"",
            "[1]",
        ] {
            let reply = admin.call_raw(&format!(
                r#"{{"id":1,"method":"ban","params":["203.0.113.0/24",{seconds}]}}"#
            ));
            let value: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(value["error"]["code"], -32602, "{seconds}: {value}");
        }
        // Out of JSON's double range: not a number at all.
        let reply = admin.call_raw(r#"{"id":1,"method":"ban","params":["203.0.113.0/24",1e400]}"#);
        let value: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(value["error"]["code"], -32700, "{value}");
        // Past the clock's range: a ban without end; then an ordinary one.
        for seconds in [1.8e19, 1e9] {
            let reply = admin.call(json!({"id": 2, "method": "ban", "params": ["203.0.113.0/24", seconds]}));
            assert_eq!(reply["result"]["banned"], "203.0.113.0/24", "{reply}");
        }
        let reply = admin.call(json!({"id": 3, "method": "getinfo"}));
        assert_eq!(reply["result"]["bans"], 1, "{reply}");
    })
    .await;
    server.shutdown().await;
}
