//! The example server's listeners ("services"): the same wallet scenario
//! (balance, history, unspent, subscribe, broadcast, notification or poll,
//! a mined block) over TCP and TLS with the `electrum-client` crate, over
//! WebSocket and secure WebSocket with `tokio-tungstenite`, and over HTTP;
//! all of them sessions of one manager, so a client using two services at
//! once shares one IP group's cost, and a ban refuses it on every service
//! with a status its protocol can show; a web page in headless Chromium
//! calls it over WebSocket and HTTP (CORS). Plus the `SERVICES` syntax.
#![cfg(feature = "tokio")]

include!("support/example_server.rs");

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::ScriptBuf;
use electrum_client::{Client, ConfigBuilder, ElectrumApi};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;

use crate::server::ServerHandle;
use crate::services::{Entry, Service, ServiceKind};
use crate::support::{TIMEOUT, admin_call, blocking};
use crate::wallet::TestKey;

/// A server with every kind of listener on ephemeral ports, `key` paid
/// 1.5 BTC at height ≤ 105.
async fn start_all(key: &TestKey, extra: &[&str]) -> ServerHandle {
    let pay = format!("{}:1.5", key.address());
    let mut args = vec![
        "--admin",
        "127.0.0.1:0",
        "--blocks",
        "105",
        "--pay-to",
        &pay,
        "--services",
        "tcp://127.0.0.1:0,ssl://127.0.0.1:0,ws://127.0.0.1:0,wss://127.0.0.1:0,http://127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let cli::Command::Run(options) = cli::parse(args).expect("valid flags") else {
        panic!("not a run command");
    };
    let mut options = *options;
    options.log = false;
    server::start(options).await.expect("server starts")
}

fn scripthash(key: &TestKey) -> String {
    let mut hash = key.scripthash();
    hash.reverse();
    indexer_sessions::encode_hex(&hash)
}

// ---------------------------------------------------------------------------
// Clients

/// A JSON-RPC client of one service.
enum Rpc {
    /// WebSocket (plain or over TLS): one text message per JSON-RPC message.
    Ws {
        socket: tokio_tungstenite::WebSocketStream<Box<dyn Io>>,
        /// Notifications read while waiting for a reply.
        notifications: Vec<Value>,
    },
    /// HTTP/1.1 with keep-alive: one POST per request.
    Http {
        stream: BufReader<TcpStream>,
        addr: SocketAddr,
    },
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

impl Rpc {
    async fn ws(addr: SocketAddr, tls: Option<&str>) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("connects");
        let (io, scheme): (Box<dyn Io>, _) = match tls {
            None => (Box::new(tcp), "ws"),
            Some(fingerprint) => (Box::new(tls_connect(tcp, fingerprint).await), "wss"),
        };
        let url = format!("{scheme}://localhost:{}/", addr.port());
        let (socket, _) = tokio_tungstenite::client_async(url, io)
            .await
            .expect("the WebSocket upgrade succeeds");
        Rpc::Ws {
            socket,
            notifications: Vec::new(),
        }
    }

    async fn http(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connects");
        Rpc::Http {
            stream: BufReader::new(stream),
            addr,
        }
    }

    /// Calls `method`; the whole JSON-RPC response.
    async fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        match self {
            Rpc::Ws {
                socket,
                notifications,
            } => {
                socket
                    .send(Message::text(request.to_string()))
                    .await
                    .expect("sends");
                loop {
                    let message = next_message(socket).await;
                    if message.get("id") == Some(&json!(id)) {
                        return message;
                    }
                    notifications.push(message);
                }
            }
            Rpc::Http { stream, addr } => {
                let (status, body) =
                    http_request(stream, *addr, "POST", "/", request.to_string().as_bytes()).await;
                assert_eq!(status, 200, "{body}");
                serde_json::from_str(&body).expect("a JSON reply")
            }
        }
    }

    /// The next notification (WebSocket only).
    async fn notification(&mut self) -> Value {
        let Rpc::Ws {
            socket,
            notifications,
        } = self
        else {
            panic!("HTTP has no notifications");
        };
        if !notifications.is_empty() {
            return notifications.remove(0);
        }
        next_message(socket).await
    }
}

