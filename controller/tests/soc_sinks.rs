//! The SOC sinks end to end: alerts reported by an agent are enriched from the inventory,
//! stored, and delivered by each sink from its own cursor: to a real rsyslog (Debian
//! `rsyslog`, `rsyslog-gnutls`, installed by `cargo xtask setup`) over TCP and TLS as RFC 5424
//! lines with a CEF payload (over TLS the collector requires the sink's client certificate),
//! and to an OCSF JSON-lines file, checked field by field and with
//! the OCSF schema's own models (py-ocsf-models). A controller restart neither loses nor
//! repeats an alert at any sink.

mod support;

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use support::rsyslog::{Rsyslog, free_port};

use tonic::Request;
use wardgate_analysis::{
    FlowDirection,
    detect::{Finding, FlowRef, Matrix, Metric, Severity, Technique, finding::datapath},
    flow::DeviceRef,
};
use wardgate_controller::{
    certs,
    config::{SinkConfig, SinkKind, SinkTls},
    store::Store as _,
};
use wardgate_proto::v1::{self as pb, alert_service_client::AlertServiceClient};
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";
const PUMP: &str = "pump-3a-bed12";
/// What CEF must escape, in one value: `=`, `\` and a line break.
const TRICKY: &str = "probe a=b from C:\\temp\nsecond line";

/// Waits (bounded) until `f` holds.
async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pump() -> DeviceRef {
    DeviceRef {
        name: PUMP.into(),
        id: None,
        mac: None,
    }
}

const T0: u64 = 1_764_745_200_000_000_000;

/// A scan finding as the agent's detectors raise it (no inventory context).
fn scan(id: &str) -> Finding {
    let mut f = Finding::new(
        "scan_vertical",
        &pump(),
        T0 + 3_000_000_000,
        Severity::High,
        0.9,
        Technique::new("T0846", "Remote System Discovery", Matrix::Ics),
    );
    f.id = id.into();
    f.first_seen_ns = T0;
    f.count = 40;
    f.peer = Some("198.51.100.10".parse().unwrap());
    f.summary = TRICKY.into();
    f.evidence.window_start_ns = T0;
    f.evidence.window_end_ns = T0 + 3_000_000_000;
    f.evidence.metrics = vec![Metric::new("distinct_ports", 40.0).threshold(15.0)];
    f.evidence.ports = (1..=40).collect();
    f
}

/// A datapath deny as the agent's event reader makes it.
fn deny(id: &str) -> Finding {
    let mut f = Finding::new(
        datapath::DENY,
        &pump(),
        T0,
        Severity::High,
        1.0,
        Technique::new("", "", Matrix::Ics),
    );
    f.id = id.into();
    f.flows.push(FlowRef {
        direction: FlowDirection::Opened,
        device_addr: "192.0.2.10".parse().unwrap(),
        device_port: 40_000,
        peer: "203.0.113.9".parse().unwrap(),
        peer_port: 445,
        proto: 6,
        first_seen_ns: T0,
        last_seen_ns: T0,
        packets: 1,
        bytes: 0,
    });
    f.summary = "Flow denied by policy".into();
    f
}

async fn report(lab: &LabController, findings: &[Finding]) {
    let alerts: Vec<pb::Alert> = findings.iter().map(pb::Alert::from).collect();
    let mut acks = lab
        .agent(GW)
        .await
        .unwrap()
        .report_alerts(Request::new(tokio_stream::iter(vec![pb::AlertBatch {
            alerts,
        }])))
        .await
        .unwrap()
        .into_inner();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!(ack.ids.len(), findings.len());
}

async fn lab_with_site(dir: &Path, sinks: &[SinkConfig]) -> LabController {
    let lab = LabController::start_with_sinks(
        dir,
        &[GW.to_string()],
        &[("eve", "engineer"), ("sam", "soc")],
        sinks,
    )
    .await
    .unwrap();
    lab.push_demo_site("eve", "CHG-1 commissioning")
        .await
        .unwrap();
    lab
}

