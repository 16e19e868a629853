//! The console's SOC pages over real HTTPS on loopback: the alert list and its filters (GET
//! links) and the polled fragment that shows new alerts, an alert's evidence, acknowledge and
//! suppress with a reason (the same service calls, store rows and audit entries as the gRPC
//! API), forged POSTs from a viewer or an engineer and POSTs without the CSRF token refused, and
//! the audit trail's verification going from intact to broken when a row is edited in the
//! SQLite file behind the controller's back.

mod console_harness;

use console_harness::*;
use hyper::StatusCode;
use wardgate_analysis::{
    FlowDirection,
    detect::{Finding, Matrix, Metric, Severity, Technique, finding::FlowRef},
    flow::DeviceRef,
};
use wardgate_controller::{alerts, auth::Role, store::Store};

const GW: &str = "gw-ward-3";
const T0: u64 = 1_764_745_200_000_000_000;

fn finding(id: &str, device: &str, detector: &str, severity: Severity, peer: &str) -> Finding {
    let d = DeviceRef {
        name: device.into(),
        id: None,
        mac: None,
    };
    let mut f = Finding::new(
        detector,
        &d,
        T0,
        severity,
        0.9,
        Technique::new("T0846", "Remote System Discovery", Matrix::Ics),
    );
    f.id = id.into();
    f.first_seen_ns = T0;
    f.last_seen_ns = T0 + 60_000_000_000;
    f.count = 3;
    f.peer = Some(peer.parse().unwrap());
    f.summary = format!("{device} touched 40 ports of {peer}");
    f.evidence.window_start_ns = T0;
    f.evidence.window_end_ns = T0 + 60_000_000_000;
    f.evidence.metrics = vec![Metric::new("distinct_ports", 40.0).threshold(20.0)];
    f.evidence.ports = vec![22, 80, 443];
    f.flows = vec![FlowRef {
        direction: FlowDirection::Opened,
        device_addr: "192.0.2.1".parse().unwrap(),
        device_port: 40_000,
        peer: peer.parse().unwrap(),
        peer_port: 22,
        proto: 6,
        first_seen_ns: T0,
        last_seen_ns: T0 + 1_000_000_000,
        packets: 2,
        bytes: 120,
    }];
    f.action = format!("wardctl mode {device} quarantine");
    f
}

