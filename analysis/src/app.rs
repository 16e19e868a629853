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

/// Whether a direction's first segment is worth collecting: on a DICOM or HL7 port, too short
/// to tell, or starting like an A-ASSOCIATE-RQ or an MSH segment.
pub fn worth_keeping(port: u16, first: &[u8]) -> bool {
    DICOM_PORTS.contains(&port)
        || HL7_PORTS.contains(&port)
        || first.len() < 8
        || dicom::looks_like(first)
        || hl7::looks_like(first)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medical_bytes_are_found_off_their_ports_and_others_are_not_kept() {
        let rq = crate::dicom::tests::associate_rq("US_3", "ARCHIVE", &["1.2.840.10008.1.1"]);
        assert!(worth_keeping(4006, &rq));
        match identify(4006, &rq) {
            Identify::Found {
                app: AppIdentity::Dicom(a),
                complete,
            } => {
                assert!(complete);
                assert_eq!(a.calling_ae, "US_3");
            }
            other => panic!("{other:?}"),
        }
        let msh = b"\x0bMSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.4\r";
        assert!(worth_keeping(9000, msh));
        assert!(matches!(
            identify(9000, msh),
            Identify::Found {
                app: AppIdentity::Hl7(_),
                ..
            }
        ));
        let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(!worth_keeping(80, http));
        assert!(
            worth_keeping(104, http),
            "on a DICOM port everything is tried"
        );
        assert_eq!(identify(104, http), Identify::No);
        assert_eq!(identify(80, b"GET"), Identify::NeedMore);
    }
}
