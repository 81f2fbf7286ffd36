//! One Electrum client connection: newline-delimited JSON-RPC 2.0 (with
//! batches), Electrum protocol 1.4 to 1.7 (see `crate::protocol`), every request admitted, charged and
//! answered through the session manager.
//!
//! Per connection ([`serve`]: after the PROXY header and the TLS handshake
//! where they apply, and for WebSocket and HTTP through their bridges to
//! newline JSON-RPC, [`serve_session`]): a session is added ([`ClientTransport`] is its
//! transport), the session's delivery future and the connection's writer
//! are spawned, and the read loop runs. Framing and the JSON-RPC envelope are
//! [`crate::jsonrpc`]'s (pure, fuzzed); ids are echoed byte for byte. Each
//! complete line is recorded (`record_received`), parsed, admitted (`admit`),
//! dispatched (the library's per-request methods charge ElectrumX's costs;
//! the rest are charged here from `indexer_sessions::cost`) and answered
//! through one bounded queue that notifications share. `server.version`
//! runs in the read loop; once it is negotiated, requests run concurrently up
//! to the session's concurrency target and may be answered out of order
//! (matched by id).
//!
//! Bounds: a reply is built within `--max-send` (a batch's replies stop
//! growing there, and the rest of the batch is answered with short errors,
//! neither admitted nor run: at most a few dozen bytes per item of a line
//! that is itself within `--max-recv`); each batch item is admitted before
//! it is parsed or run, and the batch stops at the first refusal; at most `--max-queued` bytes wait for one
//! client (one message may be larger), every write has a `--max-send-delay`
//! deadline, and a client that does not read within it is disconnected;
//! bandwidth is charged when a reply is queued, not when the client reads it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use indexer_sessions::{
    Cost, DisconnectReason, Error, ExtendedNotification, HeaderProof, Height, HistoryItem, HostError,
    Notification, OutpointStatus, OwnedPermit, PeerInfo, SessionHandle, Transport, TransportKind, TxHash,
    cost, decode_hex, encode_hex,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::jsonrpc::{
    self, BatchReply, Frame, Id, LineFramer, Message, Params, Request, RpcError, TooLarge, clip, codes,
    quote, quote_json,
};
use crate::observe;
use crate::padding::{self, Padding};
use crate::protocol::{self, Version};
use crate::server::{ServerHost, Shared};
use crate::services::ServiceKind;

/// A connection's read half: a TCP socket's, a TLS stream's, or a bridge's
/// (WebSocket, HTTP).
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// A connection's write half: a TCP socket's, a TLS stream's, or a bridge's.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// `server.version`'s software name.
pub const SERVER_SOFTWARE: &str = concat!("indexer-sessions-example ", env!("CARGO_PKG_VERSION"));
/// History entries serialised between two yields to the runtime.
const ENTRIES_PER_YIELD: usize = 1024;

// ---------------------------------------------------------------------------
// Writing

/// Why a message could not be queued: the client has not read what was
/// queued before it within `max_send_delay`, or the connection is gone.
#[derive(Debug)]
pub struct NotSent;

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client is not reading: the send queue stayed full past max_send_delay")
    }
}

impl std::error::Error for NotSent {}

/// The connection's outgoing queue, shared by replies and notifications,
/// drained by one writer task ([`Writer::run`]) with a deadline on every
/// write. Empty, it holds no buffer: an idle connection costs only the
/// struct.
pub struct Writer {
    queue: Mutex<Queue>,
    /// Signalled when a message is queued (or the writer stops).
    ready: Notify,
    /// Signalled whenever queued bytes are written (or the writer stops).
    drained: Notify,
    /// Most bytes queued at once (one message may be larger when the queue is empty).
    max_queued: usize,
    /// Deadline of each write, and of waiting for room in the queue.
    send_delay: Duration,
    /// Traffic is recorded on the session (weak: the session owns the transport that owns this).
    session: OnceLock<Weak<SessionHandle<ServerHost>>>,
    /// Whether (and how) output is padded (`--padding`).
    padding: Padding,
}

/// Messages waiting to be written.
#[derive(Default)]
struct Queue {
    messages: std::collections::VecDeque<Vec<u8>>,
    /// Bytes queued and not yet written (the one being written included).
    bytes: usize,
    /// The writer has stopped: nothing more is written.
    closed: bool,
}

impl Writer {
    fn new(max_queued: usize, send_delay: Duration, padding: Padding) -> Self {
        Writer {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            drained: Notify::new(),
            max_queued,
            send_delay,
            session: OnceLock::new(),
            padding,
        }
    }

    fn session(&self) -> Option<Arc<SessionHandle<ServerHost>>> {
        self.session.get().and_then(Weak::upgrade)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one message (newline included), waiting up to `max_send_delay`
    /// for room; charges its bandwidth to the session unless `recorded`
    /// (already charged while it was built).
    ///
    /// # Errors
    /// [`NotSent`] when the queue stayed full past the deadline, or the
    /// writer has stopped; the caller ends the connection.
    async fn enqueue(&self, bytes: Vec<u8>, recorded: bool) -> Result<(), NotSent> {
        let len = bytes.len();
        let deadline = tokio::time::Instant::now() + self.send_delay;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let mut queue = self.lock();
                if queue.closed {
                    return Err(NotSent);
                }
                if queue.bytes == 0 || queue.bytes + len <= self.max_queued {
                    queue.bytes += len;
                    queue.messages.push_back(bytes);
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return Err(NotSent);
            }
        }
        self.ready.notify_one();
        if !recorded && let Some(session) = self.session() {
            session.record_sent(len);
        }
        Ok(())
    }

