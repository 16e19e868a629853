//! The HL7 MSH parser over any bytes: never a panic, fields bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate_analysis::hl7;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = hl7::parse_msh(data) {
        // 128 bytes at most, each may become a 3-byte replacement character.
        assert!(h.sending_application.len() <= 128 * 3);
        assert!(h.message_type.len() <= 128 * 3);
    }
    let _ = wardgate_analysis::app::identify(2575, data);
});
