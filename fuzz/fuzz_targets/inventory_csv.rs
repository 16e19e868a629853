//! Any bytes into the CMMS CSV reader: the first line up to a NUL byte is the column mapping,
//! the rest the export. An error or entries, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate_policy::inventory::cmms;

fuzz_target!(|data: &[u8]| {
    let (map, csv) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let Ok(map) = std::str::from_utf8(map) else {
        return;
    };
    if let Ok(mapping) = cmms::Mapping::parse(map)
        && let Ok(p) = cmms::parse(csv, &mapping)
    {
        for e in &p.entries {
            assert!(!e.name.is_empty());
        }
    }
});
