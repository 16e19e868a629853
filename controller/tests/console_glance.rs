//! The site at a glance over real HTTPS: the policy matrix (a class with an allowed group, a
//! denied group, and flows it denies seen in the last days) and the gateways' health (one
//! connected and up to date, one not; one certificate about to expire; the health one agent
//! reports through the agent API, "not reported" for a status without it), for a viewer too.

mod console_harness;

use console_harness::*;
use hyper::StatusCode;
use wardgate_controller::{
    auth::Role,
    store::{Change, IssuedCert, Store},
};
use wardgate_proto::v1 as pb;

/// The table cell of row `row` (its `<th scope="row">` text start) and column `col` (0-based
/// among the `<td>`s).
fn cell(body: &str, row: &str, col: usize) -> String {
    let at = body
        .find(&format!("<th scope=\"row\"><a href=\"/?profile={row}\">"))
        .unwrap_or_else(|| panic!("no row {row} in {body}"));
    let tr = &body[at..body[at..].find("</tr>").unwrap() + at];
    tr.split("<td>")
        .nth(col + 1)
        .unwrap_or_else(|| panic!("no cell {col} in {tr}"))
        .split("</td>")
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_matrix_shows_allowed_denied_and_seen_but_denied() {
    let c = Console::start(6, 900).await;
    // pump-0000 opened tcp/8443 to the infusion server (its profile allows tcp/443 only) and
    // udp/53 to the DNS (allowed).
    report_flows(&c, "pump-0000");
    let (mut b, _) = c.browser_as("vera", Role::Viewer);
    let p = b.get("/matrix").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let body = &p.body;
    assert!(body.contains("<caption>"), "{body}");
    // Columns: the site's groups in name order, then any other address.
    let heads: Vec<&str> = body
        .split("<th scope=\"col\">")
        .skip(1)
        .map(|h| h.split("</th>").next().unwrap())
        .collect();
    assert_eq!(
        heads,
        [
            "Class (profile)",
            "central-station",
            "dns",
            "infusion-server",
            "ntp",
            "syslog",
            "any other address"
        ]
    );
    // Columns 0..: central-station, dns, infusion-server, ntp, syslog, other.
    let central = cell(body, "infusion-pump", 0);
    assert!(central.contains("✗ denied"), "{central}");
    assert!(!central.contains("seen but denied"), "{central}");
    let dns = cell(body, "infusion-pump", 1);
    assert!(dns.contains("✓ allowed: out udp/53"), "{dns}");
    assert!(
        !dns.contains("seen but denied"),
        "allowed flows are not: {dns}"
    );
    let server = cell(body, "infusion-pump", 2);
    assert!(server.contains("✓ allowed: out tcp/443"), "{server}");
    assert!(
        server.contains("⚠ seen but denied: 1 flows from 1 devices"),
        "{server}"
    );
    assert!(
        server.contains("<a href=\"/devices/pump-0000\">pump-0000</a>"),
        "{server}"
    );
    // The monitors saw nothing; the pumps' row counts its devices.
    assert!(body.contains("infusion-pump</a> <span class=\"count\">(3 devices)"));
    for col in 0..6 {
        assert!(!cell(body, "patient-monitor", col).contains("seen but denied"));
    }
    // In French too.
    b.lang = "fr-FR,fr;q=0.9";
    let p = b.get("/matrix").await;
    assert!(p.body.contains("observé mais refusé"), "{}", p.body);
    assert!(p.body.contains("Le site d'un coup d'œil") || p.body.contains("Le site d&#"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_page_shows_connection_generation_certificate_expiry_and_agent_health() {
    let c = Console::start(4, 900).await;
    let now = wardgate_controller::audit::now_ms();
    let day = 24 * 3600 * 1000;
    for (gw, serial, days) in [("gw-ward-3", "0a", 10), ("gw-ward-4", "0b", 200)] {
        c.ctx
            .write(
                "gateway:test",
                "renewal",
                Change::RenewCertificate {
                    gateway: gw.into(),
                    cert: IssuedCert {
                        serial: serial.into(),
                        not_after_ms: now + days * day + day / 2,
                    },
                },
            )
            .unwrap();
    }
    // gw-ward-3: an agent follows its stream and applied the latest generation; it reports
    // over the agent API (mTLS, its lab certificate), first as an agent from before health
    // reports would (none), then with its health: the watchdog fired.
    let _watch = c.ctx.push.watch("gw-ward-3");
    let latest = c.store.latest_generation("gw-ward-3").unwrap();
    assert!(latest > 0);
    let epoch = c.store.epoch().unwrap();
    let mut agent = c.agent("gw-ward-3").await;
    let status = |health| pb::StatusReport {
        gateway: "gw-ward-3".into(),
        applied_generation: latest,
        error: String::new(),
        epoch: epoch.clone(),
        health,
    };
    agent.client.report_status(status(None)).await.unwrap();
    let (mut b, _) = c.browser_as("vera", Role::Viewer);
    let p = b.get("/gateways").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let w3 = gateway_row(&p.body, "gw-ward-3");
    assert!(w3.contains("● connected"), "{w3}");
    assert!(w3.contains(&format!("{latest} / {latest}")), "{w3}");
    assert!(w3.contains("✓ up to date"), "{w3}");
    assert!(w3.contains("(10 days left)"), "{w3}");
    assert!(w3.contains("⚠ renew soon"), "{w3}");
    // Both its devices (a pump, a monitor) have profiles that fail open.
    assert!(w3.contains("2 fail-open devices"), "{w3}");
    // No health in the status: the fail-open state, watchdog and release are not reported.
    assert_eq!(w3.matches("not reported by the agent").count(), 3, "{w3}");
    let w4 = gateway_row(&p.body, "gw-ward-4");
    assert!(w4.contains("○ not connected"), "{w4}");
    assert!(w4.contains("⚠ behind the latest"), "{w4}");
    assert!(w4.contains("(200 days left)"), "{w4}");
    assert!(!w4.contains("renew soon"), "{w4}");
    assert_eq!(w4.matches("not reported by the agent").count(), 3, "{w4}");
    // Both pages are in the navigation.
    assert!(p.body.contains("<a href=\"/matrix\">Site at a glance</a>"));
    assert!(p.body.contains("<a href=\"/gateways\">Gateways</a>"));

    // The agent reports its health: the watchdog fired (3 times, recovered twice), its one
    // enforced fail-open device only monitored.
    let health = pb::GatewayHealth {
        agent_version: "0.9.1".into(),
        watchdog_fired: true,
        watchdog_fired_count: 3,
        watchdog_recovered_count: 2,
        fail_open_devices: 1,
        heartbeat_age_ms: Some(7_500),
    };
    let before = wardgate_controller::audit::now_ms();
    agent
        .client
        .report_status(status(Some(health.clone())))
        .await
        .unwrap();
    let p = b.get("/gateways").await;
    let w3 = gateway_row(&p.body, "gw-ward-3");
    assert!(!w3.contains("not reported"), "{w3}");
    assert!(w3.contains("<td>0.9.1</td>"), "the release: {w3}");
    let since = c.store.gateway_health().unwrap()["gw-ward-3"]
        .watchdog_fired_since_ms
        .expect("fired");
    assert!(since >= before, "fired since the report");
    let t = time::OffsetDateTime::from_unix_timestamp(since / 1000).unwrap();
    let since = format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    );
    assert!(w3.contains(&format!("⚠ fired since {since}")), "{w3}");
    assert!(w3.contains("(3 fired, 2 recovered)"), "{w3}");
    assert!(
        w3.contains("2 fail-open devices; State: <strong class=\"cell-observed\">⚠ 1 only monitored: the watchdog fired"),
        "{w3}"
    );
    // gw-ward-4's agent still reports none.
    let w4 = gateway_row(&p.body, "gw-ward-4");
    assert_eq!(w4.matches("not reported by the agent").count(), 3, "{w4}");
    // Recovered: ok, the devices enforced again; in French too.
    let ok = pb::GatewayHealth {
        watchdog_fired: false,
        watchdog_recovered_count: 3,
        ..health
    };
    agent.client.report_status(status(Some(ok))).await.unwrap();
    let p = b.get("/gateways").await;
    let w3 = gateway_row(&p.body, "gw-ward-3");
    assert!(
        w3.contains("✓ ok</span> <span class=\"count\">(3 fired, 3 recovered)"),
        "{w3}"
    );
    assert!(
        w3.contains("State: <span class=\"cell-allowed\">✓ enforced"),
        "{w3}"
    );
    b.lang = "fr-FR,fr;q=0.9";
    let p = b.get("/gateways").await;
    let w3 = gateway_row(&p.body, "gw-ward-3");
    assert!(w3.contains("(3 déclenchements, 3 rétablissements)"), "{w3}");
    let w4 = gateway_row(&p.body, "gw-ward-4");
    assert!(w4.contains("non remonté par l"), "{w4}");
}

/// The `<tr>` of gateway `name` on the gateways page.
fn gateway_row(body: &str, name: &str) -> String {
    let at = body
        .find(&format!("<th scope=\"row\">{name}"))
        .unwrap_or_else(|| panic!("no {name} in {body}"));
    body[at..at + body[at..].find("</tr>").unwrap()].to_string()
}
