//! Other client and operator text the library reads: `estimatefee` modes
//! and targets, and admin selectors.
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(target) = data.first_chunk::<4>() {
        fuzz_checks::check_fee_target(u32::from_le_bytes(*target));
    }
    let text = String::from_utf8_lossy(data);
    fuzz_checks::check_fee_mode(&text);
    fuzz_checks::check_selector(&text);
});
