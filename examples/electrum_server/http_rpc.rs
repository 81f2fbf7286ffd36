//! The HTTP listener (`http`): Electrum JSON-RPC over HTTP/1.1.
//!
//! - `POST /` (or `/v1`) with a JSON-RPC request or batch as the body: the
//!   reply is the JSON-RPC response (`200`, `application/json`), or `204`
//!   for a notification.
//! - `GET /v1/METHOD?params=[…]` (the params URL-encoded JSON, `[]` when
//!   left out): the JSON-RPC response of that one request.
//! - `OPTIONS`: a CORS preflight answer; every reply allows any origin, so
//!   a web page may call the server.
//!
//! Each HTTP connection is one session of `TransportKind::Http` (keep-alive
//! serves many requests on it), admitted and charged like any other: its
//! requests go, as lines, through the same read loop as TCP's
//! (`crate::rpc::run_session`), so they cost what they cost on TCP and
//! count against their client's IP group. The session starts negotiated
//! and is sent no notifications (HTTP cannot push them): a client polls,
//! e.g. a `blockchain.scripthash.subscribe` answers the current status.
//! A JSON-RPC body is charged as the line it becomes, and its reply as the
//! line the session writes; requests that are not JSON-RPC (a preflight, a
//! bad request) are charged whole, and a bad request counts as an error. A refused session is
//! told why in the reply to its first request: 403 (banned), 429 (its IP
//! group is full) or 503 (the server is full or shutting down).
//!
//! [`parse_head`] and [`translate`] are pure and fuzzed; [`serve`] moves
//! bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::jsonrpc::{self, Message};
use crate::rpc::{Stream, open_session, refusal_status, run_session};
use crate::server::Shared;

/// The longest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers read from one request head.
const MAX_HEADERS: usize = 32;
/// Bytes in flight between the HTTP connection and the session, each way.
const BRIDGE_BUFFER: usize = 16 * 1024;

/// Why a request gets no JSON-RPC answer: its HTTP status and a text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request head or target is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No such path.
    #[error("not found: {0} (POST / with a JSON-RPC body, or GET /v1/METHOD?params=[...])")]
    NotFound(String),
    /// A method other than GET, POST or OPTIONS.
    #[error("method {0} not allowed (GET, POST or OPTIONS)")]
    MethodNotAllowed(String),
    /// A body without `Content-Length` (chunked bodies are not accepted).
    #[error("a request body needs Content-Length (chunked bodies are not accepted)")]
    LengthRequired,
    /// The body is longer than `--max-recv`.
    #[error("request body of {len} bytes is over the {max}-byte limit")]
    PayloadTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The request head is longer than [`MAX_HEAD`].
    #[error("request head over {MAX_HEAD} bytes")]
    HeadTooLarge,
}

impl HttpError {
    /// The HTTP status code and reason phrase.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            HttpError::BadRequest(_) => (400, "Bad Request"),
            HttpError::NotFound(_) => (404, "Not Found"),
            HttpError::MethodNotAllowed(_) => (405, "Method Not Allowed"),
            HttpError::LengthRequired => (411, "Length Required"),
            HttpError::PayloadTooLarge { .. } => (413, "Content Too Large"),
            HttpError::HeadTooLarge => (431, "Request Header Fields Too Large"),
        }
    }
}

