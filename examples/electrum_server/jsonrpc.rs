//! The untrusted-bytes path, with no I/O and no server state: newline
//! framing ([`LineFramer`]), JSON-RPC 2.0 envelope parsing ([`parse_line`],
//! [`parse_request`]) and reply building ([`reply_result`], [`reply_error`],
//! [`BatchReply`]).
//!
//! Ids are kept as the raw JSON text the client sent and echoed byte for
//! byte (`123456789012345678901234567890123456789`, `1e2`, `-0` and string
//! escapes come back exactly as sent). Replies are bounded while they are
//! built: a result is serialised through a writer that refuses to grow past
//! the limit, and a batch stops growing at its byte budget. Error texts are
//! clipped ([`clip`], [`quote`]) so no input is echoed whole.
//!
//! This module depends only on `std` and `serde_json` (feature `raw_value`),
//! so tests and fuzz targets include it on its own.

use std::borrow::Cow;
use std::fmt::Write as _;

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// JSON-RPC 2.0 error codes used by the envelope.
pub mod codes {
    /// The line is not JSON.
    pub const PARSE_ERROR: i32 = -32700;
    /// JSON, but not a request.
    pub const INVALID_REQUEST: i32 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// Wrong parameters.
    pub const INVALID_PARAMS: i32 = -32602;
    /// The server failed (not the request's fault).
    pub const INTERNAL_ERROR: i32 = -32603;
    /// Electrum's generic "bad request" (the request is well formed but cannot be served).
    pub const BAD_REQUEST: i32 = 1;
}

/// Most characters of client input quoted in an error text (an ellipsis marks the cut).
pub const MAX_ECHO_CHARS: usize = 100;
/// Most characters of an error message as sent (messages built by the library included).
pub const MAX_ERROR_CHARS: usize = 400;
/// Most characters of a client name kept from `server.version` (as ElectrumX).
pub const MAX_CLIENT_NAME_CHARS: usize = 64;

// ---------------------------------------------------------------------------
// Framing

/// One newline-delimited message.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its newline.
    Line(Vec<u8>),
    /// A line over the limit, dropped without being buffered; its length.
    TooLong(usize),
}

/// Splits a byte stream at newlines. Holds at most `max` bytes of a partial
/// line; a longer line is dropped as it arrives and reported as
/// [`Frame::TooLong`] at its newline (the stream resynchronises there).
#[derive(Debug)]
pub struct LineFramer {
    max: usize,
    line: Vec<u8>,
    /// Length so far of a line being dropped.
    dropped: Option<usize>,
}

impl LineFramer {
    /// A framer for lines of at most `max` bytes (newline excluded).
    pub fn new(max: usize) -> Self {
        LineFramer {
            max,
            line: Vec::new(),
            dropped: None,
        }
    }

    /// Takes bytes from `input` up to and including the first newline.
    /// Returns how many bytes were used and the frame completed, if any.
    pub fn push(&mut self, input: &[u8]) -> (usize, Option<Frame>) {
        let (chunk, complete) = match input.iter().position(|&b| b == b'\n') {
            Some(pos) => (&input[..pos], Some(pos + 1)),
            None => (input, None),
        };
        match &mut self.dropped {
            Some(len) => *len = len.saturating_add(chunk.len()),
            None if self.line.len() + chunk.len() > self.max => {
                self.dropped = Some(self.line.len() + chunk.len());
                self.line = Vec::new();
            }
            None => self.line.extend_from_slice(chunk),
        }
        let Some(used) = complete else {
            return (input.len(), None);
        };
        let frame = match self.dropped.take() {
            Some(len) => Frame::TooLong(len),
            None => Frame::Line(std::mem::take(&mut self.line)),
        };
        (used, Some(frame))
    }
}

// ---------------------------------------------------------------------------
// Text bounds

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// Client input quoted for an error text: Rust-debug quoting of at most
/// [`MAX_ECHO_CHARS`] characters, with `…` when cut.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}…", &text[..end]),
    }
}

