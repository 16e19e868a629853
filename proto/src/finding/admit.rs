//! What the controller takes from an agent: an alert is converted to a finding (every field
//! checked, `TryFrom`) and, because a compromised gateway or a device behind it chooses these
//! bytes, also bounded: every string has a maximum length; identifiers (ids, names, enums,
//! addresses) with control characters are refused, since they go into SQL keys, logs, CEF/
//! syslog lines and terminals, where a newline or an escape forges a record; free text
//! (summary, action, technique name, evidence names) has its control characters other than
//! line feed and tab (which the sinks escape) replaced with U+FFFD rather than losing the
//! alert for one byte of a peer's HL7 field; and every
//! timestamp must fall within [`EARLIEST_NS`, now + [`MAX_AHEAD_NS`]] (an evidence window of
//! 0 .. 0 is one not given, and is left as it is).

use wardgate_analysis::detect::Finding;

use super::AlertError;
use crate::v1 as pb;

/// Longest identifier (id, device, profile, rule name, detector, address, ...) in bytes.
pub const MAX_IDENT: usize = 256;
/// Longest free text (summary, action) in bytes.
pub const MAX_TEXT: usize = 1024;
/// 2020-01-01T00:00:00Z: wardgate did not exist before; an earlier time is a wrong clock or a
/// forged alert.
pub const EARLIEST_NS: u64 = 1_577_836_800_000_000_000;
/// A timestamp more than a day ahead of the controller's clock is refused.
pub const MAX_AHEAD_NS: u64 = 86_400_000_000_000;

fn err(id: &str, at: impl Into<String>, problem: impl Into<String>) -> AlertError {
    AlertError {
        id: id.chars().take(64).collect(),
        at: at.into(),
        problem: problem.into(),
    }
}