/// The name of the client certificate the collector's CA issues the TLS sink.
const SINK_CLIENT: &str = "siem-client";

/// A syslog sink; with `tls`, the collector's certificate directory: its CA checks the
/// collector, and with `client_cert` the sink presents the client certificate it issued.
fn syslog_sink(name: &str, port: u16, tls: Option<&Path>, client_cert: bool) -> SinkConfig {
    SinkConfig {
        kind: SinkKind::Syslog,
        name: Some(name.into()),
        address: Some(format!("127.0.0.1:{port}")),
        tls: tls.map(|dir| SinkTls {
            ca: dir.join("ca.pem"),
            server_name: Some("localhost".into()),
            client_cert: client_cert.then(|| dir.join(format!("gateway-{SINK_CLIENT}.pem"))),
            client_key: client_cert.then(|| dir.join(format!("gateway-{SINK_CLIENT}.key"))),
        }),
        path: None,
        rotate_bytes: 64 << 20,
        keep: 5,
    }
}

fn ocsf_sink(path: &Path) -> SinkConfig {
    SinkConfig {
        kind: SinkKind::Ocsf,
        name: None,
        address: None,
        tls: None,
        path: Some(path.to_path_buf()),
        rotate_bytes: 64 << 20,
        keep: 5,
    }
}

/// An RFC 5424 message, parsed here (not by rsyslog).
struct Syslog5424 {
    pri: u8,
    timestamp: String,
    host: String,
    app: String,
    msgid: String,
    msg: String,
}

fn parse_5424(line: &str) -> Syslog5424 {
    let rest = line.strip_prefix('<').expect("PRI");
    let (pri, rest) = rest.split_once('>').expect("PRI");
    let rest = rest.strip_prefix("1 ").expect("VERSION 1");
    let mut parts = rest.splitn(7, ' ');
    let mut next = || parts.next().expect("RFC 5424 header field").to_string();
    let (timestamp, host, app, procid, msgid, sd, msg) =
        (next(), next(), next(), next(), next(), next(), next());
    assert_eq!((procid.as_str(), sd.as_str()), ("-", "-"), "{line}");
    humantime::parse_rfc3339(&timestamp).expect("RFC 3339 TIMESTAMP");
    Syslog5424 {
        pri: pri.parse().expect("PRI is a number"),
        timestamp,
        host,
        app,
        msgid,
        msg,
    }
}

/// A CEF record: the seven header fields (unescaped) and the extension (unescaped).
struct Cef {
    header: Vec<String>,
    ext: BTreeMap<String, String>,
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(c) => out.push(c),
            None => panic!("dangling escape in {s:?}"),
        }
    }
    out
}

fn parse_cef(msg: &str) -> Cef {
    let body = msg.strip_prefix("CEF:").expect("CEF: prefix");
    // Header: split on `|` not escaped by `\`.
    let mut header = Vec::new();
    let (mut cur, mut escaped, mut rest) = (String::new(), false, None);
    for (i, c) in body.char_indices() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == '|' {
            header.push(unescape(&cur));
            cur.clear();
            if header.len() == 7 {
                rest = Some(&body[i + 1..]);
                break;
            }
        } else {
            cur.push(c);
        }
    }
    let ext_text = rest.expect("seven header fields");
    assert!(
        !ext_text.contains('\n'),
        "a raw line break in the extension"
    );
    // Extension: `key=value` pairs; a key is the word before an unescaped `=`, a value runs
    // to the space before the next key.
    let bytes = ext_text.as_bytes();
    let mut eqs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' => {
                eqs.push(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    let mut ext = BTreeMap::new();
    let key_start = |eq: usize| ext_text[..eq].rfind(' ').map_or(0, |s| s + 1);
    for (n, &eq) in eqs.iter().enumerate() {
        let key = &ext_text[key_start(eq)..eq];
        let end = eqs
            .get(n + 1)
            .map_or(ext_text.len(), |&next| key_start(next) - 1);
        ext.insert(key.to_string(), unescape(&ext_text[eq + 1..end]));
    }
    Cef { header, ext }
}

