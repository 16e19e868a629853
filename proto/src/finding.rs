//! The one alert type at the edges: the analysis crate's `Finding` (what detectors and the
//! datapath raise, and what the SOC formats take) to the protobuf `Alert` the agent streams and
//! the controller serves, and back with every field checked (`TryFrom`). Alerts from agents that
//! predate the finding fields (a `kind`, no `detector`) convert as the datapath detector of
//! their kind.

use std::net::IpAddr;

use thiserror::Error;
use wardgate_analysis::{
    FlowDirection, Mac,
    detect::Finding,
    detect::finding::{
        Evidence, FlowRef, MAX_FLOWS, MAX_LISTED, Matrix, Metric, Technique, datapath,
    },
    flow::DeviceRef,
};

use crate::v1 as pb;

/// An alert that does not convert to a finding.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("alert `{id}`: {at}: {problem}")]
pub struct AlertError {
    pub id: String,
    /// Which field, e.g. `flows[1].peer`.
    pub at: String,
    pub problem: String,
}

fn matrix_name(m: Matrix) -> &'static str {
    match m {
        Matrix::Enterprise => "enterprise",
        Matrix::Ics => "ics",
    }
}

fn direction_name(d: FlowDirection) -> &'static str {
    match d {
        FlowDirection::Opened => "opened",
        FlowDirection::Received => "received",
    }
}

fn opt_string(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

fn flow(f: &FlowRef) -> pb::AlertFlow {
    pb::AlertFlow {
        direction: direction_name(f.direction).into(),
        device_addr: f.device_addr.to_string(),
        device_port: f.device_port.into(),
        peer: f.peer.to_string(),
        peer_port: f.peer_port.into(),
        protocol: f.proto.into(),
        first_seen_unix_ns: f.first_seen_ns,
        last_seen_unix_ns: f.last_seen_ns,
        packets: f.packets,
        bytes: f.bytes,
    }
}

impl From<&Finding> for pb::Alert {
    fn from(f: &Finding) -> pb::Alert {
        // The flow's initiator is `src`, as the datapath reports it.
        let (src, src_port, dst, dst_port, protocol) = match f.flows.first() {
            Some(fl) => {
                let (s, d) = match fl.direction {
                    FlowDirection::Opened => {
                        ((fl.device_addr, fl.device_port), (fl.peer, fl.peer_port))
                    }
                    FlowDirection::Received => {
                        ((fl.peer, fl.peer_port), (fl.device_addr, fl.device_port))
                    }
                };
                (
                    s.0.to_string(),
                    s.1.into(),
                    d.0.to_string(),
                    d.1.into(),
                    fl.proto.into(),
                )
            }
            None => Default::default(),
        };
        pb::Alert {
            id: f.id.clone(),
            gateway: opt_string(&f.gateway),
            device: f.device.name.clone(),
            profile: opt_string(&f.class),
            rule_id: f.rule.unwrap_or(0),
            kind: datapath::kind(&f.detector).into(),
            severity: f.severity.to_string(),
            severity_enum: crate::enums::severity_pb(f.severity).into(),
            mode: opt_string(&f.mode),
            mode_enum: crate::enums::mode_number(f.mode.as_deref().unwrap_or_default()),
            src,
            src_port,
            dst,
            dst_port,
            protocol,
            mitre_technique: f.technique.id.clone(),
            observed_unix_ms: (f.time_ns / 1_000_000) as i64,
            generation: f.generation.unwrap_or(0),
            acknowledged: false,
            acknowledged_by: String::new(),
            rule_name: opt_string(&f.rule_name),
            profile_version: f.profile_version.unwrap_or(0),
            detector: f.detector.clone(),
            confidence: f.confidence,
            technique_name: f.technique.name.clone(),
            technique_matrix: if f.technique.id.is_empty() {
                String::new()
            } else {
                matrix_name(f.technique.matrix).into()
            },
            evidence: Some(pb::AlertEvidence {
                window_start_unix_ns: f.evidence.window_start_ns,
                window_end_unix_ns: f.evidence.window_end_ns,
                metrics: f
                    .evidence
                    .metrics
                    .iter()
                    .map(|m| pb::AlertMetric {
                        name: m.name.clone(),
                        observed: m.observed,
                        baseline: m.baseline,
                        baseline_spread: m.baseline_spread,
                        threshold: m.threshold,
                    })
                    .collect(),
                ports: f.evidence.ports.iter().map(|&p| p.into()).collect(),
                peers: f.evidence.peers.iter().map(ToString::to_string).collect(),
                names: f.evidence.names.clone(),
            }),
            action: f.action.clone(),
            flows: f.flows.iter().map(flow).collect(),
            first_seen_unix_ns: f.first_seen_ns,
            last_seen_unix_ns: f.last_seen_ns,
            observed_unix_ns: f.time_ns,
            count: f.count,
            location: opt_string(&f.location),
            asset_id: opt_string(&f.asset_id),
            device_id: f.device.id.unwrap_or(0),
            device_mac: f.device.mac.map(|m| m.to_string()).unwrap_or_default(),
            peer: f.peer.map(|p| p.to_string()).unwrap_or_default(),
            summary: f.summary.clone(),
            // Store attributes, set by the controller's readers.
            seq: 0,
            update: false,
            suppressed: false,
        }
    }
}

/// Checks one alert's fields, naming the first bad one.
struct Check<'a> {
    id: &'a str,
}