fn ident(id: &str, at: &str, s: &str) -> Result<(), AlertError> {
    if s.len() > MAX_IDENT {
        return Err(err(
            id,
            at,
            format!("{} bytes, at most {MAX_IDENT}", s.len()),
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(err(id, at, format!("holds the control character {:?}", c)));
    }
    Ok(())
}

fn text_len(id: &str, at: &str, s: &str, max: usize) -> Result<(), AlertError> {
    if s.len() > max {
        return Err(err(id, at, format!("{} bytes, at most {max}", s.len())));
    }
    Ok(())
}

/// Control characters other than line feed and tab replaced with U+FFFD: a summary may span
/// lines (the SOC sinks escape them, CEF `\n`, JSON `\n`), but a carriage return, an escape
/// sequence or a NUL only rewrites what a terminal or a log viewer shows.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// Checks the strings of `a` (before conversion, so a refused alert names the field).
fn strings(a: &pb::Alert) -> Result<(), AlertError> {
    let id = a.id.as_str();
    ident(id, "id", &a.id)?;
    for (at, s) in [
        ("gateway", &a.gateway),
        ("device", &a.device),
        ("profile", &a.profile),
        ("kind", &a.kind),
        ("severity", &a.severity),
        ("mode", &a.mode),
        ("src", &a.src),
        ("dst", &a.dst),
        ("mitre_technique", &a.mitre_technique),
        ("rule_name", &a.rule_name),
        ("detector", &a.detector),
        ("technique_matrix", &a.technique_matrix),
        ("location", &a.location),
        ("asset_id", &a.asset_id),
        ("device_mac", &a.device_mac),
        ("peer", &a.peer),
        ("acknowledged_by", &a.acknowledged_by),
    ] {
        ident(id, at, s)?;
    }
    for (at, s) in [
        ("summary", &a.summary),
        ("action", &a.action),
        ("technique_name", &a.technique_name),
    ] {
        text_len(id, at, s, MAX_TEXT)?;
    }
    for (i, f) in a.flows.iter().enumerate() {
        for (field, s) in [
            ("direction", &f.direction),
            ("device_addr", &f.device_addr),
            ("peer", &f.peer),
        ] {
            ident(id, &format!("flows[{i}].{field}"), s)?;
        }
    }
    if let Some(e) = &a.evidence {
        for (i, m) in e.metrics.iter().enumerate() {
            ident(id, &format!("evidence.metrics[{i}].name"), &m.name)?;
        }
        for (i, p) in e.peers.iter().enumerate() {
            ident(id, &format!("evidence.peers[{i}]"), p)?;
        }
        for (i, n) in e.names.iter().enumerate() {
            text_len(id, &format!("evidence.names[{i}]"), n, MAX_IDENT)?;
        }
    }
    Ok(())
}

/// Every timestamp of `f` within [EARLIEST_NS, now_ns + MAX_AHEAD_NS].
fn times(f: &Finding, now_ns: u64) -> Result<(), AlertError> {
    let latest = now_ns.saturating_add(MAX_AHEAD_NS);
    let mut all = vec![
        ("observed_unix_ns", f.time_ns),
        ("first_seen_unix_ns", f.first_seen_ns),
        ("last_seen_unix_ns", f.last_seen_ns),
    ];
    // An evidence window of 0 .. 0 is one not given (a finding with no window of its own).
    let e = &f.evidence;
    if (e.window_start_ns, e.window_end_ns) != (0, 0) {
        all.push(("evidence.window_start_unix_ns", e.window_start_ns));
        all.push(("evidence.window_end_unix_ns", e.window_end_ns));
    }
    let mut all = all
        .into_iter()
        .map(|(at, t)| (at.to_string(), t))
        .collect::<Vec<_>>();
    for (i, fl) in f.flows.iter().enumerate() {
        all.push((format!("flows[{i}].first_seen_unix_ns"), fl.first_seen_ns));
        all.push((format!("flows[{i}].last_seen_unix_ns"), fl.last_seen_ns));
    }
    for (at, t) in all {
        if t < EARLIEST_NS {
            return Err(err(&f.id, at, format!("{t} is before 2020-01-01")));
        }
        if t > latest {
            return Err(err(
                &f.id,
                at,
                format!("{t} is more than a day ahead of the controller's clock ({now_ns})"),
            ));
        }
    }
    Ok(())
}

/// The finding of an agent's alert at the controller's time `now_ns` (ns since the Unix
/// epoch): every field checked and bounded, free text cleaned, or the first problem.
pub fn admit(a: &pb::Alert, now_ns: u64) -> Result<Finding, AlertError> {
    strings(a)?;
    let mut f = Finding::try_from(a)?;
    times(&f, now_ns)?;
    f.summary = clean(&f.summary);
    f.action = clean(&f.action);
    f.technique.name = clean(&f.technique.name);
    for n in &mut f.evidence.names {
        *n = clean(n);
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_790_000_000_000_000_000;

    fn alert() -> pb::Alert {
        pb::Alert {
            id: "1790000000000-1".into(),
            device: "pump-3".into(),
            kind: "deny".into(),
            severity: "high".into(),
            src: "192.0.2.10".into(),
            dst: "198.51.100.7".into(),
            dst_port: 445,
            protocol: 6,
            observed_unix_ms: (NOW / 1_000_000) as i64 - 5_000,
            summary: "denied".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_sane_alert_is_admitted() {
        let f = admit(&alert(), NOW).unwrap();
        assert_eq!(f.device.name, "pump-3");
    }

    #[test]
    fn control_characters_in_identifiers_are_refused_naming_the_field() {
        type Break = fn(&mut pb::Alert);
        let cases: &[(&str, Break)] = &[
            ("id", |a| a.id = "a\nb".into()),
            ("device", |a| a.device = "pump\u{1b}[2J".into()),
            ("profile", |a| a.profile = "x\r".into()),
            ("rule_name", |a| a.rule_name = "r\0".into()),
            ("location", |a| a.location = "bed\t4".into()),
            ("detector", |a| a.detector = "scan\u{7f}".into()),
            ("device", |a| a.device = "d".repeat(MAX_IDENT + 1)),
            ("summary", |a| a.summary = "s".repeat(MAX_TEXT + 1)),
            ("flows[0].peer", |a| {
                a.flows = vec![pb::AlertFlow {
                    direction: "opened".into(),
                    device_addr: "192.0.2.10".into(),
                    peer: "198.51.100.7\n".into(),
                    ..Default::default()
                }]
            }),
            ("evidence.names[0]", |a| {
                a.evidence = Some(pb::AlertEvidence {
                    names: vec!["n".repeat(MAX_IDENT + 1)],
                    ..Default::default()
                })
            }),
        ];
        for (at, f) in cases {
            let mut a = alert();
            f(&mut a);
            let e = admit(&a, NOW).unwrap_err();
            assert_eq!(e.at, *at, "{e}");
        }
    }

    #[test]
    fn free_text_has_its_control_characters_replaced() {
        let mut a = alert();
        a.summary = "40 ports\r\nCEF:0|forged\0".into();
        a.action = "wardctl mode x quarantine\u{1b}[0m".into();
        let f = admit(&a, NOW).unwrap();
        // Line feeds stay (the sinks escape them); the rest is replaced.
        assert_eq!(f.summary, "40 ports\u{fffd}\nCEF:0|forged\u{fffd}");
        assert!(!f.action.chars().any(char::is_control));
    }

    #[test]
    fn timestamps_before_2020_or_more_than_a_day_ahead_are_refused() {
        let day_ms = 86_400_000i64;
        let now_ms = (NOW / 1_000_000) as i64;
        for (ms, ok) in [
            (0, false),
            (1_577_836_799_999, false),
            (1_577_836_800_000, true),
            (now_ms + day_ms - 1, true),
            (now_ms + day_ms + 1_000, false),
        ] {
            let mut a = alert();
            a.observed_unix_ms = ms;
            assert_eq!(admit(&a, NOW).is_ok(), ok, "{ms}");
        }
        let mut a = alert();
        a.flows = vec![pb::AlertFlow {
            direction: "opened".into(),
            device_addr: "192.0.2.10".into(),
            peer: "198.51.100.7".into(),
            first_seen_unix_ns: 5,
            last_seen_unix_ns: 6,
            ..Default::default()
        }];
        let e = admit(&a, NOW).unwrap_err();
        assert_eq!(e.at, "flows[0].first_seen_unix_ns", "{e}");
        // No evidence window (0 .. 0) is fine; half of one is not.
        let mut a = alert();
        a.evidence = Some(pb::AlertEvidence::default());
        assert!(admit(&a, NOW).is_ok());
        a.evidence = Some(pb::AlertEvidence {
            window_end_unix_ns: NOW,
            ..Default::default()
        });
        let e = admit(&a, NOW).unwrap_err();
        assert_eq!(e.at, "evidence.window_start_unix_ns", "{e}");
    }
}
