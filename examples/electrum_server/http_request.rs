//! The HTTP listener's request parsing, pure and fuzzed
//! (`tests/fuzz_jsonrpc.rs`, `fuzz/fuzz_targets/http_request.rs`): a request
//! head ([`parse_head`], on `httparse`), what a request asks for
//! ([`translate`]: a JSON-RPC line for the session, a CORS preflight, the
//! index), and the response bytes ([`response`]). `crate::http_rpc` moves
//! the bytes.

use serde_json::value::RawValue;

use crate::jsonrpc::{self, Message};

/// The longest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers read from one request head.
const MAX_HEADERS: usize = 32;

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
