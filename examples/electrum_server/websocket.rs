//! The WebSocket listeners (`ws`, `wss`): Electrum JSON-RPC in WebSocket
//! messages, one JSON-RPC message (request, notification or batch) per
//! text message, as ElectrumX serves it.
//!
//! After the upgrade handshake (within `handshake_timeout`), a bridge turns
//! each message into one line for `crate::rpc::serve_session` and each
//! line it writes back into one text message, so a WebSocket session is
//! admitted, charged, throttled and notified exactly as a TCP one. The
//! bridge holds at most [`BRIDGE_BUFFER`] bytes between the two; when a
//! client stops reading, the session's writer meets its `--max-send-delay`
//! deadline as on TCP.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::rpc::{Stream, open_session, refusal_status, refused, run_session};
use crate::server::Shared;
use crate::services::ServiceKind;

/// Bytes in flight between the WebSocket and the session, each way.
pub const BRIDGE_BUFFER: usize = 16 * 1024;

/// Upgrades `stream` to a WebSocket and serves its session until either
/// side closes.
pub async fn serve(stream: Box<dyn Stream>, client: SocketAddr, kind: ServiceKind, shared: Arc<Shared>) {
    let max = shared.options.max_recv;
    // A message may be a little longer than a line: its newline is not sent.
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let limit = shared.options.handshake_timeout;
    let send_delay = shared.options.config.limits.max_send_delay;
    // The session is asked for first, so that a refused client is told why
    // in the upgrade's reply (403 banned, 429 group full, 503 at capacity).
    let opened = open_session(client, kind.transport(), shared.clone());
    let refusal = opened
        .as_ref()
        .err()
        .map(|refusal| (refusal_status(refusal), refusal.to_string()));
    // The callback's type is tungstenite's (an `http::Response` as its error).
    #[allow(clippy::result_large_err)]
    let answer = move |_: &Request, response: Response| match refusal {
        None => Ok(response),
        Some((status, why)) => {
            let mut refused = ErrorResponse::new(Some(format!("{why}\n")));
            *refused.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Err(refused)
        }
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, answer, Some(config));
    let socket = match tokio::time::timeout(limit, upgrade).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => {
            if opened.is_ok() {
                refused(client, format!("WebSocket upgrade failed: {error}"), &shared);
            }
            return;
        }
        Err(_) => {
            refused(
                client,
                format!("WebSocket upgrade not completed within {limit:?}"),
                &shared,
            );
            return;
        }
    };
    let Ok(opened) = opened else { return };
    let (mut to_client, mut from_client) = socket.split();
    let (session_side, bridge_side) = tokio::io::duplex(BRIDGE_BUFFER);
    let (session_read, session_write) = tokio::io::split(session_side);
    let (bridge_read, mut bridge_write) = tokio::io::split(bridge_side);
    let session = run_session(opened, Box::new(session_read), Box::new(session_write));
    // Client → session: each message becomes a line. Ends when the client
    // closes (the session then answers what it was asked and ends).
    let inbound = async move {
        while let Some(Ok(message)) = from_client.next().await {
            let mut line = match message {
                Message::Text(text) => Vec::from(text.as_bytes()),
                Message::Binary(bytes) => Vec::from(&bytes[..]),
                Message::Close(_) => break,
                // Pings are answered by the WebSocket itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            // A raw newline can only be whitespace between JSON tokens
            // (inside a JSON string it must be escaped): keep the message one line.
            for byte in &mut line {
                if *byte == b'\n' || *byte == b'\r' {
                    *byte = b' ';
                }
            }
            line.push(b'\n');
            if bridge_write.write_all(&line).await.is_err() {
                break;
            }
        }
        let _ = bridge_write.shutdown().await;
    };
    // Session → client: each line becomes a text message. Ends when the
    // session ends (its writer dropped) or the client cannot be written to.
    let outbound = async move {
        let mut lines = BufReader::with_capacity(4 * 1024, bridge_read);
        let mut line = Vec::new();
        loop {
            line.clear();
            match lines.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            let Ok(text) = String::from_utf8(std::mem::take(&mut line)) else {
                break;
            };
            // A client that stops reading holds this send; past the
            // deadline the bridge gives up on it (the session has already
            // met the same deadline, or will).
            match tokio::time::timeout(send_delay, to_client.send(Message::text(text))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
        }
        let _ = to_client.close().await;
    };
    let bridge = async move {
        tokio::select! {
            () = outbound => {}
            () = async { inbound.await; std::future::pending::<()>().await } => {}
        }
    };
    tokio::join!(session, bridge);
}
