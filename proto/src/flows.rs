//! Flow records between their protobuf form (`learning.proto`) and the analysis crate's
//! `FlowRecord`: the one place they convert. Records come from agents, so the way in checks
//! every field (addresses and their family, ports, protocol, enums, time order, text lengths)
//! and names the field that is wrong.

use std::net::IpAddr;

use wardgate_analysis::{
    AppIdentity, FlowDirection, FlowOutcome, FlowRecord, Mac, TcpOutcome,
    dicom::{AssociateRq, MAX_SYNTAXES},
    flow::DeviceRef,
    flow::TcpFlags,
    hl7::Hl7Header,
};

use crate::v1 as pb;

/// Most records in one `FlowBatch` (a batch is also bounded by `MAX_REQUEST_BYTES`).
pub const MAX_FLOWS_PER_BATCH: usize = 4096;
/// Longest device name accepted.
pub const MAX_NAME: usize = 128;
/// Longest text field of an app identity (the parsers keep at most 128 characters).
pub const MAX_TEXT: usize = 256;
/// Longest DNS name (RFC 1035: 253 characters written out).
pub const MAX_PEER_NAME: usize = 253;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("flow record {index}: {field}: {problem}")]
pub struct FlowError {
    pub index: usize,
    pub field: &'static str,
    pub problem: String,
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

impl From<&FlowRecord> for pb::FlowRecord {
    fn from(r: &FlowRecord) -> Self {
        pb::FlowRecord {
            device: r.device.name.clone(),
            device_id: r.device.id,
            device_mac: r.device.mac.map(|m| m.0.to_vec()).unwrap_or_default(),
            direction: match r.direction {
                FlowDirection::Opened => pb::FlowDirection::Opened,
                FlowDirection::Received => pb::FlowDirection::Received,
            } as i32,
            device_addr: ip_bytes(r.device_addr),
            device_port: r.device_port.into(),
            peer: ip_bytes(r.peer),
            peer_port: r.peer_port.into(),
            proto: r.proto.into(),
            port: r.port.into(),
            icmp_type: r.icmp_type.map(u32::from),
            vlan: r.vlan.map(u32::from),
            packets_out: r.packets_out,
            bytes_out: r.bytes_out,
            packets_in: r.packets_in,
            bytes_in: r.bytes_in,
            first_seen_ns: r.first_seen_ns,
            last_seen_ns: r.last_seen_ns,
            tcp: match r.tcp {
                None => pb::TcpOutcome::None,
                Some(TcpOutcome::Established) => pb::TcpOutcome::Established,
                Some(TcpOutcome::Refused) => pb::TcpOutcome::Refused,
                Some(TcpOutcome::NoAnswer) => pb::TcpOutcome::NoAnswer,
                Some(TcpOutcome::Unknown) => pb::TcpOutcome::Unknown,
            } as i32,
            rule: r.rule,
            app: r.app.as_ref().map(app_pb),
            peer_name: r.peer_name.clone(),
            tcp_flags: r.tcp_flags.map(|f| pb::TcpFlags {
                first: f.first.into(),
                sent: f.sent.into(),
                received: f.received.into(),
            }),
            outcome: match r.outcome {
                FlowOutcome::Established => pb::FlowOutcome::Established,
                FlowOutcome::Refused => pb::FlowOutcome::Refused,
                FlowOutcome::Unanswered => pb::FlowOutcome::Unanswered,
                FlowOutcome::Denied => pb::FlowOutcome::Denied,
                FlowOutcome::Unknown => pb::FlowOutcome::Unknown,
            } as i32,
        }
    }
}

fn app_pb(a: &AppIdentity) -> pb::AppIdentity {
    pb::AppIdentity {
        app: Some(match a {
            AppIdentity::Dicom(d) => pb::app_identity::App::Dicom(pb::DicomAssociation {
                calling_ae: d.calling_ae.clone(),
                called_ae: d.called_ae.clone(),
                application_context: d.application_context.clone(),
                abstract_syntaxes: d.abstract_syntaxes.clone(),
                syntaxes_not_listed: d.syntaxes_not_listed,
                implementation_class_uid: d.implementation_class_uid.clone(),
                implementation_version: d.implementation_version.clone(),
                truncated: d.truncated,
            }),
            AppIdentity::Hl7(h) => pb::app_identity::App::Hl7(pb::Hl7Header {
                field_separator: h.field_separator.to_string(),
                encoding_characters: h.encoding_characters.clone(),
                sending_application: h.sending_application.clone(),
                sending_facility: h.sending_facility.clone(),
                receiving_application: h.receiving_application.clone(),
                receiving_facility: h.receiving_facility.clone(),
                message_type: h.message_type.clone(),
                version: h.version.clone(),
                mllp: h.mllp,
            }),
        }),
    }
}

/// Checks one field at a time; `index` is the record's place in its batch.
struct Check {
    index: usize,
}

impl Check {
    fn err(&self, field: &'static str, problem: impl Into<String>) -> FlowError {
        FlowError {
            index: self.index,
            field,
            problem: problem.into(),
        }
    }