impl Check<'_> {
    fn err(&self, at: impl Into<String>, problem: impl Into<String>) -> AlertError {
        AlertError {
            id: self.id.to_string(),
            at: at.into(),
            problem: problem.into(),
        }
    }

    fn ip(&self, at: impl Into<String>, s: &str) -> Result<IpAddr, AlertError> {
        s.parse()
            .map_err(|_| self.err(at, format!("`{s}` is not an IP address")))
    }

    fn port(&self, at: impl Into<String>, p: u32) -> Result<u16, AlertError> {
        u16::try_from(p).map_err(|_| self.err(at, format!("port {p} is over 65535")))
    }

    fn proto(&self, at: impl Into<String>, p: u32) -> Result<u8, AlertError> {
        u8::try_from(p).map_err(|_| self.err(at, format!("IP protocol {p} is over 255")))
    }

    fn bounded(&self, at: &str, len: usize, max: usize) -> Result<(), AlertError> {
        if len > max {
            return Err(self.err(at, format!("{len} entries, at most {max}")));
        }
        Ok(())
    }

    fn span(&self, at: &str, first: u64, last: u64) -> Result<(), AlertError> {
        if first > last {
            return Err(self.err(at, format!("starts ({first}) after it ends ({last})")));
        }
        Ok(())
    }

    fn flow(&self, i: usize, f: &pb::AlertFlow) -> Result<FlowRef, AlertError> {
        let at = |field: &str| format!("flows[{i}].{field}");
        let direction = match f.direction.as_str() {
            "opened" => FlowDirection::Opened,
            "received" => FlowDirection::Received,
            other => {
                return Err(self.err(
                    at("direction"),
                    format!("`{other}` is not opened or received"),
                ));
            }
        };
        self.span(
            &at("first_seen_unix_ns"),
            f.first_seen_unix_ns,
            f.last_seen_unix_ns,
        )?;
        Ok(FlowRef {
            direction,
            device_addr: self.ip(at("device_addr"), &f.device_addr)?,
            device_port: self.port(at("device_port"), f.device_port)?,
            peer: self.ip(at("peer"), &f.peer)?,
            peer_port: self.port(at("peer_port"), f.peer_port)?,
            proto: self.proto(at("protocol"), f.protocol)?,
            first_seen_ns: f.first_seen_unix_ns,
            last_seen_ns: f.last_seen_unix_ns,
            packets: f.packets,
            bytes: f.bytes,
        })
    }

    fn evidence(&self, e: &pb::AlertEvidence) -> Result<Evidence, AlertError> {
        self.span(
            "evidence.window_start_unix_ns",
            e.window_start_unix_ns,
            e.window_end_unix_ns,
        )?;
        self.bounded("evidence.ports", e.ports.len(), MAX_LISTED)?;
        self.bounded("evidence.peers", e.peers.len(), MAX_LISTED)?;
        self.bounded("evidence.names", e.names.len(), MAX_LISTED)?;
        self.bounded("evidence.metrics", e.metrics.len(), MAX_LISTED)?;
        let mut metrics = Vec::with_capacity(e.metrics.len());
        for (i, m) in e.metrics.iter().enumerate() {
            let at = |field: &str| format!("evidence.metrics[{i}].{field}");
            if m.name.is_empty() {
                return Err(self.err(at("name"), "empty"));
            }
            for (field, v) in [
                ("observed", Some(m.observed)),
                ("baseline", m.baseline),
                ("baseline_spread", m.baseline_spread),
                ("threshold", m.threshold),
            ] {
                if v.is_some_and(|v| !v.is_finite()) {
                    return Err(self.err(at(field), "not a finite number"));
                }
            }
            metrics.push(Metric {
                name: m.name.clone(),
                observed: m.observed,
                baseline: m.baseline,
                baseline_spread: m.baseline_spread,
                threshold: m.threshold,
            });
        }
        Ok(Evidence {
            window_start_ns: e.window_start_unix_ns,
            window_end_ns: e.window_end_unix_ns,
            metrics,
            ports: e
                .ports
                .iter()
                .enumerate()
                .map(|(i, &p)| self.port(format!("evidence.ports[{i}]"), p))
                .collect::<Result<_, _>>()?,
            peers: e
                .peers
                .iter()
                .enumerate()
                .map(|(i, p)| self.ip(format!("evidence.peers[{i}]"), p))
                .collect::<Result<_, _>>()?,
            names: e.names.clone(),
        })
    }

    /// The flow of an alert that carries only `src`/`dst` (an agent before the finding
    /// fields): the datapath reports the initiator as `src`; which end is the device is not
    /// known, so `src` is taken as the device.
    fn legacy_flow(&self, a: &pb::Alert, time_ns: u64) -> Result<Option<FlowRef>, AlertError> {
        if a.src.is_empty() && a.dst.is_empty() {
            return Ok(None);
        }
        Ok(Some(FlowRef {
            direction: FlowDirection::Opened,
            device_addr: self.ip("src", &a.src)?,
            device_port: self.port("src_port", a.src_port)?,
            peer: self.ip("dst", &a.dst)?,
            peer_port: self.port("dst_port", a.dst_port)?,
            proto: self.proto("protocol", a.protocol)?,
            first_seen_ns: time_ns,
            last_seen_ns: time_ns,
            packets: 1,
            bytes: 0,
        }))
    }
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl TryFrom<pb::Alert> for Finding {
    type Error = AlertError;

    fn try_from(a: pb::Alert) -> Result<Finding, AlertError> {
        Finding::try_from(&a)
    }
}

