//! OCSF 1.5 JSON (the first release with `anomaly_analyses` and `confidence_id` on Detection
//! Finding; every event is checked against that release's official schema in the tests:
//! `wardgate_testkit::ocsf`): Detection Finding (class 2004, category 2 Findings) for findings, with the
//! flows as evidences and the measured values next to their baselines as anomaly analyses; and
//! Network Activity (class 4001, category 4 Network Activity) for the datapath's deny records.
//! `type_uid` is always `class_uid * 100 + activity_id`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{PRODUCT, VENDOR, VERSION, ms, proto_name, title};
use crate::{
    detect::finding::{Finding, FlowRef},
    flow::{DeviceRef, FlowDirection},
};

/// The OCSF schema version these events follow.
pub const OCSF_VERSION: &str = "1.5.0";

pub const DETECTION_FINDING: u32 = 2004;
pub const NETWORK_ACTIVITY: u32 = 4001;
/// Detection Finding activity: 1 Create, 2 Update, 3 Close.
pub const ACTIVITY_CREATE: u32 = 1;
pub const ACTIVITY_UPDATE: u32 = 2;
/// Network Activity activity 5: Refuse (a connection attempt refused, here by policy).
pub const ACTIVITY_REFUSE: u32 = 5;

pub fn type_uid(class_uid: u32, activity_id: u32) -> u32 {
    class_uid * 100 + activity_id
}

/// `uid` names this one event: a receiver that deduplicates by `metadata.uid` keeps every
/// update of a finding (the finding itself is `finding_info.uid`).
fn metadata(uid: &str) -> Value {
    json!({
        "version": OCSF_VERSION,
        "uid": uid,
        "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": VERSION},
    })
}

fn endpoint(ip: IpAddr, port: u16) -> Value {
    if port == 0 {
        json!({"ip": ip.to_string()})
    } else {
        json!({"ip": ip.to_string(), "port": port})
    }
}

/// OCSF connection_info.direction_id: 1 Inbound, 2 Outbound (seen from the device).
fn direction_id(d: FlowDirection) -> u8 {
    match d {
        FlowDirection::Received => 1,
        FlowDirection::Opened => 2,
    }
}

fn evidence(fl: &FlowRef) -> Value {
    let (src, dst) = match fl.direction {
        FlowDirection::Opened => (
            endpoint(fl.device_addr, fl.device_port),
            endpoint(fl.peer, fl.peer_port),
        ),
        FlowDirection::Received => (
            endpoint(fl.peer, fl.peer_port),
            endpoint(fl.device_addr, fl.device_port),
        ),
    };
    json!({
        "src_endpoint": src,
        "dst_endpoint": dst,
        "connection_info": {
            "protocol_num": fl.proto,
            "protocol_name": proto_name(fl.proto).to_lowercase(),
            "direction_id": direction_id(fl.direction),
        },
        "data": {
            "first_seen_time": ms(fl.first_seen_ns),
            "last_seen_time": ms(fl.last_seen_ns),
            "packets": fl.packets,
            "bytes": fl.bytes,
        },
    })
}

/// OCSF device `type_id` 7: IOT, the closest of the schema's types to a medical device (its
/// clinical class goes in `desc`).
const DEVICE_TYPE_IOT: u32 = 7;

fn device(d: &DeviceRef, f: &Finding) -> Value {
    let mut v = json!({"name": d.name, "type_id": DEVICE_TYPE_IOT, "type": "IOT", "desc": "Medical device"});
    if let Some(m) = d.mac {
        v["mac"] = json!(m.to_string());
    }
    if let Some(fl) = f.flows.first() {
        v["ip"] = json!(fl.device_addr.to_string());
    }
    if let Some(id) = d.id {
        v["uid"] = json!(id.to_string());
    }
    if let Some(a) = &f.asset_id {
        v["uid_alt"] = json!(a);
    }
    if let Some(l) = &f.location {
        v["location"] = json!({"desc": l});
    }
    if let Some(c) = &f.class {
        v["desc"] = json!(format!("Medical device: {c}"));
    }
    v
}

