//! Any bytes as a raw block: an accepted block is its header, its count and
//! transactions back to back, each accepted alone; a refusal is a typed
//! error consistent with the bytes.
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_checks::check_block(data);
});