impl TryFrom<&pb::Alert> for Finding {
    type Error = AlertError;

    fn try_from(a: &pb::Alert) -> Result<Finding, AlertError> {
        let c = Check { id: &a.id };
        if a.id.is_empty() {
            return Err(c.err("id", "empty"));
        }
        // The enum, or the name from a 0.1.0 agent.
        let severity = a
            .severity_value()
            .map_err(|e| c.err(e.field, e.problem))?
            .ok_or_else(|| {
                c.err(
                    "severity",
                    "empty: one of info, low, medium, high, critical",
                )
            })?;
        let mode = a.mode_value().map_err(|e| c.err(e.field, e.problem))?;
        // An alert without a detector comes from an agent that predates findings: it is the
        // datapath detector of its kind, certain, counted once.
        let legacy = a.detector.is_empty();
        let detector = if legacy {
            datapath::detector(&a.kind)
                .ok_or_else(|| {
                    c.err(
                        "detector",
                        format!("empty, and kind `{}` is not a datapath event", a.kind),
                    )
                })?
                .to_string()
        } else {
            let kind = datapath::kind(&a.detector);
            if !a.kind.is_empty() && a.kind != kind {
                return Err(c.err(
                    "kind",
                    format!("`{}`, but detector `{}` is `{kind}`", a.kind, a.detector),
                ));
            }
            a.detector.clone()
        };
        let confidence = if legacy { 1.0 } else { a.confidence };
        if !(0.0..=1.0).contains(&confidence) {
            return Err(c.err("confidence", format!("{} is not within 0-1", a.confidence)));
        }
        let time_ns = match (a.observed_unix_ns, a.observed_unix_ms) {
            (0, ms) => u64::try_from(ms)
                .ok()
                .and_then(|ms| ms.checked_mul(1_000_000))
                .ok_or_else(|| c.err("observed_unix_ms", format!("{ms} is out of range")))?,
            (ns, ms) => {
                if ms != 0 && (ns / 1_000_000) as i64 != ms {
                    return Err(c.err(
                        "observed_unix_ms",
                        format!("{ms} is not observed_unix_ns {ns} in ms"),
                    ));
                }
                ns
            }
        };
        let (first, last) = match (a.first_seen_unix_ns, a.last_seen_unix_ns) {
            (0, 0) => (time_ns, time_ns),
            (f, l) => (f, l),
        };
        c.span("first_seen_unix_ns", first, last)?;
        let count = match a.count {
            0 if legacy => 1,
            0 => return Err(c.err("count", "0 (an alert counts at least one detection)")),
            n => n,
        };
        let matrix = match a.technique_matrix.as_str() {
            "enterprise" => Matrix::Enterprise,
            "ics" => Matrix::Ics,
            // The datapath's techniques were always ATT&CK for ICS.
            "" if legacy || a.mitre_technique.is_empty() => Matrix::Ics,
            other => {
                return Err(c.err(
                    "technique_matrix",
                    format!("`{other}` is not enterprise or ics"),
                ));
            }
        };
        let mac = match a.device_mac.as_str() {
            "" => None,
            m => Some(
                m.parse::<Mac>()
                    .map_err(|e| c.err("device_mac", e.to_string()))?,
            ),
        };
        c.bounded("flows", a.flows.len(), MAX_FLOWS)?;
        let mut flows = a
            .flows
            .iter()
            .enumerate()
            .map(|(i, f)| c.flow(i, f))
            .collect::<Result<Vec<_>, _>>()?;
        if flows.is_empty() {
            flows.extend(c.legacy_flow(a, time_ns)?);
        }
        let evidence = match &a.evidence {
            Some(e) => c.evidence(e)?,
            None => Evidence {
                window_start_ns: first,
                window_end_ns: last,
                ..Evidence::default()
            },
        };
        let peer = match a.peer.as_str() {
            "" => None,
            p => Some(c.ip("peer", p)?),
        };
        Ok(Finding {
            id: a.id.clone(),
            time_ns,
            first_seen_ns: first,
            last_seen_ns: last,
            count,
            gateway: some(&a.gateway),
            device: DeviceRef {
                name: a.device.clone(),
                id: (a.device_id != 0).then_some(a.device_id),
                mac,
            },
            class: some(&a.profile),
            profile_version: (a.profile_version != 0).then_some(a.profile_version),
            location: some(&a.location),
            asset_id: some(&a.asset_id),
            rule: (a.rule_id != 0).then_some(a.rule_id),
            generation: (a.generation != 0).then_some(a.generation),
            rule_name: some(&a.rule_name),
            mode: mode.map(|m| m.to_string()),
            detector,
            severity,
            confidence,
            technique: Technique {
                id: a.mitre_technique.clone(),
                name: a.technique_name.clone(),
                matrix,
            },
            peer,
            summary: a.summary.clone(),
            flows,
            evidence,
            action: a.action.clone(),
        })
    }
}

pub mod admit;

#[cfg(test)]
mod tests;