/// A JSON value quoted for an error text, bounded as [`quote`]. Strings are
/// not serialised whole first: only their first characters are looked at.
pub fn quote_json(value: &Value) -> String {
    match value {
        Value::String(text) => quote(text),
        Value::Array(items) if !items.is_empty() => format!("an array of {} items", items.len()),
        Value::Object(map) if !map.is_empty() => format!("an object of {} members", map.len()),
        other => {
            let mut text = String::new();
            let _ = write!(LimitedFmt::new(&mut text, MAX_ECHO_CHARS + 4), "{other}");
            clip(&text, MAX_ECHO_CHARS).into_owned()
        }
    }
}

/// A `fmt::Write` that stops (with an error) at a byte limit.
struct LimitedFmt<'a> {
    out: &'a mut String,
    max: usize,
}

impl<'a> LimitedFmt<'a> {
    fn new(out: &'a mut String, max: usize) -> Self {
        LimitedFmt { out, max }
    }
}

impl std::fmt::Write for LimitedFmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.max.saturating_sub(self.out.len());
        if s.len() <= room {
            self.out.push_str(s);
            Ok(())
        } else {
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.out.push_str(&s[..end]);
            Err(std::fmt::Error)
        }
    }
}

// ---------------------------------------------------------------------------
// Errors

/// A JSON-RPC error to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// The JSON-RPC / Electrum error code.
    pub code: i32,
    /// The message (clipped to [`MAX_ERROR_CHARS`] when sent).
    pub message: String,
}

impl RpcError {
    /// An error with `code`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    /// −32602: wrong parameters.
    pub fn params(message: impl Into<String>) -> Self {
        RpcError::new(codes::INVALID_PARAMS, message)
    }

    /// 1: a well-formed request that cannot be served.
    pub fn bad_request(message: impl Into<String>) -> Self {
        RpcError::new(codes::BAD_REQUEST, message)
    }

    /// −32600: not a request.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        RpcError::new(codes::INVALID_REQUEST, message)
    }
}

// ---------------------------------------------------------------------------
// Requests

/// A valid JSON-RPC id, as the client wrote it: a number, a string or null.
#[derive(Debug, Clone, Copy)]
pub struct Id<'a>(&'a RawValue);

impl<'a> Id<'a> {
    /// Checks that `raw` is a number, a string or null.
    pub fn new(raw: &'a RawValue) -> Option<Self> {
        match raw.get().as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') => Some(Id(raw)),
            Some(b'n') => Some(Id(raw)),
            _ => None,
        }
    }

    /// The id's JSON text, byte for byte as received.
    pub fn as_str(&self) -> &'a str {
        self.0.get()
    }

    /// The id, owned (for a request answered from another task).
    pub fn into_owned(self) -> Box<RawValue> {
        self.0.to_owned()
    }
}

/// The JSON `null` id (for replies to requests whose id is unknown or invalid).
pub const NULL_ID: &str = "null";

/// Positional or named parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Params {
    /// `"params": [...]` (or no params at all).
    Positional(Vec<Value>),
    /// `"params": {...}`.
    Named(Map<String, Value>),
}

impl Params {
    /// The parameters in `names` order, checking the count: the first
    /// `required` must be present, and nothing beyond `names` may be.
    ///
    /// # Errors
    /// −32602 naming the expected parameters.
    pub fn take<'a>(&'a self, names: &[&str], required: usize) -> Result<Vec<Option<&'a Value>>, RpcError> {
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
                        "unknown parameter {}; expected {}",
                        quote(unknown),
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

/// One request taken apart.
#[derive(Debug)]
pub struct Request<'a> {
    /// `None` for a notification (no reply).
    pub id: Option<Id<'a>>,
    /// The method name.
    pub method: String,
    /// The parameters.
    pub params: Params,
}

