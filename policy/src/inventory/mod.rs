//! Inventory files parsed into device entries, pure (bytes in, entries out, no I/O): a FHIR
//! R4 `Bundle` of `Device` resources (`fhir.rs`) or a CMMS CSV export with a column mapping
//! (`cmms.rs`). A file that cannot be read is an [`ImportError`]; an entry that cannot be used
//! is [`Refused`], naming where it is and which field. The controller compares the entries
//! with its store (`wardgate_controller::import`).

pub mod cmms;
pub mod fhir;

use crate::desired::MacAddr;
use serde::{Deserialize, Serialize};

/// Largest file accepted (a 20,000-device CMMS export is about 2 MB).
pub const MAX_FILE_BYTES: usize = 8 << 20;

/// One device as the file describes it. Empty strings: the file does not say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it is in the file (`entry 3`, `line 7`), for messages.
    pub at: String,
    pub mac: MacAddr,
    pub name: String,
    /// The device's kind as the inventory names it (`Infusion pump`).
    pub device_type: String,
    pub manufacturer: String,
    pub model: String,
    /// Ward or location.
    pub location: String,
    pub asset_id: String,
    /// An address to give a new device (CSV `address` column, FHIR `Device.url`).
    pub address: Option<std::net::IpAddr>,
}

/// An entry of the file left out, and why (naming the field).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub at: String,
    pub why: String,
}

/// What a file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    pub refused: Vec<Refused>,
}

/// A file that cannot be read at all (not JSON, not a Bundle, no header row, ...).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("{0}")]
    Fhir(String),
    #[error("{0}")]
    Csv(String),
    #[error("the file is {0} bytes, over the {MAX_FILE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("unknown format `{0}` (fhir or csv)")]
    Format(String),
}

/// The file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    Fhir,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, ImportError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fhir" | "json" => Ok(Format::Fhir),
            "csv" => Ok(Format::Csv),
            other => Err(ImportError::Format(other.to_string())),
        }
    }

    /// From a file name: `.json` is FHIR, anything else CSV.
    pub fn guess(file_name: &str) -> Format {
        if file_name.to_ascii_lowercase().ends_with(".json") {
            Format::Fhir
        } else {
            Format::Csv
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Fhir => "fhir",
            Format::Csv => "csv",
        }
    }
}

/// Parses `content` as `format` (`mapping` is the CSV column mapping, ignored for FHIR).
pub fn parse(format: Format, content: &[u8], mapping: &str) -> Result<Parsed, ImportError> {
    if content.len() > MAX_FILE_BYTES {
        return Err(ImportError::TooLarge(content.len()));
    }
    match format {
        Format::Fhir => fhir::parse(content),
        Format::Csv => cmms::parse(content, &cmms::Mapping::parse(mapping)?),
    }
}

/// `s` as a MAC, in any of the forms inventories write: `aa:bb:cc:dd:ee:ff`,
/// `AA-BB-CC-DD-EE-FF` (IEEE's canonical EUI-48 form), `aabb.ccdd.eeff` (Cisco) or
/// `aabbccddeeff`.
pub fn parse_mac(s: &str) -> Result<MacAddr, String> {
    let s = s.trim();
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    let separated = s.contains([':', '-']);
    if separated {
        return s.parse();
    }
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "`{s}` is not a MAC address (expected aa:bb:cc:dd:ee:ff)"
        ));
    }
    let mut out = [0u8; 6];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(MacAddr(out))
}

/// A name as a device name: trimmed, inner whitespace as `-`.
pub fn device_name(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_in_every_inventory_form() {
        let want = "00:1a:2b:3c:4d:5e";
        for s in [
            "00:1a:2b:3c:4d:5e",
            "00-1A-2B-3C-4D-5E",
            "001a.2b3c.4d5e",
            "001A2B3C4D5E",
        ] {
            assert_eq!(parse_mac(s).unwrap().to_string(), want, "{s}");
        }
        for s in [
            "",
            "00:1a:2b",
            "001a2b3c4d5",
            "zz1a2b3c4d5e",
            "00:1a:2b:3c:4d:5e:6f",
        ] {
            assert!(parse_mac(s).is_err(), "{s}");
        }
    }
}
