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
//! Requests are parsed by `crate::http_request` (pure and fuzzed); this
//! module moves bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::http_request::{Call, Head, HttpError, parse_head, response, translate};
use crate::rpc::{Stream, open_session, refusal_status, run_session};
use crate::server::Shared;

/// Bytes in flight between the HTTP connection and the session, each way.
const BRIDGE_BUFFER: usize = 16 * 1024;

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
