//! Any text into the profile parser and validator: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(p) = wardgate_policy::parse_profile("fuzz.yaml", text)
    {
        let _ = wardgate_policy::validate_profile("fuzz.yaml", &p);
    }
});