    /// Waits until everything queued is written, up to `max_send_delay`;
    /// whether it was.
    async fn flushed(&self) -> bool {
        let deadline = tokio::time::Instant::now() + self.send_delay;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let queue = self.lock();
                if queue.bytes == 0 || queue.closed {
                    return queue.bytes == 0;
                }
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return self.lock().bytes == 0;
            }
        }
    }

    /// The next message to write, waiting for one until `until` (forever
    /// without); `None` when the wait ran out.
    async fn next(&self, until: Option<tokio::time::Instant>) -> Option<Vec<u8>> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut queue = self.lock();
                if let Some(bytes) = queue.messages.pop_front() {
                    if queue.messages.is_empty() && queue.messages.capacity() > 4 {
                        // A burst is over: give its slots back.
                        queue.messages = std::collections::VecDeque::new();
                    }
                    return Some(bytes);
                }
            }
            match until {
                None => ready.await,
                Some(until) => tokio::time::timeout_at(until, ready).await.ok()?,
            }
        }
    }

    /// The next bytes to write and how many queued bytes they carry: one
    /// message, or with padding past the warm-up, a padded packet of
    /// messages gathered for up to [`padding::WAIT`] since the last write
    /// (`gathered` keeps what waits for the next packet).
    async fn next_write(
        &self,
        sent: usize,
        gathered: &mut Vec<u8>,
        last_write: tokio::time::Instant,
    ) -> (Vec<u8>, usize) {
        let padded = match self.padding {
            Padding::Off => false,
            _ => sent >= padding::WARMUP,
        };
        if !padded && gathered.is_empty() {
            let bytes = self.next(None).await.unwrap_or_default();
            let len = bytes.len();
            return (bytes, len);
        }
        if self.padding == Padding::Messages {
            // Each message alone (nothing is gathered in this mode).
            let bytes = self.next(None).await.unwrap_or_default();
            let len = bytes.len();
            return match padding::next_packet(&bytes, true) {
                Some((packet, _)) => (packet, len),
                None => (bytes, len),
            };
        }
        if gathered.is_empty() {
            gathered.extend(self.next(None).await.unwrap_or_default());
        }
        let until = last_write + padding::WAIT;
        while gathered.len() < padding::MIN_PACKET {
            match self.next(Some(until)).await {
                Some(bytes) => gathered.extend(bytes),
                None => break,
            }
        }
        match padding::next_packet(gathered, false) {
            Some((packet, used)) => {
                gathered.drain(..used);
                if gathered.is_empty() {
                    *gathered = Vec::new();
                }
                (packet, used)
            }
            // Not whole messages (never, from this server): sent as they are.
            None => {
                let bytes = std::mem::take(gathered);
                let len = bytes.len();
                (bytes, len)
            }
        }
    }

    /// Writes queued messages in order, each within `max_send_delay`; a
    /// write that misses it (the client stopped reading) or fails ends the
    /// session. With padding, past the warm-up, messages are gathered
    /// into padded packets.
    async fn run(self: Arc<Self>, mut half: WriteHalf) {
        let mut sent = 0;
        let mut gathered = Vec::new();
        let mut last_write = tokio::time::Instant::now();
        let failure = loop {
            let (bytes, carried) = self.next_write(sent, &mut gathered, last_write).await;
            // TLS holds written bytes until flushed; a socket's flush does nothing.
            let write = async {
                half.write_all(&bytes).await?;
                half.flush().await
            };
            match tokio::time::timeout(self.send_delay, write).await {
                Ok(Ok(())) => {
                    sent += bytes.len();
                    last_write = tokio::time::Instant::now();
                    self.lock().bytes -= carried;
                    self.drained.notify_waiters();
                }
                Ok(Err(error)) => break DisconnectReason::TransportError(Arc::new(error)),
                Err(_) => break DisconnectReason::SendTimeout,
            }
        };
        {
            let mut queue = self.lock();
            queue.closed = true;
            queue.messages = std::collections::VecDeque::new();
        }
        self.drained.notify_waiters();
        if let Some(session) = self.session() {
            session.close(failure).await;
        }
    }
}

impl ClientTransport {
    /// Queues one JSON-RPC notification.
    async fn notify(&self, method: &str, params: Value) -> Result<(), HostError> {
        let message = json!({ "jsonrpc": "2.0", "method": method, "params": params });
        let mut bytes = serde_json::to_vec(&message).map_err(|e| Box::new(e) as HostError)?;
        bytes.push(b'\n');
        self.writer.enqueue(bytes, false).await.map_err(Into::into)
    }
}

/// An outpoint's status as protocol 1.7 writes it: `{}`, or its
/// `funder_height`, and once spent `spender_txhash` and `spender_height`.
fn outpoint_json(status: &OutpointStatus) -> Value {
    let mut json = json!({});
    if let Some(height) = status.funder_height {
        json["funder_height"] = json!(height);
        if let Some(spender) = &status.spender {
            json["spender_txhash"] = json!(spender.txid.to_hex());
            json["spender_height"] = json!(spender.height);
        }
    }
    json
}

/// The session manager's view of the connection.
pub struct ClientTransport {
    peer: PeerInfo,
    writer: Arc<Writer>,
    closed: watch::Sender<Option<DisconnectReason>>,
    shared: Weak<Shared>,
    /// Set by whoever records the session's end first: `close`, or the
    /// connection when the client hung up.
    ended: Arc<AtomicBool>,
}

#[async_trait]
impl Transport for ClientTransport {
    fn peer(&self) -> PeerInfo {
        self.peer
    }

    async fn send(&self, notification: Notification) -> Result<(), HostError> {
        if self.peer.kind == TransportKind::Http {
            // HTTP cannot push: the client polls (a subscribe answers the status).
            return Ok(());
        }
        let (method, params) = match notification {
            Notification::Header { height, header } => (
                "blockchain.headers.subscribe",
                json!([{ "hex": encode_hex(&header), "height": height.0 }]),
            ),
            Notification::ScriptHashStatus { alias, status } => {
                ("blockchain.scripthash.subscribe", json!([alias, status]))
            }
        };
        self.notify(method, params).await
    }

    async fn send_extended(&self, notification: ExtendedNotification) -> Result<(), HostError> {
        if self.peer.kind == TransportKind::Http {
            return Ok(());
        }
        let (method, params) = match notification {
            // As ElectrumX puts it on the wire: the script's scripthash,
            // under the method the client subscribed with.
            ExtendedNotification::ScriptPubKeyStatus { script, status } => {
                let hash = indexer_sessions::scripthash_of_scriptpubkey(&script)
                    .map_err(|e| Box::new(e) as HostError)?;
                ("blockchain.scriptpubkey.subscribe", json!([hash, status]))
            }
            ExtendedNotification::OutpointStatus { outpoint, status } => (
                "blockchain.outpoint.subscribe",
                json!([outpoint.txid.to_hex(), outpoint.vout, outpoint_json(&status)]),
            ),
            ExtendedNotification::Ping { padding } => ("server.ping", json!(["0".repeat(padding)])),
            // Kinds this server does not know yet are not sent.
            _ => return Ok(()),
        };
        self.notify(method, params).await
    }

    async fn close(&self, reason: DisconnectReason) {
        if let Some(shared) = self.shared.upgrade() {
            let session = self.writer.session().map(|s| s.id().0);
            if shared.options.log {
                let peer = self.peer.addr;
                let why = observe::reason_label(&reason);
                tracing::info!(%peer, session, reason = why, "disconnected: {reason}");
            }
            if !self.ended.swap(true, Ordering::Relaxed) {
                shared
                    .observer
                    .disconnected(self.peer.addr, session, Some(&reason));
            }
        }
        self.closed.send_replace(Some(reason));
    }
}

// ---------------------------------------------------------------------------
// Framing

/// [`LineFramer`] over the socket's read half.
struct FrameReader {
    reader: BufReader<ReadHalf>,
    framer: LineFramer,
}

impl FrameReader {
    /// The next frame; `None` at the end of the stream.
    ///
    /// # Cancel safety
    /// Cancel-safe: bytes are taken from the reader's buffer and pushed to
    /// the framer in one step between awaits, so a dropped call loses
    /// nothing (a partial line stays in the framer).
    async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                // End of stream: a partial last line is discarded.
                return Ok(None);
            }
            let (used, frame) = self.framer.push(buf);
            self.reader.consume(used);
            if frame.is_some() {
                return Ok(frame);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Requests

impl From<Error> for RpcError {
    fn from(error: Error) -> Self {
        RpcError::new(error.rpc_code(), error.to_string())
    }
}

/// A method's result: a JSON value, or a history (serialised straight
/// into the reply, within its limit).
enum Answer {
    Value(Value),
    History(Vec<HistoryItem>),
    /// A history as protocol 1.7 answers it: `{"history": [...]}`.
    WrappedHistory(Vec<HistoryItem>),
}

impl From<Value> for Answer {
    fn from(value: Value) -> Self {
        Answer::Value(value)
    }
}

fn u32_param(value: Option<&Value>, name: &str, default: u32) -> Result<u32, RpcError> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
            RpcError::params(format!(
                "{name} must be a non-negative integer, got {}",
                quote_json(value)
            ))
        }),
    }
}

