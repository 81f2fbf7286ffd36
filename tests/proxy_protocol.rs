//! `examples/electrum_server --proxy-protocol` behind a real HAProxy
//! (`/usr/sbin/haproxy`, which `scripts/test.sh` installs): clients from
//! different /24s reach the server through one proxy and still land in their
//! own groups, and a ban of one /24 refuses only its client. Also, on such a
//! listener, connections without a valid PROXY header get no session.
#![cfg(feature = "tokio")]

include!("support/example_server.rs");

use crate::server::ServerHandle;
use crate::support::{LineClient, TIMEOUT, admin_call, blocking};

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// The server with `--proxy-protocol`, no exempt network, and `header_timeout`
/// to wait for the header.
async fn start_proxied(header_timeout: Duration) -> ServerHandle {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--blocks",
        "1",
        "--proxy-protocol",
        // Loopback clients are grouped too, each /24 its own group.
        "--exempt-networks",
        "none",
    ];
    let cli::Command::Run(options) = cli::parse(args).expect("valid flags") else {
        panic!("not a run command");
    };
    let mut options = *options;
    assert!(options.proxy_protocol);
    options.log = false;
    options.proxy_header_timeout = header_timeout;
    server::start(options).await.expect("server starts")
}

/// An HAProxy in TCP mode on a free loopback port, relaying to one server
/// with a PROXY header; killed, and its directory removed, when dropped.
struct HaProxy {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl HaProxy {
    /// `send_proxy` is `send-proxy` (v1) or `send-proxy-v2`.
    fn start(server: SocketAddr, send_proxy: &str) -> Self {
        assert!(
            std::path::Path::new(HAPROXY).exists(),
            "{HAPROXY} is missing: install Debian's haproxy (scripts/test.sh does)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir = std::env::temp_dir().join(format!("proxy-protocol-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n    maxconn 100\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
                 frontend electrum\n    bind {addr}\n    default_backend server\n\
                 backend server\n    server electrum {server} {send_proxy}\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new(HAPROXY)
            .arg("-f")
            .arg(&config)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("haproxy starts");
        let mut proxy = HaProxy { child, dir, addr };
        proxy.wait_listening();
        proxy
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        while TcpStream::connect(self.addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("haproxy exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "haproxy does not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` on the admin table `method` until it holds or the deadline passes.
fn wait_admin(admin: SocketAddr, method: &str, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let rows = admin_call(admin, method, json!([]));
        let rows = rows.as_array().expect("an array").clone();
        if check(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "{what}: admin {method} is {rows:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn peer_ip(row: &Value) -> String {
    let peer: SocketAddr = row["peer"].as_str().unwrap().parse().unwrap();
    peer.ip().to_string()
}

/// Whether the connection is closed (end of stream or reset) before anything arrives.
fn closed(client: &mut BufReader<TcpStream>) -> bool {
    let mut line = String::new();
    match client.read_line(&mut line) {
        Ok(0) => true,
        Ok(_) => panic!("expected no reply, got {line:?}"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Err(e) => panic!("no end of stream within the read timeout: {e}"),
    }
}

async fn through_haproxy(send_proxy: &str) {
    let server = start_proxied(Duration::from_secs(5)).await;
    let admin = server.admin_addr();
    let proxy = blocking({
        let listen = server.listen_addr();
        let send_proxy = send_proxy.to_owned();
        move || HaProxy::start(listen, &send_proxy)
    })
    .await;
    let mut first = LineClient::connect_from("127.0.1.5", proxy.addr).await;
    let mut second = LineClient::connect_from("127.0.2.6", proxy.addr).await;
    let (mut first, mut second) = blocking(move || {
        first.version();
        second.version();
        (first, second)
    })
    .await;

    let mut second = blocking(move || {
        // Each client is its own address, in its own group; not the proxy's.
        let sessions = wait_admin(admin, "sessions", "the two proxied clients", |rows| {
            let ips: Vec<String> = rows.iter().map(peer_ip).collect();
            rows.len() == 2 && ips.contains(&"127.0.1.5".to_owned()) && ips.contains(&"127.0.2.6".to_owned())
        });
        for row in &sessions {
            match peer_ip(row).as_str() {
                "127.0.1.5" => assert_eq!(row["group"], "127.0.1.0/24", "{row}"),
                "127.0.2.6" => assert_eq!(row["group"], "127.0.2.0/24", "{row}"),
                other => panic!("a session for {other}, not a proxied client: {sessions:?}"),
            }
        }
        let groups = wait_admin(admin, "groups", "one session in each /24", |rows| {
            ["127.0.1.0/24", "127.0.2.0/24"].iter().all(|name| {
                rows.iter()
                    .any(|group| group["name"] == *name && group["sessions"] == 1)
            })
        });
        let occupied: Vec<&Value> = groups
            .iter()
            .filter(|group| group["sessions"] != 0)
            .map(|group| &group["name"])
            .collect();
        assert_eq!(occupied.len(), 2, "no session in the proxy's group: {groups:?}");

        // A ban of the first /24 closes its client and refuses it again;
        // the other client is still served.
        let banned = admin_call(admin, "ban", json!(["127.0.1.0/24", 60]));
        assert_eq!(banned["disconnected"], 1, "{banned}");
        assert_eq!(first.recv(), None, "the banned client is disconnected");
        let reply = second.call(1, "server.ping", json!([]));
        assert!(reply.get("error").is_none(), "{reply}");
        second
    })
    .await;

    let again = connect_raw("127.0.1.9", proxy.addr).await;
    let fresh = LineClient::connect_from("127.0.2.10", proxy.addr).await;
    blocking(move || {
        let (mut reader, mut writer) = again;
        writer
            .write_all(b"{\"id\":1,\"method\":\"server.version\",\"params\":[\"t\",\"1.4\"]}\n")
            .unwrap();
        assert!(closed(&mut reader), "a client of the banned /24 is refused");
        let mut fresh = fresh;
        fresh.version();
        let reply = second.call(2, "server.ping", json!([]));
        assert!(reply.get("error").is_none(), "{reply}");
        let sessions = wait_admin(admin, "sessions", "no session of the banned /24", |rows| {
            rows.len() == 2 && rows.iter().all(|row| row["group"] == "127.0.2.0/24")
        });
        assert_eq!(sessions.len(), 2);
    })
    .await;
    drop(proxy);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_send_proxy_v1_clients_keep_their_addresses_groups_and_bans() {
    through_haproxy("send-proxy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_send_proxy_v2_clients_keep_their_addresses_groups_and_bans() {
    through_haproxy("send-proxy-v2").await;
}

/// A blocking connection from `source`, split into a reader and a writer.
async fn connect_raw(source: &str, addr: SocketAddr) -> (BufReader<TcpStream>, TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.expect("connects").into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    (BufReader::new(stream.try_clone().unwrap()), stream)
}

/// Connects from `source`, sends `bytes` (then ends its side if `end`), and
/// checks the server closes the connection without a reply.
async fn refused(source: &str, addr: SocketAddr, bytes: &[u8], end: bool, what: &str) {
    let (mut reader, mut writer) = connect_raw(source, addr).await;
    let bytes = bytes.to_vec();
    let what = what.to_owned();
    blocking(move || {
        writer.write_all(&bytes).unwrap();
        if end {
            writer.shutdown(std::net::Shutdown::Write).unwrap();
        }
        assert!(closed(&mut reader), "{what} is closed without a reply");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_valid_header_get_no_session() {
    let server = start_proxied(Duration::from_millis(300)).await;
    let listen = server.listen_addr();
    let admin = server.admin_addr();
    let plain = b"{\"id\":1,\"method\":\"server.version\",\"params\":[\"t\",\"1.4\"]}\n";
    refused("127.0.1.5", listen, plain, false, "a plain JSON-RPC client").await;
    refused(
        "127.0.1.6",
        listen,
        b"PROXY TCP4 192.0.2.7 198.51",
        true,
        "a truncated header",
    )
    .await;
    let malformed = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 99999\r\n{\"id\":1}\n";
    refused("127.0.1.7", listen, malformed, false, "a malformed header").await;
    let mut v2_cut = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2_cut.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c, 192, 0, 2]);
    refused("127.0.1.8", listen, &v2_cut, true, "a truncated v2 header").await;
    let started = Instant::now();
    refused("127.0.1.9", listen, b"", false, "a client that sends nothing").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after the header timeout: {:?}",
        started.elapsed()
    );
    assert!(server.manager().sessions().is_empty(), "no session was created");
    assert_eq!(server.manager().session_count(), 0);

    // The same listener serves a client that sends a header: v1 with its
    // address, v2 LOCAL with the connection's own.
    let proxied = connect_raw("127.0.1.10", listen).await;
    let local = connect_raw("127.0.3.4", listen).await;
    blocking(move || {
        let (reader, mut writer) = proxied;
        writer
            .write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 56324 50001\r\n")
            .unwrap();
        let mut client = LineClient::from_stream(writer);
        client.version();
        drop(reader);
        let (reader, mut writer) = local;
        let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        header.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        writer.write_all(&header).unwrap();
        let mut local = LineClient::from_stream(writer);
        local.version();
        drop(reader);
        let sessions = wait_admin(admin, "sessions", "both clients", |rows| rows.len() == 2);
        let mut ips: Vec<String> = sessions.iter().map(peer_ip).collect();
        ips.sort();
        assert_eq!(ips, ["127.0.3.4", "192.0.2.7"], "{sessions:?}");
        let groups: Vec<&Value> = sessions.iter().map(|row| &row["group"]).collect();
        assert!(groups.contains(&&json!("192.0.2.0/24")), "{sessions:?}");
        assert!(groups.contains(&&json!("127.0.3.0/24")), "{sessions:?}");
        (client, local)
    })
    .await;
    server.shutdown().await;
}
