//! The pure analysis layer of wardgate: packet decoding, flow records, per-device baselines,
//! the DICOM / HL7 identity parsers and DNS messages. No I/O: functions over bytes and values,
//! fed by the agent (live, from datapath events; offline, from captures) so both give the same
//! answers.

pub mod aggregate;
pub mod app;
pub mod baseline;
pub mod decode;
pub mod detect;
pub mod device;
pub mod dicom;
pub mod dns;
pub mod flow;
pub mod hl7;
pub mod mac;
pub mod propose;
pub mod simulate;

pub use app::AppIdentity;
pub use decode::{DecodeError, Decoded, LinkType, Packet, decode};
pub use device::{DeviceInfo, Devices};
pub use flow::{
    FlowDirection, FlowOutcome, FlowRecord, FlowTable, FlowTableConfig, OutcomeCounts, TcpOutcome,
};
pub use mac::Mac;