fn str_param<'a>(value: Option<&'a Value>, name: &str) -> Result<&'a str, RpcError> {
    value
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::params(format!("{name} must be a string")))
}

fn bool_param(value: Option<&Value>, name: &str) -> Result<bool, RpcError> {
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(RpcError::params(format!(
            "{name} must be a boolean, got {}",
            quote_json(other)
        ))),
    }
}

fn txid_param(value: Option<&Value>) -> Result<TxHash, RpcError> {
    let text = str_param(value, "tx_hash")?;
    TxHash::from_hex(text).ok_or_else(|| {
        RpcError::params(format!(
            "{} is not a transaction hash (64 hex digits)",
            quote(text)
        ))
    })
}

/// A scriptPubKey (hex): its scripthash string, and the scripthash
/// (internal byte order).
fn scriptpubkey_param(value: Option<&Value>) -> Result<(String, [u8; 32]), RpcError> {
    let script = str_param(value, "scriptpubkey")?;
    let hash = indexer_sessions::scripthash_of_scriptpubkey(script)
        .map_err(|error| RpcError::params(error.to_string()))?;
    let (_, sh) = scripthash_param(Some(&Value::String(hash.clone())))?;
    Ok((hash, sh))
}

/// An output index: any integer (the library refuses one out of range).
fn index_param(value: Option<&Value>) -> Result<i64, RpcError> {
    value
        .and_then(Value::as_i64)
        .ok_or_else(|| RpcError::params("txout_idx must be an integer"))
}

/// The scripthash string, checked, and the scripthash (internal byte order).
fn scripthash_param(value: Option<&Value>) -> Result<(&str, [u8; 32]), RpcError> {
    let alias = str_param(value, "scripthash")?;
    let mut sh: [u8; 32] = decode_hex(alias)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| RpcError::params(format!("{} is not a script hash (64 hex digits)", quote(alias))))?;
    sh.reverse();
    Ok((alias, sh))
}

fn proof_json(proof: &HeaderProof) -> (Value, Value) {
    let branch: Vec<String> = proof.branch.iter().map(TxHash::to_hex).collect();
    (json!(branch), json!(proof.root.to_hex()))
}

/// A history as JSON text, refused as soon as it passes `max` bytes;
/// yields to the runtime every [`ENTRIES_PER_YIELD`] entries.
async fn history_json(items: &[HistoryItem], max: usize) -> Result<String, TooLarge> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity((items.len() * 90).min(max) + 2);
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
            if i % ENTRIES_PER_YIELD == 0 {
                tokio::task::yield_now().await;
            }
        }
        let _ = write!(
            out,
            r#"{{"tx_hash":"{}","height":{}"#,
            item.txid.to_hex(),
            item.height
        );
        if let Some(fee) = item.fee {
            let _ = write!(out, r#","fee":{fee}"#);
        }
        out.push('}');
        if out.len() >= max {
            return Err(TooLarge { limit: max });
        }
    }
    out.push(']');
    Ok(out)
}

fn response_too_large(max: usize) -> RpcError {
    RpcError::bad_request(format!("response too large (over the {max}-byte limit)"))
}

/// Runs a library call whose work can pass a millisecond (a checkpoint
/// proof hashes headers up to `cp_height`) on the blocking pool, so it never
/// holds one of the runtime's workers; the other sessions' requests go on.
///
/// # Errors
/// An internal error if the call panicked or the runtime is shutting down.
async fn off_runtime<T: Send + 'static>(
    call: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, RpcError> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || runtime.block_on(call))
        .await
        .map_err(|error| RpcError::new(codes::INTERNAL_ERROR, format!("request failed: {error}")))
}

/// `mempool.get_info`'s cost (ElectrumX's).
const MEMPOOL_INFO: Cost = Cost::constant(1.0);
/// `mempool.recent`'s cost (ElectrumX's).
const MEMPOOL_RECENT: Cost = Cost::constant(1.0);
/// Most transactions in one `testmempoolaccept` or package (Bitcoin Core's
/// package limit).
const MAX_PACKAGE: usize = 25;

/// A list of raw transactions (hex): the transactions, and the hex's total
/// length (what their cost is counted on).
fn raw_txs_param(value: Option<&Value>) -> Result<(Vec<Vec<u8>>, usize), RpcError> {
    let Some(Value::Array(items)) = value else {
        return Err(RpcError::params(
            "raw_txs must be a list of raw transactions (hex)",
        ));
    };
    if items.is_empty() || items.len() > MAX_PACKAGE {
        return Err(RpcError::params(format!(
            "raw_txs must hold 1 to {MAX_PACKAGE} transactions, got {}",
            items.len()
        )));
    }
    let mut hex_len = 0;
    let raws = items
        .iter()
        .map(|item| {
            let hex = item
                .as_str()
                .ok_or_else(|| RpcError::params("raw_txs must hold hex strings"))?;
            hex_len += hex.len();
            decode_hex(hex.trim()).ok_or_else(|| RpcError::params(format!("{} is not hex", quote(hex))))
        })
        .collect::<Result<_, _>>()?;
    Ok((raws, hex_len))
}

/// The answer to a method the negotiated version does not offer (or no
/// version does).
fn unknown_method(method: &str) -> RpcError {
    RpcError::new(
        codes::METHOD_NOT_FOUND,
        format!("unknown method {}", quote(method)),
    )
}

/// A request that may not run: what to answer, and whether to close after.
struct Refusal {
    reply: Vec<u8>,
    close: Option<DisconnectReason>,
    /// The session is gone: stop reading.
    stop: bool,
}

/// A refused admission: −101 answers and closes, −102 answers, a fatal
/// error (the session ended) stops reading.
fn refusal(error: Error, id: Option<Id<'_>>) -> Refusal {
    let close = matches!(error, Error::ExcessiveCost).then_some(DisconnectReason::ExcessiveCost);
    let stop = close.is_none() && error.is_fatal();
    Refusal {
        reply: jsonrpc::reply_error(id, &error.into()),
        close,
        stop,
    }
}

/// What running a request gave.
struct Executed {
    /// The reply (none for a notification).
    reply: Option<Vec<u8>>,
    /// The result did not fit in the byte limit.
    too_large: bool,
}

// ---------------------------------------------------------------------------
// The connection

/// One client connection.
pub struct Connection {
    shared: Arc<Shared>,
    session: Arc<SessionHandle<ServerHost>>,
    writer: Arc<Writer>,
    peer: SocketAddr,
    /// The negotiated protocol, once `server.version` succeeded.
    protocol: Mutex<Option<Version>>,
    /// Whether the session was throttled at its last admission.
    throttled: AtomicBool,
}

