//! DICOM upper-layer A-ASSOCIATE-RQ (PS3.8 section 9.3.2): who calls whom and for what, from
//! the first bytes a DICOM client sends. Total over any bytes: every length is checked against
//! what is there, every string and list is bounded.

use serde::{Deserialize, Serialize};

/// Abstract syntaxes kept (the rest are counted).
pub const MAX_SYNTAXES: usize = 16;
/// Longest string kept (UIDs are at most 64 bytes, AE titles 16, version names 16).
const MAX_TEXT: usize = 64;
/// Fixed part of the PDU: type, reserved, length (6) + version, reserved, AE titles, reserved (68).
const FIXED: usize = 74;
const PDU_ASSOCIATE_RQ: u8 = 0x01;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AssociateRq {
    pub calling_ae: String,
    pub called_ae: String,
    pub application_context: String,
    /// Abstract syntax UIDs of the presentation contexts, in order, without repeats.
    pub abstract_syntaxes: Vec<String>,
    /// Abstract syntaxes beyond MAX_SYNTAXES (or repeats) not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub syntaxes_not_listed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implementation_class_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implementation_version: Option<String>,
    /// The PDU is longer than the bytes given: later items are missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DicomError {
    #[error("too few bytes for an A-ASSOCIATE-RQ so far")]
    Incomplete,
    #[error("not an A-ASSOCIATE-RQ: {0}")]
    NotAssociateRq(&'static str),
}

/// Parses an A-ASSOCIATE-RQ PDU from the start of `bytes` (which may stop before the PDU's end).
pub fn parse_associate_rq(bytes: &[u8]) -> Result<AssociateRq, DicomError> {
    use DicomError::{Incomplete, NotAssociateRq};
    if let Some(&t) = bytes.first()
        && t != PDU_ASSOCIATE_RQ
    {
        return Err(NotAssociateRq("PDU type is not 0x01"));
    }
    if bytes.len() < FIXED {
        return Err(Incomplete);
    }
    let pdu_len = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
    if pdu_len < FIXED - 6 {
        return Err(NotAssociateRq("PDU length shorter than its fixed fields"));
    }
    if u16::from_be_bytes([bytes[6], bytes[7]]) & 1 == 0 {
        return Err(NotAssociateRq("protocol version 1 not offered"));
    }
    let end = pdu_len.saturating_add(6);
    let avail = &bytes[..end.min(bytes.len())];
    let mut rq = AssociateRq {
        called_ae: ae_title(&bytes[10..26]),
        calling_ae: ae_title(&bytes[26..42]),
        truncated: bytes.len() < end,
        ..AssociateRq::default()
    };
    for (kind, value) in items(&avail[FIXED..], 4, &mut rq.truncated) {
        match kind {
            0x10 => rq.application_context = text(value),
            0x20 if value.len() >= 4 => {
                let mut cut = false;
                for (sub, v) in items(&value[4..], 4, &mut cut) {
                    if sub == 0x30 {
                        let uid = text(v);
                        if rq.abstract_syntaxes.len() < MAX_SYNTAXES
                            && !rq.abstract_syntaxes.contains(&uid)
                        {
                            rq.abstract_syntaxes.push(uid);
                        } else {
                            rq.syntaxes_not_listed = rq.syntaxes_not_listed.saturating_add(1);
                        }
                    }
                }
            }
            0x50 => {
                let mut cut = false;
                for (sub, v) in items(value, 4, &mut cut) {
                    match sub {
                        0x52 => rq.implementation_class_uid = Some(text(v)),
                        0x55 => rq.implementation_version = Some(text(v)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(rq)
}

/// Items of `header` bytes (type, reserved, 16-bit length) then the value; stops at the first
/// item running past the bytes (setting `cut`).
fn items<'a>(
    mut bytes: &'a [u8],
    header: usize,
    cut: &'a mut bool,
) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        if bytes.len() < header {
            *cut = true;
            return None;
        }
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let Some(value) = bytes.get(header..header + len) else {
            *cut = true;
            return None;
        };
        let kind = bytes[0];
        bytes = &bytes[header + len..];
        Some((kind, value))
    })
}

/// AE titles are 16 bytes padded with spaces (leading and trailing spaces are not significant).
fn ae_title(b: &[u8]) -> String {
    text(b).trim_matches(' ').to_string()
}

/// Bounded, NUL padding removed, control characters replaced (the bytes are the sender's).
fn text(b: &[u8]) -> String {
    let b = &b[..b.len().min(MAX_TEXT)];
    let s = String::from_utf8_lossy(b);
    s.trim_end_matches(['\0', ' '])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Whether `bytes` start like an A-ASSOCIATE-RQ (type 0x01, reserved 0, version 1 offered).
pub fn looks_like(bytes: &[u8]) -> bool {
    bytes.len() >= 8
        && bytes[0] == PDU_ASSOCIATE_RQ
        && bytes[1] == 0
        && u16::from_be_bytes([bytes[6], bytes[7]]) == 1
}

#[cfg(test)]
pub(crate) mod tests;