/// OCSF `confidence_id`: 1 Low, 2 Medium, 3 High, from the detector's confidence in 0..=1.
fn confidence_id(confidence: f64) -> (u32, &'static str) {
    if confidence >= 0.8 {
        (3, "High")
    } else if confidence >= 0.5 {
        (2, "Medium")
    } else {
        (1, "Low")
    }
}

/// The anomaly analyses: each metric observed in the window, with its baseline where one was
/// involved.
fn anomaly_analyses(f: &Finding) -> Value {
    let timespan = json!({
        "start_time": ms(f.evidence.window_start_ns),
        "end_time": ms(f.evidence.window_end_ns),
    });
    let anomalies: Vec<Value> = f
        .evidence
        .metrics
        .iter()
        .map(|m| {
            json!({
                "observation_parameter": m.name,
                "observation_type": "count",
                "observations": [{"value": m.observed.to_string(), "timespan": timespan}],
            })
        })
        .collect();
    let baselines: Vec<Value> = f
        .evidence
        .metrics
        .iter()
        .filter_map(|m| {
            let b = m.baseline?;
            Some(json!({
                "observation_parameter": m.name,
                "observation_type": "median",
                "observations": [{"value": b.to_string()}],
            }))
        })
        .collect();
    let mut a = json!({
        "analysis_targets": [{"name": f.device.name, "type": "device"}],
        "anomalies": anomalies,
    });
    if !baselines.is_empty() {
        a["baselines"] = json!(baselines);
    }
    json!([a])
}

/// An OCSF Detection Finding. `activity_id` 1 for a new finding, 2 for an update of one raised
/// before (same `finding_info.uid`).
pub fn detection_finding(f: &Finding, activity_id: u32) -> Value {
    let (tactic_uid, tactic_name) = f.technique.tactic();
    let mut attack = json!({
        "technique": {"uid": f.technique.id, "name": f.technique.name, "src_url": f.technique.url()},
        "version": "v16",
    });
    if !tactic_uid.is_empty() {
        attack["tactic"] = json!({"uid": tactic_uid, "name": tactic_name});
    }
    let (confidence_id, confidence) = confidence_id(f.confidence);
    // This event, not the finding: a create and each update have their own.
    let event_uid = format!(
        "{}.{}.{}.{}",
        f.id,
        activity_id,
        f.count,
        ms(f.last_seen_ns)
    );
    json!({
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": DETECTION_FINDING,
        "class_name": "Detection Finding",
        "activity_id": activity_id,
        "activity_name": if activity_id == ACTIVITY_UPDATE { "Update" } else { "Create" },
        "type_uid": type_uid(DETECTION_FINDING, activity_id),
        "type_name": format!("Detection Finding: {}", if activity_id == ACTIVITY_UPDATE { "Update" } else { "Create" }),
        "severity_id": f.severity.ocsf_id(),
        "severity": f.severity.name(),
        "status_id": 1,
        "status": "New",
        "time": ms(f.time_ns),
        "start_time": ms(f.first_seen_ns),
        "end_time": ms(f.last_seen_ns),
        "count": f.count,
        "confidence_score": (f.confidence * 100.0).round() as u32,
        "confidence_id": confidence_id,
        "confidence": confidence,
        "is_alert": true,
        "message": f.summary,
        "metadata": metadata(&event_uid),
        "finding_info": {
            "uid": f.id,
            "title": title(&f.detector),
            "desc": f.summary,
            "types": [f.detector],
            "first_seen_time": ms(f.first_seen_ns),
            "last_seen_time": ms(f.last_seen_ns),
            "analytic": {"uid": f.detector, "name": f.detector, "type_id": 2, "type": "Behavioral"},
            "attacks": if f.technique.id.is_empty() { json!([]) } else { json!([attack]) },
        },
        "device": device(&f.device, f),
        "evidences": f.flows.iter().map(evidence).collect::<Vec<_>>(),
        "anomaly_analyses": anomaly_analyses(f),
        "remediation": {"desc": f.action},
        "unmapped": {
            "gateway": f.gateway,
            "peer": f.peer.map(|p| p.to_string()),
            "ports": f.evidence.ports,
            "peers": f.evidence.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "rule": f.rule,
            "generation": f.generation,
            "rule_name": f.rule_name,
            "mode": f.mode,
            "profile_version": f.profile_version,
        },
    })
}