/// The value of the custom string whose label is `label` (`csNLabel=label csN=value`).
fn custom<'a>(cef: &'a Cef, label: &str) -> Option<&'a str> {
    (1..=6).find_map(|n| {
        (cef.ext.get(&format!("cs{n}Label"))? == label)
            .then(|| cef.ext.get(&format!("cs{n}")).map(String::as_str))?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_lines_reach_a_real_rsyslog_over_tcp_and_tls_as_rfc5424_with_cef() {
    let dir = tempfile::tempdir().unwrap();
    // The collector's certificate and the sink's client certificate, from the controller's own
    // certificate module.
    let collector_certs = dir.path().join("collector-certs");
    certs::init(
        &collector_certs,
        &[SINK_CLIENT.to_string()],
        &[],
        &certs::InitOptions::default(),
    )
    .unwrap();
    let (plain, tls) = (free_port(), free_port());
    let rsyslog = Rsyslog::start(dir.path(), plain, Some((tls, &collector_certs)));
    let lab = lab_with_site(
        dir.path(),
        &[
            syslog_sink("siem-tcp", plain, None, false),
            syslog_sink("siem-tls", tls, Some(&collector_certs), true),
            // Without a client certificate the collector refuses the sink.
            syslog_sink("siem-tls-anonymous", tls, Some(&collector_certs), false),
        ],
    )
    .await;
    let sent = [scan("100-1"), deny("100-2")];
    report(&lab, &sent).await;
    until("4 lines at rsyslog", Duration::from_secs(15), || {
        rsyslog.lines().len() >= 4
    })
    .await;
    // Time for the sink without a client certificate to try: rsyslog refuses its lines. (It
    // cannot tell: with TLS 1.3 the refusal comes after its write, and syslog has no ack.)
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let lines = rsyslog.lines();
    assert_eq!(
        lines.len(),
        4,
        "only the sinks with a client certificate: {lines:#?}"
    );
    let mut seen = Vec::new();
    for line in &lines {
        let (parsed_by_rsyslog, raw) = line.split_once('|').unwrap();
        let fields: Vec<&str> = parsed_by_rsyslog.split(' ').collect();
        let [input, version, host, app, msgid, severity] = fields[..] else {
            panic!("{line}")
        };
        // rsyslog itself read an RFC 5424 message (protocol version 1) with these fields.
        assert_eq!((version, host, app), ("1", GW, "wardgate"), "{line}");
        let m = parse_5424(raw);
        assert_eq!((m.host.as_str(), m.app.as_str()), (GW, "wardgate"));
        assert_eq!(m.msgid, msgid);
        // Facility 4 (security), severity 3 (error) for a high finding.
        assert_eq!((m.pri, severity), (4 * 8 + 3, "3"), "{line}");
        let cef = parse_cef(&m.msg);
        assert_eq!(&cef.header[..3], ["0", "wardgate", "wardgate"], "{line}");
        assert_eq!(cef.header[6], "8", "CEF severity of a high finding");
        let id = cef.ext["externalId"].clone();
        let f = sent
            .iter()
            .find(|f| format!("{GW}/{}", f.id) == id)
            .unwrap_or_else(|| panic!("unknown id {id}"));
        assert_eq!(cef.header[4], f.detector, "signature id is the detector");
        assert_eq!(m.msgid, f.detector);
        assert_eq!(cef.ext["dvchost"], GW);
        assert_eq!(cef.ext["shost"], PUMP);
        assert_eq!(cef.ext["cat"], f.detector);
        // Enriched at the controller from the inventory.
        assert_eq!(custom(&cef, "location"), Some("Ward 3A, bed 12"), "{line}");
        assert_eq!(custom(&cef, "assetId"), Some("BME-004211"));
        assert_eq!(custom(&cef, "deviceClass"), Some("infusion-pump"));
        if f.detector == "scan_vertical" {
            // `=`, `\` and the line break came through escaped and read back exactly.
            assert_eq!(cef.ext["msg"], TRICKY, "{line}");
            assert_eq!(cef.ext["cnt"], "40");
            assert_eq!(
                custom(&cef, "mitreTechnique"),
                Some("T0846 Remote System Discovery")
            );
            assert_eq!(cef.ext["dst"], "198.51.100.10");
        } else {
            assert_eq!(
                (cef.ext["src"].as_str(), cef.ext["dst"].as_str()),
                ("192.0.2.10", "203.0.113.9")
            );
            assert_eq!(custom(&cef, "mitreTechnique"), None);
        }
        assert!(m.timestamp.starts_with("2025-12-03T"), "{}", m.timestamp);
        seen.push((input.to_string(), id));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("plain".to_string(), format!("{GW}/100-1")),
            ("plain".into(), format!("{GW}/100-2")),
            ("tls".into(), format!("{GW}/100-1")),
            ("tls".into(), format!("{GW}/100-2")),
        ]
    );

    lab.shutdown().await.unwrap();
    rsyslog.stop();
}

/// What an OCSF line is about: the finding (`finding_info.uid`), or for an event with no
/// finding (a deny's Network Activity) the event itself (`metadata.uid`).
fn ocsf_subject(v: &serde_json::Value) -> String {
    v["finding_info"]["uid"]
        .as_str()
        .or(v["metadata"]["uid"].as_str())
        .unwrap()
        .to_string()
}

fn ocsf_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsf_lines_carry_the_schema_fields_and_validate_against_py_ocsf_models() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("soc/ocsf.jsonl");
    let lab = lab_with_site(dir.path(), &[ocsf_sink(&path)]).await;
    // And what an agent from before findings sends: a kind, no detector.
    let legacy = pb::Alert {
        id: "100-3".into(),
        device: PUMP.into(),
        kind: "spoof".into(),
        severity: "critical".into(),
        mitre_technique: "T0830".into(),
        observed_unix_ms: 1_764_745_200_000,
        src: "192.0.2.10".into(),
        dst: "192.0.2.1".into(),
        protocol: 1,
        ..Default::default()
    };
    report(&lab, &[scan("100-1"), deny("100-2")]).await;
    let mut acks = lab
        .agent(GW)
        .await
        .unwrap()
        .report_alerts(Request::new(tokio_stream::iter(vec![pb::AlertBatch {
            alerts: vec![legacy],
        }])))
        .await
        .unwrap()
        .into_inner();
    acks.message().await.unwrap().unwrap();
    until("3 OCSF lines", Duration::from_secs(15), || {
        ocsf_lines(&path).len() >= 3
    })
    .await;
    let lines = ocsf_lines(&path);
    assert_eq!(lines.len(), 3);
    let by_id: BTreeMap<String, &serde_json::Value> =
        lines.iter().map(|v| (ocsf_subject(v), v)).collect();
    for v in &lines {
        let class = v["class_uid"].as_u64().unwrap();
        let activity = v["activity_id"].as_u64().unwrap();
        assert_eq!(
            v["type_uid"].as_u64().unwrap(),
            class * 100 + activity,
            "{v}"
        );
        assert_eq!(v["category_uid"].as_u64().unwrap(), class / 1000, "{v}");
        assert_eq!(v["metadata"]["product"]["name"], "wardgate");
        assert_eq!(v["metadata"]["product"]["vendor_name"], "wardgate");
        assert!(v["metadata"]["version"].as_str().unwrap().starts_with("1."));
        assert!((1..=5).contains(&v["severity_id"].as_u64().unwrap()), "{v}");
        assert!(v["time"].as_u64().unwrap() > 0);
    }
    let scan = by_id[&format!("{GW}/100-1")];
    assert_eq!(
        (scan["class_uid"].as_u64(), scan["activity_id"].as_u64()),
        (Some(2004), Some(1))
    );
    assert_eq!(scan["severity_id"], 4, "High");
    assert_eq!(scan["finding_info"]["uid"], format!("{GW}/100-1"));
    assert_eq!(
        scan["finding_info"]["attacks"][0]["technique"]["uid"],
        "T0846"
    );
    assert_eq!(scan["device"]["location"]["desc"], "Ward 3A, bed 12");
    assert_eq!(scan["device"]["uid_alt"], "BME-004211");
    assert_eq!(
        (
            scan["device"]["type_id"].as_u64(),
            scan["device"]["type"].as_str()
        ),
        (Some(7), Some("IOT"))
    );
    assert_eq!(scan["device"]["desc"], "Medical device: infusion-pump");
    // An ICS technique under its ICS tactic (Discovery is TA0102 in ATT&CK for ICS).
    assert_eq!(
        scan["finding_info"]["attacks"][0]["tactic"]["uid"],
        "TA0102"
    );
    assert_eq!(scan["message"], TRICKY);
    assert_eq!(scan["count"], 40);
    let deny = by_id[&format!("{GW}/100-2")];
    assert_eq!(
        (deny["class_uid"].as_u64(), deny["type_uid"].as_u64()),
        (Some(4001), Some(400105))
    );
    assert_eq!(deny["severity_id"], 2);
    assert_eq!(deny["dst_endpoint"]["port"], 445);
    assert_eq!(deny["src_endpoint"]["ip"], "192.0.2.10");
    let spoof = by_id[&format!("{GW}/100-3")];
    assert_eq!(
        (spoof["class_uid"].as_u64(), spoof["severity_id"].as_u64()),
        (Some(2004), Some(5))
    );
    assert_eq!(spoof["finding_info"]["types"][0], "spoof");
    assert_eq!(
        spoof["unmapped"]["profile_version"], 1,
        "profile version from the inventory"
    );

    // The Detection Findings against the schema's own models.
    let findings: String = lines
        .iter()
        .filter(|v| v["class_uid"] == 2004)
        .map(|v| format!("{v}\n"))
        .collect();
    assert_eq!(
        wardgate_testkit::ocsf::validate_detection_findings(&findings),
        2
    );
    lab.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_comes_out_of_list_with_the_devices_inventory_context() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab_with_site(dir.path(), &[]).await;
    report(&lab, &[scan("100-1")]).await;
    let mut soc = AlertServiceClient::new(lab.channel("user-sam").await.unwrap());
    let list = soc
        .list(pb::AlertFilter::default())
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(list.len(), 1);
    let a = &list[0];
    assert_eq!(
        (a.location.as_str(), a.asset_id.as_str(), a.profile.as_str()),
        ("Ward 3A, bed 12", "BME-004211", "infusion-pump")
    );
    assert_eq!(a.profile_version, 1);
    assert_eq!(a.device_id, 1);
    assert_eq!(
        (a.detector.as_str(), a.kind.as_str(), a.count),
        ("scan_vertical", "anomaly", 40)
    );
    assert_eq!(a.summary, TRICKY);
    lab.shutdown().await.unwrap();
}

