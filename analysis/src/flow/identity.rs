//! A flow's application identity from the first payload bytes of both directions: the one
//! state machine behind offline learning (`FlowTable`, from captured segments) and the live
//! agent (from the datapath's payload records), so a capture and the wire give the same answer.

use super::FirstBytes;
use crate::app::{self, AppIdentity, Identify};

/// Side 0 is the flow's opener, side 1 the responder.
#[derive(Clone, Debug, Default)]
pub struct FlowIdentity {
    first: [FirstBytes; 2],
    /// The identity and the side it came from (the opener's wins).
    app: Option<(Box<AppIdentity>, usize)>,
}

impl FlowIdentity {
    /// A SYN from `side` with sequence number `seq`: its data starts at `seq + 1`.
    pub fn syn(&mut self, side: usize, seq: u32) {
        self.first[side & 1].syn(seq);
    }

    /// Payload from `side` on a flow to service `port`: a TCP segment at `seq`, or a datagram
    /// (`seq` `None`). Returns whether the identity changed.
    pub fn payload(&mut self, side: usize, port: u16, seq: Option<u32>, payload: &[u8]) -> bool {
        let side = side & 1;
        let first = &mut self.first[side];
        if payload.is_empty() || first.is_closed() {
            return false;
        }
        // Off the DICOM and HL7 ports, bytes that start like neither are not kept at all.
        if first.bytes().is_empty() && !app::worth_keeping(port, payload) {
            first.close();
            return false;
        }
        let added = match seq {
            Some(seq) => first.tcp(seq, payload),
            None => first.datagram(payload),
        };
        if !added {
            return false;
        }
        // The opener's identity is the one kept; the answer's only if the opener had none.
        if matches!(&self.app, Some((_, 0))) && side == 1 {
            first.close();
            return false;
        }
        match app::identify(port, first.bytes()) {
            Identify::Found { app, complete } => {
                if complete || first.is_full() {
                    first.close();
                }
                let changed = self.app.as_ref().is_none_or(|(a, _)| **a != app);
                self.app = Some((Box::new(app), side));
                changed
            }
            Identify::NeedMore if !first.is_full() => false,
            Identify::NeedMore | Identify::No => {
                first.close();
                false
            }
        }
    }

    pub fn app(&self) -> Option<&AppIdentity> {
        self.app.as_ref().map(|(a, _)| &**a)
    }

    pub fn into_app(self) -> Option<Box<AppIdentity>> {
        self.app.map(|(a, _)| a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openers_identity_wins_and_segments_are_joined_in_order() {
        let msh = b"\x0bMSH|^~\\&|LAB|HOSP|EMR|WARD|20240101||ORU^R01|1|P|2.5\r";
        let ack = b"\x0bMSH|^~\\&|EMR|WARD|LAB|HOSP|20240101||ACK|1|P|2.5\r";
        let mut id = FlowIdentity::default();
        id.syn(0, 99);
        // The header in two segments, the second first (dropped: a gap), then in order.
        assert!(!id.payload(0, 2575, Some(110), &msh[10..]));
        assert!(!id.payload(0, 2575, Some(100), &msh[..4]), "too short yet");
        assert!(id.payload(0, 2575, Some(104), &msh[4..]));
        let Some(AppIdentity::Hl7(h)) = id.app() else {
            panic!("{:?}", id.app());
        };
        assert_eq!(
            (
                h.sending_application.as_str(),
                h.receiving_facility.as_str()
            ),
            ("LAB", "WARD")
        );
        assert!(
            !id.payload(1, 2575, Some(5000), ack),
            "the answer does not replace it"
        );
        let Some(AppIdentity::Hl7(h)) = id.app() else {
            unreachable!()
        };
        assert_eq!(h.sending_application, "LAB");
    }

    #[test]
    fn bytes_like_neither_protocol_off_their_ports_are_not_kept() {
        let mut id = FlowIdentity::default();
        assert!(!id.payload(0, 8080, Some(1), b"GET / HTTP/1.1\r\n\r\n"));
        assert!(id.app().is_none());
        assert!(!id.payload(
            0,
            8080,
            Some(19),
            b"\x0bMSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.4\r"
        ));
        assert!(id.into_app().is_none());
    }
}