async fn next_message(socket: &mut tokio_tungstenite::WebSocketStream<Box<dyn Io>>) -> Value {
    loop {
        let message = tokio::time::timeout(TIMEOUT, socket.next())
            .await
            .expect("a message within the timeout")
            .expect("the socket is open")
            .expect("a well-formed message");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// One HTTP/1.1 request on a kept-alive connection; the status and body.
async fn http_request(
    stream: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &[u8],
) -> (u16, String) {
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.get_mut().write_all(head.as_bytes()).await.expect("writes");
    stream.get_mut().write_all(body).await.expect("writes");
    tokio::time::timeout(TIMEOUT, read_response(stream))
        .await
        .expect("a response within the timeout")
}

async fn read_response(stream: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut status_line = String::new();
    stream.read_line(&mut status_line).await.expect("reads");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line, got {status_line:?}"));
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.expect("reads");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("a length");
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.expect("reads the body");
    (status, String::from_utf8(body).expect("UTF-8"))
}

/// Accepts the server's certificate if its SHA-256 is `fingerprint`, as a
/// user who checked the printed fingerprint does.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if crate::tls::fingerprint(end_entity) == self.fingerprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate fingerprint mismatch".to_owned(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

async fn tls_connect(tcp: TcpStream, fingerprint: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint: fingerprint.to_owned(),
            provider,
        }))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("the TLS handshake succeeds with the printed fingerprint")
}

fn electrum_client(url: &str) -> Client {
    let config = ConfigBuilder::new()
        .validate_domain(false)
        .timeout(Some(TIMEOUT))
        .retry(0)
        .build();
    Client::from_config(url, config).expect("electrum-client connects")
}

// ---------------------------------------------------------------------------
// The scenario

/// A spend of `key`'s one coin back to itself, 1,000 sat of fee.
fn self_spend(key: &TestKey, unspent: &Value) -> String {
    let txid_hex = unspent["tx_hash"].as_str().unwrap();
    let mut txid: [u8; 32] = indexer_sessions::decode_hex(txid_hex)
        .unwrap()
        .try_into()
        .unwrap();
    txid.reverse();
    let vout = unspent["tx_pos"].as_u64().unwrap() as u32;
    let value = unspent["value"].as_u64().unwrap();
    let raw = key.sign_p2wpkh_spend(&[(txid, vout, value)], &[(key.script_pubkey(), value - 1_000)]);
    indexer_sessions::encode_hex(&raw)
}

