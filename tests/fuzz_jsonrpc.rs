//! Bounded fuzzing of the example server's untrusted-bytes path
//! (`examples/electrum_server/jsonrpc.rs`: line framing, JSON-RPC parsing,
//! batch splitting, reply building) on the stable toolchain: random bytes
//! and mutated valid requests, fed in random chunks. Invariants: nothing
//! panics, every reply is one line of valid JSON, every result reply fits
//! its byte limit, and every id comes back byte for byte.
//!
//! The HTTP listener's request parsing (`http_request.rs`) is fuzzed the
//! same way: random bytes, and mutated valid requests (POST, GET with
//! URL-encoded params, OPTIONS), checked by `tests/http_checks`.
//!
//! The unbounded versions are `fuzz/fuzz_targets/jsonrpc_frame.rs` and
//! `http_request.rs` (`cargo +nightly fuzz run jsonrpc_frame`).

mod http_checks;
#[allow(dead_code)]
#[path = "../examples/electrum_server/http_request.rs"]
mod http_request;
#[allow(dead_code)]
#[path = "../examples/electrum_server/jsonrpc.rs"]
mod jsonrpc;

use std::collections::HashMap;

use jsonrpc::{BatchReply, Frame, LineFramer, Message, Params, Request, RpcError};
use proptest::prelude::*;
use serde_json::Value;
use serde_json::value::RawValue;

/// A reply and the id text it must carry (for a batch: each item's, in order).
struct Reply {
    bytes: Vec<u8>,
    ids: Vec<String>,
    batch: bool,
    /// Largest size allowed for a result reply (error replies echo the id, so may be longer).
    max: usize,
}

/// The method every request is answered with: its params back as the result,
/// or an error quoting the method (as an unknown method is answered).
fn answer(request: &Request<'_>, max: usize) -> Vec<u8> {
    if request.method == "echo" {
        let result = match &request.params {
            Params::Positional(values) => Value::Array(values.clone()),
            Params::Named(map) => Value::Object(map.clone()),
        };
        match jsonrpc::reply_result(request.id, &result, max) {
            Ok(reply) => reply,
            Err(too) => jsonrpc::reply_error(
                request.id,
                &RpcError::bad_request(format!("response too large (over {})", too.limit)),
            ),
        }
    } else {
        let error = RpcError::new(
            jsonrpc::codes::METHOD_NOT_FOUND,
            format!("unknown method {}", jsonrpc::quote(&request.method)),
        );
        jsonrpc::reply_error(request.id, &error)
    }
}

fn id_text(id: Option<jsonrpc::Id<'_>>) -> String {
    id.map_or("null", |id| id.as_str()).to_owned()
}

/// Frames `input` (fed in `chunks`-sized pieces) and answers every frame.
fn run(input: &[u8], chunk: usize, max_recv: usize, max_send: usize) -> Vec<Reply> {
    let mut framer = LineFramer::new(max_recv);
    let mut replies = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let piece = &rest[..chunk.clamp(1, rest.len())];
        let (used, frame) = framer.push(piece);
        assert!(used >= 1 && used <= piece.len());
        rest = &rest[used..];
        let Some(frame) = frame else { continue };
        let line = match frame {
            Frame::TooLong(len) => {
                assert!(len > max_recv);
                let error = RpcError::invalid_request(format!("request of {len} bytes is too long"));
                replies.push(Reply {
                    bytes: jsonrpc::reply_error(None, &error),
                    ids: vec!["null".into()],
                    batch: false,
                    max: usize::MAX,
                });
                continue;
            }
            Frame::Line(line) => line,
        };
        assert!(line.len() <= max_recv && !line.contains(&b'\n'));
        match jsonrpc::parse_line(&line) {
            Message::Error(error) => replies.push(Reply {
                bytes: jsonrpc::reply_error(None, &error),
                ids: vec!["null".into()],
                batch: false,
                max: usize::MAX,
            }),
            Message::Single(Err(invalid)) => replies.push(Reply {
                bytes: invalid.reply(),
                ids: vec![id_text(invalid.id)],
                batch: false,
                max: usize::MAX,
            }),
            Message::Single(Ok(request)) => {
                if request.id.is_some() {
                    replies.push(Reply {
                        bytes: answer(&request, max_send),
                        ids: vec![id_text(request.id)],
                        batch: false,
                        max: max_send,
                    });
                }
            }
            Message::Batch(items) => {
                let mut batch = BatchReply::new(max_send);
                let mut ids = Vec::new();
                for item in &items {
                    match jsonrpc::parse_request(item) {
                        Err(invalid) => {
                            batch.push_unbounded(&invalid.reply());
                            ids.push(id_text(invalid.id));
                        }
                        Ok(request) if request.id.is_none() => {}
                        Ok(request) if batch.is_full() => {
                            let error = RpcError::bad_request("not run: the batch's reply is full");
                            batch.push_unbounded(&jsonrpc::reply_error(request.id, &error));
                            ids.push(id_text(request.id));
                        }
                        Ok(request) => {
                            let reply = answer(&request, batch.room());
                            if !batch.push(&reply) {
                                batch.push_unbounded(&reply);
                            }
                            ids.push(id_text(request.id));
                        }
                    }
                }
                if let Some(bytes) = batch.finish() {
                    replies.push(Reply {
                        bytes,
                        ids,
                        batch: true,
                        max: usize::MAX,
                    });
                }
            }
        }
    }
    replies
}

