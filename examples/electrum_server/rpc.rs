//! One Electrum client connection: newline-delimited JSON-RPC 2.0 (with
//! batches), Electrum protocol 1.4, every request admitted, charged and
//! answered through the session manager.
//!
//! Per connection: [`serve`] adds a session ([`TcpTransport`] is its
//! transport), spawns the session's delivery future, and runs the read loop.
//! Each complete line is recorded (`record_received`), parsed, admitted
//! (`admit`), dispatched (the library's per-request methods charge
//! ElectrumX's costs; the rest are charged here from
//! `indexer_sessions::cost`) and answered through one writer that
//! notifications share. `server.version` runs in the read loop; once it is
//! negotiated, requests run concurrently up to the session's concurrency
//! target and may be answered out of order (matched by id).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_trait::async_trait;
use indexer_sessions::{
    DisconnectReason, Error, HeaderProof, Height, HistoryItem, HostError, Notification, PeerInfo, Permit,
    SessionHandle, Transport, TransportKind, TxHash, codes, cost, decode_hex, encode_hex,
};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::server::Shared;

/// The only protocol version served.
pub const PROTOCOL_VERSION: &str = "1.4";
/// `server.version`'s software name.
pub const SERVER_SOFTWARE: &str = concat!("indexer-sessions-example ", env!("CARGO_PKG_VERSION"));

// ---------------------------------------------------------------------------
// Writing

/// The socket's write half, shared by replies and notifications.
pub struct Writer {
    half: tokio::sync::Mutex<OwnedWriteHalf>,
    /// Traffic is recorded on the session (weak: the session owns the transport that owns this).
    session: OnceLock<Weak<SessionHandle>>,
}

impl Writer {
    fn new(half: OwnedWriteHalf) -> Self {
        Writer {
            half: tokio::sync::Mutex::new(half),
            session: OnceLock::new(),
        }
    }

    /// Writes one JSON message and its newline; records the bytes sent.
    async fn write(&self, message: &Value) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(message).expect("JSON values serialise");
        bytes.push(b'\n');
        self.write_bytes(bytes).await
    }

    async fn write_bytes(&self, bytes: Vec<u8>) -> std::io::Result<()> {
        self.half.lock().await.write_all(&bytes).await?;
        if let Some(session) = self.session.get().and_then(Weak::upgrade) {
            session.record_sent(bytes.len());
        }
        Ok(())
    }
}

/// The session manager's view of the connection.
pub struct TcpTransport {
    peer: PeerInfo,
    writer: Arc<Writer>,
    closed: watch::Sender<Option<DisconnectReason>>,
    shared: Weak<Shared>,
}

#[async_trait]
impl Transport for TcpTransport {
    fn peer(&self) -> PeerInfo {
        self.peer
    }

    async fn send(&self, notification: Notification) -> Result<(), HostError> {
        let (method, params) = match notification {
            Notification::Header { height, header } => (
                "blockchain.headers.subscribe",
                json!([{ "hex": encode_hex(&header), "height": height.0 }]),
            ),
            Notification::ScriptHashStatus { alias, status } => {
                ("blockchain.scripthash.subscribe", json!([alias, status]))
            }
        };
        let message = json!({ "jsonrpc": "2.0", "method": method, "params": params });
        self.writer.write(&message).await.map_err(Into::into)
    }

    async fn close(&self, reason: DisconnectReason) {
        if let Some(shared) = self.shared.upgrade() {
            shared.log(format_args!("{} disconnected: {reason}", self.peer.addr));
        }
        self.closed.send_replace(Some(reason));
    }
}

// ---------------------------------------------------------------------------
// Framing

enum Frame {
    /// A complete line, without its newline.
    Line(Vec<u8>),
    /// A line over the limit, dropped; its length.
    TooLong(usize),
}

/// Splits the byte stream at newlines, dropping lines over `max` bytes
/// without buffering them and resynchronising at the next newline.
struct FrameReader {
    reader: BufReader<OwnedReadHalf>,
    max: usize,
}

