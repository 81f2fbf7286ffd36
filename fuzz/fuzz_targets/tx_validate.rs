//! Any bytes through the default broadcast validator: it accepts exactly the
//! parsable non-coinbase transactions, refuses with the parser's message,
//! and never accepts trailing bytes.
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_checks::check_validator(data);
});