/// A request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// `GET`, `POST`, `OPTIONS`, …
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// The body's length (`Content-Length`, 0 without it).
    pub content_length: usize,
    /// Whether the connection stays open after the reply (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// The head's length in bytes, up to and including its blank line.
    pub len: usize,
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is
/// incomplete (and within [`MAX_HEAD`]).
///
/// # Errors
/// [`HttpError`] for a malformed head, a chunked body, a body over
/// `max_body`, or a head over [`MAX_HEAD`].
pub fn parse_head(buf: &[u8], max_body: usize) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::BadRequest(format!("more than {MAX_HEADERS} headers")));
        }
        Err(error) => return Err(HttpError::BadRequest(error.to_string())),
    };
    if len > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        return Err(HttpError::BadRequest("incomplete request line".to_owned()));
    };
    let mut content_length = None;
    let mut connection = None;
    for header in request.headers.iter() {
        let value = std::str::from_utf8(header.value).map(str::trim);
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::LengthRequired);
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let length = value
                .ok()
                .and_then(|value| value.parse::<usize>().ok())
                .ok_or_else(|| HttpError::BadRequest("Content-Length is not a number".to_owned()))?;
            if content_length.is_some_and(|known| known != length) {
                return Err(HttpError::BadRequest("two different Content-Lengths".to_owned()));
            }
            content_length = Some(length);
        } else if header.name.eq_ignore_ascii_case("connection") {
            connection = value.ok().map(str::to_ascii_lowercase);
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > max_body {
        return Err(HttpError::PayloadTooLarge {
            len: content_length,
            max: max_body,
        });
    }
    let keep_alive = match connection.as_deref() {
        Some(value) if value.split(',').any(|token| token.trim() == "close") => false,
        Some(value) if value.split(',').any(|token| token.trim() == "keep-alive") => true,
        _ => version == 1,
    };
    Ok(Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        content_length,
        keep_alive,
        len,
    }))
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// A JSON-RPC message for the session: one line (newline included),
    /// and whether it has a reply (false for a notification, or a batch of
    /// notifications only).
    Rpc {
        /// The message, newline-terminated, with no other newline.
        line: Vec<u8>,
        /// Whether the session answers it.
        reply_expected: bool,
    },
    /// A CORS preflight (`OPTIONS`).
    Preflight,
    /// `GET /`: how to call the server.
    Index,
}

/// Turns a request into what it asks for.
///
/// # Errors
/// [`HttpError`] for an unknown path or method, or a `GET` whose method or
/// params cannot be read.
pub fn translate(head: &Head, body: &[u8]) -> Result<Call, HttpError> {
    let (path, query) = head.target.split_once('?').unwrap_or((&head.target, ""));
    match head.method.as_str() {
        "OPTIONS" => Ok(Call::Preflight),
        "POST" if matches!(path, "/" | "/v1" | "/v1/") => {
            let mut line = body.to_vec();
            // A raw newline can only be whitespace between JSON tokens.
            for byte in &mut line {
                if *byte == b'\n' || *byte == b'\r' {
                    *byte = b' ';
                }
            }
            let reply_expected = expects_reply(&line);
            line.push(b'\n');
            Ok(Call::Rpc { line, reply_expected })
        }
        "GET" if path == "/" => Ok(Call::Index),
        "GET" => {
            let method = path
                .strip_prefix("/v1/")
                .filter(|method| !method.is_empty())
                .ok_or_else(|| HttpError::NotFound(path.to_owned()))?;
            let method = percent_decode(method)?;
            let params = match query.split('&').find_map(|pair| pair.strip_prefix("params=")) {
                Some(params) => percent_decode(params)?,
                None => "[]".to_owned(),
            };
            let params: Box<RawValue> = serde_json::from_str(&params)
                .map_err(|error| HttpError::BadRequest(format!("params is not JSON: {error}")))?;
            if !matches!(params.get().trim_start().as_bytes().first(), Some(b'[' | b'{')) {
                return Err(HttpError::BadRequest(
                    "params must be a JSON array or object".to_owned(),
                ));
            }
            let method = serde_json::to_string(&method).expect("a string serialises");
            let mut line = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":{method},"params":{}}}"#,
                params.get()
            )
            .into_bytes();
            for byte in &mut line {
                if *byte == b'\n' || *byte == b'\r' {
                    *byte = b' ';
                }
            }
            line.push(b'\n');
            Ok(Call::Rpc {
                line,
                reply_expected: true,
            })
        }
        "POST" => Err(HttpError::NotFound(path.to_owned())),
        other => Err(HttpError::MethodNotAllowed(other.to_owned())),
    }
}

