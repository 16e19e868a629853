//! Recorded flows for the availability warning's tests: `monitor-3a-bed12` of the demo site
//! (the only patient monitor of its ward) talking to a peer its profile does not allow.

// Each test file uses part of it.
#![allow(dead_code)]

use wardgate_analysis::{FlowDirection, FlowOutcome, FlowRecord, TcpOutcome, flow::DeviceRef};
use wardgate_controller::store::{FlowLimits, Store};
use wardgate_testkit::controller::LabController;

pub const GW: &str = "gw-ward-3";
pub const MONITOR: &str = "monitor-3a-bed12";
/// In no group of the demo site (clinical-workstations is .64/26), so no profile allows it.
pub const PEER: &str = "203.0.113.200";
pub const PORT: u16 = 4444;
const DAY_NS: u64 = 86_400 * 1_000_000_000;

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Stores `flows` flows of the monitor to [`PEER`]:[`PORT`], last seen `days_ago` days ago.
pub fn record(lab: &LabController, days_ago: f64, flows: u32) {
    let now = now_ns();
    let t = now - (days_ago * DAY_NS as f64) as u64;
    let records: Vec<FlowRecord> = (0..flows)
        .map(|i| FlowRecord {
            device: DeviceRef {
                name: MONITOR.into(),
                id: None,
                mac: None,
            },
            direction: FlowDirection::Opened,
            device_addr: "192.0.2.11".parse().unwrap(),
            device_port: 40_000 + i as u16,
            peer: PEER.parse().unwrap(),
            peer_port: PORT,
            proto: 6,
            port: PORT,
            icmp_type: None,
            vlan: None,
            packets_out: 3,
            bytes_out: 200,
            packets_in: 2,
            bytes_in: 100,
            first_seen_ns: t - 1_000_000_000,
            last_seen_ns: t,
            tcp: Some(TcpOutcome::Established),
            outcome: FlowOutcome::Established,
            rule: None,
            app: None,
            tcp_flags: None,
            peer_name: None,
            continuation: false,
        })
        .collect();
    let limits = FlowLimits {
        retention_days: 30,
        rows_per_device_day: 1_000,
    };
    let stored = lab.store.insert_flows(GW, &records, now, limits).unwrap();
    assert_eq!(stored.stored, flows, "{stored:?}");
}