/// The wallet scenario over a WebSocket or HTTP client; the session's kind
/// is checked in the admin table while it is open.
async fn scenario(server: &ServerHandle, key: &TestKey, mut rpc: Rpc, kind: &str) {
    let hash = scripthash(key);
    let http = matches!(rpc, Rpc::Http { .. });
    if !http {
        let version = rpc
            .call(0, "server.version", json!(["services test", "1.4"]))
            .await;
        assert_eq!(version["result"][1], "1.4", "{version}");
    }
    let balance = rpc
        .call(1, "blockchain.scripthash.get_balance", json!([hash]))
        .await;
    assert_eq!(
        balance["result"],
        json!({ "confirmed": 150_000_000, "unconfirmed": 0 }),
        "{kind}"
    );
    let history = rpc
        .call(2, "blockchain.scripthash.get_history", json!([hash]))
        .await;
    assert_eq!(
        history["result"].as_array().unwrap().len(),
        1,
        "{kind}: {history}"
    );
    let unspent = rpc
        .call(3, "blockchain.scripthash.listunspent", json!([hash]))
        .await;
    let coin = unspent["result"][0].clone();
    assert_eq!(coin["value"], 150_000_000, "{kind}: {unspent}");
    let status = rpc
        .call(4, "blockchain.scripthash.subscribe", json!([hash]))
        .await;
    let before = status["result"].as_str().expect("a status").to_owned();
    let tip = rpc.call(5, "blockchain.headers.subscribe", json!([])).await;
    assert_eq!(tip["result"]["height"], 105, "{kind}: {tip}");

    // The admin table shows the session's kind.
    let admin = server.admin_addr();
    let sessions = blocking(move || admin_call(admin, "sessions", json!([]))).await;
    let rows = sessions.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{kind}: {sessions}");
    assert_eq!(rows[0]["kind"], kind, "{sessions}");

    // A broadcast changes the script's status: pushed, or polled over HTTP.
    let raw = self_spend(key, &coin);
    let sent = rpc
        .call(6, "blockchain.transaction.broadcast", json!([raw]))
        .await;
    let txid = sent["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{kind}: {sent}"))
        .to_owned();
    let after = if http {
        let polled = rpc
            .call(7, "blockchain.scripthash.subscribe", json!([hash]))
            .await;
        polled["result"].as_str().unwrap().to_owned()
    } else {
        let note = rpc.notification().await;
        assert_eq!(
            note["method"], "blockchain.scripthash.subscribe",
            "{kind}: {note}"
        );
        assert_eq!(note["params"][0], hash.as_str());
        note["params"][1].as_str().unwrap().to_owned()
    };
    assert_ne!(after, before, "{kind}: the status changed");
    let mempool = rpc
        .call(8, "blockchain.scripthash.get_mempool", json!([hash]))
        .await;
    assert_eq!(
        mempool["result"][0]["tx_hash"],
        txid.as_str(),
        "{kind}: {mempool}"
    );

    // A mined block: a header notification, or the new tip when polled.
    server.generate(1).await;
    if http {
        let tip = rpc.call(9, "blockchain.headers.subscribe", json!([])).await;
        assert_eq!(tip["result"]["height"], 106, "{kind}: {tip}");
    } else {
        loop {
            let note = rpc.notification().await;
            if note["method"] == "blockchain.headers.subscribe" {
                assert_eq!(note["params"][0]["height"], 106, "{kind}: {note}");
                break;
            }
        }
    }
    let balance = rpc
        .call(10, "blockchain.scripthash.get_balance", json!([hash]))
        .await;
    assert_eq!(
        balance["result"]["confirmed"],
        150_000_000 - 1_000,
        "{kind}: {balance}"
    );
}

