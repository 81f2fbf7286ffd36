//! Any bytes as one raw transaction: an accepted transaction re-serialises
//! to the same bytes with the txid of its witness-free form; a refusal is a
//! typed error consistent with the bytes (offsets, counts, the prefix before
//! trailing bytes parses); and the `bitcoin` crate's decoder, with the
//! library's extra rules, accepts exactly the same transactions with the
//! same fields.
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_checks::check_against_bitcoin(data);
});