/// Stores `f` as gw-ward-3's agent's alert; its console id (first sequence number).
fn store(c: &Console, f: &Finding) -> i64 {
    c.store.insert_alerts(GW, &[alerts::new_row(f)]).unwrap();
    let page = c
        .store
        .alert_page(&wardgate_controller::store::AlertPageQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    page.rows.iter().find(|a| a.id == f.id).unwrap().first_seq
}

fn rows(p: &Page) -> usize {
    p.body.matches(r#"<tr class="alert">"#).count()
}

/// Three alerts: a high scan by pump-0000, a medium one by monitor-0001, a low new peer of
/// pump-0000 (stored in that order).
fn three(c: &Console) -> [i64; 3] {
    [
        store(
            c,
            &finding(
                "a1",
                "pump-0000",
                "scan_vertical",
                Severity::High,
                "198.51.100.10",
            ),
        ),
        store(
            c,
            &finding(
                "a2",
                "monitor-0001",
                "scan_vertical",
                Severity::Medium,
                "198.51.100.11",
            ),
        ),
        store(
            c,
            &finding(
                "a3",
                "pump-0000",
                "new_peer",
                Severity::Low,
                "198.51.100.12",
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_list_filters_evidence_acknowledge_and_suppress() {
    let c = Console::start(4, 900).await;
    let [high, medium, low] = three(&c);
    let (mut soc, csrf) = c.browser_as("sam", Role::Soc);

    let p = soc.get("/alerts").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(rows(&p), 3);
    // Newest first.
    let at = |seq: i64| p.body.find(&format!("/alerts/{seq}\"")).unwrap();
    assert!(at(low) < at(medium) && at(medium) < at(high), "{}", p.body);
    assert!(
        p.body.contains(r#"href="/alerts""#),
        "the nav links the SOC pages"
    );
    assert!(p.body.contains(r#"href="/audit""#));
    assert!(
        p.body.contains(r#"hx-trigger="every 5s""#),
        "the list polls"
    );

    for (query, want) in [
        ("severity=medium", 2),
        ("severity=high", 1),
        ("device=pump-0000", 2),
        ("detector=new_peer", 1),
        ("detector=scan_vertical&severity=high", 1),
        ("state=open", 3),
        ("state=acknowledged", 0),
        ("state=suppressed", 0),
    ] {
        let p = soc.get(&format!("/alerts?{query}")).await;
        assert_eq!(p.status, StatusCode::OK, "{query}");
        assert_eq!(rows(&p), want, "{query}: {}", p.body);
    }
    assert_eq!(
        soc.get("/alerts?state=closed").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        soc.get("/alerts?severity=dire").await.status,
        StatusCode::BAD_REQUEST
    );

    // The polled fragment: no page around it, and an alert stored since shows up in it.
    let four = store(
        &c,
        &finding(
            "a4",
            "monitor-0001",
            "fanout",
            Severity::Critical,
            "198.51.100.13",
        ),
    );
    let frag = soc
        .send_with("GET", "/alerts?page=1", None, &[("HX-Request", "true")])
        .await;
    assert_eq!(frag.status, StatusCode::OK);
    assert!(!frag.body.contains("<html"), "{}", frag.body);
    assert_eq!(rows(&frag), 4);
    assert!(frag.body.contains(&format!("/alerts/{four}\"")));

    // The evidence.
    let p = soc.get(&format!("/alerts/{high}")).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    for want in [
        "gw-ward-3/a1",
        "pump-0000 touched 40 ports of 198.51.100.10",
        r#"href="/devices/pump-0000""#,
        "scan_vertical",
        "distinct_ports",
        "22, 80, 443",
        "198.51.100.10:22",
        "https://attack.mitre.org/techniques/T0846/",
        "wardctl mode pump-0000 quarantine",
        r#"id="acknowledge""#,
        r#"id="suppress""#,
    ] {
        assert!(p.body.contains(want), "{want}: {}", p.body);
    }
    assert_eq!(
        soc.get("/alerts/999999").await.status,
        StatusCode::NOT_FOUND
    );

    // Acknowledge: a reason is required, then the store and the trail have it.
    let before = c.store.audit().unwrap().len();
    let url = format!("/alerts/{high}/acknowledge");
    let p = soc
        .send("POST", &url, Some(&[("csrf", &csrf), ("reason", " ")]))
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert_eq!(c.store.audit().unwrap().len(), before);
    let p = soc
        .send(
            "POST",
            &url,
            Some(&[("csrf", &csrf), ("reason", "INC-42: pen test")]),
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let audit = c.store.audit().unwrap();
    let e = audit.last().unwrap();
    assert_eq!(
        (
            e.actor.as_str(),
            e.action.as_str(),
            e.target.as_str(),
            e.reason.as_str()
        ),
        (
            "user:sam",
            "acknowledge_alerts",
            "gw-ward-3/a1",
            "INC-42: pen test"
        )
    );
    assert_eq!(
        p.location(),
        format!("/alerts/{high}?acknowledged={}", e.seq)
    );
    let a = c.store.console_alert(high).unwrap().unwrap();
    assert!(a.acknowledged);
    assert_eq!(
        a.acknowledged_by, "user:sam",
        "who acknowledged is kept on the alert"
    );
    let p = soc.get(p.location()).await;
    assert!(p.body.contains("Alert acknowledged."), "{}", p.body);
    assert!(!p.body.contains(r#"id="acknowledge""#), "acknowledged once");
    assert_eq!(rows(&soc.get("/alerts?state=acknowledged").await), 1);
    assert_eq!(rows(&soc.get("/alerts?state=open").await), 3);

    // Suppress the new-peer alerts of pump-0000 from 198.51.100.12: a bad peer is refused,
    // then the suppression is stored with who and why, and a later match is held back.
    let sup = format!("/alerts/{low}/suppress");
    let form = |peer: &'static str, reason: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("device", "pump-0000".to_string()),
            ("detector", "new_peer".to_string()),
            ("peer", peer.to_string()),
            ("reason", reason.to_string()),
        ]
    };
    let send = |f: &Vec<(&'static str, String)>| {
        f.iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Vec<(&str, String)>>()
    };
    let bad = send(&form("not-an-ip", "noise"));
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = soc.send("POST", &sup, Some(&bad)).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert!(c.store.suppressions().unwrap().is_empty());
    let good = send(&form("198.51.100.12", "CHG-7: new PACS"));
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = soc.send("POST", &sup, Some(&good)).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let s = c.store.suppressions().unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (
            s[0].device.as_str(),
            s[0].detector.as_str(),
            s[0].peer.as_str()
        ),
        ("pump-0000", "new_peer", "198.51.100.12")
    );
    assert_eq!(
        (s[0].made_by.as_str(), s[0].reason.as_str()),
        ("user:sam", "CHG-7: new PACS")
    );
    let e = c.store.audit().unwrap().pop().unwrap();
    assert_eq!(
        (e.actor.as_str(), e.action.as_str()),
        ("user:sam", "suppress_alerts")
    );
    let held = store(
        &c,
        &finding(
            "a5",
            "pump-0000",
            "new_peer",
            Severity::Low,
            "198.51.100.12",
        ),
    );
    let p = soc.get("/alerts?state=suppressed").await;
    assert_eq!(rows(&p), 1, "{}", p.body);
    assert!(p.body.contains(&format!("/alerts/{held}\"")));

    // French.
    soc.lang = "fr-FR,fr;q=0.9";
    let p = soc.get(&format!("/alerts/{high}")).await;
    assert!(p.body.contains("Éléments de preuve"), "{}", p.body);
    assert!(p.body.contains("acquittée"), "{}", p.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_posts_from_a_viewer_or_an_engineer_and_posts_without_csrf_are_refused() {
    let c = Console::start(4, 900).await;
    let [high, _, _] = three(&c);
    let ack = format!("/alerts/{high}/acknowledge");
    let sup = format!("/alerts/{high}/suppress");
    let suppress = |csrf: &str| {
        vec![
            ("csrf".to_string(), csrf.to_string()),
            ("device".to_string(), "pump-0000".to_string()),
            ("detector".to_string(), "scan_vertical".to_string()),
            ("reason".to_string(), "forged".to_string()),
        ]
    };
    let before = c.store.audit().unwrap().len();
    for (name, role) in [("vera", Role::Viewer), ("eve", Role::Engineer)] {
        let (mut b, csrf) = c.browser_as(name, role);
        let p = b.get(&format!("/alerts/{high}")).await;
        assert_eq!(p.status, StatusCode::OK, "{name} reads alerts");
        assert!(
            !p.body.contains(r#"id="acknowledge""#),
            "{name}: no write form"
        );
        assert!(
            !p.body.contains(r#"id="suppress""#),
            "{name}: no write form"
        );
        assert_eq!(
            b.get("/audit").await.status,
            StatusCode::OK,
            "{name} reads the trail"
        );
        let p = b
            .send("POST", &ack, Some(&[("csrf", &csrf), ("reason", "forged")]))
            .await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{name}: {}", p.body);
        let f = suppress(&csrf);
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let p = b.send("POST", &sup, Some(&f)).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{name}: {}", p.body);
    }
    // Each refusal is in the trail, as the gRPC API records one; nothing else was written.
    let audit = c.store.audit().unwrap();
    let refused: Vec<_> = audit[before..]
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            ("user:vera", "refused"),
            ("user:vera", "refused"),
            ("user:eve", "refused"),
            ("user:eve", "refused")
        ]
    );
    // The SOC user without the token, or with another session's: 403 before anything.
    let (mut soc, _) = c.browser_as("sam", Role::Soc);
    let (_, other_csrf) = c.browser_as("sam", Role::Soc);
    for fields in [
        vec![("reason", "no token")],
        vec![("csrf", other_csrf.as_str()), ("reason", "x")],
    ] {
        let p = soc.send("POST", &ack, Some(&fields)).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    }
    assert_eq!(c.store.audit().unwrap().len(), audit.len());
    assert!(!c.store.console_alert(high).unwrap().unwrap().acknowledged);
    assert!(c.store.suppressions().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_shows_intact_then_broken_after_a_row_is_edited_in_the_file() {
    let c = Console::start(4, 900).await;
    let (mut soc, csrf) = c.browser_as("sam", Role::Soc);
    let [high, _, _] = three(&c);
    let p = soc
        .send(
            "POST",
            &format!("/alerts/{high}/acknowledge"),
            Some(&[("csrf", &csrf), ("reason", "INC-43")]),
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let n = c.store.audit().unwrap().len();

    let p = soc.get("/audit").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(
        p.body.contains(r#"<p class="notice" id="verdict">Intact"#),
        "{}",
        p.body
    );
    assert_eq!(p.body.matches(r#"<tr class="entry">"#).count(), n);
    // Newest first: the acknowledgement above the commissioning write.
    let ack = p.body.find("acknowledge_alerts").unwrap();
    let first = p.body.find("CHG-1 commissioning").unwrap();
    assert!(ack < first);

    // Entry 1's reason edited through a second connection to the store's file.
    let head = c.store.audit_head_path().unwrap();
    let db = head.parent().unwrap().join("wardgate.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let changed = conn
        .execute(
            "UPDATE audit SET reason = 'nothing to see' WHERE seq = 1",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    let p = soc.get("/audit").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(
        p.body
            .contains(r#"<p class="error" id="verdict">Broken: entry 1 was edited"#),
        "{}",
        p.body
    );
    assert!(p.body.contains("nothing to see"));
    soc.lang = "fr-FR,fr;q=0.9";
    assert!(soc.get("/audit").await.body.contains("Rompue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_paged_fifty_at_a_time_with_the_filters_kept_in_the_links() {
    let c = Console::start(4, 900).await;
    let rows_in: Vec<_> = (0..55)
        .map(|i| {
            alerts::new_row(&finding(
                &format!("p{i:02}"),
                "pump-0000",
                "scan_vertical",
                Severity::High,
                "198.51.100.10",
            ))
        })
        .collect();
    c.store.insert_alerts(GW, &rows_in).unwrap();
    let (mut soc, _) = c.browser_as("sam", Role::Soc);
    let p = soc.get("/alerts?severity=high&device=pump-0000").await;
    assert_eq!(rows(&p), 50);
    assert!(
        p.body.contains("55</span> alerts · Page 1 of 2"),
        "{}",
        p.body
    );
    let next = r#"href="/alerts?page=2&#38;severity=high&#38;device=pump-0000""#;
    assert!(p.body.contains(next), "{}", p.body);
    let p = soc
        .get("/alerts?page=2&severity=high&device=pump-0000")
        .await;
    assert_eq!(rows(&p), 5);
    // The oldest five, the first stored last.
    assert!(p.body.contains("/alerts/1\""), "{}", p.body);
    assert!(p.body.contains(r#"rel="prev""#));
}
