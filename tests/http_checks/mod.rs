//! Properties of the example server's HTTP request parsing
//! (`examples/electrum_server/http_request.rs`), shared by the bounded run
//! in `tests/fuzz_jsonrpc.rs` and the `cargo fuzz` target
//! `fuzz/fuzz_targets/http_request.rs` (which include this file by path,
//! beside `jsonrpc` and `http_request` at their crate root).
#![allow(dead_code)]

use crate::http_request::{Call, MAX_HEAD, parse_head, percent_decode, translate};
use crate::jsonrpc::{Frame, LineFramer};

/// Any bytes as the start of an HTTP connection, with a body limit of
/// `max_body`: parsing never panics; a complete head lies within the bytes,
/// within [`MAX_HEAD`], and announces a body within `max_body`; what it asks
/// for is either refused with a 4xx status or is exactly one line that the
/// session's framer reads back whole.
pub fn check_request(bytes: &[u8], max_body: usize) {
    let head = match parse_head(bytes, max_body) {
        Ok(None) => {
            assert!(
                bytes.len() <= MAX_HEAD,
                "an incomplete head past the limit is refused"
            );
            return;
        }
        Err(error) => {
            let (code, _) = error.status();
            assert!((400..500).contains(&code), "{error:?}");
            return;
        }
        Ok(Some(head)) => head,
    };
    assert!(head.len <= bytes.len() && head.len <= MAX_HEAD, "{head:?}");
    assert!(head.content_length <= max_body, "{head:?}");
    let body_end = (head.len + head.content_length).min(bytes.len());
    let body = &bytes[head.len..body_end];
    match translate(&head, body) {
        Err(error) => {
            let (code, _) = error.status();
            assert!((400..500).contains(&code), "{error:?}");
        }
        Ok(Call::Preflight | Call::Index) => {}
        Ok(Call::Rpc { line, reply_expected }) => {
            assert_eq!(line.last(), Some(&b'\n'));
            let text = &line[..line.len() - 1];
            assert!(!text.contains(&b'\n') && !text.contains(&b'\r'), "one line");
            let mut framer = LineFramer::new(line.len());
            let (used, frame) = framer.push(&line);
            assert_eq!(used, line.len());
            assert!(matches!(frame, Some(Frame::Line(read)) if read == text));
            if head.method == "GET" {
                // A GET is a request with an id, its params an array or object.
                assert!(reply_expected);
                let request: serde_json::Value = serde_json::from_slice(text).expect("a GET becomes JSON");
                assert_eq!(request["id"], 1);
                assert!(
                    request["params"].is_array() || request["params"].is_object(),
                    "{request}"
                );
                let path = head.target.split('?').next().unwrap_or_default();
                let method = percent_decode(path.strip_prefix("/v1/").expect("GET /v1/…")).expect("decoded");
                assert_eq!(request["method"], method.as_str());
            }
        }
    }
}

/// Percent-encoding any string and decoding it gives it back; decoding
/// any text never panics.
pub fn check_percent_round_trip(text: &str) {
    let encoded: String = text
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    assert_eq!(percent_decode(&encoded).as_deref(), Ok(text));
    let _ = percent_decode(text);
}
