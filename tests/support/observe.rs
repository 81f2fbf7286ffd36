//! Helpers shared by the example server's observability tests: a server on
//! ephemeral ports, a newline JSON client that can pick its source address,
//! the admin RPC and a one-shot HTTP GET.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

use crate::server::ServerHandle;
use crate::{cli, server};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn start(args: &[&str]) -> ServerHandle {
    let mut all = vec!["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let cli::Command::Run(options) = cli::parse(all).expect("valid flags") else {
        panic!("not a run command");
    };
    let mut options = *options;
    options.log = false;
    server::start(options).await.expect("server starts")
}

pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("client code panicked")
}

/// A newline JSON client.
pub struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        LineClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Connects from `source` (any address of 127.0.0.0/8: each /24 is its own group).
    pub async fn connect_from(source: &str, addr: SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(addr).await.expect("connects").into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        Self::from_stream(stream)
    }

    pub fn send(&mut self, message: &Value) {
        let mut bytes = serde_json::to_vec(message).unwrap();
        bytes.push(b'\n');
        self.writer.write_all(&bytes).expect("writes");
    }

    pub fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("the server sends JSON")),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    pub fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        loop {
            let message = self.recv().expect("a reply");
            if message.get("id") == Some(&json!(id)) {
                return message;
            }
        }
    }

    pub fn version(&mut self) {
        let reply = self.call(0, "server.version", json!(["observability test", "1.4"]));
        assert_eq!(reply["result"][1], "1.4", "{reply}");
    }
}

pub fn admin_call(addr: SocketAddr, method: &str, params: Value) -> Value {
    let mut client = LineClient::from_stream(TcpStream::connect(addr).unwrap());
    client.send(&json!({ "id": 1, "method": method, "params": params }));
    let reply = client.recv().expect("admin reply");
    assert!(reply.get("error").is_none(), "admin {method}: {reply}");
    reply["result"].clone()
}

/// `GET path` over HTTP/1.1; the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
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

/// Debian's Chromium (`apt-get install -y chromium`; `scripts/test.sh` installs it).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium with a fresh profile in `profile`, loading `url`;
/// `extra` adds flags (the mode: `--dump-dom`, a virtual time budget).
fn chromium(url: &str, profile: &std::path::Path, extra: &[String]) -> std::process::Child {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "this test drives headless Chromium, and {CHROMIUM} is missing: \
         run scripts/test.sh (it installs it), or `apt-get install -y chromium`"
    );
    std::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts chromium")
}

/// Headless Chromium that loads `url` with a fresh profile in `profile`,
/// runs its scripts for `virtual_ms` of virtual time (which stands still
/// while a fetch is pending, but not while a WebSocket waits), then
/// prints the DOM on stdout (piped).
pub fn chromium_dumping_dom(url: &str, profile: &std::path::Path, virtual_ms: u32) -> std::process::Child {
    chromium(
        url,
        profile,
        &["--dump-dom".into(), format!("--virtual-time-budget={virtual_ms}")],
    )
}

/// Headless Chromium that loads `url` with a fresh profile in `profile`
/// and runs it in real time until killed: for a page that reports back
/// itself (see [`PageReport`]).
pub fn chromium_running(url: &str, profile: &std::path::Path) -> std::process::Child {
    chromium(url, profile, &[])
}

/// A loopback HTTP endpoint a page POSTs its results to (a `no-cors`
/// `fetch` with a text body, so no preflight): the test waits for what
/// the page saw rather than guessing when it is done.
pub struct PageReport {
    listener: std::net::TcpListener,
}

impl PageReport {
    pub fn bind() -> PageReport {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        PageReport { listener }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// The body of the first POST, answered 204; `None` when `running`
    /// turns false or `patience` passes first.
    pub fn wait(&self, patience: Duration, mut running: impl FnMut() -> bool) -> Option<String> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(body) = Self::read_post(stream) {
                        return Some(body);
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    if !running() || std::time::Instant::now() > deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error) => panic!("accepting the page's report: {error}"),
            }
        }
    }

    /// A POST's body, or `None` for another request (a browser may open
    /// a connection it does not use).
    fn read_post(stream: TcpStream) -> Option<String> {
        stream.set_nonblocking(false).ok()?;
        stream.set_read_timeout(Some(TIMEOUT)).ok()?;
        let mut reader = BufReader::new(stream);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).ok()?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            match line.split_once(':') {
                Some((name, value)) if name.eq_ignore_ascii_case("content-length") => {
                    length = value.trim().parse().ok()?;
                }
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        let _ = reader
            .get_mut()
            .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        request_line
            .starts_with("POST ")
            .then(|| String::from_utf8_lossy(&body).into_owned())
    }
}