/// A message that is not a valid request: the error and the id to answer
/// with (`None`: the request's id could not be read, answer with null).
#[derive(Debug)]
pub struct Invalid<'a> {
    /// The request's id, when it had a valid one.
    pub id: Option<Id<'a>>,
    /// What is wrong.
    pub error: RpcError,
}

impl Invalid<'_> {
    /// The error reply (an invalid request is always answered, even without an id).
    pub fn reply(&self) -> Vec<u8> {
        reply_error(self.id, &self.error)
    }
}

/// A line taken apart.
#[derive(Debug)]
pub enum Message<'a> {
    /// One request (or an invalid one).
    Single(Result<Request<'a>, Invalid<'a>>),
    /// A batch: its items, each still to be parsed with [`parse_request`]
    /// (so each can be admitted before any work is spent on it).
    Batch(Vec<&'a RawValue>),
    /// Not JSON (−32700), or an empty batch (−32600): the error to answer.
    Error(RpcError),
}

/// Parses one line: a request, a batch, or the error to answer.
pub fn parse_line(line: &[u8]) -> Message<'_> {
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(error) => {
            return Message::Error(RpcError::new(
                codes::PARSE_ERROR,
                format!("invalid JSON: not UTF-8 ({error})"),
            ));
        }
    };
    let raw: &RawValue = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(error) => {
            return Message::Error(RpcError::new(
                codes::PARSE_ERROR,
                format!("invalid JSON: {error}"),
            ));
        }
    };
    if raw.get().starts_with('[') {
        match serde_json::from_str::<Vec<&RawValue>>(raw.get()) {
            Ok(items) if items.is_empty() => Message::Error(RpcError::invalid_request("empty batch")),
            Ok(items) => Message::Batch(items),
            Err(error) => Message::Error(RpcError::new(
                codes::PARSE_ERROR,
                format!("invalid JSON: {error}"),
            )),
        }
    } else {
        Message::Single(parse_request(raw))
    }
}

/// Parses one request (a whole line's message or one item of a batch).
///
/// # Errors
/// [`Invalid`] with −32600 for anything that is not a request object, and
/// −32602 for params that are neither an array nor an object; the request's
/// id is kept when it was valid.
pub fn parse_request(raw: &RawValue) -> Result<Request<'_>, Invalid<'_>> {
    let invalid = |id, message: &str| Invalid {
        id,
        error: RpcError::invalid_request(message),
    };
    if !raw.get().starts_with('{') {
        return Err(invalid(None, "a request must be a JSON object"));
    }
    // Every member kept raw (a member present with `null` is kept too).
    let mut envelope: HashMap<String, &RawValue> = match serde_json::from_str(raw.get()) {
        Ok(envelope) => envelope,
        Err(error) => {
            let message = format!("invalid request object: {error}");
            return Err(invalid(None, &message));
        }
    };
    let id = match envelope.remove("id") {
        None => None,
        Some(raw) => match Id::new(raw) {
            Some(id) => Some(id),
            None => return Err(invalid(None, "id must be a number, a string or null")),
        },
    };
    if envelope
        .get("jsonrpc")
        .is_some_and(|version| version.get() != "\"2.0\"")
    {
        return Err(invalid(id, "jsonrpc must be \"2.0\""));
    }
    let method = match envelope
        .remove("method")
        .map(|raw| serde_json::from_str::<String>(raw.get()))
    {
        Some(Ok(method)) => method,
        _ => return Err(invalid(id, "method must be a string")),
    };
    let params = match envelope
        .remove("params")
        .map(|raw| serde_json::from_str::<Value>(raw.get()))
    {
        None | Some(Ok(Value::Null)) => Params::Positional(Vec::new()),
        Some(Ok(Value::Array(values))) => Params::Positional(values),
        Some(Ok(Value::Object(map))) => Params::Named(map),
        Some(Ok(_)) => {
            return Err(Invalid {
                id,
                error: RpcError::params("params must be an array or an object"),
            });
        }
        Some(Err(error)) => {
            let message = format!("invalid params: {error}");
            return Err(invalid(id, &message));
        }
    };
    Ok(Request { id, method, params })
}

