//! Application identity of a flow from its first payload bytes: the DICOM association or HL7
//! header, tried on the ports those protocols use or when the bytes look like them.

use serde::{Deserialize, Serialize};

use crate::{dicom, hl7};

/// DICOM: 104 (IANA acr-nema), 11112 (IANA dicom), 4242 (a common PACS default).
pub const DICOM_PORTS: &[u16] = &[104, 11112, 4242];
/// HL7 over MLLP: 2575 (IANA hl7) and the interface-engine ports met in practice.
pub const HL7_PORTS: &[u16] = &[2575, 6661, 6660, 6662];

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum AppIdentity {
    Dicom(dicom::AssociateRq),
    Hl7(hl7::Hl7Header),
}

impl AppIdentity {
    /// One line naming who talks to whom, for summaries and baselines
    /// (`dicom CT1 -> PACS`, `hl7 EPIC/HOSP -> LAB/LABFAC ADT^A01`).
    pub fn summary(&self) -> String {
        match self {
            AppIdentity::Dicom(a) => format!("dicom {} -> {}", a.calling_ae, a.called_ae),
            AppIdentity::Hl7(h) => format!(
                "hl7 {}/{} -> {}/{} {}",
                h.sending_application,
                h.sending_facility,
                h.receiving_application,
                h.receiving_facility,
                h.message_type
            ),
        }
    }
}

/// What the first bytes of one direction say so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identify {
    /// Identified; `complete` is false while a DICOM PDU runs past the bytes given.
    Found { app: AppIdentity, complete: bool },
    /// Could still become one with more bytes.
    NeedMore,
    /// Neither protocol.
    No,
}

/// Tries the parsers on the first bytes of one direction of a flow to `port` (the responder's).
pub fn identify(port: u16, bytes: &[u8]) -> Identify {
    let dicom_port = DICOM_PORTS.contains(&port);
    let hl7_port = HL7_PORTS.contains(&port);
    let mut more = false;
    if dicom_port || dicom::looks_like(bytes) {
        match dicom::parse_associate_rq(bytes) {
            Ok(rq) => {
                return Identify::Found {
                    complete: !rq.truncated,
                    app: AppIdentity::Dicom(rq),
                };
            }
            Err(dicom::DicomError::Incomplete) => more = true,
            Err(_) => {}
        }
    }
    if hl7_port || hl7::looks_like(bytes) {
        match hl7::parse_msh(bytes) {
            Ok(h) => {
                return Identify::Found {
                    app: AppIdentity::Hl7(h),
                    complete: true,
                };
            }
            Err(hl7::Hl7Error::Incomplete) => more = true,
            Err(_) => {}
        }
    }
    // A few bytes say nothing yet (a sender may write its first PDU in pieces).
    if more || bytes.len() < 8 {
        Identify::NeedMore
    } else {
        Identify::No
    }
}
