//! Any text into the site parser, then validation and compilation against an empty library.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(site) = wardgate_policy::parse_site("fuzz.yaml", text)
    {
        let set = wardgate_policy::ProfileSet::default();
        let _ = wardgate_policy::validate("fuzz.yaml", &site, &set);
        for g in &site.gateways {
            let _ = wardgate_policy::compile(&site, &set, &g.name.value, 1);
        }
    }
});
