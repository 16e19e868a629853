//! Any text into the MUD parser and importer, and the imported profile back through the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate_policy::mud;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(m) = mud::parse_mud(text)
        && let Ok(imported) = mud::import(&m, &Default::default(), None)
    {
        let yaml = mud::to_yaml(&imported);
        let _ = wardgate_policy::parse_profile("imported.yaml", &yaml);
    }
});