impl FrameReader {
    async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        let mut line = Vec::new();
        let mut dropped: Option<usize> = None;
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                // End of stream: a partial last line is discarded.
                return Ok(None);
            }
            let (chunk, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(pos) => (&buf[..pos], Some(pos + 1)),
                None => (buf, None),
            };
            match &mut dropped {
                Some(len) => *len += chunk.len(),
                None if line.len() + chunk.len() > self.max => {
                    dropped = Some(line.len() + chunk.len());
                    line = Vec::new();
                }
                None => line.extend_from_slice(chunk),
            }
            let used = complete.unwrap_or(buf.len());
            self.reader.consume(used);
            if complete.is_some() {
                return Ok(Some(match dropped {
                    Some(len) => Frame::TooLong(len),
                    None => Frame::Line(line),
                }));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Requests

/// A JSON-RPC error to answer with.
#[derive(Debug)]
pub struct RpcError {
    code: i32,
    message: String,
}

impl RpcError {
    fn new(code: i32, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    fn params(message: impl Into<String>) -> Self {
        RpcError::new(codes::INVALID_PARAMS, message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        RpcError::new(codes::BAD_REQUEST, message)
    }
}

impl From<Error> for RpcError {
    fn from(error: Error) -> Self {
        RpcError::new(error.rpc_code(), error.to_string())
    }
}

fn error_response(id: Value, code: i32, message: impl Into<String>) -> Value {
    json!({ "jsonrpc": "2.0", "error": { "code": code, "message": message.into() }, "id": id })
}

/// Positional or named parameters.
enum Params {
    Positional(Vec<Value>),
    Named(Map<String, Value>),
}

impl Params {
    /// The parameters in `names` order, checking the count: the first
    /// `required` must be present, and nothing beyond `names` may be.
    fn take<'a>(&'a self, names: &[&str], required: usize) -> Result<Vec<Option<&'a Value>>, RpcError> {
        let describe = || {
            let list: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    if i < required {
                        (*n).to_owned()
                    } else {
                        format!("[{n}]")
                    }
                })
                .collect();
            if list.is_empty() {
                "no parameters".to_owned()
            } else {
                format!("parameters ({})", list.join(", "))
            }
        };
        match self {
            Params::Positional(values) => {
                if values.len() < required || values.len() > names.len() {
                    return Err(RpcError::params(format!(
                        "expected {}, got {} positional",
                        describe(),
                        values.len()
                    )));
                }
                Ok((0..names.len()).map(|i| values.get(i)).collect())
            }
            Params::Named(map) => {
                if let Some(unknown) = map.keys().find(|k| !names.contains(&k.as_str())) {
                    return Err(RpcError::params(format!(
                        "unknown parameter {unknown:?}; expected {}",
                        describe()
                    )));
                }
                let values: Vec<_> = names.iter().map(|n| map.get(*n)).collect();
                if let Some(missing) = names[..required].iter().zip(&values).find(|(_, v)| v.is_none()) {
                    return Err(RpcError::params(format!(
                        "missing parameter {:?}; expected {}",
                        missing.0,
                        describe()
                    )));
                }
                Ok(values)
            }
        }
    }
}

fn u32_param(value: Option<&Value>, name: &str, default: u32) -> Result<u32, RpcError> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| RpcError::params(format!("{name} must be a non-negative integer, got {value}"))),
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
        Some(other) => Err(RpcError::params(format!("{name} must be a boolean, got {other}"))),
    }
}

fn txid_param(value: Option<&Value>) -> Result<TxHash, RpcError> {
    let text = str_param(value, "tx_hash")?;
    TxHash::from_hex(text)
        .ok_or_else(|| RpcError::params(format!("{text:?} is not a transaction hash (64 hex digits)")))
}

/// The scripthash string, checked, and the scripthash (internal byte order).
fn scripthash_param(value: Option<&Value>) -> Result<(&str, [u8; 32]), RpcError> {
    let alias = str_param(value, "scripthash")?;
    let mut sh: [u8; 32] = decode_hex(alias)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| RpcError::params(format!("{alias:?} is not a script hash (64 hex digits)")))?;
    sh.reverse();
    Ok((alias, sh))
}

fn proof_json(proof: &HeaderProof) -> (Value, Value) {
    let branch: Vec<String> = proof.branch.iter().map(TxHash::to_hex).collect();
    (json!(branch), json!(proof.root.to_hex()))
}

fn history_json(items: &[HistoryItem]) -> Value {
    Value::Array(
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
    )
}

/// Parses a version string such as `1.4` or `1.4.2` for comparison.
fn version(text: &str) -> Option<Vec<u32>> {
    text.split('.').map(|part| part.parse().ok()).collect()
}

/// A request taken apart.
struct Call {
    /// `None` for a notification (no reply).
    id: Option<Value>,
    method: String,
    params: Params,
}

/// A request that may not run: what to answer, and whether to close after.
struct Refusal {
    response: Value,
    close: Option<DisconnectReason>,
    /// The session is gone: stop reading.
    stop: bool,
}

