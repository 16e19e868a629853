use super::*;
use crate::detect::finding::{Finding, FlowRef, Matrix, Metric, Severity, Technique};
use crate::flow::{DeviceRef, FlowDirection};

pub(crate) fn sample() -> Finding {
    let d = DeviceRef {
        name: "pump|3a=bed\\12".into(),
        id: Some(1),
        mac: Some("02:00:00:00:00:0a".parse().unwrap()),
    };
    let mut f = Finding::new(
        "scan_vertical",
        &d,
        1_700_000_003_250_000_000,
        Severity::High,
        0.8,
        Technique::new("T1046", "Network Service Discovery", Matrix::Enterprise),
    );
    f.id = "wg-1".into();
    f.first_seen_ns = 1_700_000_000_000_000_000;
    f.count = 33;
    f.gateway = Some("gw-ward-3".into());
    f.class = Some("infusion-pump".into());
    f.location = Some("Ward 3A\nbed 12".into());
    f.peer = Some("198.51.100.10".parse().unwrap());
    f.summary = "probed 40 ports; a=b | c".into();
    f.flows.push(FlowRef {
        direction: FlowDirection::Opened,
        device_addr: "192.0.2.10".parse().unwrap(),
        device_port: 40000,
        peer: "198.51.100.10".parse().unwrap(),
        peer_port: 22,
        proto: 6,
        first_seen_ns: f.first_seen_ns,
        last_seen_ns: f.first_seen_ns,
        packets: 2,
        bytes: 104,
    });
    f.evidence.window_start_ns = f.first_seen_ns;
    f.evidence.window_end_ns = f.time_ns;
    f.evidence.metrics = vec![
        Metric::new("distinct_ports", 40.0).threshold(8.0),
        Metric::new("bytes_per_hour", 5000.0).baseline(1000.0, 100.0),
    ];
    f.evidence.ports = vec![21, 22, 23];
    f
}

#[test]
fn header_and_extension_escaping_per_spec() {
    assert_eq!(escape_header(r"a|b\c=d"), r"a\|b\\c=d");
    assert_eq!(escape_value("a=b\\c|d\ne\rf"), r"a\=b\\c|d\ne\rf");
}

/// Splits a CEF record back (the reading a SIEM does): 7 unescaped `|` separators, then
/// `key=value` pairs where a key is a word followed by an unescaped `=`.
fn parse(cef: &str) -> (Vec<String>, Vec<(String, String)>) {
    let mut header = Vec::new();
    let mut cur = String::new();
    let mut chars = cef.chars();
    while header.len() < 7 {
        match chars.next().unwrap() {
            '\\' => cur.push(chars.next().unwrap()),
            '|' => header.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    let rest: String = chars.collect();
    let mut ext = Vec::new();
    let mut value = String::new();
    let mut key: Option<String> = None;
    let mut i = 0;
    let b: Vec<char> = rest.chars().collect();
    while i < b.len() {
        let c = b[i];
        if c == '\\' {
            value.push(match b[i + 1] {
                'n' => '\n',
                'r' => '\r',
                o => o,
            });
            i += 2;
            continue;
        }
        if c == '=' {
            // The key is the last word of what was read.
            let split = value.rfind(' ').map(|p| p + 1).unwrap_or(0);
            let k = value[split..].to_string();
            let v = value[..split].trim_end().to_string();
            if let Some(prev) = key.take() {
                ext.push((prev, v));
            }
            key = Some(k);
            value.clear();
        } else {
            value.push(c);
        }
        i += 1;
    }
    if let Some(k) = key {
        ext.push((k, value));
    }
    (header, ext)
}

#[test]
fn an_inbound_flow_has_the_opener_as_source() {
    let mut f = sample();
    f.flows[0].direction = FlowDirection::Received;
    let (_, ext) = parse(&cef(&f));
    let get = |k: &str| ext.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    assert_eq!(get("src"), Some("198.51.100.10"), "the peer opened it");
    assert_eq!(get("dst"), Some("192.0.2.10"));
    assert_eq!(get("dhost"), Some("pump|3a=bed\\12"));
    assert_eq!(get("shost"), None);
}

#[test]
fn cef_round_trips_through_a_parser() {
    let f = sample();
    let line = cef(&f);
    assert!(!line.contains('\n'));
    let (h, ext) = parse(&line);
    assert_eq!(h[0], "CEF:0");
    assert_eq!(h[1..3], ["wardgate", "wardgate"]);
    assert_eq!(h[4], "scan_vertical");
    assert_eq!(h[6], "8");
    let get = |k: &str| ext.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    assert_eq!(get("shost"), Some("pump|3a=bed\\12"));
    assert_eq!(get("msg"), Some("probed 40 ports; a=b | c"));
    assert_eq!(get("cnt"), Some("33"));
    assert_eq!(get("rt"), Some("1700000003250"));
    assert_eq!(get("src"), Some("192.0.2.10"));
    assert_eq!(get("dst"), Some("198.51.100.10"));
    // The suggestion is no action taken: not in `act`.
    assert_eq!(get("act"), None);
    assert_eq!(get("flexString1Label"), Some("suggestedAction"));
    assert_eq!(
        get("flexString1"),
        Some("wardctl mode pump|3a=bed\\12 quarantine")
    );
    let label = |v: &str| {
        ext.iter()
            .find(|(_, x)| x == v)
            .map(|(k, _)| k.trim_end_matches("Label").to_string())
    };
    let loc_key = label("location").unwrap();
    assert_eq!(get(&loc_key), Some("Ward 3A\nbed 12"));
    let ev = get(&label("evidence").unwrap()).unwrap().to_string();
    assert!(ev.contains("distinct_ports 40 limit 8"), "{ev}");
    assert!(ev.contains("bytes_per_hour 5000 baseline 1000±100"), "{ev}");
    assert_eq!(
        get(&label("mitreTechnique").unwrap()),
        Some("T1046 Network Service Discovery")
    );
}

#[test]
fn rfc5424_line() {
    let f = sample();
    let line = syslog_line(&f, FACILITY_SECURITY, "ignored");
    // facility 4 * 8 + severity 3 (error, for High).
    let want = "<35>1 2023-11-14T22:13:23.250000Z gw-ward-3 wardgate - scan_vertical - CEF:0|";
    assert!(line.starts_with(want), "{line}");
    let mut g = f.clone();
    g.gateway = None;
    g.detector = "bad name with spaces and more than thirty-two characters".into();
    let line = syslog_line(&g, 10, "");
    assert!(
        line.starts_with(
            "<83>1 2023-11-14T22:13:23.250000Z - wardgate - bad_name_with_spaces_and_more_th - CEF"
        ),
        "{line}"
    );
}
