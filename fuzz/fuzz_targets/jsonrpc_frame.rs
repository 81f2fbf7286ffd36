//! The example server's untrusted-bytes path: line framing, JSON-RPC
//! parsing, batch splitting and reply building
//! (`examples/electrum_server/jsonrpc.rs`). The first bytes choose the
//! limits and the read size; the rest is the stream. Every reply must be
//! one line of valid JSON carrying the request's id byte for byte, and a
//! result reply must fit its limit.
//!
//! ```text
//! cargo +nightly fuzz run jsonrpc_frame -- -max_total_time=60
//! ```
#![no_main]

#[allow(dead_code)]
#[path = "../../examples/electrum_server/jsonrpc.rs"]
mod jsonrpc;

use std::collections::HashMap;

use jsonrpc::{BatchReply, Frame, LineFramer, Message, Params, Request, RpcError};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;

fn answer(request: &Request<'_>, max: usize) -> Vec<u8> {
    if request.method == "echo" {
        let result = match &request.params {
            Params::Positional(values) => Value::Array(values.clone()),
            Params::Named(map) => Value::Object(map.clone()),
        };
        match jsonrpc::reply_result(request.id, &result, max) {
            Ok(reply) => {
                assert!(reply.len() <= max, "a result reply over its limit");
                reply
            }
            Err(_) => jsonrpc::reply_error(request.id, &RpcError::bad_request("response too large")),
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

fn id_of(item: &RawValue) -> String {
    let members: HashMap<String, &RawValue> = serde_json::from_str(item.get()).expect("a reply object");
    members.get("id").expect("every reply has an id").get().to_owned()
}

fn check(bytes: &[u8], ids: &[String], batch: bool) {
    let text = std::str::from_utf8(bytes).expect("replies are UTF-8");
    let line = text.strip_suffix('\n').expect("a reply ends with its newline");
    assert!(!line.contains('\n'));
    let raw: &RawValue = serde_json::from_str(line).expect("a reply is JSON");
    if batch {
        let items: Vec<&RawValue> = serde_json::from_str(raw.get()).expect("a batch reply is an array");
        let got: Vec<String> = items.iter().map(|item| id_of(item)).collect();
        assert_eq!(got, ids);
    } else {
        assert_eq!(vec![id_of(raw)], ids);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max_recv = 16 + usize::from(data[0]) * 64;
    let max_send = 40 + usize::from(data[1]) * 32;
    let chunk = 1 + usize::from(data[2]);
    let mut framer = LineFramer::new(max_recv);
    let mut rest = &data[3..];
    while !rest.is_empty() {
        let piece = &rest[..chunk.min(rest.len())];
        let (used, frame) = framer.push(piece);
        assert!(used >= 1 && used <= piece.len());
        rest = &rest[used..];
        let line = match frame {
            None => continue,
            Some(Frame::TooLong(len)) => {
                assert!(len > max_recv);
                continue;
            }
            Some(Frame::Line(line)) => line,
        };
        assert!(line.len() <= max_recv);
        match jsonrpc::parse_line(&line) {
            Message::Error(error) => check(&jsonrpc::reply_error(None, &error), &["null".into()], false),
            Message::Single(Err(invalid)) => check(&invalid.reply(), &[id_text(invalid.id)], false),
            Message::Single(Ok(request)) => {
                if request.id.is_some() {
                    check(&answer(&request, max_send), &[id_text(request.id)], false);
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
                            let error = RpcError::bad_request("not run");
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
                    check(&bytes, &ids, true);
                }
            }
        }
    }
});