fn id_of(item: &RawValue) -> String {
    let members: HashMap<String, &RawValue> = serde_json::from_str(item.get()).expect("a reply object");
    members.get("id").expect("every reply has an id").get().to_owned()
}

fn check(replies: &[Reply]) {
    for reply in replies {
        let text = std::str::from_utf8(&reply.bytes).expect("replies are UTF-8");
        let line = text.strip_suffix('\n').expect("a reply ends with its newline");
        assert!(!line.contains('\n'), "one line: {line:?}");
        let raw: &RawValue = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if reply.batch {
            let items: Vec<&RawValue> = serde_json::from_str(raw.get()).expect("a batch reply is an array");
            let ids: Vec<String> = items.iter().map(|item| id_of(item)).collect();
            assert_eq!(ids, reply.ids, "{line}");
        } else {
            assert_eq!(vec![id_of(raw)], reply.ids, "{line}");
            if line.contains("\"result\":") && line.starts_with(r#"{"jsonrpc":"2.0","result""#) {
                assert!(
                    reply.bytes.len() <= reply.max,
                    "{} > {}",
                    reply.bytes.len(),
                    reply.max
                );
            }
        }
    }
}

/// Ids a float or an integer type would change, plus ordinary ones.
fn id_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("123456789012345678901234567890123456789".to_owned()),
        Just("1e2".to_owned()),
        Just("-0".to_owned()),
        Just("1E+400".to_owned()),
        Just("null".to_owned()),
        Just(r#""\u00e9\n\"""#.to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        "[a-z0-9 ]{0,12}".prop_map(|s| format!("{s:?}")),
        "[0-9]{1,60}",
    ]
}