/// The size of a connection's read buffer. Small: a request longer than it
/// is gathered by the framer (which holds one line, up to `--max-recv`, and
/// lets it go once parsed), so an idle connection holds only this.
const READ_BUFFER: usize = 1024;

/// The buffer that reads a PROXY header (`--proxy-protocol`); bytes read
/// past the header stay in it and are read first by what follows.
const PROXY_BUFFER: usize = 512;

/// Behind a proxy (`--proxy-protocol`), the client is who the PROXY header
/// says; `None` (the refusal recorded) for a connection without a valid
/// header, which gets no session.
async fn client_addr<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<SocketAddr> {
    if !shared.options.proxy_protocol {
        return Some(peer);
    }
    match crate::proxy::read(read, shared.options.proxy_header_timeout).await {
        Ok(crate::proxy::Header::Proxied { source, .. }) => Some(source),
        Ok(crate::proxy::Header::Local) => Some(peer),
        Err(error) => {
            refused(peer, error.to_string(), shared);
            None
        }
    }
}

/// Records a connection that gets no session.
pub fn refused(peer: SocketAddr, why: String, shared: &Shared) {
    if shared.options.log {
        tracing::info!(%peer, "refused: {why}");
    }
    shared.observer.refused(peer, why);
}

/// A connection's byte stream once its client is known: the socket, or
/// the TLS stream over it.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> Stream for S {}

/// Serves one accepted connection of a `kind` listener until it closes.
///
/// With `--proxy-protocol` the PROXY header comes first, in the clear; on
/// a TLS listener (`acceptor`) the TLS handshake follows, which must
/// complete within `handshake_timeout`, else the connection is closed
/// without a session. Then the connection speaks its kind: newline JSON-RPC
/// (`tcp`, `ssl`), WebSocket (`ws`, `wss`, see `crate::websocket`) or HTTP
/// (see `crate::http_rpc`).
pub async fn serve(stream: TcpStream, kind: ServiceKind, acceptor: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let (client, stream): (SocketAddr, Box<dyn Stream>) = if shared.options.proxy_protocol {
        // Buffered: bytes read past the PROXY header belong to what follows.
        let mut stream = BufReader::with_capacity(PROXY_BUFFER, stream);
        let Some(client) = client_addr(&mut stream, peer, &shared).await else {
            return;
        };
        (client, Box::new(stream))
    } else {
        (peer, Box::new(stream))
    };
    let stream: Box<dyn Stream> = match acceptor {
        None => stream,
        Some(acceptor) => {
            let limit = shared.options.handshake_timeout;
            match tokio::time::timeout(limit, Box::pin(acceptor.accept(stream))).await {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(error)) => {
                    refused(client, format!("TLS handshake failed: {error}"), &shared);
                    return;
                }
                Err(_) => {
                    refused(
                        client,
                        format!("TLS handshake not completed within {limit:?}"),
                        &shared,
                    );
                    return;
                }
            }
        }
    };
    match kind {
        ServiceKind::Tcp | ServiceKind::Ssl => {
            let (read, write) = tokio::io::split(stream);
            serve_session(Box::new(read), Box::new(write), client, kind.transport(), shared).await;
        }
        ServiceKind::Ws | ServiceKind::Wss => {
            Box::pin(crate::websocket::serve(stream, client, kind, shared)).await
        }
        ServiceKind::Http => Box::pin(crate::http_rpc::serve(stream, client, shared)).await,
    }
}

/// A session added for a connection whose streams are not yet attached.
pub struct Opened {
    session: Arc<SessionHandle<ServerHost>>,
    writer: Arc<Writer>,
    closed: watch::Receiver<Option<DisconnectReason>>,
    ended: Arc<AtomicBool>,
    peer: SocketAddr,
    kind: TransportKind,
    shared: Arc<Shared>,
}

impl Opened {
    /// The session, for a bridge that charges bytes it handles itself.
    pub fn session(&self) -> Arc<SessionHandle<ServerHost>> {
        self.session.clone()
    }
}

/// Adds a session of `kind` for `peer`; the refusal (recorded) when the
/// manager refuses it, for the caller to tell the client as its protocol can.
pub fn open_session(
    peer: SocketAddr,
    kind: TransportKind,
    shared: Arc<Shared>,
) -> Result<Opened, indexer_sessions::Refusal> {
    let writer = Writer::new(
        shared.options.max_queued,
        shared.options.config.limits.max_send_delay,
        shared.options.padding.for_kind(kind),
    );
    let writer = Arc::new(writer);
    let (closed, closed_rx) = watch::channel(None);
    let ended = Arc::new(AtomicBool::new(false));
    let transport = ClientTransport {
        peer: PeerInfo { addr: peer, kind },
        writer: writer.clone(),
        closed,
        shared: Arc::downgrade(&shared),
        ended: ended.clone(),
    };
    let session = match shared.manager.add_session(transport) {
        Ok(session) => Arc::new(session),
        Err(refusal) => {
            refused(peer, refusal.to_string(), &shared);
            return Err(refusal);
        }
    };
    let _ = writer.session.set(Arc::downgrade(&session));
    Ok(Opened {
        session,
        writer,
        closed: closed_rx,
        ended,
        peer,
        kind,
        shared,
    })
}

/// The HTTP status that tells an HTTP or WebSocket client why its session
/// was refused: 403 for a ban, 429 for a full IP group, 503 otherwise.
pub fn refusal_status(refusal: &indexer_sessions::Refusal) -> u16 {
    match refusal {
        indexer_sessions::Refusal::Banned { .. } => 403,
        indexer_sessions::Refusal::GroupFull { .. } => 429,
        _ => 503,
    }
}

/// Serves a connection, its client known, until it closes: adds a session
/// of `kind` ([`open_session`]; a refused connection is closed) and runs it
/// ([`run_session`]).
pub async fn serve_session(
    read: ReadHalf,
    write: WriteHalf,
    peer: SocketAddr,
    kind: TransportKind,
    shared: Arc<Shared>,
) {
    // Dropping both halves of a refused connection closes it.
    if let Ok(opened) = open_session(peer, kind, shared) {
        run_session(opened, read, write).await;
    }
}

