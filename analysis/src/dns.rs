//! DNS messages as the detectors see them: a packet to or from port 53 of a device in, one
//! [`DnsEvent`] out (its question's name and type, and for an answer its response code and
//! answer count). Pure: the agent hands over decoded packets; any bytes give an event, nothing,
//! or an error, never a panic (`fuzz/fuzz_targets/dns_message.rs`).
//!
//! The wire format is read by `simple-dns` rather than `hickory-proto`: it depends on nothing
//! but `bitflags` (already in the tree), borrows labels from the message instead of allocating
//! them, and refuses what an attacker would use to make a parser spin or grow: a compression
//! pointer must point strictly before itself (so pointer loops cannot exist), a name is at most
//! 255 bytes and a label 63. `hickory-proto`, even without default features, brings a resolver's
//! dependencies (rand, url, idna, tracing) for one question section. Before handing the bytes
//! over, the header's section counts are checked against the message length, so a 12-byte
//! message claiming 65,535 records is refused without the parser reserving room for them.

pub mod answer;
pub mod names;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{
    decode::{Packet, proto},
    device::Devices,
    flow::DeviceRef,
};

/// The DNS port (UDP and TCP).
pub const PORT: u16 = 53;

/// Response codes the detectors name (RFC 1035 4.1.1; the 4-bit header field).
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
}

/// Query types the detectors name (RFC 1035 3.2.2, RFC 3596).
pub mod qtype {
    pub const A: u16 = 1;
    pub const NULL: u16 = 10;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
}

const HEADER_LEN: usize = 12;
/// The smallest question: the root name (1 byte), type and class.
const MIN_QUESTION: usize = 5;
/// The smallest resource record: the root name, type, class, TTL and an empty rdata length.
const MIN_RECORD: usize = 11;

/// Why a message was not read.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS message truncated: {have} bytes, the header needs {HEADER_LEN}")]
    Truncated { have: usize },
    #[error(
        "DNS header counts {questions} questions and {records} records, more than {have} bytes can hold"
    )]
    Counts {
        questions: u16,
        records: u32,
        have: usize,
    },
    #[error("DNS message has no question")]
    NoQuestion,
    #[error("DNS message malformed")]
    Malformed {
        #[source]
        source: simple_dns::SimpleDnsError,
    },
}

/// One DNS message, reduced to what the detectors read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    /// The QR bit: an answer.
    pub response: bool,
    /// The header's response code (an answer's; 0 in a query).
    pub rcode: u8,
    /// The first question's name, lower case, without the root dot (see [`name_text`]).
    pub name: String,
    pub qtype: u16,
    /// Records in the answer section.
    pub answers: u16,
}

/// Reads one DNS message (the UDP payload, or a TCP message without its length prefix).
pub fn parse(bytes: &[u8]) -> Result<DnsMessage, DnsError> {
    let header = bytes
        .get(..HEADER_LEN)
        .ok_or(DnsError::Truncated { have: bytes.len() })?;
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let (questions, answers) = (count(4), count(6));
    let records = u32::from(answers) + u32::from(count(8)) + u32::from(count(10));
    let have = bytes.len() - HEADER_LEN;
    if usize::from(questions) * MIN_QUESTION + records as usize * MIN_RECORD > have {
        return Err(DnsError::Counts {
            questions,
            records,
            have,
        });
    }
    if questions == 0 {
        return Err(DnsError::NoQuestion);
    }
    let msg = simple_dns::Packet::parse(bytes).map_err(|source| DnsError::Malformed { source })?;
    let q = msg.questions.first().ok_or(DnsError::NoQuestion)?;
    Ok(DnsMessage {
        id: msg.id(),
        response: header[2] & 0x80 != 0,
        rcode: header[3] & 0x0f,
        name: name_text(q.qname.as_bytes()),
        qtype: u16::from(q.qtype),
        answers,
    })
}

/// A name's labels as text: lower case, joined by dots; a byte outside printable ASCII, a dot
/// or a backslash inside a label is written `\DDD` (as dig does), so no label can pass for two.
pub fn name_text<'a>(labels: impl Iterator<Item = &'a [u8]>) -> String {
    let mut s = String::new();
    for (i, l) in labels.enumerate() {
        if i > 0 {
            s.push('.');
        }
        for &b in l {
            match b {
                b'.' | b'\\' => s.push_str(&format!("\\{b:03}")),
                0x21..=0x7e => s.push(char::from(b.to_ascii_lowercase())),
                _ => s.push_str(&format!("\\{b:03}")),
            }
        }
    }
    s
}

