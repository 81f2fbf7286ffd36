//! The example server's observability: `--metrics` scraped and parsed as
//! Prometheus text while a scripted client connects, is throttled and is
//! kicked (−101) and a block is notified; `--status` loaded in headless
//! Chromium while clients connect.
//!
//! Its own test binary: the Prometheus recorder is process-global, and only
//! `metrics_move_with_clients` installs it.
#![cfg(feature = "tokio")]

#[allow(dead_code)]
#[path = "../examples/electrum_server/admin.rs"]
mod admin;
#[allow(dead_code)]
#[path = "../examples/electrum_server/chain.rs"]
mod chain;
#[allow(dead_code)]
#[path = "../examples/electrum_server/cli.rs"]
mod cli;
#[allow(dead_code)]
#[path = "../examples/electrum_server/hosts.rs"]
mod hosts;
#[allow(dead_code)]
#[path = "../examples/electrum_server/jsonrpc.rs"]
mod jsonrpc;
#[allow(dead_code)]
#[path = "../examples/electrum_server/observe.rs"]
mod observe;
#[allow(dead_code)]
#[path = "../examples/electrum_server/rpc.rs"]
mod rpc;
#[allow(dead_code)]
#[path = "../examples/electrum_server/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "../examples/electrum_server/wallet.rs"]
mod wallet;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::{Value, json};

use crate::server::ServerHandle;

const TIMEOUT: Duration = Duration::from_secs(10);

async fn start(args: &[&str]) -> ServerHandle {
    let mut all = vec!["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let cli::Command::Run(options) = cli::parse(all).expect("valid flags") else {
        panic!("not a run command");
    };
    let mut options = *options;
    options.log = false;
    server::start(options).await.expect("server starts")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("client code panicked")
}

/// A newline JSON client.
struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        LineClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Connects from `source` (any address of 127.0.0.0/8: each /24 is its own group).
    async fn connect_from(source: &str, addr: SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(addr).await.expect("connects").into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        Self::from_stream(stream)
    }

    fn send(&mut self, message: &Value) {
        let mut bytes = serde_json::to_vec(message).unwrap();
        bytes.push(b'\n');
        self.writer.write_all(&bytes).expect("writes");
    }

    fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("the server sends JSON")),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        loop {
            let message = self.recv().expect("a reply");
            if message.get("id") == Some(&json!(id)) {
                return message;
            }
        }
    }

    fn version(&mut self) {
        let reply = self.call(0, "server.version", json!(["observability test", "1.4"]));
        assert_eq!(reply["result"][1], "1.4", "{reply}");
    }
}

fn admin_call(addr: SocketAddr, method: &str, params: Value) -> Value {
    let mut client = LineClient::from_stream(TcpStream::connect(addr).unwrap());
    client.send(&json!({ "id": 1, "method": method, "params": params }));
    let reply = client.recv().expect("admin reply");
    assert!(reply.get("error").is_none(), "admin {method}: {reply}");
    reply["result"].clone()
}

/// `GET path` over HTTP/1.1; the status code and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header and a body");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_owned())
}

/// A parsed scrape of `/metrics`.
struct Metrics {
    text: String,
    samples: Vec<Sample>,
}