/// Runs an added session until it ends: its writer and delivery, and the
/// read loop (newline JSON-RPC from `read`, replies and notifications to
/// `write`).
///
/// An HTTP session (`TransportKind::Http`) starts negotiated (HTTP has no
/// `server.version` handshake) and is sent no notifications.
pub async fn run_session(opened: Opened, read: ReadHalf, write: WriteHalf) {
    let Opened {
        session,
        writer,
        closed: mut closed_rx,
        ended: session_ended,
        peer,
        kind,
        shared,
    } = opened;
    if shared.options.log {
        tracing::info!(%peer, session = session.id().0, "connected");
    }
    shared.observer.connected();
    let writing = tokio::spawn(writer.clone().run(write));
    let delivery = tokio::spawn(session.deliver());
    let reader = FrameReader {
        reader: BufReader::with_capacity(READ_BUFFER, read),
        framer: LineFramer::new(shared.options.max_recv),
    };
    let protocol = (kind == TransportKind::Http).then_some(protocol::HTTP);
    let connection = Arc::new(Connection {
        shared,
        session,
        writer,
        peer,
        protocol: Mutex::new(protocol),
        throttled: AtomicBool::new(false),
    });
    let mut tasks = JoinSet::new();
    let ended = tokio::select! {
        () = connection.read_loop(reader, &mut tasks) => false,
        _ = closed_rx.wait_for(Option::is_some) => true,
    };
    if !ended {
        // The client finished sending: answer what it asked, within the send deadline.
        let finish = async {
            while tasks.join_next().await.is_some() {}
            connection.writer.flushed().await;
        };
        let limit = connection.shared.options.config.limits.request_timeout
            + connection.shared.options.config.limits.max_send_delay;
        tokio::select! {
            _ = tokio::time::timeout(limit, finish) => {}
            _ = closed_rx.wait_for(Option::is_some) => {}
        }
    }
    if closed_rx.borrow().is_none() && connection.shared.options.log {
        let session = connection.session.id().0;
        tracing::info!(%peer, session, reason = "client_closed", "disconnected: the client closed the connection");
    }
    delivery.abort();
    writing.abort();
    tasks.shutdown().await;
    if !session_ended.swap(true, Ordering::Relaxed) {
        let session = Some(connection.session.id().0);
        connection.shared.observer.disconnected(peer, session, None);
    }
    // Dropping the last handle ends the session if the manager has not.
}

impl Connection {
    /// Counts an admitted request, and notes when the session became throttled.
    fn admitted(&self) {
        self.shared.observer.admitted();
        let target = self.session.throttle().target;
        let throttled = target < self.shared.manager.limits().initial_concurrent;
        if throttled && !self.throttled.swap(true, Ordering::Relaxed) {
            let cost = self.session.cost();
            if self.shared.options.log {
                let (peer, session) = (self.peer, self.session.id().0);
                tracing::info!(%peer, session, target, cost = cost.own, extra_cost = cost.group_extra, "throttled");
            }
            self.shared
                .observer
                .throttled(self.peer, self.session.id().0, target, cost.total());
        } else if !throttled {
            self.throttled.store(false, Ordering::Relaxed);
        }
    }

    /// `get_balance` of a scripthash (internal byte order), charged as
    /// ElectrumX charges the UTXO lookup.
    fn balance(&self, sh: &[u8; 32]) -> Value {
        let (utxos, (confirmed, unconfirmed)) = {
            let chain = self.shared.node.chain();
            (chain.utxos(sh).len(), chain.balance(sh))
        };
        self.session.charge(cost::utxo_lookup(utxos));
        json!({ "confirmed": confirmed, "unconfirmed": unconfirmed })
    }

    /// `listunspent` of a scripthash (internal byte order).
    fn unspent(&self, sh: &[u8; 32]) -> Value {
        let utxos = self.shared.node.chain().utxos(sh);
        self.session.charge(cost::utxo_lookup(utxos.len()));
        Value::Array(
            utxos
                .iter()
                .map(|utxo| {
                    json!({
                        "tx_hash": TxHash(utxo.txid).to_hex(),
                        "tx_pos": utxo.vout,
                        "height": utxo.height,
                        "value": utxo.value,
                    })
                })
                .collect(),
        )
    }

    /// `get_mempool` of a scripthash string.
    async fn mempool_json(&self, alias: &str) -> Result<Value, RpcError> {
        let items = self.session.mempool(alias).await?;
        Ok(Value::Array(
            items
                .iter()
                .map(|item| {
                    let mut entry = json!({ "tx_hash": item.txid.to_hex(), "height": item.height });
                    if let Some(fee) = item.fee {
                        entry["fee"] = json!(fee);
                    }
                    entry
                })
                .collect(),
        ))
    }

    fn negotiated(&self) -> bool {
        self.version().is_some()
    }

