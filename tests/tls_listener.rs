//! The example server's TLS listener (`--tls`): a wallet (the
//! `electrum-client` crate over rustls) connects to the self-signed
//! certificate generated at start; TLS sessions are `Ssl` (`S`) sessions of
//! the same manager as TCP ones, sharing IP groups; a handshake that does
//! not complete in time never becomes a session.
#![cfg(feature = "tokio")]

include!("support/example_server.rs");

use crate::server::ServerHandle;
use crate::support::{LineClient, TIMEOUT, admin_call, blocking, start};

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bitcoin::ScriptBuf;
use electrum_client::raw_client::RawClient;
use electrum_client::{Client, ConfigBuilder, ElectrumApi};
use serde_json::json;

use crate::wallet::TestKey;

/// A wallet's connection to `addr` over TLS, not checking the certificate
/// (self-signed), as `electrum --server HOST:PORT:s` does after the user
/// accepts it.
fn tls_client(addr: SocketAddr) -> Client {
    let config = ConfigBuilder::new()
        .validate_domain(false)
        .timeout(Some(TIMEOUT))
        .retry(0)
        .build();
    Client::from_config(&format!("ssl://{addr}"), config).expect("electrum-client connects over TLS")
}

/// A server with a TLS listener whose handshakes time out after `handshake`.
async fn start_tls(handshake: Duration, args: &[&str]) -> ServerHandle {
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--tls",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    let cli::Command::Run(options) = cli::parse(all).expect("valid flags") else {
        panic!("not a run command");
    };
    let mut options = *options;
    options.log = false;
    options.handshake_timeout = handshake;
    server::start(options).await.expect("server starts")
}