// ---------------------------------------------------------------------------
// The connection

/// One client connection.
pub struct Connection {
    shared: Arc<Shared>,
    session: Arc<SessionHandle>,
    writer: Arc<Writer>,
    peer: SocketAddr,
    /// The negotiated protocol, once `server.version` succeeded.
    protocol: Mutex<Option<String>>,
}

/// Serves one accepted connection until it closes.
pub async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let writer = Arc::new(Writer::new(write));
    let (closed, mut closed_rx) = watch::channel(None);
    let transport = TcpTransport {
        peer: PeerInfo {
            addr: peer,
            kind: TransportKind::Tcp,
        },
        writer: writer.clone(),
        closed,
        shared: Arc::downgrade(&shared),
    };
    let session = match shared.manager.add_session(transport) {
        Ok(session) => Arc::new(session),
        Err(error) => {
            // Dropping both halves closes the socket.
            shared.log(format_args!("{peer} refused: {error}"));
            return;
        }
    };
    let _ = writer.session.set(Arc::downgrade(&session));
    shared.log(format_args!("{peer} connected: session {}", session.id()));
    let delivery = tokio::spawn(session.deliver());
    let reader = FrameReader {
        reader: BufReader::with_capacity(64 * 1024, read),
        max: shared.options.max_recv,
    };
    let connection = Arc::new(Connection {
        shared,
        session,
        writer,
        peer,
        protocol: Mutex::new(None),
    });
    let mut tasks = JoinSet::new();
    tokio::select! {
        () = connection.read_loop(reader, &mut tasks) => {}
        _ = closed_rx.wait_for(Option::is_some) => {}
    }
    if closed_rx.borrow().is_none() {
        connection.shared.log(format_args!(
            "{peer} disconnected: the client closed the connection"
        ));
    }
    delivery.abort();
    tasks.shutdown().await;
    // Dropping the last handle ends the session if the manager has not.
}