/// A flow the datapath denied (monitor: would have denied), as the agent reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyRecord {
    pub id: String,
    pub time_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub device: DeviceRef,
    pub direction: FlowDirection,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub proto: u8,
    /// `policy`, `spoof`, `unknown device` ...
    pub reason: String,
    /// Whether it was dropped (enforce) or only reported (monitor).
    pub enforced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// The deny record of a datapath deny or would-deny finding (`None` for any other finding, or
/// one without its flow).
pub fn deny_record(f: &Finding) -> Option<DenyRecord> {
    use crate::detect::finding::datapath;
    let enforced = match f.detector.as_str() {
        datapath::DENY => true,
        datapath::WOULD_DENY => false,
        _ => return None,
    };
    let fl = f.flows.first()?;
    let ((src, src_port), (dst, dst_port)) = match fl.direction {
        FlowDirection::Opened => ((fl.device_addr, fl.device_port), (fl.peer, fl.peer_port)),
        FlowDirection::Received => ((fl.peer, fl.peer_port), (fl.device_addr, fl.device_port)),
    };
    Some(DenyRecord {
        id: f.id.clone(),
        time_ns: f.time_ns,
        gateway: f.gateway.clone(),
        device: f.device.clone(),
        direction: fl.direction,
        src,
        src_port,
        dst,
        dst_port,
        proto: fl.proto,
        reason: "policy".into(),
        enforced,
        generation: f.generation.map(u64::from),
    })
}

/// The OCSF event of a stored finding: Network Activity for a datapath deny, a Detection
/// Finding for anything else: activity Create, or Update when `update` (the reader delivered
/// this finding before and it grew).
pub fn event(f: &Finding, update: bool) -> Value {
    match deny_record(f) {
        Some(d) => network_activity(&d),
        None if update => detection_finding(f, ACTIVITY_UPDATE),
        None => detection_finding(f, ACTIVITY_CREATE),
    }
}

/// An OCSF Network Activity event (activity Refuse) for a deny record.
pub fn network_activity(d: &DenyRecord) -> Value {
    json!({
        "category_uid": 4,
        "category_name": "Network Activity",
        "class_uid": NETWORK_ACTIVITY,
        "class_name": "Network Activity",
        "activity_id": ACTIVITY_REFUSE,
        "activity_name": "Refuse",
        "type_uid": type_uid(NETWORK_ACTIVITY, ACTIVITY_REFUSE),
        "type_name": "Network Activity: Refuse",
        "severity_id": if d.enforced { 2 } else { 1 },
        "severity": if d.enforced { "Low" } else { "Informational" },
        "time": ms(d.time_ns),
        "action_id": if d.enforced { 2 } else { 1 },
        "action": if d.enforced { "Denied" } else { "Allowed" },
        "disposition_id": if d.enforced { 2 } else { 15 },
        "disposition": if d.enforced { "Blocked" } else { "Detected" },
        "status_id": 2,
        "status": "Failure",
        "message": format!("{} flow of {} denied: {}", proto_name(d.proto), d.device.name, d.reason),
        "metadata": metadata(&d.id),
        "src_endpoint": endpoint(d.src, d.src_port),
        "dst_endpoint": endpoint(d.dst, d.dst_port),
        "connection_info": {
            "protocol_num": d.proto,
            "protocol_name": proto_name(d.proto).to_lowercase(),
            "direction_id": direction_id(d.direction),
        },
        "device": deny_device(&d.device),
        "unmapped": {"reason": d.reason, "gateway": d.gateway, "generation": d.generation},
    })
}

fn deny_device(d: &DeviceRef) -> Value {
    let mut v = json!({"name": d.name, "type_id": DEVICE_TYPE_IOT, "type": "IOT"});
    if let Some(m) = d.mac {
        v["mac"] = json!(m.to_string());
    }
    if let Some(id) = d.id {
        v["uid"] = json!(id.to_string());
    }
    v
}

#[cfg(test)]
mod tests;