/// Polls `condition` until it holds, or panics with `what` after [`TIMEOUT`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_over_tls_reads_balance_and_history_and_is_notified() {
    let key = TestKey::from_seed([7; 32]);
    let pay = format!("{}:1.5", key.address());
    let server = start(&["--blocks", "105", "--pay-to", &pay, "--tls", "127.0.0.1:0"]).await;
    let tls = server.tls_addr().expect("a TLS listener");
    assert_ne!(tls, server.listen_addr());
    let fingerprint = server.tls_fingerprint().expect("a certificate").to_owned();
    assert_eq!(fingerprint.len(), 32 * 3 - 1, "{fingerprint}");
    assert!(
        fingerprint
            .split(':')
            .all(|pair| pair.len() == 2 && pair.chars().all(|c| c.is_ascii_hexdigit())),
        "{fingerprint}"
    );
    let admin = server.admin_addr();

    let client = blocking(move || {
        let client = tls_client(tls);
        let script = ScriptBuf::from_bytes(key.script_pubkey());
        let balance = client.script_get_balance(&script).unwrap();
        assert_eq!((balance.confirmed, balance.unconfirmed), (150_000_000, 0));
        let history = client.script_get_history(&script).unwrap();
        assert_eq!(history.len(), 1, "{history:?}");
        assert!(history[0].height > 0 && history[0].height <= 105);
        let unspent = client.script_list_unspent(&script).unwrap();
        assert_eq!(unspent.len(), 1);
        assert_eq!(unspent[0].tx_hash, history[0].tx_hash);
        assert!(
            client.script_subscribe(&script).unwrap().is_some(),
            "a script with history has a status"
        );
        let tip = client.block_headers_subscribe().unwrap();
        assert_eq!(tip.height, 105);
        client
    })
    .await;

    // The session is an `Ssl` one, in the admin table too.
    let rows = server.manager().sessions();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].flags.starts_with('S'), "{}", rows[0].flags);
    let sessions = blocking(move || admin_call(admin, "sessions", json!([]))).await;
    let flags = sessions[0]["flags"].as_str().unwrap().to_owned();
    assert!(flags.starts_with('S'), "admin sessions: {sessions}");

    // A mined block is announced over TLS.
    blocking(move || admin_call(admin, "generate", json!([1]))).await;
    blocking(move || {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            client.ping().unwrap();
            if let Some(header) = client.block_headers_pop().unwrap() {
                assert_eq!(header.height, 106);
                break;
            }
            assert!(Instant::now() < deadline, "no header notification over TLS");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_by_the_handshake_timeout_without_a_session() {
    let server = start_tls(Duration::from_millis(300), &[]).await;
    let tls = server.tls_addr().unwrap();
    let started = Instant::now();
    let mut silent = TcpStream::connect(tls).unwrap();
    silent.set_read_timeout(Some(TIMEOUT)).unwrap();
    let closed = blocking(move || {
        let mut buf = [0u8; 64];
        // EOF (or a reset) once the server gives up on the handshake.
        !matches!(silent.read(&mut buf), Ok(n) if n > 0)
    })
    .await;
    let waited = started.elapsed();
    assert!(closed, "the server sent data to a client that sent no handshake");
    assert!(waited >= Duration::from_millis(250), "closed after {waited:?}");
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    assert_eq!(server.manager().session_count(), 0);

    // The listener still serves wallets that do complete it.
    let client = blocking(move || {
        let client = tls_client(tls);
        client.ping().unwrap();
        client
    })
    .await;
    assert_eq!(server.manager().session_count(), 1);
    drop(client);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_tls_clients_of_one_24_share_one_group() {
    // Loopback clients are grouped (by default they are exempt).
    let server = start_tls(Duration::from_secs(5), &["--exempt-networks", "none"]).await;
    let (tcp, tls, admin) = (
        server.listen_addr(),
        server.tls_addr().unwrap(),
        server.admin_addr(),
    );
    let mut line = LineClient::connect_from("127.0.0.1", tcp).await;
    let wallet = blocking(move || {
        line.version();
        let wallet = tls_client(tls);
        wallet.ping().unwrap();
        (line, wallet)
    })
    .await;
    eventually("both sessions", || server.manager().session_count() == 2).await;

    let sessions = blocking(move || admin_call(admin, "sessions", json!([]))).await;
    let mut kinds: Vec<char> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            assert_eq!(row["group"], "127.0.0.0/24", "{row}");
            row["flags"].as_str().unwrap().chars().next().unwrap()
        })
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ['S', 'T'], "{sessions}");
    let groups = blocking(move || admin_call(admin, "groups", json!([]))).await;
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 1, "one group: {groups:?}");
    assert_eq!(groups[0]["name"], "127.0.0.0/24");
    assert_eq!(groups[0]["sessions"], 2, "{groups:?}");
    assert!(groups[0]["cost"].as_f64().unwrap() > 0.0, "{groups:?}");
    drop(wallet);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_comes_before_the_tls_handshake() {
    let server = start_tls(Duration::from_secs(5), &["--proxy-protocol"]).await;
    let tls = server.tls_addr().unwrap();
    let client = blocking(move || {
        let mut stream = TcpStream::connect(tls).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        std::io::Write::write_all(&mut stream, b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 50002\r\n").unwrap();
        let client = RawClient::new_ssl_from_stream(tls, false, stream, None).expect("TLS after the header");
        client.ping().unwrap();
        client
    })
    .await;
    let rows = server.manager().sessions();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].peer, "203.0.113.7:40000".parse().unwrap());
    assert!(rows[0].flags.starts_with('S'), "{}", rows[0].flags);
    drop(client);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_pem_certificate_is_served_and_fingerprinted() {
    let dir = std::env::temp_dir().join(format!("tls_listener_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = start_tls(
        Duration::from_secs(5),
        &["--tls-cert", cert_arg, "--tls-key", key_arg],
    )
    .await;
    assert_eq!(
        server.tls_fingerprint(),
        Some(crate::tls::fingerprint(certified.cert.der()).as_str())
    );
    let tls = server.tls_addr().unwrap();
    blocking(move || tls_client(tls).ping().unwrap()).await;

    // A key that is not the certificate's is refused at start.
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&key, other.serialize_pem()).unwrap();
    let options = cli::parse([
        "--tls",
        "127.0.0.1:0",
        "--tls-cert",
        cert_arg,
        "--tls-key",
        key_arg,
    ])
    .unwrap();
    let cli::Command::Run(mut options) = options else {
        panic!()
    };
    options.admin = "127.0.0.1:0".parse().unwrap();
    options.log = false;
    assert!(matches!(
        server::start(*options).await,
        Err(server::StartError::Tls(_))
    ));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_flags_map_onto_the_options() {
    use crate::services::{Service, ServiceKind};
    // By default: TCP on 50001 and TLS on 50002, as wallets expect.
    let cli::Command::Run(options) = cli::parse(Vec::<&str>::new()).unwrap() else {
        panic!()
    };
    let default_services = vec![
        Service {
            kind: ServiceKind::Tcp,
            addr: "127.0.0.1:50001".parse().unwrap(),
        },
        Service {
            kind: ServiceKind::Ssl,
            addr: "127.0.0.1:50002".parse().unwrap(),
        },
    ];
    assert_eq!(options.services, default_services);
    let args = [
        "--tls",
        "127.0.0.1:50002",
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
    ];
    let cli::Command::Run(options) = cli::parse(args).unwrap() else {
        panic!()
    };
    // A listener flag replaces the defaults.
    assert_eq!(options.services, default_services[1..]);
    assert_eq!(options.tls_cert.as_deref(), Some(std::path::Path::new("c.pem")));
    assert_eq!(options.tls_key.as_deref(), Some(std::path::Path::new("k.pem")));
    // A certificate needs its key, and a TLS listener.
    assert!(cli::parse(["--tls", "127.0.0.1:50002", "--tls-cert", "c.pem"]).is_err());
    let error = cli::parse([
        "--listen",
        "127.0.0.1:50001",
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
    ])
    .unwrap_err();
    assert!(error.contains("need a TLS listener"), "{error}");
    let help = cli::help();
    for flag in ["--tls <ADDR>", "--tls-cert <PATH>", "--tls-key <PATH>"] {
        assert!(help.contains(flag), "{flag} in --help:\n{help}");
    }
}
