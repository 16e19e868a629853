//! HL7 v2 message header (MSH) from the first bytes of a message, with or without MLLP framing
//! (0x0b message 0x1c 0x0d). Total over any bytes; every field is bounded.

use serde::{Deserialize, Serialize};

/// Longest field kept, in bytes.
const MAX_FIELD: usize = 128;
const MLLP_START: u8 = 0x0b;
const MLLP_END: u8 = 0x1c;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hl7Header {
    /// MSH-1 (usually `|`).
    pub field_separator: char,
    /// MSH-2 (usually `^~\&`).
    pub encoding_characters: String,
    /// MSH-3, MSH-4.
    pub sending_application: String,
    pub sending_facility: String,
    /// MSH-5, MSH-6.
    pub receiving_application: String,
    pub receiving_facility: String,
    /// MSH-9, e.g. `ADT^A01^ADT_A01`.
    pub message_type: String,
    /// MSH-12, e.g. `2.5`.
    pub version: String,
    /// The message came inside MLLP framing.
    pub mllp: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Hl7Error {
    #[error("too few bytes for an MSH segment so far")]
    Incomplete,
    #[error("not an HL7 v2 message: {0}")]
    NotHl7(&'static str),
}

/// Parses the MSH segment at the start of `bytes`.
pub fn parse_msh(bytes: &[u8]) -> Result<Hl7Header, Hl7Error> {
    use Hl7Error::{Incomplete, NotHl7};
    let (mllp, msg) = match bytes.split_first() {
        Some((&MLLP_START, rest)) => (true, rest),
        _ => (false, bytes),
    };
    let want = b"MSH";
    let n = msg.len().min(3);
    if msg[..n] != want[..n] {
        return Err(NotHl7("does not start with MSH"));
    }
    if msg.len() < 4 {
        return Err(Incomplete);
    }
    let sep = msg[3];
    if !sep.is_ascii_graphic() || sep.is_ascii_alphanumeric() {
        return Err(NotHl7("MSH-1 is not a separator character"));
    }
    // The segment ends at a carriage return (some senders use a line feed) or the MLLP end.
    let seg_end = msg
        .iter()
        .position(|&b| matches!(b, b'\r' | b'\n' | MLLP_END));
    let segment = &msg[..seg_end.unwrap_or(msg.len())];
    let fields: Vec<&[u8]> = segment.split(|&b| b == sep).take(13).collect();
    // fields[0] is "MSH"; fields[1] is MSH-2, so MSH-n is fields[n - 1].
    // Unterminated: MSH-12 is whole only once the separator after it arrived.
    if seg_end.is_none() && fields.len() < 13 {
        return Err(Incomplete);
    }
    let enc = fields.get(1).copied().unwrap_or_default();
    if enc.is_empty()
        || enc.len() > 5
        || !enc
            .iter()
            .all(|b| b.is_ascii_graphic() && !b.is_ascii_alphanumeric())
    {
        return Err(NotHl7("MSH-2 is not 1 to 5 encoding characters"));
    }
    let field = |n: usize| field_text(fields.get(n - 1).copied().unwrap_or_default());
    Ok(Hl7Header {
        field_separator: char::from(sep),
        encoding_characters: field(2),
        sending_application: field(3),
        sending_facility: field(4),
        receiving_application: field(5),
        receiving_facility: field(6),
        message_type: field(9),
        version: field(12),
        mllp,
    })
}

fn field_text(b: &[u8]) -> String {
    let b = &b[..b.len().min(MAX_FIELD)];
    String::from_utf8_lossy(b)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Whether `bytes` start like an HL7 message (`MSH` then a separator, optionally after 0x0b).
pub fn looks_like(bytes: &[u8]) -> bool {
    let msg = bytes.strip_prefix(&[MLLP_START]).unwrap_or(bytes);
    msg.len() >= 4 && msg.starts_with(b"MSH") && msg[3].is_ascii_punctuation()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &[u8] = b"\x0bMSH|^~\\&|EPIC|HOSP|LAB|LABFAC|20260101120000||ADT^A01^ADT_A01|MSG00001|P|2.5.1\rEVN|A01|20260101120000\rPID|1||123\r\x1c\r";

    #[test]
    fn reads_every_msh_field() {
        let h = parse_msh(ADT).unwrap();
        assert_eq!(
            h,
            Hl7Header {
                field_separator: '|',
                encoding_characters: "^~\\&".into(),
                sending_application: "EPIC".into(),
                sending_facility: "HOSP".into(),
                receiving_application: "LAB".into(),
                receiving_facility: "LABFAC".into(),
                message_type: "ADT^A01^ADT_A01".into(),
                version: "2.5.1".into(),
                mllp: true,
            }
        );
    }

    #[test]
    fn other_separators_and_no_framing() {
        let h = parse_msh(b"MSH#^~\\&#A#B#C#D#x##ORU^R01#1#P#2.3\r").unwrap();
        assert_eq!(h.field_separator, '#');
        assert_eq!(
            (h.sending_application.as_str(), h.version.as_str()),
            ("A", "2.3")
        );
        assert!(!h.mllp);
    }

    #[test]
    fn incomplete_until_msh12_is_whole() {
        for cut in 0..ADT.len() {
            let r = parse_msh(&ADT[..cut]);
            let end_of_msh12 = ADT.iter().position(|&b| b == b'\r').unwrap();
            if cut <= end_of_msh12 {
                assert_eq!(r, Err(Hl7Error::Incomplete), "cut at {cut}");
            } else {
                assert_eq!(r.unwrap().version, "2.5.1");
            }
        }
    }

    #[test]
    fn refuses_non_hl7() {
        assert!(matches!(
            parse_msh(b"GET / HTTP/1.1\r\n"),
            Err(Hl7Error::NotHl7(_))
        ));
        assert!(matches!(
            parse_msh(b"MSHa^~\\&|x\r"),
            Err(Hl7Error::NotHl7(_))
        ));
        assert!(matches!(parse_msh(b"MSH||x\r"), Err(Hl7Error::NotHl7(_))));
        assert!(looks_like(ADT));
        assert!(!looks_like(b"\x0bMSX|"));
    }

    #[test]
    fn fields_are_bounded_and_cleaned() {
        let mut m = b"MSH|^~\\&|".to_vec();
        m.extend(std::iter::repeat_n(b'A', 1000));
        m.extend_from_slice(b"\x07|F||||||||2.5\r");
        let h = parse_msh(&m).unwrap();
        assert_eq!(h.sending_application.len(), MAX_FIELD);
        assert_eq!(h.version, "2.5");
    }
}
