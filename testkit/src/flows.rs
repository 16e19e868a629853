//! Flow records as the agent reports them, for tests of the report path (queue, outbox,
//! controller ingest): one completed TCP flow of a device at 192.0.2.10 to 198.51.100.30.

use wardgate_analysis::{FlowDirection, FlowOutcome, FlowRecord, TcpOutcome, flow::DeviceRef};

const NS: u64 = 1_000_000_000;

/// An established TCP flow of `device` to port `port`, first seen at `t` ns, lasting 1 s.
pub fn tcp_record(device: &str, port: u16, t: u64) -> FlowRecord {
    FlowRecord {
        device: DeviceRef {
            name: device.into(),
            id: None,
            mac: None,
        },
        direction: FlowDirection::Opened,
        device_addr: "192.0.2.10".parse().unwrap(),
        device_port: 40_000,
        peer: "198.51.100.30".parse().unwrap(),
        peer_port: port,
        proto: 6,
        port,
        icmp_type: None,
        vlan: None,
        packets_out: 3,
        bytes_out: 200,
        packets_in: 2,
        bytes_in: 100,
        first_seen_ns: t,
        last_seen_ns: t + NS,
        tcp: Some(TcpOutcome::Established),
        outcome: FlowOutcome::Established,
        rule: Some(2),
        app: None,
        tcp_flags: None,
        peer_name: None,
        continuation: false,
    }
}