/// The same scenario with `electrum-client` over TCP or TLS.
fn electrum_scenario(url: &str, key: &TestKey, server_generate: impl FnOnce()) {
    let client = electrum_client(url);
    let script = ScriptBuf::from_bytes(key.script_pubkey());
    let balance = client.script_get_balance(&script).unwrap();
    assert_eq!(
        (balance.confirmed, balance.unconfirmed),
        (150_000_000, 0),
        "{url}"
    );
    assert_eq!(client.script_get_history(&script).unwrap().len(), 1);
    let unspent = client.script_list_unspent(&script).unwrap();
    let before = client.script_subscribe(&script).unwrap().expect("a status");
    assert_eq!(client.block_headers_subscribe().unwrap().height, 105);
    let coin = json!({
        "tx_hash": unspent[0].tx_hash.to_string(),
        "tx_pos": unspent[0].tx_pos,
        "value": unspent[0].value,
    });
    let raw = indexer_sessions::decode_hex(&self_spend(key, &coin)).unwrap();
    client.transaction_broadcast_raw(&raw).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let after = loop {
        client.ping().unwrap();
        if let Some(status) = client.script_pop(&script).unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{url}: no status notification");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(after, before, "{url}");
    server_generate();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        client.ping().unwrap();
        if let Some(header) = client.block_headers_pop().unwrap() {
            assert_eq!(header.height, 106, "{url}");
            break;
        }
        assert!(Instant::now() < deadline, "{url}: no header notification");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_scenario_over_websocket() {
    let key = TestKey::from_seed([21; 32]);
    let server = start_all(&key, &[]).await;
    let ws = server.addr_of(ServiceKind::Ws).unwrap();
    scenario(&server, &key, Rpc::ws(ws, None).await, "ws").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_scenario_over_secure_websocket_with_the_generated_certificate() {
    let key = TestKey::from_seed([22; 32]);
    let server = start_all(&key, &[]).await;
    let wss = server.addr_of(ServiceKind::Wss).unwrap();
    let fingerprint = server
        .tls_fingerprint()
        .expect("a generated certificate")
        .to_owned();
    scenario(&server, &key, Rpc::ws(wss, Some(&fingerprint)).await, "wss").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_scenario_over_http() {
    let key = TestKey::from_seed([23; 32]);
    let server = start_all(&key, &[]).await;
    let http = server.addr_of(ServiceKind::Http).unwrap();
    scenario(&server, &key, Rpc::http(http).await, "http").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_scenario_over_tcp_and_tls_with_electrum_client() {
    for kind in [ServiceKind::Tcp, ServiceKind::Ssl] {
        let key = TestKey::from_seed([24 + kind as u8; 32]);
        let server = Arc::new(start_all(&key, &[]).await);
        let addr = server.addr_of(kind).unwrap();
        let url = match kind {
            ServiceKind::Ssl => format!("ssl://{addr}"),
            _ => format!("tcp://{addr}"),
        };
        let runtime = tokio::runtime::Handle::current();
        let generating = server.clone();
        blocking(move || {
            electrum_scenario(&url, &key, move || {
                // While the wallet is connected: its session's kind.
                let rows = generating.manager().sessions();
                assert_eq!(rows.len(), 1);
                assert_eq!(rows[0].kind, kind.transport());
                runtime.block_on(generating.generate(1));
            })
        })
        .await;
        Arc::into_inner(server).expect("one handle").shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_get_form_batches_notifications_and_errors() {
    let key = TestKey::from_seed([26; 32]);
    let server = start_all(&key, &[]).await;
    let addr = server.addr_of(ServiceKind::Http).unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut stream = BufReader::new(stream);
    let hash = scripthash(&key);

    // GET /v1/METHOD?params=… (URL-encoded JSON).
    let target = format!("/v1/blockchain.scripthash.get_balance?params=%5B%22{hash}%22%5D");
    let (status, body) = http_request(&mut stream, addr, "GET", &target, b"").await;
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["result"]["confirmed"], 150_000_000, "{reply}");
    // Without params: [].
    let (status, body) = http_request(&mut stream, addr, "GET", "/v1/server.ping", b"").await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap()["result"].clone()
        ),
        (200, Value::Null)
    );

    // A batch on the same connection.
    let batch = json!([
        { "jsonrpc": "2.0", "id": 1, "method": "server.ping", "params": [] },
        { "jsonrpc": "2.0", "id": 2, "method": "blockchain.headers.subscribe", "params": [] },
    ]);
    let (status, body) = http_request(&mut stream, addr, "POST", "/", batch.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let replies: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(replies.as_array().map(Vec::len), Some(2), "{replies}");

    // A notification has no reply.
    let note = json!({ "jsonrpc": "2.0", "method": "server.ping", "params": [] });
    let (status, body) = http_request(&mut stream, addr, "POST", "/", note.to_string().as_bytes()).await;
    assert_eq!((status, body.as_str()), (204, ""));

    // A JSON-RPC error is a 200 with the error; HTTP errors are HTTP statuses.
    let (status, body) = http_request(&mut stream, addr, "GET", "/v1/no.such.method", b"").await;
    assert_eq!(status, 200);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"].is_i64(),
        "{body}"
    );
    let (status, _) = http_request(&mut stream, addr, "GET", "/elsewhere", b"").await;
    assert_eq!(status, 404);
    let (status, _) = http_request(&mut stream, addr, "GET", "/v1/server.ping?params=%5B", b"").await;
    assert_eq!(status, 400);
    let (status, _) = http_request(&mut stream, addr, "OPTIONS", "/", b"").await;
    assert_eq!(status, 204);
    // All of it was one session, whose errors were counted.
    let rows = server.manager().sessions();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].kind, indexer_sessions::TransportKind::Http);
    assert!(rows[0].counters.errors >= 2, "{:?}", rows[0].counters);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_tcp_and_http_at_once_shares_one_group_cost() {
    let key = TestKey::from_seed([27; 32]);
    // Loopback is grouped (not exempt); costs are refunded slowly.
    let server = start_all(
        &key,
        &[
            "--exempt-networks",
            "none",
            "--cost-soft-limit",
            "10",
            "--cost-hard-limit",
            "100",
        ],
    )
    .await;
    let tcp = server.addr_of(ServiceKind::Tcp).unwrap();
    let http = server.addr_of(ServiceKind::Http).unwrap();
    let mut line = crate::support::LineClient::connect_from("127.0.0.1", tcp).await;
    let mut line = blocking(move || {
        line.version();
        line
    })
    .await;
    let mut rpc = Rpc::http(http).await;
    let hash = scripthash(&key);
    for id in 0..60 {
        let reply = rpc
            .call(id, "blockchain.scripthash.get_history", json!([hash]))
            .await;
        assert!(reply.get("result").is_some(), "{reply}");
    }
    server.manager().recalculate();
    // The TCP session's next request is admitted at the group's cost.
    let _line = blocking(move || {
        let reply = line.call(1, "server.ping", json!([]));
        assert!(reply.get("error").is_none(), "{reply}");
        line
    })
    .await;
    let groups = server.manager().groups();
    assert_eq!(groups.len(), 1, "one /24 for both services: {groups:?}");
    assert_eq!(groups[0].sessions, 2, "{groups:?}");
    let rows = server.manager().sessions();
    let by_kind = |kind| rows.iter().find(|row| row.kind == kind).unwrap();
    let (tcp_row, http_row) = (
        by_kind(indexer_sessions::TransportKind::Tcp),
        by_kind(indexer_sessions::TransportKind::Http),
    );
    assert!(
        http_row.cost > 5.0,
        "the HTTP requests were charged: {http_row:?}"
    );
    // The TCP session, which spent little, carries the group's cost, and is
    // throttled by it (its concurrency target is below the initial 10).
    assert!(tcp_row.cost < http_row.cost / 4.0, "{tcp_row:?} {http_row:?}");
    assert!(
        tcp_row.extra_cost > http_row.cost / 2.0,
        "the TCP session shares the HTTP session's cost: {tcp_row:?} {http_row:?}"
    );
    let target: u32 = tcp_row.flags.trim_start_matches(['T', 'L']).parse().unwrap();
    assert!(target < 10, "throttled by the group's cost: {tcp_row:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_client_is_refused_on_websocket_and_http_with_a_status() {
    let key = TestKey::from_seed([28; 32]);
    let server = start_all(&key, &["--exempt-networks", "none"]).await;
    let admin = server.admin_addr();
    blocking(move || admin_call(admin, "ban", json!(["127.0.0.0/24"]))).await;

    let http = server.addr_of(ServiceKind::Http).unwrap();
    let mut stream = BufReader::new(TcpStream::connect(http).await.unwrap());
    let (status, body) = http_request(&mut stream, http, "GET", "/v1/server.ping", b"").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("banned"), "{body}");

    let ws = server.addr_of(ServiceKind::Ws).unwrap();
    let tcp = TcpStream::connect(ws).await.unwrap();
    let refused = tokio_tungstenite::client_async(format!("ws://localhost:{}/", ws.port()), tcp).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 403);
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    assert_eq!(server.manager().session_count(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_that_never_comes_is_closed_without_a_session() {
    let key = TestKey::from_seed([29; 32]);
    let server = {
        let cli::Command::Run(options) = cli::parse([
            "--admin",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--pay-to",
            &format!("{}:1", key.address()),
        ])
        .unwrap() else {
            panic!()
        };
        let mut options = *options;
        options.log = false;
        options.handshake_timeout = Duration::from_millis(300);
        server::start(options).await.unwrap()
    };
    let ws = server.addr_of(ServiceKind::Ws).unwrap();
    let started = Instant::now();
    let mut silent = TcpStream::connect(ws).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(TIMEOUT, silent.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.manager().session_count(), 0);
    // A client that does upgrade is served.
    let mut rpc = Rpc::ws(ws, None).await;
    let version = rpc.call(0, "server.version", json!(["late", "1.4"])).await;
    assert_eq!(version["result"][1], "1.4", "{version}");
    assert_eq!(server.manager().session_count(), 1);
    server.shutdown().await;
}

#[test]
fn services_are_given_as_electrumx_lists_them_or_by_flags() {
    let env = |list: &'static str| move |name: &str| (name == "SERVICES").then(|| list.into());
    let parse = |args: &[&str], list: &'static str| match cli::parse_with_env(args.iter().copied(), env(list))
    {
        Ok(cli::Command::Run(options)) => Ok(*options),
        Ok(cli::Command::Help) => panic!("help"),
        Err(error) => Err(error),
    };
    let service = |kind, addr: &str| Service {
        kind,
        addr: addr.parse().unwrap(),
    };
    let options = parse(
        &[],
        "tcp://127.0.0.1:50001, ssl://:50002,ws://localhost:50003,wss://[::1]:50004,http://10.0.0.1:8080,rpc://127.0.0.1:8001",
    )
    .unwrap();
    assert_eq!(
        options.services,
        vec![
            service(ServiceKind::Tcp, "127.0.0.1:50001"),
            service(ServiceKind::Ssl, "0.0.0.0:50002"),
            service(ServiceKind::Ws, "127.0.0.1:50003"),
            service(ServiceKind::Wss, "[::1]:50004"),
            service(ServiceKind::Http, "10.0.0.1:8080"),
        ]
    );
    assert_eq!(options.admin, "127.0.0.1:8001".parse().unwrap());
    // The flags add to the list; --admin wins over rpc://.
    let options = parse(
        &["--http", "127.0.0.1:8081", "--admin", "127.0.0.1:9"],
        "tcp://127.0.0.1:1,rpc://127.0.0.1:8001",
    )
    .unwrap();
    assert_eq!(
        options.services,
        vec![
            service(ServiceKind::Tcp, "127.0.0.1:1"),
            service(ServiceKind::Http, "127.0.0.1:8081")
        ]
    );
    assert_eq!(options.admin, "127.0.0.1:9".parse().unwrap());
    // Repeated flags.
    let options = parse(&["--ws", "127.0.0.1:1", "--ws", "127.0.0.1:2"], "").unwrap();
    assert_eq!(
        options.services,
        vec![
            service(ServiceKind::Ws, "127.0.0.1:1"),
            service(ServiceKind::Ws, "127.0.0.1:2")
        ]
    );
    // Clear refusals.
    for (list, expected) in [
        ("ftp://127.0.0.1:1", "unknown protocol \"ftp\""),
        ("tcp://127.0.0.1", "expected HOST:PORT"),
        ("tcp://example.com:1", "is not an IP address"),
        ("127.0.0.1:50001", "is not PROTOCOL://HOST:PORT"),
        ("rpc://", "names no Electrum service"),
    ] {
        let error = parse(&[], list).unwrap_err();
        assert!(error.contains(expected), "{list}: {error}");
        assert!(
            error.contains("SERVICES") || error.contains("--services"),
            "{error}"
        );
    }
    assert!(matches!(
        crate::services::parse_list("tcp://:1,rpc://"),
        Ok(entries) if entries == vec![Entry::Service(service(ServiceKind::Tcp, "0.0.0.0:1")), Entry::Rpc(None)]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_calls_the_server_over_websocket_and_http_in_chromium() {
    let key = TestKey::from_seed([30; 32]);
    let server = start_all(&key, &[]).await;
    let ws = server.addr_of(ServiceKind::Ws).unwrap();
    let http = server.addr_of(ServiceKind::Http).unwrap();
    let dir = std::env::temp_dir().join(format!("indexer-sessions-web-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("profile")).unwrap();
    // A page as a web wallet would be: a WebSocket for subscriptions, and
    // HTTP for one-off calls (the POST with a JSON content type is
    // preceded by a CORS preflight). When all three have answered (or
    // after 30 s, with what it has), it reports what it shows: a WebSocket
    // reply does not hold Chromium's virtual time, so waiting for a fixed
    // budget and dumping the DOM can come too early.
    let report = crate::support::PageReport::bind();
    let report_addr = report.addr();
    let page = format!(
        r#"<!doctype html><html><body>
<pre id="ws">pending</pre><pre id="get">pending</pre><pre id="post">pending</pre>
<script>
let reported = false;
const report = () => {{
  if (reported) return;
  reported = true;
  const text = (id) => document.getElementById(id).textContent;
  fetch("http://{report_addr}/", {{method: "POST", mode: "no-cors", body: ["ws", "get", "post"].map(text).join("\n")}});
}};
const show = (id, text) => {{
  document.getElementById(id).textContent = text;
  if (["ws", "get", "post"].every((id) => document.getElementById(id).textContent !== "pending")) report();
}};
setTimeout(report, 30000);
const socket = new WebSocket("ws://{ws}/");
socket.onopen = () => {{
  socket.send(JSON.stringify({{jsonrpc: "2.0", id: 1, method: "server.version", params: ["browser", "1.4"]}}));
  socket.send(JSON.stringify({{jsonrpc: "2.0", id: 2, method: "blockchain.headers.subscribe", params: []}}));
}};
socket.onmessage = (event) => {{
  const message = JSON.parse(event.data);
  if (message.id === 2) show("ws", "height " + message.result.height);
}};
socket.onerror = () => show("ws", "error");
fetch("http://{http}/v1/blockchain.headers.subscribe")
  .then((response) => response.json())
  .then((message) => show("get", "height " + message.result.height))
  .catch((error) => show("get", "error " + error));
fetch("http://{http}/", {{
  method: "POST",
  headers: {{"Content-Type": "application/json"}},
  body: JSON.stringify({{jsonrpc: "2.0", id: 7, method: "server.ping", params: []}}),
}})
  .then((response) => response.json())
  .then((message) => show("post", "id " + message.id + " result " + message.result))
  .catch((error) => show("post", "error " + error));
</script></body></html>"#
    );
    let file = dir.join("wallet.html");
    std::fs::write(&file, page).unwrap();
    let chromium =
        crate::support::chromium_running(&format!("file://{}", file.display()), &dir.join("profile"));
    let chromium = Arc::new(std::sync::Mutex::new(chromium));
    let running = {
        let chromium = chromium.clone();
        move || chromium.lock().unwrap().try_wait().unwrap().is_none()
    };
    let shown = blocking(move || report.wait(Duration::from_secs(120), running)).await;
    {
        let mut chromium = chromium.lock().unwrap();
        let _ = chromium.kill();
        let _ = chromium.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let shown = shown.expect("the page reports what it shows within 120 s, before Chromium exits");
    let shown: Vec<&str> = shown.lines().collect();
    assert_eq!(shown, ["height 105", "height 105", "id 7 result null"]);
    server.shutdown().await;
}
