//! Inventory import: the file parsed by `wardgate_policy::inventory` (a FHIR R4 `Bundle` of
//! `Device` resources, or a CMMS CSV export with a column mapping), then compared with the
//! store (`plan.rs`: new, changed, unmatched, refused) before anything is written. The console
//! and `wardctl devices import` call [`crate::service::Ctx::import_devices`], which reads the
//! store and writes through the write service.

pub mod plan;

use sha2::{Digest, Sha256};
pub use wardgate_policy::inventory::{
    Entry, Format, ImportError, MAX_FILE_BYTES, Parsed, Refused, cmms, fhir, parse, parse_mac,
};

/// The file's SHA-256, hex.
pub fn sha256(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLE: &str = include_str!("../../tests/data/devices.fhir.json");

    #[test]
    fn a_registry_bundle_reads_mac_type_maker_model_location() {
        let p = fhir::parse(BUNDLE.as_bytes()).unwrap();
        assert_eq!(p.entries.len(), 3, "{:?}", p.refused);
        let pump = &p.entries[0];
        assert_eq!(pump.name, "pump-icu-01");
        assert_eq!(pump.mac.to_string(), "00:1a:2b:3c:4d:01");
        assert_eq!(pump.device_type, "Infusion pump");
        assert_eq!(pump.manufacturer, "B. Braun");
        assert_eq!(pump.model, "Space 8713030");
        assert_eq!(pump.location, "ICU 3");
        assert_eq!(pump.asset_id, "BIO-004211");
        assert_eq!(pump.address, Some("192.0.2.41".parse().unwrap()));
        // The Continua ETHMAC type code, the coding's display as the type.
        let monitor = &p.entries[1];
        assert_eq!(monitor.mac.to_string(), "00:1a:2b:3c:4d:02");
        assert_eq!(monitor.name, "monitor-icu-02");
        assert_eq!(monitor.device_type, "Patient monitor");
        assert_eq!(monitor.address, None);
        // The HL7 eui-48/ethernet system and a Cisco-style MAC.
        assert_eq!(p.entries[2].mac.to_string(), "00:1a:2b:3c:4d:03");
        // Only a Bluetooth MAC, and a Patient: refused by entry.
        assert_eq!(p.refused.len(), 2, "{:?}", p.refused);
        assert_eq!(p.refused[0].at, "entry 4");
        assert!(p.refused[0].why.contains("EUI-48"), "{:?}", p.refused[0]);
        assert!(p.refused[1].why.contains("Patient"), "{:?}", p.refused[1]);
        assert_eq!(sha256(b"").len(), 64);
    }
}
