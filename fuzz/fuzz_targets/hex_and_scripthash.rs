//! Any bytes as client text (hex, txids, block hashes, scripthashes):
//! accepted exactly when the documented shape holds, round-tripping through
//! encoding; and any bytes encoded and decoded back.
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_checks::check_hex_bytes(data);
    let text = String::from_utf8_lossy(data);
    fuzz_checks::check_hex(&text);
    fuzz_checks::check_hex(&text.to_ascii_uppercase());
});