    /// The negotiated protocol version, once `server.version` succeeded.
    fn version(&self) -> Option<Version> {
        *self.protocol.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn max_send(&self) -> usize {
        self.shared.options.config.max_send
    }

    async fn read_loop(self: &Arc<Self>, mut reader: FrameReader, tasks: &mut JoinSet<()>) {
        loop {
            // Finished requests are reaped while waiting for the next line:
            // a finished task keeps its memory (the size of its future)
            // until it is joined, and an idle connection should hold none.
            let next = loop {
                tokio::select! {
                    biased;
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                    // Cancel-safe: a partial line stays in the framer and
                    // the bytes not yet framed in the reader's buffer.
                    next = reader.next() => break next,
                }
            };
            let frame = match next {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(error) => {
                    self.shared.log(format_args!("{} read error: {error}", self.peer));
                    return;
                }
            };
            match frame {
                Frame::TooLong(len) => {
                    self.session.record_received(len);
                    self.session.record_error();
                    let max = self.shared.options.max_recv;
                    self.shared.warn(format_args!(
                        "{} sent a {len}-byte message, over --max-recv {max}; dropped",
                        self.peer
                    ));
                    let message = format!("request of {len} bytes is over the {max}-byte limit; dropped");
                    let reply = jsonrpc::reply_error(None, &RpcError::invalid_request(message));
                    if !self.send(reply, false).await {
                        return;
                    }
                }
                Frame::Line(line) => {
                    self.session.record_received(line.len() + 1);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    if !self.handle_line(&line, tasks).await {
                        return;
                    }
                }
            }
        }
    }

    /// Handles one message; false when the connection must end.
    async fn handle_line(self: &Arc<Self>, line: &[u8], tasks: &mut JoinSet<()>) -> bool {
        match jsonrpc::parse_line(line) {
            Message::Error(error) => {
                if error.code == codes::PARSE_ERROR {
                    self.session.record_parse_error();
                } else {
                    self.session.record_error();
                }
                self.send(jsonrpc::reply_error(None, &error), false).await
            }
            Message::Batch(items) => self.handle_batch(&items).await,
            Message::Single(Err(invalid)) => {
                self.session.record_error();
                self.send(invalid.reply(), false).await
            }
            Message::Single(Ok(request)) => {
                let permit = match self.session.admit_owned().await {
                    Ok(permit) => {
                        self.admitted();
                        permit
                    }
                    Err(error) => {
                        let refusal = refusal(error, request.id);
                        return self
                            .refused(Some(refusal.reply), false, refusal.close, refusal.stop)
                            .await;
                    }
                };
                if request.method == "server.version" || !self.negotiated() {
                    // In order: nothing else is read before the version is settled.
                    // Boxed, here and below: a connection's future is as large
                    // as its largest await, and it lives as long as the
                    // connection; running a request needs far more than
                    // waiting for one.
                    let executed = Box::pin(self.execute(&request, permit, self.max_send())).await;
                    if let Some(reply) = executed.reply {
                        return self.send(reply, false).await;
                    }
                } else {
                    let connection = self.clone();
                    let max = self.max_send();
                    // Owned by the task: the id's text and the request.
                    let id = request.id.map(Id::into_owned);
                    let (method, params) = (request.method, request.params);
                    let task = async move {
                        let request = Request {
                            id: id.as_deref().and_then(Id::new),
                            method,
                            params,
                        };
                        if let Some(reply) = connection.execute(&request, permit, max).await.reply {
                            connection.send(reply, false).await;
                        }
                    };
                    tasks.spawn(task);
                }
                true
            }
        }
    }

    /// A batch: each item admitted, then parsed and run, in turn; the
    /// replies gathered within `--max-send`. Stops at the first refusal.
    async fn handle_batch(self: &Arc<Self>, items: &[&RawValue]) -> bool {
        let max = self.max_send();
        let mut batch = BatchReply::new(max);
        for item in items {
            // A batch is many requests: let other tasks run between them.
            tokio::task::yield_now().await;
            if batch.is_full() {
                // Not admitted and not run: the batch's reply is at its limit.
                match jsonrpc::parse_request(item) {
                    Ok(request) if request.id.is_none() => {}
                    Ok(request) => {
                        let error = RpcError::bad_request(format!(
                            "not run: the batch's reply reached the {max}-byte limit"
                        ));
                        self.push_sent(&mut batch, &jsonrpc::reply_error(request.id, &error));
                    }
                    Err(invalid) => {
                        self.session.record_error();
                        self.push_sent(&mut batch, &invalid.reply());
                    }
                }
                continue;
            }
            let permit = match self.session.admit_owned().await {
                Ok(permit) => {
                    self.admitted();
                    permit
                }
                Err(error) => {
                    let id = jsonrpc::parse_request(item).ok().and_then(|request| request.id);
                    let refusal = refusal(error, id);
                    self.push_sent(&mut batch, &refusal.reply);
                    return self
                        .refused(batch.finish(), true, refusal.close, refusal.stop)
                        .await;
                }
            };
            let request = match jsonrpc::parse_request(item) {
                Ok(request) => request,
                Err(invalid) => {
                    self.session.record_error();
                    self.push_sent(&mut batch, &invalid.reply());
                    continue;
                }
            };
            let executed = Box::pin(self.execute(&request, permit, batch.room())).await;
            if executed.too_large {
                batch.set_full();
            }
            if let Some(reply) = executed.reply {
                if batch.push(&reply) {
                    self.session.record_sent(reply.len());
                } else {
                    // An error reply longer than the room left (a long id).
                    self.push_sent(&mut batch, &reply);
                }
            }
        }
        match batch.finish() {
            Some(reply) => self.send(reply, true).await,
            None => true,
        }
    }

    /// Adds `reply` to `batch` past its budget, charging its bandwidth.
    fn push_sent(&self, batch: &mut BatchReply, reply: &[u8]) {
        self.session.record_sent(reply.len());
        batch.push_unbounded(reply);
    }

    /// Answers a refused admission (`recorded`: its bandwidth is already
    /// charged); false when the connection must end.
    async fn refused(
        &self,
        reply: Option<Vec<u8>>,
        recorded: bool,
        close: Option<DisconnectReason>,
        stop: bool,
    ) -> bool {
        if !stop
            && let Some(reply) = reply
            && self.writer.enqueue(reply, recorded).await.is_ok()
        {
            // The refusal reaches the client before the connection closes.
            self.writer.flushed().await;
        }
        if let Some(reason) = close {
            self.session.close(reason).await;
            return false;
        }
        !stop
    }

    /// Runs the request within the request timeout; the reply (none for a
    /// notification), built within `max` bytes (an error reply otherwise).
    async fn execute(
        &self,
        request: &Request<'_>,
        mut permit: OwnedPermit<ServerHost>,
        max: usize,
    ) -> Executed {
        let id = request.id;
        let outcome = permit.run(self.dispatch(&request.method, &request.params)).await;
        let mut too_large = false;
        let reply = match outcome {
            Ok(Ok(answer)) => {
                let built = match &answer {
                    Answer::Value(value) => jsonrpc::reply_result(id, value, max),
                    Answer::History(items) => match history_json(items, max).await {
                        Ok(text) => jsonrpc::reply_raw(id, &text, max),
                        Err(too) => Err(too),
                    },
                    Answer::WrappedHistory(items) => match history_json(items, max).await {
                        Ok(text) => jsonrpc::reply_raw(id, &format!(r#"{{"history":{text}}}"#), max),
                        Err(too) => Err(too),
                    },
                };
                built.unwrap_or_else(|too| {
                    too_large = true;
                    self.session.record_error();
                    jsonrpc::reply_error(id, &response_too_large(too.limit))
                })
            }
            Ok(Err(error)) => {
                self.session.record_error();
                jsonrpc::reply_error(id, &error)
            }
            // Timed out: already charged as an error.
            Err(busy) => jsonrpc::reply_error(id, &busy.into()),
        };
        drop(permit);
        Executed {
            reply: id.map(|_| reply),
            too_large,
        }
    }

    /// Queues a reply (charging its bandwidth unless `recorded`); false when
    /// the client is not reading and the connection must end.
    async fn send(&self, reply: Vec<u8>, recorded: bool) -> bool {
        match self.writer.enqueue(reply, recorded).await {
            Ok(()) => true,
            Err(error) => {
                self.shared.warn(format_args!("{} {error}", self.peer));
                self.session.close(DisconnectReason::SendTimeout).await;
                false
            }
        }
    }

    /// One Electrum method.
    async fn dispatch(&self, method: &str, params: &Params) -> Result<Answer, RpcError> {
        if method == "blockchain.scripthash.get_history"
            && self
                .version()
                .is_some_and(|version| protocol::offers(method, version))
        {
            let p = params.take(&["scripthash"], 1)?;
            let (alias, _) = scripthash_param(p[0])?;
            return Ok(Answer::History(self.session.history(alias).await?));
        }
        if method == "blockchain.scriptpubkey.get_history"
            && self
                .version()
                .is_some_and(|version| protocol::offers(method, version))
        {
            let p = params.take(&["scriptpubkey"], 1)?;
            let (hash, _) = scriptpubkey_param(p[0])?;
            return Ok(Answer::WrappedHistory(self.session.history(&hash).await?));
        }
        self.dispatch_value(method, params).await.map(Answer::Value)
    }

    /// Every Electrum method answered with a JSON value.
    async fn dispatch_value(&self, method: &str, params: &Params) -> Result<Value, RpcError> {
        let session = &self.session;
        let charge = |amount: Cost| session.charge(amount);
        if method == "server.version" {
            return self.server_version(params);
        }
        let Some(version) = self.version() else {
            return Err(RpcError::bad_request("the first request must be server.version"));
        };
        if !protocol::offers(method, version) {
            return Err(unknown_method(method));
        }
        match method {
            "server.ping" if version < Version(1, 7, 0) => {
                params.take(&[], 0)?;
                charge(cost::PING);
                Ok(Value::Null)
            }
            "server.ping" => {
                // 1.7: `pong_len` zeros back, and `data` (hex) to pad the request.
                let p = params.take(&["pong_len", "data"], 0)?;
                charge(cost::PING);
                let pong_len = u32_param(p[0], "pong_len", 0)? as usize;
                if let Some(data) = p[1].filter(|data| !data.is_null()) {
                    let data = str_param(Some(data), "data")?;
                    if !data.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                        return Err(RpcError::params("data must be hex"));
                    }
                }
                if pong_len > self.max_send() {
                    return Err(RpcError::bad_request("pong_len value too high"));
                }
                Ok(json!({ "data": "0".repeat(pong_len) }))
            }
            "server.banner" => {
                params.take(&[], 0)?;
                charge(cost::BANNER);
                let tip = self.shared.node.tip();
                Ok(json!(format!(
                    "{SERVER_SOFTWARE}: a regtest chain at height {} served through indexer-sessions",
                    tip.height
                )))
            }
            "server.donation_address" => {
                params.take(&[], 0)?;
                charge(cost::DONATION_ADDRESS);
                Ok(json!(""))
            }
            "server.features" => {
                params.take(&[], 0)?;
                charge(cost::FEATURES);
                let mut features = json!({
                    "genesis_hash": self.shared.genesis_hash,
                    "hosts": {},
                    "protocol_min": protocol::MIN.to_string(),
                    "protocol_max": protocol::MAX.to_string(),
                    "pruning": null,
                    "server_version": SERVER_SOFTWARE,
                });
                if version < Version(1, 7, 0) {
                    features["hash_function"] = json!("sha256");
                }
                Ok(features)
            }
            "server.peers.subscribe" => {
                params.take(&[], 0)?;
                charge(cost::PEERS_SUBSCRIBE);
                Ok(json!([]))
            }
            "blockchain.headers.subscribe" => {
                params.take(&[], 0)?;
                let (height, header) = session.subscribe_headers().await?;
                Ok(json!({ "hex": encode_hex(&header), "height": height.0 }))
            }
            "blockchain.block.header" => {
                let p = params.take(&["height", "cp_height"], 1)?;
                let height = u32_param(p[0], "height", 0)?;
                let cp_height = u32_param(p[1], "cp_height", 0)?;
                let answer = if cp_height == 0 {
                    session.block_header(Height(height), cp_height).await?
                } else {
                    let session = session.clone();
                    off_runtime(async move { session.block_header(Height(height), cp_height).await })
                        .await??
                };
                let hex = encode_hex(&answer.header);
                Ok(match answer.proof {
                    None => json!(hex),
                    Some(proof) => {
                        let (branch, root) = proof_json(&proof);
                        json!({ "branch": branch, "header": hex, "root": root })
                    }
                })
            }
            "blockchain.block.headers" => {
                let p = params.take(&["start_height", "count", "cp_height"], 2)?;
                let start = u32_param(p[0], "start_height", 0)?;
                let count = u32_param(p[1], "count", 0)?;
                let cp_height = u32_param(p[2], "cp_height", 0)?;
                let chunk = if cp_height == 0 {
                    session.block_headers(Height(start), count, cp_height).await?
                } else {
                    let session = session.clone();
                    off_runtime(async move { session.block_headers(Height(start), count, cp_height).await })
                        .await??
                };
                let mut answer = if version >= Version(1, 6, 0) {
                    // 1.6: an array of headers rather than one hex string.
                    let headers: Vec<String> = chunk.headers.chunks(80).map(encode_hex).collect();
                    json!({ "count": chunk.count, "headers": headers, "max": chunk.max })
                } else {
                    json!({ "count": chunk.count, "hex": encode_hex(&chunk.headers), "max": chunk.max })
                };
                if let Some(proof) = chunk.proof {
                    let (branch, root) = proof_json(&proof);
                    answer["branch"] = branch;
                    answer["root"] = root;
                }
                Ok(answer)
            }
            "blockchain.estimatefee" => {
                let p = params.take(&["number", "mode"], 1)?;
                let number = u32_param(p[0], "number", 0)?;
                let mode = match p[1] {
                    None | Some(Value::Null) => None,
                    Some(value) => Some(str_param(Some(value), "mode")?),
                };
                let rate = session.estimate_fee(number, mode).await?;
                Ok(json!(rate.unwrap_or(-1.0)))
            }
            "blockchain.relayfee" => {
                params.take(&[], 0)?;
                Ok(json!(session.relay_fee().await?))
            }
            "blockchain.scripthash.get_balance" => {
                let p = params.take(&["scripthash"], 1)?;
                let (_, sh) = scripthash_param(p[0])?;
                Ok(self.balance(&sh))
            }
            "blockchain.scriptpubkey.get_balance" => {
                let p = params.take(&["scriptpubkey"], 1)?;
                let (_, sh) = scriptpubkey_param(p[0])?;
                Ok(self.balance(&sh))
            }
            "blockchain.scripthash.get_mempool" => {
                let p = params.take(&["scripthash"], 1)?;
                let (alias, _) = scripthash_param(p[0])?;
                self.mempool_json(alias).await
            }
            "blockchain.scriptpubkey.get_mempool" => {
                let p = params.take(&["scriptpubkey"], 1)?;
                let (hash, _) = scriptpubkey_param(p[0])?;
                Ok(json!({ "history": self.mempool_json(&hash).await? }))
            }
            "blockchain.scripthash.listunspent" => {
                let p = params.take(&["scripthash"], 1)?;
                let (_, sh) = scripthash_param(p[0])?;
                Ok(self.unspent(&sh))
            }
            "blockchain.scriptpubkey.listunspent" => {
                let p = params.take(&["scriptpubkey"], 1)?;
                let (_, sh) = scriptpubkey_param(p[0])?;
                Ok(json!({ "utxos": self.unspent(&sh) }))
            }
            "blockchain.scriptpubkey.subscribe" => {
                let p = params.take(&["scriptpubkey"], 1)?;
                let script = str_param(p[0], "scriptpubkey")?;
                Ok(json!(session.subscribe_scriptpubkey(script).await?))
            }
            "blockchain.scriptpubkey.unsubscribe" => {
                let p = params.take(&["scriptpubkey"], 1)?;
                let script = str_param(p[0], "scriptpubkey")?;
                Ok(json!(session.unsubscribe_scriptpubkey(script)?))
            }
            "blockchain.outpoint.subscribe" | "blockchain.outpoint.get_status" => {
                let p = params.take(&["tx_hash", "txout_idx", "spk_hint"], 2)?;
                let tx_hash = str_param(p[0], "tx_hash")?;
                let index = index_param(p[1])?;
                let hint = match p[2] {
                    None | Some(Value::Null) => None,
                    Some(hint) => Some(str_param(Some(hint), "spk_hint")?),
                };
                let status = if method == "blockchain.outpoint.subscribe" {
                    session.subscribe_outpoint(tx_hash, index, hint).await?
                } else {
                    session.outpoint_status(tx_hash, index, hint).await?
                };
                Ok(outpoint_json(&status))
            }
            "blockchain.outpoint.unsubscribe" => {
                let p = params.take(&["tx_hash", "txout_idx"], 2)?;
                let tx_hash = str_param(p[0], "tx_hash")?;
                let index = index_param(p[1])?;
                Ok(json!(session.unsubscribe_outpoint(tx_hash, index)?))
            }
            "blockchain.scripthash.subscribe" => {
                let p = params.take(&["scripthash"], 1)?;
                let (alias, _) = scripthash_param(p[0])?;
                Ok(json!(session.subscribe(alias).await?))
            }
            "blockchain.scripthash.unsubscribe" => {
                let p = params.take(&["scripthash"], 1)?;
                let (alias, _) = scripthash_param(p[0])?;
                Ok(json!(session.unsubscribe(alias)?))
            }
            "blockchain.transaction.get" => {
                let p = params.take(&["tx_hash", "verbose"], 1)?;
                let txid = txid_param(p[0])?;
                if bool_param(p[1], "verbose")? {
                    return Err(RpcError::bad_request(
                        "verbose transactions are not supported by this server",
                    ));
                }
                Ok(json!(encode_hex(&session.transaction_get(txid).await?)))
            }
            "blockchain.transaction.get_merkle" => {
                let p = params.take(&["tx_hash", "height"], 2)?;
                let txid = txid_param(p[0])?;
                let height = u32_param(p[1], "height", 0)?;
                let proof = session.merkle_branch(txid, Height(height)).await?;
                let merkle: Vec<String> = proof.branch.iter().map(TxHash::to_hex).collect();
                Ok(json!({ "block_height": proof.block_height.0, "merkle": merkle, "pos": proof.pos }))
            }
            "blockchain.transaction.id_from_pos" => {
                let p = params.take(&["height", "tx_pos", "merkle"], 2)?;
                let height = u32_param(p[0], "height", 0)?;
                let pos = u32_param(p[1], "tx_pos", 0)?;
                let merkle = bool_param(p[2], "merkle")?;
                let found = session.id_from_pos(Height(height), pos as usize, merkle).await?;
                Ok(match found.branch {
                    None => json!(found.txid.to_hex()),
                    Some(branch) => {
                        let merkle: Vec<String> = branch.iter().map(TxHash::to_hex).collect();
                        json!({ "tx_hash": found.txid.to_hex(), "merkle": merkle })
                    }
                })
            }
            "blockchain.transaction.broadcast" => {
                let p = params.take(&["raw_tx"], 1)?;
                let hex = str_param(p[0], "raw_tx")?;
                let Some(raw) = decode_hex(hex.trim()) else {
                    charge(cost::broadcast(hex.len()));
                    return Err(RpcError::bad_request(
                        "the transaction was rejected: raw_tx is not hex",
                    ));
                };
                let txid = session.broadcast_transaction(&raw).await?;
                // The node's mempool changed: tell subscribers now.
                self.shared.publish().await;
                Ok(json!(txid.to_hex()))
            }
            "mempool.get_info" => {
                params.take(&[], 0)?;
                charge(MEMPOOL_INFO);
                let relay = self.shared.node.chain().relay_fee();
                // The mempool is never full, so its minimum is the relay fee.
                Ok(json!({
                    "mempoolminfee": relay,
                    "minrelaytxfee": relay,
                    "incrementalrelayfee": relay,
                }))
            }
            "mempool.recent" => {
                params.take(&[], 0)?;
                charge(MEMPOOL_RECENT);
                let recent = self.shared.node.chain().recent_mempool(10);
                Ok(Value::Array(
                    recent
                        .into_iter()
                        .map(|(txid, fee, vsize)| json!({ "txid": txid, "fee": fee, "vsize": vsize }))
                        .collect(),
                ))
            }
            "blockchain.transaction.testmempoolaccept" => {
                let p = params.take(&["raw_txs"], 1)?;
                let (raws, hex_len) = raw_txs_param(p[0])?;
                charge(cost::broadcast(hex_len));
                let results = self.shared.node.chain().test_accept(&raws);
                Ok(Value::Array(
                    results
                        .into_iter()
                        .map(|(txid, wtxid, result)| {
                            let mut item = json!({ "txid": txid, "wtxid": wtxid, "allowed": result.is_ok() });
                            if let Err(error) = result {
                                item["reason"] = json!(error.rejection());
                            }
                            item
                        })
                        .collect(),
                ))
            }
            "blockchain.transaction.broadcast_package" => {
                let p = params.take(&["raw_txs", "verbose"], 1)?;
                let (raws, hex_len) = raw_txs_param(p[0])?;
                charge(cost::broadcast(hex_len));
                if bool_param(p[1], "verbose")? {
                    return Err(RpcError::bad_request(
                        "verbose package results are not supported by this server",
                    ));
                }
                let failures = self.shared.node.accept_package(&raws).map_err(|error| {
                    RpcError::bad_request(format!(
                        "the tx package was rejected by network rules.\n\n{error}."
                    ))
                })?;
                if failures.is_empty() {
                    // The node's mempool changed: tell subscribers now.
                    self.shared.publish().await;
                    return Ok(json!({ "success": true }));
                }
                let errors: Vec<Value> = failures
                    .into_iter()
                    .map(|(txid, error)| json!({ "txid": txid, "error": error }))
                    .collect();
                Ok(json!({ "success": false, "errors": errors }))
            }
            "mempool.get_fee_histogram" => {
                params.take(&[], 0)?;
                let histogram = session.fee_histogram().await?;
                Ok(json!(
                    histogram
                        .iter()
                        .map(|(rate, vsize)| json!([rate, vsize]))
                        .collect::<Vec<_>>()
                ))
            }
            other => Err(unknown_method(other)),
        }
    }

    /// `server.version(client_name, protocol_version)`: negotiates 1.4.
    fn server_version(&self, params: &Params) -> Result<Value, RpcError> {
        let p = params.take(&["client_name", "protocol_version"], 0)?;
        self.session.charge(cost::SERVER_VERSION);
        if self.negotiated() {
            return Err(RpcError::bad_request("server.version already sent"));
        }
        let client = match p[0] {
            None | Some(Value::Null) => "",
            Some(value) => str_param(Some(value), "client_name")?,
        };
        // Kept for the admin tables: a bounded prefix, as ElectrumX.
        let client = clip(client, jsonrpc::MAX_CLIENT_NAME_CHARS);
        let (min, max) = match p[1] {
            // No version: the oldest served.
            None | Some(Value::Null) => (protocol::MIN.to_string(), protocol::MIN.to_string()),
            Some(Value::String(v)) => (v.clone(), v.clone()),
            Some(Value::Array(range)) if range.len() == 2 && range.iter().all(Value::is_string) => (
                range[0].as_str().unwrap_or_default().to_owned(),
                range[1].as_str().unwrap_or_default().to_owned(),
            ),
            Some(other) => {
                return Err(RpcError::params(format!(
                    "protocol_version must be a version string or [min, max], got {}",
                    quote_json(other)
                )));
            }
        };
        let (Some(low), Some(high)) = (Version::parse(&min), Version::parse(&max)) else {
            return Err(RpcError::params(format!(
                "unparsable protocol version {} / {}",
                quote(&min),
                quote(&max)
            )));
        };
        let Some(version) = protocol::negotiate(low, high) else {
            return Err(RpcError::bad_request(format!(
                "unsupported protocol version: {}..{} (this server speaks {}..{})",
                quote(&min),
                quote(&max),
                protocol::MIN,
                protocol::MAX
            )));
        };
        let text = version.to_string();
        self.session.set_client(&client, &text);
        // 1.7 clients get noise pings (when the manager has a noise policy).
        self.session.set_noise(version >= Version(1, 7, 0));
        *self.protocol.lock().unwrap_or_else(|p| p.into_inner()) = Some(version);
        Ok(json!([SERVER_SOFTWARE, text]))
    }
}