impl Connection {
    fn negotiated(&self) -> bool {
        self.protocol.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    async fn read_loop(self: &Arc<Self>, mut reader: FrameReader, tasks: &mut JoinSet<()>) {
        loop {
            while tasks.try_join_next().is_some() {}
            let frame = match reader.next().await {
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
                    self.shared.log(format_args!(
                        "warning: {} sent a {len}-byte message, over --max-recv {max}; dropped",
                        self.peer
                    ));
                    let message = format!("request of {len} bytes is over the {max}-byte limit; dropped");
                    self.send(error_response(Value::Null, codes::INVALID_REQUEST, message))
                        .await;
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
        let message: Value = match serde_json::from_slice(line) {
            Ok(message) => message,
            Err(error) => {
                self.session.record_parse_error();
                let message = format!("invalid JSON: {error}");
                self.send(error_response(Value::Null, codes::PARSE_ERROR, message))
                    .await;
                return true;
            }
        };
        match message {
            Value::Array(items) => self.handle_batch(items).await,
            message => {
                let call = match self.prepare(message) {
                    Ok(call) => call,
                    Err(response) => {
                        self.send(response).await;
                        return true;
                    }
                };
                let permit = match self.admit(&call).await {
                    Ok(permit) => permit,
                    Err(refusal) => {
                        return self
                            .refused(vec![refusal.response], refusal.close, refusal.stop)
                            .await;
                    }
                };
                if call.method == "server.version" || !self.negotiated() {
                    // In order: nothing else is read before the version is settled.
                    if let Some(response) = self.execute(call, permit).await {
                        self.send(response).await;
                    }
                } else {
                    let connection = self.clone();
                    tasks.spawn(async move {
                        let mut permit = permit;
                        let response = connection.execute_with(&call, &mut permit).await;
                        if let Some(response) = response {
                            connection.send(response).await;
                        }
                        // The slot is freed once the reply is written.
                        drop(permit);
                    });
                }
                true
            }
        }
    }

    /// A batch: each request admitted and run in turn, one array answered.
    async fn handle_batch(self: &Arc<Self>, items: Vec<Value>) -> bool {
        if items.is_empty() {
            self.session.record_error();
            self.send(error_response(Value::Null, codes::INVALID_REQUEST, "empty batch"))
                .await;
            return true;
        }
        let mut responses = Vec::with_capacity(items.len());
        for item in items {
            let call = match self.prepare(item) {
                Ok(call) => call,
                Err(response) => {
                    responses.push(response);
                    continue;
                }
            };
            match self.admit(&call).await {
                Ok(permit) => {
                    if let Some(response) = self.execute(call, permit).await {
                        responses.push(response);
                    }
                }
                Err(refusal) => {
                    responses.push(refusal.response);
                    if refusal.close.is_some() || refusal.stop {
                        return self.refused(responses, refusal.close, refusal.stop).await;
                    }
                }
            }
        }
        if !responses.is_empty() {
            self.send(Value::Array(responses)).await;
        }
        true
    }

    /// Answers a refused admission; false when the connection must end.
    async fn refused(&self, mut responses: Vec<Value>, close: Option<DisconnectReason>, stop: bool) -> bool {
        if !stop {
            let message = if responses.len() == 1 {
                responses.pop().expect("one response")
            } else {
                Value::Array(responses)
            };
            self.send(message).await;
        }
        if let Some(reason) = close {
            self.session.close(reason).await;
            return false;
        }
        !stop
    }

    /// Checks the JSON-RPC envelope.
    fn prepare(&self, message: Value) -> Result<Call, Value> {
        let invalid = |message: &str| {
            self.session.record_error();
            error_response(Value::Null, codes::INVALID_REQUEST, message)
        };
        let Value::Object(mut object) = message else {
            return Err(invalid("a request must be a JSON object"));
        };
        let id = match object.remove("id") {
            None => None,
            Some(id @ (Value::Null | Value::Number(_) | Value::String(_))) => Some(id),
            Some(_) => return Err(invalid("id must be a number, a string or null")),
        };
        if object.get("jsonrpc").is_some_and(|v| v != "2.0") {
            return Err(invalid("jsonrpc must be \"2.0\""));
        }
        let Some(Value::String(method)) = object.remove("method") else {
            return Err(invalid("method must be a string"));
        };
        let params = match object.remove("params") {
            None | Some(Value::Null) => Params::Positional(Vec::new()),
            Some(Value::Array(values)) => Params::Positional(values),
            Some(Value::Object(map)) => Params::Named(map),
            Some(_) => {
                self.session.record_error();
                let id = id.unwrap_or(Value::Null);
                return Err(error_response(
                    id,
                    codes::INVALID_PARAMS,
                    "params must be an array or an object",
                ));
            }
        };
        Ok(Call { id, method, params })
    }

    /// Admission through the manager: −101 closes, −102 answers.
    async fn admit(&self, call: &Call) -> Result<Permit, Refusal> {
        let id = call.id.clone().unwrap_or(Value::Null);
        match self.session.admit().await {
            Ok(permit) => Ok(permit),
            Err(error @ Error::ExcessiveCost) => Err(Refusal {
                response: error_response(id, error.rpc_code(), error.to_string()),
                close: Some(DisconnectReason::ExcessiveCost),
                stop: false,
            }),
            Err(error) => Err(Refusal {
                response: error_response(id, error.rpc_code(), error.to_string()),
                close: None,
                stop: error.is_fatal(),
            }),
        }
    }

    async fn execute(&self, call: Call, mut permit: Permit) -> Option<Value> {
        self.execute_with(&call, &mut permit).await
    }

    /// Runs the request within the request timeout; the reply (none for a notification).
    async fn execute_with(&self, call: &Call, permit: &mut Permit) -> Option<Value> {
        let id = call.id.clone();
        let response = match permit.run(self.dispatch(&call.method, &call.params)).await {
            Ok(Ok(result)) => {
                json!({ "jsonrpc": "2.0", "result": result, "id": id.clone().unwrap_or(Value::Null) })
            }
            Ok(Err(error)) => {
                self.session.record_error();
                error_response(id.clone().unwrap_or(Value::Null), error.code, error.message)
            }
            // Timed out: already charged as an error.
            Err(busy) => error_response(
                id.clone().unwrap_or(Value::Null),
                busy.rpc_code(),
                busy.to_string(),
            ),
        };
        id.map(|_| response)
    }

    /// Writes a reply, replacing one over `--max-send` with an error.
    async fn send(&self, response: Value) {
        let mut bytes = serde_json::to_vec(&response).expect("JSON values serialise");
        let max_send = self.shared.options.config.max_send;
        if bytes.len() > max_send {
            self.session.record_error();
            let id = response.get("id").cloned().unwrap_or(Value::Null);
            let message = format!(
                "response too large ({} bytes, over the {max_send}-byte limit)",
                bytes.len()
            );
            bytes = serde_json::to_vec(&error_response(id, codes::BAD_REQUEST, message))
                .expect("JSON values serialise");
        }
        bytes.push(b'\n');
        if let Err(error) = self.writer.write_bytes(bytes).await {
            self.shared
                .log(format_args!("{} write error: {error}", self.peer));
        }
    }

    /// One Electrum method.
    async fn dispatch(&self, method: &str, params: &Params) -> Result<Value, RpcError> {
        let session = &self.session;
        let charge = |amount: f64| {
            let _ = session.charge(amount);
        };
        if method == "server.version" {
            return self.server_version(params);
        }
        if !self.negotiated() {
            return Err(RpcError::bad_request("the first request must be server.version"));
        }
        match method {
            "server.ping" => {
                params.take(&[], 0)?;
                charge(cost::PING);
                Ok(Value::Null)
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
                Ok(json!({
                    "genesis_hash": self.shared.genesis_hash,
                    "hosts": {},
                    "protocol_min": PROTOCOL_VERSION,
                    "protocol_max": PROTOCOL_VERSION,
                    "pruning": null,
                    "server_version": SERVER_SOFTWARE,
                    "hash_function": "sha256",
                }))
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
                let answer = session.block_header(Height(height), cp_height).await?;
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
                let chunk = session.block_headers(Height(start), count, cp_height).await?;
                let mut answer =
                    json!({ "count": chunk.count, "hex": encode_hex(&chunk.headers), "max": chunk.max });
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
                let (utxos, (confirmed, unconfirmed)) = {
                    let chain = self.shared.node.chain();
                    (chain.utxos(&sh).len(), chain.balance(&sh))
                };
                charge(cost::utxo_lookup(utxos));
                Ok(json!({ "confirmed": confirmed, "unconfirmed": unconfirmed }))
            }
            "blockchain.scripthash.get_history" => {
                let p = params.take(&["scripthash"], 1)?;
                let (alias, _) = scripthash_param(p[0])?;
                Ok(history_json(&session.history(alias).await?))
            }
            "blockchain.scripthash.get_mempool" => {
                let p = params.take(&["scripthash"], 1)?;
                let (alias, _) = scripthash_param(p[0])?;
                Ok(history_json(&session.mempool(alias).await?))
            }
            "blockchain.scripthash.listunspent" => {
                let p = params.take(&["scripthash"], 1)?;
                let (_, sh) = scripthash_param(p[0])?;
                let utxos = self.shared.node.chain().utxos(&sh);
                charge(cost::utxo_lookup(utxos.len()));
                Ok(Value::Array(
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
                ))
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
            other => Err(RpcError::new(
                codes::METHOD_NOT_FOUND,
                format!("unknown method {other:?}"),
            )),
        }
    }

    /// `server.version(client_name, protocol_version)`: negotiates 1.4.
    fn server_version(&self, params: &Params) -> Result<Value, RpcError> {
        let p = params.take(&["client_name", "protocol_version"], 0)?;
        let _ = self.session.charge(cost::SERVER_VERSION);
        if self.negotiated() {
            return Err(RpcError::bad_request("server.version already sent"));
        }
        let client = match p[0] {
            None | Some(Value::Null) => "",
            Some(value) => str_param(Some(value), "client_name")?,
        };
        let (min, max) = match p[1] {
            None | Some(Value::Null) => (PROTOCOL_VERSION.to_owned(), PROTOCOL_VERSION.to_owned()),
            Some(Value::String(v)) => (v.clone(), v.clone()),
            Some(Value::Array(range)) if range.len() == 2 && range.iter().all(Value::is_string) => (
                range[0].as_str().unwrap_or_default().to_owned(),
                range[1].as_str().unwrap_or_default().to_owned(),
            ),
            Some(other) => {
                return Err(RpcError::params(format!(
                    "protocol_version must be a version string or [min, max], got {other}"
                )));
            }
        };
        let (Some(low), Some(high)) = (version(&min), version(&max)) else {
            return Err(RpcError::params(format!(
                "unparsable protocol version {min:?} / {max:?}"
            )));
        };
        let ours = version(PROTOCOL_VERSION).expect("our version parses");
        if !(low <= ours && ours <= high) {
            return Err(RpcError::bad_request(format!(
                "unsupported protocol version: {min}..{max} (this server speaks {PROTOCOL_VERSION})"
            )));
        }
        self.session.set_client(client, PROTOCOL_VERSION);
        *self.protocol.lock().unwrap_or_else(|p| p.into_inner()) = Some(PROTOCOL_VERSION.to_owned());
        Ok(json!([SERVER_SOFTWARE, PROTOCOL_VERSION]))
    }
}
