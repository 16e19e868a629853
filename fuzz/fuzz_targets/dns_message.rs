//! The DNS message parser over any bytes: never a panic or a hang (compression pointers), a
//! name bounded by the 255-byte wire limit (each byte at most a 4-character escape).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate_analysis::dns;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = dns::parse(data) {
        assert!(m.name.len() <= 255 * 4);
        let d = dns::registered_domain(&m.name);
        assert!(m.name.ends_with(d));
        assert!(dns::entropy(&m.name) <= 8.0);
    }
});
