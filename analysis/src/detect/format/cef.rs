//! RFC 5424 syslog lines carrying a CEF payload (ArcSight "Implementing ArcSight CEF", rev 25):
//! header fields escape `\` and `|`; extension values escape `\`, `=`, and line breaks as `\n`
//! / `\r`. Hand-written: no maintained crate writes CEF, and the escaping is the whole job.

use std::fmt::Write as _;

use super::{PRODUCT, VENDOR, VERSION, ms, proto_name, title};
use crate::{
    detect::finding::{Finding, Severity},
    flow::FlowDirection,
};

/// Escapes a CEF header field.
pub fn escape_header(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '|' => o.push_str("\\|"),
            // A header is one line: breaks become spaces (the spec leaves them undefined there).
            '\n' | '\r' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// Escapes a CEF extension value.
pub fn escape_value(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '=' => o.push_str("\\="),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            c => o.push(c),
        }
    }
    o
}

/// The CEF record of a finding.
pub fn cef(f: &Finding) -> String {
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", ms(f.time_ns).to_string()),
        ("start", ms(f.first_seen_ns).to_string()),
        ("end", ms(f.last_seen_ns).to_string()),
        ("cnt", f.count.to_string()),
        ("externalId", f.id.clone()),
        ("cat", f.detector.clone()),
    ];
    // Source and destination as the flow went: who opened it is the source (a device scanned
    // from outside is the destination, the scanner the source).
    let first = f.flows.first();
    let device_opened = first.is_none_or(|fl| fl.direction == FlowDirection::Opened);
    let peer = f.peer.or_else(|| first.map(|fl| fl.peer));
    let (host_key, mac_key, device_key, peer_key) = if device_opened {
        ("shost", "smac", "src", "dst")
    } else {
        ("dhost", "dmac", "dst", "src")
    };
    ext.push((host_key, f.device.name.clone()));
    if let Some(m) = f.device.mac {
        ext.push((mac_key, m.to_string()));
    }
    if let Some(fl) = first {
        ext.push((device_key, fl.device_addr.to_string()));
        ext.push(("proto", proto_name(fl.proto)));
    }
    if let Some(p) = peer {
        ext.push((peer_key, p.to_string()));
    }
    if let [port] = f.evidence.ports.as_slice() {
        ext.push(("dpt", port.to_string()));
    }
    if let Some(g) = &f.gateway {
        ext.push(("dvchost", g.clone()));
    }
    ext.push(("msg", f.summary.clone()));
    let custom = [
        (
            "mitreTechnique",
            // Datapath findings without a technique (a plain deny) leave it out.
            (!f.technique.id.is_empty())
                .then(|| format!("{} {}", f.technique.id, f.technique.name)),
        ),
        ("deviceClass", f.class.clone()),
        ("location", f.location.clone()),
        ("assetId", f.asset_id.clone()),
        ("evidence", Some(evidence_text(f))),
        (
            "ports",
            (!f.evidence.ports.is_empty()).then(|| join(&f.evidence.ports)),
        ),
    ];
    let keys = ["cs1", "cs2", "cs3", "cs4", "cs5", "cs6"];
    let mut labels = Vec::new();
    for ((label, value), key) in custom.into_iter().zip(keys) {
        if let Some(v) = value {
            labels.push((key, label, v));
        }
    }
    let mut out = format!(
        "CEF:0|{}|{}|{}|{}|{}|{}|",
        escape_header(VENDOR),
        escape_header(PRODUCT),
        escape_header(VERSION),
        escape_header(&f.detector),
        escape_header(&title(&f.detector)),
        f.severity.cef()
    );
    let mut first = true;
    let mut push = |k: &str, v: &str| {
        if !first {
            out.push(' ');
        }
        first = false;
        let _ = write!(out, "{k}={}", escape_value(v));
    };
    for (k, v) in &ext {
        push(k, v);
    }
    for (key, label, v) in &labels {
        push(&format!("{key}Label"), label);
        push(key, v);
    }
    push("cfp1Label", "confidence");
    push("cfp1", &format!("{:.2}", f.confidence));
    // A suggestion for the analyst, not an action taken (CEF's `act` is what the device did).
    if !f.action.is_empty() {
        push("flexString1Label", "suggestedAction");
        push("flexString1", &f.action);
    }
    out
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// `distinct_ports=40 (limit 8); window 3.0 s` as one line.
fn evidence_text(f: &Finding) -> String {
    let mut parts: Vec<String> = f
        .evidence
        .metrics
        .iter()
        .map(|m| {
            let mut s = format!("{} {}", m.name, fmt_num(m.observed));
            if let Some(b) = m.baseline {
                let _ = write!(s, " baseline {}", fmt_num(b));
                if let Some(sp) = m.baseline_spread {
                    let _ = write!(s, "±{}", fmt_num(sp));
                }
            }
            if let Some(t) = m.threshold {
                let _ = write!(s, " limit {}", fmt_num(t));
            }
            s
        })
        .collect();
    let w = f
        .evidence
        .window_end_ns
        .saturating_sub(f.evidence.window_start_ns);
    parts.push(format!("window {:.1} s", w as f64 / 1e9));
    parts.join("; ")
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.2}")
    }
}

/// Syslog facility (RFC 5424 6.2.1): 4 is security/authorization messages.
pub const FACILITY_SECURITY: u8 = 4;

/// RFC 5424 severity for a finding's severity.
pub fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// An RFC 5424 header field: printable US-ASCII (33-126) only, bounded, `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .take(max)
        .collect();
    if v.is_empty() { "-".into() } else { v }
}

/// One RFC 5424 line (no trailing newline; framing is the transport's): `<PRI>1 TIMESTAMP
/// HOSTNAME APP-NAME PROCID MSGID - CEF:0|...`. The hostname is the gateway, or `host` when the
/// finding names none.
pub fn syslog_line(f: &Finding, facility: u8, host: &str) -> String {
    let pri = u16::from(facility.min(23)) * 8 + u16::from(syslog_severity(f.severity));
    let ts = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(f.time_ns);
    let host = f.gateway.as_deref().unwrap_or(host);
    format!(
        "<{pri}>1 {} {} {} - {} - {}",
        humantime::format_rfc3339_micros(ts),
        header_field(host, 255),
        header_field("wardgate", 48),
        header_field(&f.detector, 32),
        cef(f)
    )
}

#[cfg(test)]
pub(crate) mod tests;