    fn ip(&self, field: &'static str, b: &[u8]) -> Result<IpAddr, FlowError> {
        match b.len() {
            4 => Ok(IpAddr::from(<[u8; 4]>::try_from(b).expect("4 bytes"))),
            16 => Ok(IpAddr::from(<[u8; 16]>::try_from(b).expect("16 bytes"))),
            n => Err(self.err(
                field,
                format!("{n} bytes, not an IPv4 (4) or IPv6 (16) address"),
            )),
        }
    }

    fn max(&self, field: &'static str, v: u32, max: u32) -> Result<u32, FlowError> {
        if v > max {
            Err(self.err(field, format!("{v} is over {max}")))
        } else {
            Ok(v)
        }
    }

    fn text(&self, field: &'static str, s: String, max: usize) -> Result<String, FlowError> {
        if s.len() > max {
            return Err(self.err(field, format!("{} bytes, over {max}", s.len())));
        }
        if s.chars().any(char::is_control) {
            return Err(self.err(field, "holds control characters"));
        }
        Ok(s)
    }

    fn app(&self, a: pb::AppIdentity) -> Result<AppIdentity, FlowError> {
        let t = |f: &'static str, s: String| self.text(f, s, MAX_TEXT);
        match a.app {
            None => Err(self.err("app", "an app identity with neither dicom nor hl7")),
            Some(pb::app_identity::App::Dicom(d)) => {
                if d.abstract_syntaxes.len() > MAX_SYNTAXES {
                    return Err(self.err(
                        "app.dicom.abstract_syntaxes",
                        format!("{} listed, over {MAX_SYNTAXES}", d.abstract_syntaxes.len()),
                    ));
                }
                Ok(AppIdentity::Dicom(AssociateRq {
                    calling_ae: t("app.dicom.calling_ae", d.calling_ae)?,
                    called_ae: t("app.dicom.called_ae", d.called_ae)?,
                    application_context: t("app.dicom.application_context", d.application_context)?,
                    abstract_syntaxes: d
                        .abstract_syntaxes
                        .into_iter()
                        .map(|s| t("app.dicom.abstract_syntaxes", s))
                        .collect::<Result<_, _>>()?,
                    syntaxes_not_listed: d.syntaxes_not_listed,
                    implementation_class_uid: d
                        .implementation_class_uid
                        .map(|s| t("app.dicom.implementation_class_uid", s))
                        .transpose()?,
                    implementation_version: d
                        .implementation_version
                        .map(|s| t("app.dicom.implementation_version", s))
                        .transpose()?,
                    truncated: d.truncated,
                }))
            }
            Some(pb::app_identity::App::Hl7(h)) => {
                let mut sep = h.field_separator.chars();
                let field_separator = match (sep.next(), sep.next()) {
                    (Some(c), None) if !c.is_control() => c,
                    _ => {
                        return Err(self.err(
                            "app.hl7.field_separator",
                            format!("{:?} is not one character", h.field_separator),
                        ));
                    }
                };
                Ok(AppIdentity::Hl7(Hl7Header {
                    field_separator,
                    encoding_characters: t("app.hl7.encoding_characters", h.encoding_characters)?,
                    sending_application: t("app.hl7.sending_application", h.sending_application)?,
                    sending_facility: t("app.hl7.sending_facility", h.sending_facility)?,
                    receiving_application: t(
                        "app.hl7.receiving_application",
                        h.receiving_application,
                    )?,
                    receiving_facility: t("app.hl7.receiving_facility", h.receiving_facility)?,
                    message_type: t("app.hl7.message_type", h.message_type)?,
                    version: t("app.hl7.version", h.version)?,
                    mllp: h.mllp,
                }))
            }
        }
    }
}

/// Converts the record at `index` of a batch, checking every field.
pub fn record_from_pb(index: usize, r: pb::FlowRecord) -> Result<FlowRecord, FlowError> {
    let c = Check { index };
    let name = c.text("device", r.device, MAX_NAME)?;
    if name.trim().is_empty() {
        return Err(c.err("device", "empty"));
    }
    let mac = match r.device_mac.len() {
        0 => None,
        6 => Some(Mac(<[u8; 6]>::try_from(&r.device_mac[..]).expect("6 bytes"))),
        n => return Err(c.err("device_mac", format!("{n} bytes, not 0 or 6"))),
    };
    let direction = match pb::FlowDirection::try_from(r.direction) {
        Ok(pb::FlowDirection::Opened) => FlowDirection::Opened,
        Ok(pb::FlowDirection::Received) => FlowDirection::Received,
        _ => {
            return Err(c.err(
                "direction",
                format!("{} is not opened (1) or received (2)", r.direction),
            ));
        }
    };
    let device_addr = c.ip("device_addr", &r.device_addr)?;
    let peer = c.ip("peer", &r.peer)?;
    if device_addr.is_ipv4() != peer.is_ipv4() {
        return Err(c.err(
            "peer",
            format!("{peer} is not of the device address's family ({device_addr})"),
        ));
    }
    let tcp = match pb::TcpOutcome::try_from(r.tcp) {
        Ok(pb::TcpOutcome::None) => None,
        Ok(pb::TcpOutcome::Established) => Some(TcpOutcome::Established),
        Ok(pb::TcpOutcome::Refused) => Some(TcpOutcome::Refused),
        Ok(pb::TcpOutcome::NoAnswer) => Some(TcpOutcome::NoAnswer),
        Ok(pb::TcpOutcome::Unknown) => Some(TcpOutcome::Unknown),
        Err(_) => return Err(c.err("tcp", format!("{} is not a TCP outcome", r.tcp))),
    };
    let outcome = match pb::FlowOutcome::try_from(r.outcome) {
        // An agent before outcomes: what its record says.
        Ok(pb::FlowOutcome::Unspecified) => FlowOutcome::of_record(
            u8::try_from(r.proto).unwrap_or(0),
            direction,
            tcp,
            r.packets_out,
            r.packets_in,
            false,
        ),
        Ok(pb::FlowOutcome::Established) => FlowOutcome::Established,
        Ok(pb::FlowOutcome::Refused) => FlowOutcome::Refused,
        Ok(pb::FlowOutcome::Unanswered) => FlowOutcome::Unanswered,
        Ok(pb::FlowOutcome::Denied) => FlowOutcome::Denied,
        Ok(pb::FlowOutcome::Unknown) => FlowOutcome::Unknown,
        Err(_) => {
            return Err(c.err("outcome", format!("{} is not a flow outcome", r.outcome)));
        }
    };
    if r.first_seen_ns > r.last_seen_ns {
        return Err(c.err(
            "last_seen_ns",
            format!(
                "{} is before first_seen_ns {}",
                r.last_seen_ns, r.first_seen_ns
            ),
        ));
    }
    let port16 = |f: &'static str, v: u32| c.max(f, v, u32::from(u16::MAX)).map(|v| v as u16);
    Ok(FlowRecord {
        device: DeviceRef {
            name,
            id: r.device_id,
            mac,
        },
        direction,
        device_addr,
        device_port: port16("device_port", r.device_port)?,
        peer,
        peer_port: port16("peer_port", r.peer_port)?,
        proto: c.max("proto", r.proto, 255)? as u8,
        port: port16("port", r.port)?,
        icmp_type: r
            .icmp_type
            .map(|v| c.max("icmp_type", v, 255).map(|v| v as u8))
            .transpose()?,
        vlan: r
            .vlan
            .map(|v| c.max("vlan", v, 4095).map(|v| v as u16))
            .transpose()?,
        packets_out: r.packets_out,
        bytes_out: r.bytes_out,
        packets_in: r.packets_in,
        bytes_in: r.bytes_in,
        first_seen_ns: r.first_seen_ns,
        last_seen_ns: r.last_seen_ns,
        tcp,
        outcome,
        rule: r.rule,
        app: r.app.map(|a| c.app(a)).transpose()?,
        tcp_flags: r
            .tcp_flags
            .map(|f| -> Result<TcpFlags, FlowError> {
                let bits = |field: &'static str, v: u32| c.max(field, v, 255).map(|v| v as u8);
                Ok(TcpFlags {
                    first: bits("tcp_flags.first", f.first)?,
                    sent: bits("tcp_flags.sent", f.sent)?,
                    received: bits("tcp_flags.received", f.received)?,
                })
            })
            .transpose()?,
        peer_name: r
            .peer_name
            .map(|n| c.text("peer_name", n.to_ascii_lowercase(), MAX_PEER_NAME))
            .transpose()?,
        // The controller is sent no continuations (`agent::flows::deliver`).
        continuation: false,
    })
}

/// Every record of a batch, or the first that does not convert.
pub fn records_from_pb(batch: Vec<pb::FlowRecord>) -> Result<Vec<FlowRecord>, FlowError> {
    batch
        .into_iter()
        .enumerate()
        .map(|(i, r)| record_from_pb(i, r))
        .collect()
}

/// Splits `records` into batches under both limits (record count and encoded size, with room
/// for the batch's own framing), in order.
pub fn batches(gateway: &str, records: &[FlowRecord]) -> Vec<pb::FlowBatch> {
    use prost::Message as _;
    let budget = crate::MAX_REQUEST_BYTES - 1024;
    let mut out = Vec::new();
    let mut cur = pb::FlowBatch {
        gateway: gateway.to_string(),
        records: Vec::new(),
    };
    let mut size = 0usize;
    for r in records {
        let p = pb::FlowRecord::from(r);
        let len = p.encoded_len() + 8;
        if !cur.records.is_empty()
            && (cur.records.len() == MAX_FLOWS_PER_BATCH || size + len > budget)
        {
            out.push(std::mem::replace(
                &mut cur,
                pb::FlowBatch {
                    gateway: gateway.to_string(),
                    records: Vec::new(),
                },
            ));
            size = 0;
        }
        size += len;
        cur.records.push(p);
    }
    if !cur.records.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(app: Option<AppIdentity>) -> FlowRecord {
        FlowRecord {
            device: DeviceRef {
                name: "ct-1".into(),
                id: Some(4),
                mac: Some(Mac([2, 0, 0, 0, 0, 4])),
            },
            direction: FlowDirection::Opened,
            device_addr: "2001:db8::4".parse().unwrap(),
            device_port: 40001,
            peer: "2001:db8:1::104".parse().unwrap(),
            peer_port: 104,
            proto: 6,
            port: 104,
            icmp_type: None,
            vlan: Some(12),
            packets_out: 10,
            bytes_out: 5000,
            packets_in: 8,
            bytes_in: 900,
            first_seen_ns: 1_700_000_000_000_000_000,
            last_seen_ns: 1_700_000_005_000_000_000,
            tcp: Some(TcpOutcome::Established),
            outcome: wardgate_analysis::FlowOutcome::Established,
            rule: Some(7),
            app,
            tcp_flags: Some(TcpFlags {
                first: 0x02,
                sent: 0x1b,
                received: 0x13,
            }),
            peer_name: None,
            continuation: false,
        }
    }

    #[test]
    fn records_round_trip_with_both_app_kinds() {
        let dicom = AppIdentity::Dicom(AssociateRq {
            calling_ae: "CT1".into(),
            called_ae: "PACS".into(),
            application_context: "1.2.840.10008.3.1.1.1".into(),
            abstract_syntaxes: vec!["1.2.840.10008.1.1".into()],
            syntaxes_not_listed: 2,
            implementation_class_uid: Some("1.2.3".into()),
            implementation_version: None,
            truncated: true,
        });
        let hl7 = AppIdentity::Hl7(Hl7Header {
            field_separator: '|',
            encoding_characters: "^~\\&".into(),
            sending_application: "EPIC".into(),
            sending_facility: "HOSP".into(),
            receiving_application: "LAB".into(),
            receiving_facility: "LABFAC".into(),
            message_type: "ADT^A01".into(),
            version: "2.5.1".into(),
            mllp: true,
        });
        for r in [record(None), record(Some(dicom)), record(Some(hl7))] {
            assert_eq!(record_from_pb(0, pb::FlowRecord::from(&r)).unwrap(), r);
        }
        let mut bad = pb::FlowRecord::from(&record(None));
        bad.tcp_flags.as_mut().unwrap().sent = 256;
        assert!(
            record_from_pb(0, bad)
                .unwrap_err()
                .to_string()
                .contains("tcp_flags.sent"),
        );
        let mut v4 = record(None);
        (v4.device_addr, v4.peer, v4.tcp, v4.proto, v4.port) = (
            "192.0.2.4".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
            None,
            1,
            0,
        );
        v4.icmp_type = Some(8);
        v4.device.mac = None;
        assert_eq!(record_from_pb(0, pb::FlowRecord::from(&v4)).unwrap(), v4);
    }

    #[test]
    fn a_record_without_an_outcome_gets_one_inferred() {
        let mut p = pb::FlowRecord::from(&record(None));
        p.outcome = 0;
        assert_eq!(
            record_from_pb(0, p.clone()).unwrap().outcome,
            FlowOutcome::Established
        );
        p.tcp = pb::TcpOutcome::NoAnswer as i32;
        assert_eq!(
            record_from_pb(0, p.clone()).unwrap().outcome,
            FlowOutcome::Unanswered
        );
        // UDP with nothing back.
        (p.proto, p.tcp, p.packets_in) = (17, 0, 0);
        assert_eq!(
            record_from_pb(0, p).unwrap().outcome,
            FlowOutcome::Unanswered
        );
        let mut denied = record(None);
        denied.outcome = FlowOutcome::Denied;
        assert_eq!(
            record_from_pb(0, pb::FlowRecord::from(&denied))
                .unwrap()
                .outcome,
            FlowOutcome::Denied
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        type Break = fn(&mut pb::FlowRecord);
        let cases: &[(&str, Break)] = &[
            ("device", |p| p.device = String::new()),
            ("device", |p| p.device = "x".repeat(MAX_NAME + 1)),
            ("device", |p| p.device = "a\nb".into()),
            ("device_mac", |p| p.device_mac = vec![1, 2, 3]),
            ("direction", |p| p.direction = 0),
            ("direction", |p| p.direction = 9),
            ("device_addr", |p| p.device_addr = vec![1; 5]),
            ("peer", |p| p.peer = vec![]),
            ("peer", |p| p.peer = vec![198, 51, 100, 1]),
            ("device_port", |p| p.device_port = 65_536),
            ("peer_port", |p| p.peer_port = 70_000),
            ("port", |p| p.port = 1 << 20),
            ("proto", |p| p.proto = 256),
            ("icmp_type", |p| p.icmp_type = Some(300)),
            ("vlan", |p| p.vlan = Some(4096)),
            ("tcp", |p| p.tcp = 17),
            ("outcome", |p| p.outcome = 9),
            ("last_seen_ns", |p| p.last_seen_ns = p.first_seen_ns - 1),
            ("app", |p| p.app = Some(pb::AppIdentity { app: None })),
            ("app.hl7.field_separator", |p| {
                p.app = Some(pb::AppIdentity {
                    app: Some(pb::app_identity::App::Hl7(pb::Hl7Header {
                        field_separator: "||".into(),
                        ..Default::default()
                    })),
                });
            }),
            ("app.dicom.calling_ae", |p| {
                p.app = Some(pb::AppIdentity {
                    app: Some(pb::app_identity::App::Dicom(pb::DicomAssociation {
                        calling_ae: "A".repeat(MAX_TEXT + 1),
                        ..Default::default()
                    })),
                });
            }),
            ("app.dicom.abstract_syntaxes", |p| {
                p.app = Some(pb::AppIdentity {
                    app: Some(pb::app_identity::App::Dicom(pb::DicomAssociation {
                        abstract_syntaxes: vec!["1.2".into(); MAX_SYNTAXES + 1],
                        ..Default::default()
                    })),
                });
            }),
        ];
        for (field, f) in cases {
            let mut p = pb::FlowRecord::from(&record(None));
            f(&mut p);
            let e = record_from_pb(3, p).unwrap_err();
            assert_eq!((e.index, e.field), (3, *field), "{e}");
        }
    }

    #[test]
    fn batches_respect_count_and_size_limits() {
        use prost::Message as _;
        let rs: Vec<FlowRecord> = (0..(MAX_FLOWS_PER_BATCH + 10))
            .map(|_| record(None))
            .collect();
        let b = batches("gw", &rs);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].records.len(), MAX_FLOWS_PER_BATCH);
        assert_eq!(b.iter().map(|b| b.records.len()).sum::<usize>(), rs.len());
        assert!(
            b.iter()
                .all(|b| b.encoded_len() <= crate::MAX_REQUEST_BYTES)
        );
        // Big records: the size limit splits first.
        let mut big = record(None);
        big.device.name = "d".repeat(MAX_NAME);
        let dicom = AssociateRq {
            calling_ae: "A".repeat(MAX_TEXT),
            called_ae: "B".repeat(MAX_TEXT),
            application_context: "C".repeat(MAX_TEXT),
            abstract_syntaxes: vec!["1".repeat(MAX_TEXT); MAX_SYNTAXES],
            syntaxes_not_listed: 0,
            implementation_class_uid: None,
            implementation_version: None,
            truncated: false,
        };
        big.app = Some(AppIdentity::Dicom(dicom));
        let b = batches("gw", &vec![big; 1000]);
        assert!(b.len() > 1);
        assert!(
            b.iter()
                .all(|b| b.encoded_len() <= crate::MAX_REQUEST_BYTES)
        );
        assert_eq!(b.iter().map(|b| b.records.len()).sum::<usize>(), 1000);
    }
}
