//! The example server's HTTP listener's request parsing
//! (`examples/electrum_server/http_request.rs`): any bytes as the start of
//! a connection, the first byte choosing the body limit. Checked by
//! `tests/http_checks` (shared with `tests/fuzz_jsonrpc.rs`).
//!
//! ```text
//! cargo +nightly fuzz run http_request -- -max_total_time=60
//! ```
#![no_main]

#[allow(dead_code)]
#[path = "../../examples/electrum_server/jsonrpc.rs"]
mod jsonrpc;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/http_request.rs"]
mod http_request;
#[path = "../../tests/http_checks/mod.rs"]
mod http_checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    http_checks::check_request(rest, usize::from(limit) * 16);
    if let Ok(text) = std::str::from_utf8(rest) {
        http_checks::check_percent_round_trip(text);
    }
});