fn request_strategy() -> impl Strategy<Value = String> {
    let method = prop_oneof![Just("echo".to_owned()), "[a-z.]{0,20}"];
    let params = prop_oneof![
        Just(String::new()),
        Just(r#","params":[]"#.to_owned()),
        Just(r#","params":null"#.to_owned()),
        Just(r#","params":7"#.to_owned()),
        "[a-z]{0,300}".prop_map(|s| format!(r#","params":["{s}",1,{{"k":[true,null]}}]"#)),
        "[a-z]{1,8}".prop_map(|s| format!(r#","params":{{"{s}":1e2}}"#)),
    ];
    (proptest::option::of(id_strategy()), method, params, any::<bool>()).prop_map(
        |(id, method, params, jsonrpc)| {
            let mut text = String::from("{");
            if jsonrpc {
                text.push_str(r#""jsonrpc":"2.0","#);
            }
            if let Some(id) = id {
                text.push_str(&format!(r#""id":{id},"#));
            }
            text.push_str(&format!(r#""method":"{method}"{params}}}"#));
            text
        },
    )
}

/// Lines of single requests and batches.
fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        request_strategy(),
        proptest::collection::vec(request_strategy(), 0..12)
            .prop_map(|items| format!("[{}]", items.join(","))),
    ];
    proptest::collection::vec(line, 1..6).prop_map(|lines| {
        let mut bytes = lines.join("\n").into_bytes();
        bytes.push(b'\n');
        bytes
    })
}

/// A byte edit: overwrite, insert or delete at a position.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, kind, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match kind % 3 {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

/// Bytes that JSON cares about, so mutations land on structure.
fn edit_strategy() -> impl Strategy<Value = (usize, u8, u8)> {
    let byte = prop_oneof![
        proptest::sample::select(b"{}[]\",:\\\n 0-eE.nul".to_vec()),
        any::<u8>(),
    ];
    (any::<usize>(), any::<u8>(), byte)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_and_get_json_replies(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..600),
        chunk in 1usize..64,
        max_recv in 16usize..400,
        max_send in 40usize..2000,
    ) {
        bytes.push(b'\n');
        check(&run(&bytes, chunk, max_recv, max_send));
    }

    #[test]
    fn valid_requests_echo_ids_byte_for_byte(
        stream in stream_strategy(),
        chunk in 1usize..4096,
        max_send in 60usize..3000,
    ) {
        let replies = run(&stream, chunk, 1 << 20, max_send);
        check(&replies);
        // Nothing was mutated: every line with an id was answered.
        prop_assert!(!replies.is_empty() || !stream.windows(5).any(|w| w == b"\"id\":"));
    }

    #[test]
    fn mutated_requests_never_panic_and_echo_ids(
        stream in stream_strategy(),
        edits in proptest::collection::vec(edit_strategy(), 1..8),
        chunk in 1usize..256,
        max_recv in 64usize..4096,
        max_send in 40usize..3000,
    ) {
        let mut bytes = mutate(stream, &edits);
        bytes.push(b'\n');
        check(&run(&bytes, chunk, max_recv, max_send));
    }
}

#[test]
fn deep_nesting_and_huge_numbers_are_answered() {
    let deep = format!("{}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let replies = run(deep.as_bytes(), 4096, 1 << 20, 1000);
    check(&replies);
    // Answered with an error (whatever level the nesting is refused at), not a stack overflow.
    assert!(
        std::str::from_utf8(&replies[0].bytes)
            .unwrap()
            .contains(r#""error":"#)
    );
    let object = format!("{}\n", r#"{"id":1e400,"method":"echo","params":[1e400]}"#);
    check(&run(object.as_bytes(), 7, 1 << 20, 1000));
    let big_id = format!(r#"{{"id":{},"method":"echo"}}{}"#, "9".repeat(5000), "\n");
    let replies = run(big_id.as_bytes(), 100, 1 << 20, 100);
    check(&replies);
}

/// Well-formed HTTP requests: a POST of a JSON-RPC request or batch, a GET
/// of a method with URL-encoded params, an OPTIONS, with a few headers.
fn http_strategy() -> impl Strategy<Value = Vec<u8>> {
    let post = request_strategy().prop_map(|body| {
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    let get = (
        "[a-z.]{1,30}",
        proptest::option::of("[a-z0-9\\[\\]\",{}: %+]{0,60}"),
    )
        .prop_map(|(method, params)| {
            let query = params
                .map(|params| format!("?params={params}"))
                .unwrap_or_default();
            format!("GET /v1/{method}{query} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        });
    let options = Just("OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned());
    prop_oneof![post, get, options].prop_map(String::into_bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn http_random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        max_body in 0usize..2000,
    ) {
        http_checks::check_request(&bytes, max_body);
    }

    #[test]
    fn http_requests_become_one_line_each(request in http_strategy(), max_body in 0usize..4000) {
        http_checks::check_request(&request, max_body);
    }

    #[test]
    fn http_mutated_requests_never_panic(
        request in http_strategy(),
        edits in proptest::collection::vec(edit_strategy(), 1..8),
        max_body in 0usize..4000,
    ) {
        http_checks::check_request(&mutate(request, &edits), max_body);
    }

    #[test]
    fn http_percent_decoding_round_trips(text in any::<String>()) {
        http_checks::check_percent_round_trip(&text);
    }
}

#[test]
fn http_requests_parse_as_curl_and_browsers_send_them() {
    use http_request::{Call, HttpError, parse_head, translate};
    let post = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}";
    let head = parse_head(post, 100).unwrap().expect("complete");
    assert_eq!(
        (head.method.as_str(), head.content_length, head.keep_alive),
        ("POST", 2, true)
    );
    assert_eq!(head.len, post.len() - 2);
    // Incomplete, then too long.
    assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost:", 100), Ok(None));
    let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(20_000));
    assert_eq!(parse_head(long.as_bytes(), 100), Err(HttpError::HeadTooLarge));
    // HTTP/1.0 closes unless asked; 1.1 stays open unless asked.
    assert!(
        !parse_head(b"GET / HTTP/1.0\r\n\r\n", 0)
            .unwrap()
            .unwrap()
            .keep_alive
    );
    assert!(
        parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0)
            .unwrap()
            .unwrap()
            .keep_alive
    );
    assert!(
        !parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 0)
            .unwrap()
            .unwrap()
            .keep_alive
    );
    // Chunked bodies and oversized bodies are refused with their statuses.
    let chunked = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 100);
    assert_eq!(chunked.unwrap_err().status().0, 411);
    let big = parse_head(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 100);
    assert_eq!(big.unwrap_err().status().0, 413);
    // GET with URL-encoded params.
    let get = b"GET /v1/blockchain.scripthash.get_balance?params=%5B%22ab%22%5D HTTP/1.1\r\n\r\n";
    let head = parse_head(get, 0).unwrap().unwrap();
    let Ok(Call::Rpc {
        line,
        reply_expected: true,
    }) = translate(&head, b"")
    else {
        panic!("a request");
    };
    let request: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(request["method"], "blockchain.scripthash.get_balance");
    assert_eq!(request["params"], serde_json::json!(["ab"]));
    // A notification expects no reply; a batch of them neither; an invalid body does.
    let reply_expected = |body: &[u8]| {
        let head = parse_head(b"POST / HTTP/1.1\r\n\r\n", 0).unwrap().unwrap();
        match translate(&head, body) {
            Ok(Call::Rpc { reply_expected, .. }) => reply_expected,
            other => panic!("{other:?}"),
        }
    };
    assert!(!reply_expected(br#"{"jsonrpc":"2.0","method":"server.ping"}"#));
    assert!(!reply_expected(br#"[{"method":"a"},{"method":"b"}]"#));
    assert!(reply_expected(br#"[{"method":"a"},{"id":1,"method":"b"}]"#));
    assert!(reply_expected(b"not json"));
    // A pretty-printed body stays one line.
    let Ok(Call::Rpc { line, .. }) = translate(
        &head_of(b"POST /v1 HTTP/1.1\r\n\r\n"),
        b"{\n \"id\": 1,\r\n \"method\": \"m\"\n}",
    ) else {
        panic!()
    };
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    // Paths and methods that are not served.
    assert_eq!(
        translate(&head_of(b"GET /v2/x HTTP/1.1\r\n\r\n"), b"")
            .unwrap_err()
            .status()
            .0,
        404
    );
    assert_eq!(
        translate(&head_of(b"DELETE / HTTP/1.1\r\n\r\n"), b"")
            .unwrap_err()
            .status()
            .0,
        405
    );
    assert_eq!(
        translate(&head_of(b"GET /v1/m?params=7 HTTP/1.1\r\n\r\n"), b"")
            .unwrap_err()
            .status()
            .0,
        400
    );
    assert_eq!(
        translate(&head_of(b"GET /v1/m?params=%zz HTTP/1.1\r\n\r\n"), b"")
            .unwrap_err()
            .status()
            .0,
        400
    );
}

fn head_of(bytes: &[u8]) -> http_request::Head {
    http_request::parse_head(bytes, 1000).unwrap().unwrap()
}