/// Whether the session answers `line`: everything but a notification, or a
/// batch made only of notifications, gets a reply (errors included).
fn expects_reply(line: &[u8]) -> bool {
    match jsonrpc::parse_line(line) {
        Message::Single(Ok(request)) => request.id.is_some(),
        Message::Batch(items) => items
            .iter()
            .any(|item| !matches!(jsonrpc::parse_request(item), Ok(request) if request.id.is_none())),
        Message::Single(Err(_)) | Message::Error(_) => true,
    }
}

/// Decodes `%XX` escapes (and `+` as a space, as forms encode it).
///
/// # Errors
/// A bad escape, or bytes that are not UTF-8.
pub fn percent_decode(text: &str) -> Result<String, HttpError> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let hex = bytes
                    .get(at + 1..at + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| HttpError::BadRequest(format!("bad %-escape at byte {at}")))?;
                decoded.push(hex);
                at += 3;
            }
            b'+' => {
                decoded.push(b' ');
                at += 1;
            }
            byte => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8(decoded).map_err(|_| HttpError::BadRequest("the target is not UTF-8".to_owned()))
}

/// A complete response: status line, headers (CORS included) and body.
pub fn response(status: (u16, &str), content_type: &str, body: &[u8], keep_alive: bool) -> Vec<u8> {
    let (code, reason) = status;
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut bytes = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Methods: GET, POST, OPTIONS\r\n\
         Access-Control-Allow-Headers: Content-Type\r\nCache-Control: no-store\r\n\
         Connection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// What `GET /` answers.
const INDEX: &str = "Electrum JSON-RPC over HTTP.\n\
POST / with a JSON-RPC request or batch as the body, or\n\
GET /v1/METHOD?params=[...] (URL-encoded JSON), e.g. /v1/blockchain.headers.subscribe\n";

/// Reads one request (head and body) into `buf`, which may already hold
/// its start (and holds what follows it afterwards). `Ok(None)` when the
/// client closed the connection between requests.
async fn read_request<R: tokio::io::AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut Vec<u8>,
    max_body: usize,
) -> Result<Option<(Head, Vec<u8>)>, HttpError> {
    let head = loop {
        if let Some(head) = parse_head(buf, max_body)? {
            break head;
        }
        let mut chunk = [0u8; 2048];
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) if buf.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(HttpError::BadRequest("connection closed mid-request".to_owned())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let end = head.len + head.content_length;
    while buf.len() < end {
        let mut chunk = vec![0u8; (end - buf.len()).min(16 * 1024)];
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(HttpError::BadRequest("connection closed mid-body".to_owned())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head.len..end].to_vec();
    buf.drain(..end);
    if buf.capacity() > 4 * 1024 && buf.len() < 1024 {
        buf.shrink_to(1024);
    }
    Ok(Some((head, body)))
}

/// Serves one HTTP connection as one session until either side closes.
pub async fn serve(stream: Box<dyn Stream>, client: SocketAddr, shared: Arc<Shared>) {
    let max_body = shared.options.max_recv;
    let (mut read, mut write) = tokio::io::split(stream);
    let mut buf = Vec::new();
    let opened = match open_session(client, indexer_sessions::TransportKind::Http, shared.clone()) {
        Ok(opened) => opened,
        Err(refusal) => {
            // Its first request is answered with the refusal, then it is closed.
            let limit = shared.options.handshake_timeout;
            let first = tokio::time::timeout(limit, read_request(&mut read, &mut buf, max_body)).await;
            if matches!(first, Ok(Ok(Some(_)))) {
                let status = (refusal_status(&refusal), "Refused");
                let text = format!("{refusal}\n");
                let reply = response(status, "text/plain; charset=utf-8", text.as_bytes(), false);
                let _ = tokio::time::timeout(limit, write.write_all(&reply)).await;
            }
            return;
        }
    };
    let session = opened.session();
    let limits = shared.options.config.limits.clone();
    let reply_limit = limits.request_timeout + limits.max_send_delay + Duration::from_secs(1);
    let (session_side, bridge_side) = tokio::io::duplex(BRIDGE_BUFFER);
    let (session_read, session_write) = tokio::io::split(session_side);
    let (bridge_read, mut bridge_write) = tokio::io::split(bridge_side);
    let running = run_session(opened, Box::new(session_read), Box::new(session_write));
    let bridge = async move {
        let mut replies = BufReader::with_capacity(4 * 1024, bridge_read);
        let mut reply = Vec::new();
        loop {
            // The next request, unless the session ends first (an idle
            // sweep, an admin disconnect, shutdown).
            let request = tokio::select! {
                request = read_request(&mut read, &mut buf, max_body) => request,
                () = ended(&mut replies) => break,
            };
            let (head, body) = match request {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(error) => {
                    session.record_received(buf.len());
                    session.record_error();
                    let text = format!("{error}\n");
                    let reply = response(
                        error.status(),
                        "text/plain; charset=utf-8",
                        text.as_bytes(),
                        false,
                    );
                    session.record_sent(reply.len());
                    let _ = write.write_all(&reply).await;
                    break;
                }
            };
            let keep_alive = head.keep_alive;
            // A JSON-RPC body is charged as the line it becomes, and its
            // reply as the line the session writes (HTTP's headers, like a
            // WebSocket's frame headers, are the transport's); anything
            // else is charged whole, both ways, here.
            let other = head.len + body.len();
            let answer = match translate(&head, &body) {
                Ok(Call::Rpc { line, reply_expected }) => {
                    if bridge_write.write_all(&line).await.is_err() {
                        break;
                    }
                    if reply_expected {
                        match tokio::time::timeout(reply_limit, next_reply(&mut replies, &mut reply)).await {
                            Ok(true) => response((200, "OK"), "application/json", &reply, keep_alive),
                            Ok(false) => break,
                            Err(_) => response(
                                (504, "Gateway Timeout"),
                                "text/plain; charset=utf-8",
                                b"no reply within the request timeout\n",
                                false,
                            ),
                        }
                    } else {
                        response((204, "No Content"), "application/json", b"", keep_alive)
                    }
                }
                Ok(Call::Preflight) => {
                    session.record_received(other);
                    response((204, "No Content"), "text/plain", b"", keep_alive)
                }
                Ok(Call::Index) => {
                    session.record_received(other);
                    response(
                        (200, "OK"),
                        "text/plain; charset=utf-8",
                        INDEX.as_bytes(),
                        keep_alive,
                    )
                }
                Err(error) => {
                    session.record_received(other);
                    session.record_error();
                    let text = format!("{error}\n");
                    response(
                        error.status(),
                        "text/plain; charset=utf-8",
                        text.as_bytes(),
                        keep_alive,
                    )
                }
            };
            if reply.is_empty() {
                session.record_sent(answer.len());
            }
            reply.clear();
            let written = tokio::time::timeout(limits.max_send_delay, write.write_all(&answer)).await;
            if !matches!(written, Ok(Ok(()))) || !keep_alive || answer.starts_with(b"HTTP/1.1 504") {
                break;
            }
        }
        let _ = write.shutdown().await;
        // Dropping the bridge's ends tells the session the client is gone.
    };
    tokio::join!(running, bridge);
}

/// Completes when the session has ended (its side of the bridge closed);
/// lines it writes meanwhile (there are none: HTTP sessions are sent no
/// notifications) are dropped.
async fn ended<R: tokio::io::AsyncBufRead + Unpin>(replies: &mut R) {
    let mut discard = Vec::new();
    loop {
        discard.clear();
        match replies.read_until(b'\n', &mut discard).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Reads the session's next reply line (without its newline) into `reply`;
/// false when the session ended first.
async fn next_reply<R: tokio::io::AsyncBufRead + Unpin>(replies: &mut R, reply: &mut Vec<u8>) -> bool {
    reply.clear();
    match replies.read_until(b'\n', reply).await {
        Ok(0) | Err(_) => false,
        Ok(_) => {
            if reply.last() == Some(&b'\n') {
                reply.pop();
            }
            true
        }
    }
}