impl Metrics {
    fn scrape(addr: SocketAddr) -> Self {
        let (code, text) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "{text}");
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
        Metrics {
            text,
            samples: scrape.samples,
        }
    }

    /// The value of a counter or gauge with these labels; 0 when absent
    /// (a counter never incremented is not rendered).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} is ambiguous in\n{}",
            self.text
        );
        match matching.first().map(|s| &s.value) {
            None => 0.0,
            Some(Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v)) => *v,
            Some(other) => panic!("{name} is not a counter or gauge: {other:?}"),
        }
    }

    /// The sample count of a summary or histogram.
    fn count(&self, name: &str) -> f64 {
        let sample = self
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} missing from\n{}", self.text));
        match &sample.value {
            Metric::Summary(_) | Metric::Histogram(_) => self.value(&format!("{name}_count"), &[]),
            other => panic!("{name} is not a summary or histogram: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_clients() {
    // Loopback addresses form /24 groups; every byte costs 1: a few pings
    // throttle, a few kilobytes of headers pass the hard limit.
    let server = start(&[
        "--metrics",
        "127.0.0.1:0",
        "--exempt-networks",
        "none",
        "--cost-soft-limit",
        "100",
        "--cost-hard-limit",
        "1100",
        "--bandwidth-unit-cost",
        "1",
        "--request-sleep-ms",
        "1",
    ])
    .await;
    let metrics = server.metrics_addr().expect("--metrics is bound");
    let (listen, admin) = (server.listen_addr(), server.admin_addr());

    let before = blocking(move || Metrics::scrape(metrics)).await;
    assert_eq!(
        before.value("indexer_sessions_example_connections_total", &[]),
        0.0
    );
    let passes_before = before.value("indexer_sessions_example_notify_passes_total", &[]);
    assert!(
        passes_before >= 1.0,
        "the starting tip is announced:\n{}",
        before.text
    );

    // A header subscriber in another group (127.0.1.0/24).
    let mut watcher = LineClient::connect_from("127.0.1.1", listen).await;
    // The client that misbehaves, in 127.0.0.0/24.
    let mut abuser = LineClient::connect_from("127.0.0.1", listen).await;
    let (watcher, abuser_reply) = blocking(move || {
        watcher.version();
        let tip = watcher.call(1, "blockchain.headers.subscribe", json!([]));
        assert_eq!(tip["result"]["height"], 110, "{tip}");
        abuser.version();
        for id in 1..=3 {
            let pong = abuser.call(id, "server.ping", json!([]));
            assert!(pong.get("error").is_none(), "{pong}");
        }
        (watcher, abuser)
    })
    .await;
    let mut abuser = abuser_reply;

    let throttled = blocking(move || Metrics::scrape(metrics)).await;
    assert_eq!(
        throttled.value("indexer_sessions_example_connections_total", &[]),
        2.0,
        "{}",
        throttled.text
    );
    assert_eq!(throttled.value("indexer_sessions_example_sessions", &[]), 2.0);
    // versions, the subscription and the pings
    assert_eq!(
        throttled.value("indexer_sessions_example_requests_total", &[]),
        6.0,
        "{}",
        throttled.text
    );
    assert_eq!(
        throttled.value("indexer_sessions_example_throttled_total", &[]),
        1.0,
        "{}",
        throttled.text
    );
    assert_eq!(
        throttled.value(
            "indexer_sessions_example_disconnects_total",
            &[("reason", "excessive_cost")]
        ),
        0.0
    );

    // 50 headers (8 KB of hex) pass the hard limit: the next request gets −101.
    let kicked = blocking(move || {
        let headers = abuser.call(10, "blockchain.block.headers", json!([0, 50]));
        assert_eq!(headers["result"]["count"], 50, "{headers}");
        let refused = abuser.call(11, "server.ping", json!([]));
        assert_eq!(refused["error"]["code"], -101, "{refused}");
        assert!(abuser.recv().is_none(), "disconnected after −101");
        Metrics::scrape(metrics)
    })
    .await;
    assert_eq!(
        kicked.value(
            "indexer_sessions_example_disconnects_total",
            &[("reason", "excessive_cost")]
        ),
        1.0,
        "{}",
        kicked.text
    );
    assert_eq!(kicked.value("indexer_sessions_example_sessions", &[]), 1.0);
    let headers_before = kicked.value(
        "indexer_sessions_example_notifications_total",
        &[("kind", "header")],
    );

    // A block: the watcher is notified, and so are the metrics.
    let (watcher, after) = blocking(move || {
        let mut watcher = watcher;
        let tip = admin_call(admin, "generate", json!([1]));
        assert_eq!(tip["height"], 111);
        let note = watcher.recv().expect("a header notification");
        assert_eq!(note["method"], "blockchain.headers.subscribe", "{note}");
        assert_eq!(note["params"][0]["height"], 111, "{note}");
        (watcher, Metrics::scrape(metrics))
    })
    .await;
    assert_eq!(
        after.value("indexer_sessions_example_notify_passes_total", &[]),
        passes_before + 1.0,
        "{}",
        after.text
    );
    assert_eq!(
        after.value(
            "indexer_sessions_example_notifications_total",
            &[("kind", "header")]
        ),
        headers_before + 1.0
    );
    assert_eq!(after.value("indexer_sessions_example_tip_height", &[]), 111.0);
    assert!(
        after.count("indexer_sessions_example_notify_seconds") >= passes_before + 1.0,
        "{}",
        after.text
    );

    // The watcher hangs up: counted as the client's own close.
    drop(watcher);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let last = blocking(move || Metrics::scrape(metrics)).await;
        if last.value(
            "indexer_sessions_example_disconnects_total",
            &[("reason", "client_closed")],
        ) == 1.0
        {
            assert_eq!(
                last.value("indexer_sessions_example_sessions", &[]),
                0.0,
                "{}",
                last.text
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the close was not counted:\n{}",
            last.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(blocking(move || http_get(metrics, "/nothing")).await.0, 404);
    server.shutdown().await;
}

/// Debian's Chromium (`apt-get install -y chromium`; `scripts/test.sh` installs it).
const CHROMIUM: &str = "/usr/bin/chromium";

/// The text of the element with this id in a dumped DOM.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let start = at + dom[at..].find('>').expect("the tag ends") + 1;
    let end = start + dom[start..].find('<').expect("the text ends");
    &dom[start..end]
}

/// The opening tag of the row showing this group.
fn group_row<'a>(dom: &'a str, group: &str) -> &'a str {
    let marker = format!("data-group=\"{group}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("group {group} is not in the page:\n{dom}"));
    let start = dom[..at].rfind('<').expect("in a tag");
    let end = at + dom[at..].find('>').expect("the tag ends");
    &dom[start..=end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_updates_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "this test drives the status page in headless Chromium, and {CHROMIUM} is missing: \
         run scripts/test.sh (it installs it), or `apt-get install -y chromium`"
    );
    // Loopback addresses form /24 groups, and every byte costs 1.
    let server = start(&[
        "--status",
        "127.0.0.1:0",
        "--exempt-networks",
        "none",
        "--cost-soft-limit",
        "100",
        "--cost-hard-limit",
        "20000",
        "--bandwidth-unit-cost",
        "1",
        "--request-sleep-ms",
        "1",
    ])
    .await;
    let status = server.status_addr().expect("--status is bound");
    let listen = server.listen_addr();
    let profile = std::env::temp_dir().join(format!("indexer-sessions-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    // Virtual time stands still while a fetch is pending, and each poll
    // waits up to a second for a change: the page polls for 8 s of virtual
    // time, some seconds of real time, then the DOM is printed.
    let mut chromium = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=8000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{status}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts chromium");
    let mut stdout = chromium.stdout.take().unwrap();
    let dom = std::thread::spawn(move || {
        let mut dom = String::new();
        stdout.read_to_string(&mut dom).map(|_| dom)
    });

    // The page is loaded and has its first data (no session yet).
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.observer().polls() == 0 {
        assert!(
            chromium.try_wait().unwrap().is_none(),
            "chromium exited before polling"
        );
        assert!(Instant::now() < deadline, "the page never asked for /status.json");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.manager().session_count(), 0);

    // Three clients in 127.0.0.0/24, one of which runs up its cost, and
    // one quiet client in 127.0.1.0/24.
    let mut clients = Vec::new();
    for source in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.1.1"] {
        clients.push(LineClient::connect_from(source, listen).await);
    }
    let clients = blocking(move || {
        for client in &mut clients {
            client.version();
        }
        for id in 1..=40 {
            let pong = clients[0].call(id, "server.ping", json!([]));
            assert!(pong.get("error").is_none(), "{pong}");
        }
        clients
    })
    .await;
    let rows = server.manager().sessions();
    assert!(
        rows.iter().any(|row| !row.flags.ends_with("10")),
        "a session is throttled: {rows:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if chromium.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = chromium.kill();
            let _ = chromium.wait();
            panic!("chromium did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dom = dom.join().unwrap().expect("reads chromium's output");
    let _ = std::fs::remove_dir_all(&profile);
    drop(clients);

    assert_eq!(
        server.observer().page_loads(),
        1,
        "the page was loaded once, never reloaded"
    );
    assert!(server.observer().polls() >= 2, "the page polled again");
    let updates: u32 = text_of(&dom, "updates").parse().expect("a number of updates");
    assert!(updates >= 2, "updated in place {updates} times");
    assert_eq!(text_of(&dom, "session-count"), "4", "{dom}");
    let throttled_sessions: u32 = text_of(&dom, "throttled-count").parse().expect("a count");
    assert!((1..=3).contains(&throttled_sessions), "{dom}");
    assert_eq!(text_of(&dom, "group-count"), "2", "{dom}");
    let throttled = group_row(&dom, "127.0.0.0/24");
    assert!(throttled.contains("data-throttled=\"true\""), "{throttled}");
    let quiet = group_row(&dom, "127.0.1.0/24");
    assert!(quiet.contains("data-throttled=\"false\""), "{quiet}");
    assert!(
        dom.contains("tag throttled"),
        "the throttle is in the journal:\n{dom}"
    );
    server.shutdown().await;
}
