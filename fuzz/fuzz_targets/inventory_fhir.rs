//! Any bytes into the FHIR R4 Device Bundle reader: an error or entries, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = wardgate_policy::inventory::fhir::parse(data) {
        for e in &p.entries {
            assert!(!e.name.is_empty());
        }
    }
});