/// Two-level public suffixes under which a registration is three labels (`nhs.uk`'s trusts,
/// `example.co.uk`). Not the Public Suffix List: the common ones a hospital's devices meet.
const TWO_LEVEL_SUFFIXES: &[&str] = &[
    "co.uk", "org.uk", "ac.uk", "gov.uk", "nhs.uk", "net.uk", "ltd.uk", "plc.uk", "me.uk",
    "com.au", "net.au", "org.au", "edu.au", "gov.au", "co.nz", "org.nz", "govt.nz", "co.jp",
    "ne.jp", "or.jp", "ac.jp", "go.jp", "co.za", "org.za", "com.br", "net.br", "gov.br", "com.cn",
    "net.cn", "org.cn", "gov.cn", "co.in", "net.in", "org.in", "gov.in", "co.kr", "or.kr",
    "com.mx", "com.sg", "com.tr", "com.tw", "com.hk", "co.il", "org.il", "ac.il", "com.ar",
    "co.id", "com.my", "com.ph", "com.pl", "com.es", "co.th", "com.ua", "in.ua",
];

/// The registered domain a name is under: its last two labels, or three under a known
/// two-level public suffix (`example.co.uk`). A name of fewer labels is itself.
pub fn registered_domain(name: &str) -> &str {
    let dots: Vec<usize> = name.rmatch_indices('.').map(|(i, _)| i).take(3).collect();
    let last_two = dots.get(1).map_or(name, |&i| &name[i + 1..]);
    let labels = if TWO_LEVEL_SUFFIXES.contains(&last_two) {
        3
    } else {
        2
    };
    match dots.get(labels - 1) {
        Some(&i) => &name[i + 1..],
        None => name,
    }
}

/// A DNS message of a device: its query, or the answer it received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsEvent {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// The device that asked.
    pub device: DeviceRef,
    pub device_addr: IpAddr,
    /// The server asked (the other end of port 53).
    pub resolver: IpAddr,
    /// UDP or TCP.
    pub proto: u8,
    /// The question's name, as [`name_text`] writes it.
    pub name: String,
    pub qtype: u16,
    /// The answer's response code; `None` for the query itself (each message is one event: a
    /// query and its answer are two, the answer's carrying the code).
    pub rcode: Option<u8>,
    /// Records in the answer section (0 for a query).
    pub answers: u16,
}

/// The DNS message a packet carries, if it is one to or from port 53 with a device at its
/// client end: `None` for any other packet (and for a TCP segment that does not hold one whole
/// length-prefixed message), `Some(Err)` for a message that does not parse (to be counted).
pub fn event(pkt: &Packet<'_>, devices: &Devices) -> Option<Result<DnsEvent, DnsError>> {
    if pkt.fragment || !(pkt.proto == proto::UDP || pkt.proto == proto::TCP) {
        return None;
    }
    if pkt.src_port != PORT && pkt.dst_port != PORT {
        return None;
    }
    let bytes = if pkt.proto == proto::TCP {
        let (len, rest) = pkt.payload.split_first_chunk::<2>()?;
        rest.get(..usize::from(u16::from_be_bytes(*len)))?
    } else {
        pkt.payload
    };
    // Which end is the client: the one not on port 53, or for server to server (53 both ways)
    // the sender of a query.
    let client_is_src = match (pkt.src_port == PORT, pkt.dst_port == PORT) {
        (false, _) => true,
        (true, false) => false,
        (true, true) => bytes.get(2).is_some_and(|b| b & 0x80 == 0),
    };
    let (mac, addr, resolver) = if client_is_src {
        (pkt.src_mac, pkt.src, pkt.dst)
    } else {
        (pkt.dst_mac, pkt.dst, pkt.src)
    };
    let device = devices.resolve(mac, addr)?;
    Some(parse(bytes).map(|m| DnsEvent {
        ts_ns: pkt.ts_ns,
        device,
        device_addr: addr,
        resolver,
        proto: pkt.proto,
        name: m.name,
        qtype: m.qtype,
        rcode: m.response.then_some(m.rcode),
        answers: if m.response { m.answers } else { 0 },
    }))
}

/// Shannon entropy of the bytes of `s`, in bits per byte (0 for an empty string).
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests;