// ---------------------------------------------------------------------------
// Replies

/// A reply that would pass its byte limit; nothing past the limit was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// The limit.
    pub limit: usize,
}

/// An `io::Write` into a `Vec` that refuses to grow past `max` bytes.
struct LimitedWriter<'a> {
    out: &'a mut Vec<u8>,
    max: usize,
}

impl std::io::Write for LimitedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.max {
            return Err(std::io::Error::other("over the reply limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const RESULT_HEAD: &[u8] = br#"{"jsonrpc":"2.0","result":"#;
const ID_HEAD: &[u8] = br#","id":"#;

fn id_text(id: Option<Id<'_>>) -> &str {
    id.map_or(NULL_ID, |id| id.as_str())
}

/// A result reply, with its newline, of at most `max` bytes (newline included).
///
/// # Errors
/// [`TooLarge`] as soon as the serialised result would pass the limit:
/// the result is never serialised whole first.
pub fn reply_result(id: Option<Id<'_>>, result: &Value, max: usize) -> Result<Vec<u8>, TooLarge> {
    let id = id_text(id);
    let mut out = Vec::with_capacity(64 + id.len());
    out.extend_from_slice(RESULT_HEAD);
    let body_max = max.saturating_sub(ID_HEAD.len() + id.len() + 2);
    let mut writer = LimitedWriter {
        out: &mut out,
        max: body_max,
    };
    if serde_json::to_writer(&mut writer, result).is_err() {
        return Err(TooLarge { limit: max });
    }
    finish(out, id, max)
}

/// A result reply, with its newline, around a result already serialised to JSON.
///
/// # Errors
/// [`TooLarge`] when the reply would pass `max` bytes.
pub fn reply_raw(id: Option<Id<'_>>, result_json: &str, max: usize) -> Result<Vec<u8>, TooLarge> {
    let id = id_text(id);
    if RESULT_HEAD.len() + result_json.len() + ID_HEAD.len() + id.len() + 2 > max {
        return Err(TooLarge { limit: max });
    }
    let mut out = Vec::with_capacity(RESULT_HEAD.len() + result_json.len() + ID_HEAD.len() + id.len() + 2);
    out.extend_from_slice(RESULT_HEAD);
    out.extend_from_slice(result_json.as_bytes());
    finish(out, id, max)
}

fn finish(mut out: Vec<u8>, id: &str, max: usize) -> Result<Vec<u8>, TooLarge> {
    out.extend_from_slice(ID_HEAD);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"}\n");
    if out.len() > max {
        return Err(TooLarge { limit: max });
    }
    Ok(out)
}

/// An error reply with its newline; the message is clipped to [`MAX_ERROR_CHARS`].
pub fn reply_error(id: Option<Id<'_>>, error: &RpcError) -> Vec<u8> {
    let message = clip(&error.message, MAX_ERROR_CHARS);
    let message = serde_json::to_string(&*message).unwrap_or_else(|_| "\"\"".to_owned());
    let id = id_text(id);
    let mut out = Vec::with_capacity(64 + message.len() + id.len());
    out.extend_from_slice(br#"{"jsonrpc":"2.0","error":{"code":"#);
    out.extend_from_slice(error.code.to_string().as_bytes());
    out.extend_from_slice(br#","message":"#);
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(b"}");
    out.extend_from_slice(ID_HEAD);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"}\n");
    out
}

/// The reply to a batch, built item by item within a byte budget.
///
/// Items are added while the reply stays within the budget; once an item
/// does not fit, the batch is full and every later item must be answered
/// with a short error instead of being run ([`BatchReply::is_full`]).
#[derive(Debug)]
pub struct BatchReply {
    out: Vec<u8>,
    max: usize,
    items: usize,
    full: bool,
}

impl BatchReply {
    /// An empty batch reply of at most `max` bytes of results.
    pub fn new(max: usize) -> Self {
        BatchReply {
            out: Vec::new(),
            max,
            items: 0,
            full: false,
        }
    }

    /// Bytes left for results.
    pub fn room(&self) -> usize {
        self.max.saturating_sub(self.out.len() + 2)
    }

    /// Whether an item did not fit: later items are answered, not run.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Marks the batch full.
    pub fn set_full(&mut self) {
        self.full = true;
    }

    /// Adds one item's reply (as built by [`reply_result`] / [`reply_error`],
    /// newline included) when it fits in [`BatchReply::room`]; otherwise
    /// marks the batch full and returns false.
    pub fn push(&mut self, reply: &[u8]) -> bool {
        let item = reply.strip_suffix(b"\n").unwrap_or(reply);
        if item.len() + 1 > self.room() {
            self.full = true;
            return false;
        }
        self.push_unbounded(reply);
        true
    }

    /// Adds one item's reply past the budget (the short errors answering
    /// the items of a full batch).
    pub fn push_unbounded(&mut self, reply: &[u8]) {
        let item = reply.strip_suffix(b"\n").unwrap_or(reply);
        self.out.push(if self.items == 0 { b'[' } else { b',' });
        self.out.extend_from_slice(item);
        self.items += 1;
    }

    /// Items answered so far.
    pub fn len(&self) -> usize {
        self.items
    }

    /// Whether no item was answered (a batch of notifications only).
    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// The reply line, newline included; `None` when there is nothing to answer.
    pub fn finish(mut self) -> Option<Vec<u8>> {
        if self.items == 0 {
            return None;
        }
        self.out.extend_from_slice(b"]\n");
        Some(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_echoed_byte_for_byte() {
        for id in [
            "123456789012345678901234567890123456789",
            "1e2",
            "-0",
            "\"a\\u0041\"",
            "null",
            "0.10",
        ] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"m"}}"#);
            let Message::Single(Ok(request)) = parse_line(line.as_bytes()) else {
                panic!("a request");
            };
            assert_eq!(request.id.map(|id| id.as_str()), Some(id));
            let reply = reply_result(request.id, &Value::Null, 1000).unwrap();
            let text = String::from_utf8(reply).unwrap();
            assert!(text.ends_with(&format!(",\"id\":{id}}}\n")), "{text}");
        }
    }

    #[test]
    fn framer_drops_long_lines_and_resynchronises() {
        let mut framer = LineFramer::new(4);
        assert_eq!(framer.push(b"abcdef"), (6, None));
        assert_eq!(framer.push(b"gh\nok\n"), (3, Some(Frame::TooLong(8))));
        assert_eq!(framer.push(b"ok\n"), (3, Some(Frame::Line(b"ok".to_vec()))));
    }

    #[test]
    fn framer_grows_with_a_line_and_lets_it_go() {
        let mut framer = LineFramer::new(1 << 20);
        let long = vec![b'x'; 300_000];
        for chunk in long.chunks(1024) {
            assert_eq!(framer.push(chunk), (chunk.len(), None));
        }
        assert!(framer.line.capacity() >= long.len());
        let (_, frame) = framer.push(b"\n");
        assert_eq!(frame, Some(Frame::Line(long)));
        // At rest the framer holds no buffer: the line left with its frame.
        assert_eq!(framer.line.capacity(), 0);
        // Likewise after a dropped (too long) line.
        let mut framer = LineFramer::new(10);
        framer.push(&[b'y'; 100]);
        framer.push(b"\n");
        assert_eq!(framer.line.capacity(), 0);
    }

    #[test]
    fn clip_and_quote_bound_the_echo() {
        let long = "é".repeat(1000);
        assert_eq!(clip(&long, 3), "ééé…");
        assert!(quote(&long).chars().count() <= MAX_ECHO_CHARS + 3);
        assert_eq!(quote("x"), "\"x\"");
    }
}