/// Counts each id at each receiver: every alert exactly once.
fn counts(ids: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for id in ids {
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_a_controller_restart_each_sink_gets_every_alert_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let ocsf_path = dir.path().join("ocsf.jsonl");
    let rs_dir = dir.path().join("rsyslog");
    let syslog_ids = |r: &Rsyslog| -> BTreeMap<String, usize> {
        counts(r.lines().iter().map(|l| {
            let raw = l.split_once('|').unwrap().1;
            parse_cef(&parse_5424(raw).msg).ext["externalId"].clone()
        }))
    };
    let ocsf_ids =
        || -> BTreeMap<String, usize> { counts(ocsf_lines(&ocsf_path).iter().map(ocsf_subject)) };
    let batch = |from: usize| -> Vec<Finding> {
        (from..from + 5)
            .map(|i| {
                let mut f = scan(&format!("r-{i}"));
                f.summary = format!("alert {i}");
                f
            })
            .collect()
    };
    let all = |n: usize| -> BTreeMap<String, usize> {
        (1..=n).map(|i| (format!("{GW}/r-{i}"), 1)).collect()
    };

    // The cursor is named: the collector may come back on another port.
    let port = free_port();
    let rsyslog = Rsyslog::start(&rs_dir, port, None);
    let lab = lab_with_site(
        dir.path(),
        &[
            syslog_sink("siem", port, None, false),
            ocsf_sink(&ocsf_path),
        ],
    )
    .await;
    report(&lab, &batch(1)).await;
    until("5 alerts at both sinks", Duration::from_secs(15), || {
        syslog_ids(&rsyslog).len() == 5 && ocsf_ids().len() == 5
    })
    .await;

    // The collector goes down; alerts keep being stored; the file sink is not held up.
    rsyslog.stop();
    report(&lab, &batch(6)).await;
    until("10 alerts in the file", Duration::from_secs(15), || {
        ocsf_ids().len() == 10
    })
    .await;
    // The controller stops with 5 alerts the collector has not had.
    lab.shutdown().await.unwrap();

    let port = free_port();
    let rsyslog = Rsyslog::start(&rs_dir, port, None);
    let lab = lab_with_site(
        dir.path(),
        &[
            syslog_sink("siem", port, None, false),
            ocsf_sink(&ocsf_path),
        ],
    )
    .await;
    report(&lab, &batch(11)).await;
    until("15 alerts at both sinks", Duration::from_secs(15), || {
        syslog_ids(&rsyslog).len() == 15 && ocsf_ids().len() == 15
    })
    .await;
    // Give a repeat the time to show up before counting.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        syslog_ids(&rsyslog),
        all(15),
        "syslog: each alert exactly once"
    );
    assert_eq!(ocsf_ids(), all(15), "OCSF file: each alert exactly once");
    lab.shutdown().await.unwrap();
    rsyslog.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppressed_pattern_is_stored_audited_and_not_sent_to_the_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ocsf.jsonl");
    let lab = lab_with_site(dir.path(), &[ocsf_sink(&path)]).await;
    let mut soc = AlertServiceClient::new(lab.channel("user-sam").await.unwrap());
    let suppress = |device: &str, peer: &str| pb::SuppressRequest {
        device: device.into(),
        detector: "scan_vertical".into(),
        peer: peer.into(),
        reason: "SOC-12 the PACS verification scan".into(),
    };
    // Refusals: the right status, nothing written.
    let mut eve = AlertServiceClient::new(lab.channel("user-eve").await.unwrap());
    let s = eve.suppress(suppress(PUMP, "")).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    let s = soc.suppress(suppress(PUMP, "pacs")).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    let s = soc
        .suppress(suppress("no-such-device", ""))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
    let w = soc
        .suppress(suppress(PUMP, "198.51.100.10"))
        .await
        .unwrap()
        .into_inner();
    let audit = lab.store.audit().unwrap();
    let entry = audit.iter().find(|e| e.seq == w.audit_seq).unwrap();
    assert_eq!(
        (
            entry.action.as_str(),
            entry.target.as_str(),
            entry.actor.as_str()
        ),
        ("suppress_alerts", PUMP, "user:sam")
    );
    assert!(entry.reason.contains("SOC-12"));

    // The scan about that peer is suppressed; one about another peer and the deny are not.
    let mut other_peer = scan("100-2");
    other_peer.peer = Some("198.51.100.11".parse().unwrap());
    report(&lab, &[scan("100-1"), other_peer, deny("100-3")]).await;
    until("2 OCSF lines", Duration::from_secs(15), || {
        ocsf_lines(&path).len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let sent: Vec<String> = ocsf_lines(&path).iter().map(ocsf_subject).collect();
    assert_eq!(sent, [format!("{GW}/100-2"), format!("{GW}/100-3")]);
    // Stored all the same: listed on request, left out of the default list as the sinks
    // leave it out.
    let listed = soc
        .list(pb::AlertFilter {
            include_suppressed: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(listed.len(), 3);
    assert_eq!(listed.iter().filter(|a| a.suppressed).count(), 1);
    let default = soc
        .list(pb::AlertFilter::default())
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(default.len(), 2);
    lab.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregated_alert_that_grows_is_one_stored_alert_and_one_update_at_each_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ocsf.jsonl");
    let port = free_port();
    let rsyslog = Rsyslog::start(&dir.path().join("rsyslog"), port, None);
    let lab = lab_with_site(
        dir.path(),
        &[syslog_sink("siem", port, None, false), ocsf_sink(&path)],
    )
    .await;
    let version = |count: u64| {
        let mut f = scan("agg-1");
        f.count = count;
        f.last_seen_ns = T0 + count * 1_000_000_000;
        f.time_ns = f.last_seen_ns;
        f
    };
    let syslog_counts = |r: &Rsyslog| -> Vec<(String, String)> {
        r.lines()
            .iter()
            .map(|l| {
                let cef = parse_cef(&parse_5424(l.split_once('|').unwrap().1).msg);
                (cef.ext["externalId"].clone(), cef.ext["cnt"].clone())
            })
            .collect()
    };
    report(&lab, &[version(1)]).await;
    until("the alert at both sinks", Duration::from_secs(15), || {
        ocsf_lines(&path).len() == 1 && rsyslog.lines().len() == 1
    })
    .await;
    // The finding grew (count 5); then the agent re-sends the same copy (a lost ack), and a
    // late copy of the first version arrives: both are acknowledged and ignored.
    report(&lab, &[version(5)]).await;
    report(&lab, &[version(5), version(1)]).await;
    until("the update at both sinks", Duration::from_secs(15), || {
        ocsf_lines(&path).len() >= 2 && rsyslog.lines().len() >= 2
    })
    .await;
    // Give a repeat the time to show up.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let mut soc = AlertServiceClient::new(lab.channel("user-sam").await.unwrap());
    let listed = soc
        .list(pb::AlertFilter::default())
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(listed.len(), 1, "one stored alert");
    assert_eq!((listed[0].id.as_str(), listed[0].count), ("agg-1", 5));
    assert_eq!(
        listed[0].last_seen_unix_ns,
        T0 + 5_000_000_000,
        "the body was replaced"
    );

    let lines = ocsf_lines(&path);
    let got: Vec<(u64, u64, u64, &str)> = lines
        .iter()
        .map(|v| {
            (
                v["activity_id"].as_u64().unwrap(),
                v["type_uid"].as_u64().unwrap(),
                v["count"].as_u64().unwrap(),
                v["finding_info"]["uid"].as_str().unwrap(),
            )
        })
        .collect();
    let uid = format!("{GW}/agg-1");
    assert_eq!(
        got,
        [(1, 200_401, 1, uid.as_str()), (2, 200_402, 5, uid.as_str())],
        "a create, then one update"
    );
    assert_eq!(lines[1]["activity_name"], "Update");
    let all: String = lines.iter().map(|v| format!("{v}\n")).collect();
    assert_eq!(wardgate_testkit::ocsf::validate_detection_findings(&all), 2);
    assert_eq!(
        syslog_counts(&rsyslog),
        [(uid.clone(), "1".to_string()), (uid, "5".to_string())],
        "syslog: the alert, then its update with the count"
    );
    lab.shutdown().await.unwrap();
    rsyslog.stop();
}
