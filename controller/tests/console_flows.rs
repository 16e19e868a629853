//! The device page's flow list over real HTTPS: each flow with its verdict in words and what
//! decided it (profile -> rule -> generation): an allowed flow names its rule, a dropped flow
//! says no rule of the profile allows it, and in monitor a flow the profile would deny says
//! so; a viewer reads it.

mod console_harness;

use console_harness::*;
use hyper::StatusCode;
use wardgate_analysis::{FlowDirection, FlowOutcome, FlowRecord, TcpOutcome, flow::DeviceRef};
use wardgate_controller::{
    auth::Role,
    service::learning,
    store::{Change, Store},
};
use wardgate_policy::Mode;
use wardgate_proto::v1 as pb;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One TCP flow of `device` to `peer`:`port` an hour ago, with its outcome.
fn tcp(c: &Console, device: &str, peer: &str, port: u16, outcome: FlowOutcome) -> FlowRecord {
    let d = c.store.device(device).unwrap().unwrap();
    let t = now_ns() - 3_600_000_000_000;
    let denied = outcome == FlowOutcome::Denied;
    FlowRecord {
        device: DeviceRef {
            name: device.into(),
            id: None,
            mac: None,
        },
        direction: FlowDirection::Opened,
        device_addr: d.addresses[0],
        device_port: 40_000,
        peer: peer.parse().unwrap(),
        peer_port: port,
        proto: 6,
        port,
        icmp_type: None,
        vlan: None,
        packets_out: if denied { 1 } else { 4 },
        bytes_out: if denied { 60 } else { 400 },
        packets_in: if denied { 0 } else { 4 },
        bytes_in: if denied { 0 } else { 800 },
        first_seen_ns: t,
        last_seen_ns: t + 1_000_000_000,
        tcp: (!denied).then_some(TcpOutcome::Established),
        outcome,
        rule: None,
        app: None,
        tcp_flags: None,
        peer_name: None,
        continuation: false,
    }
}

fn report(c: &Console, records: &[FlowRecord]) {
    let ack = tokio::task::block_in_place(|| {
        learning::report_flows(
            &c.ctx,
            "gw-ward-3",
            pb::FlowBatch {
                gateway: String::new(),
                records: records.iter().map(pb::FlowRecord::from).collect(),
            },
        )
    })
    .unwrap();
    assert_eq!(ack.stored as usize, records.len());
}

/// The `<tr>` of the flow list whose peer cell starts with `peer` and has port `port`.
fn flow_row(body: &str, peer: &str, port: u16) -> String {
    let table = &body[body
        .find("<table id=\"device-flows\"")
        .unwrap_or_else(|| panic!("no flow list in {body}"))..];
    let table = &table[..table.find("</table>").unwrap()];
    table
        .split("<tr class=\"flow\">")
        .skip(1)
        .map(|r| r.split("</tr>").next().unwrap())
        .find(|r| {
            r.contains(&format!("<th scope=\"row\">{peer}"))
                && r.contains(&format!("<td>{port}</td>"))
        })
        .unwrap_or_else(|| panic!("no row {peer} {port} in {table}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_page_lists_flows_with_their_verdict_and_rule() {
    let c = Console::start(6, 900).await;
    // pump-0000 enforces on gw-ward-3: tcp/443 to the infusion server passed (its profile's
    // "drug library and logs to infusion server" rule), tcp/8443 there was dropped.
    report(
        &c,
        &[
            tcp(
                &c,
                "pump-0000",
                "198.51.100.30",
                443,
                FlowOutcome::Established,
            ),
            tcp(&c, "pump-0000", "198.51.100.30", 8443, FlowOutcome::Denied),
            tcp(&c, "pump-0000", "198.51.100.30", 8443, FlowOutcome::Denied),
        ],
    );
    // pump-0004 (gw-ward-3) is moved to monitor: its tcp/8443 passes but would be denied.
    c.ctx
        .write(
            "user:erin",
            "watch before enforcing",
            Change::SetMode {
                device: "pump-0004".into(),
                mode: Mode::Monitor,
            },
        )
        .unwrap();
    report(
        &c,
        &[tcp(
            &c,
            "pump-0004",
            "198.51.100.30",
            8443,
            FlowOutcome::Established,
        )],
    );
    let applied = c
        .store
        .gateway("gw-ward-3")
        .unwrap()
        .unwrap()
        .applied_generation;

    let (mut b, _) = c.browser_as("vera", Role::Viewer);
    let p = b.get("/devices/pump-0000").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let body = &p.body;
    assert!(body.contains("<caption>Each flow of the device"), "{body}");
    assert!(body.contains("<th scope=\"col\">Verdict</th>"), "{body}");
    let allowed = flow_row(body, "198.51.100.30 (infusion-server)", 443);
    assert!(allowed.contains(">allowed</td>"), "{allowed}");
    assert!(
        allowed.contains("infusion-pump → rule drug library and logs to infusion server"),
        "{allowed}"
    );
    assert!(
        allowed.contains(&format!("<td>{applied}</td>")),
        "{allowed}"
    );
    let denied = flow_row(body, "198.51.100.30 (infusion-server)", 8443);
    assert!(denied.contains(">denied</td>"), "{denied}");
    assert!(denied.contains("<td>2</td>"), "two flows: {denied}");
    assert!(
        denied.contains("no rule of infusion-pump allows it"),
        "{denied}"
    );
    assert!(!denied.contains("would be denied"), "enforced: {denied}");
    // Verdicts are words, not colour only, and no inline style sneaks in.
    assert!(denied.contains("class=\"verdict verdict-denied\">denied"));
    assert!(!body.contains("style="), "{body}");

    let p = b.get("/devices/pump-0004").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let monitor = flow_row(&p.body, "198.51.100.30 (infusion-server)", 8443);
    assert!(
        monitor.contains(">allowed; would be denied (not enforced in this mode)</td>"),
        "{monitor}"
    );
    assert!(
        monitor.contains("no rule of infusion-pump allows it"),
        "{monitor}"
    );
    // A device without flows says so.
    let p = b.get("/devices/pump-0002").await;
    assert!(
        p.body.contains("No flows in the last 7 days."),
        "{}",
        p.body
    );

    // In French.
    b.lang = "fr-FR,fr;q=0.9";
    let p = b.get("/devices/pump-0000").await;
    let denied = flow_row(&p.body, "198.51.100.30 (infusion-server)", 8443);
    assert!(denied.contains(">refusé</td>"), "{denied}");
    assert!(
        denied.contains("aucune règle de infusion-pump ne l&#39;autorise")
            || denied.contains("aucune règle de infusion-pump ne l&#x27;autorise"),
        "{denied}"
    );
}

/// A flow the gateway admitted names the rule it reported, as the generation applied then had
/// it, even after the profile changed so that no rule allows it any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_flow_names_the_rule_of_the_generation_that_admitted_it() {
    let c = Console::start(6, 900).await;
    let generation = c.store.latest_generation("gw-ward-3").unwrap();
    assert!(generation > 0, "the harness compiled gw-ward-3");
    let epoch = c.store.epoch().unwrap();
    c.store
        .report_status("gw-ward-3", generation, &epoch, "", None)
        .unwrap();
    // The rule id the datapath would report for the pump's tcp/443 to the infusion server.
    let stored = c
        .store
        .generation("gw-ward-3", generation)
        .unwrap()
        .unwrap();
    let state = wardgate_controller::generation::decode(&stored.content).unwrap();
    let pump = state
        .devices
        .iter()
        .find(|d| d.name == "pump-0000")
        .unwrap();
    let policy = state
        .policies
        .iter()
        .find(|p| p.policy_id == pump.policy_id)
        .unwrap();
    let rule = policy
        .rules
        .iter()
        .find(|r| r.name.contains("infusion server"))
        .unwrap_or_else(|| panic!("no infusion server rule in {:?}", policy.rules));
    let mut admitted = tcp(
        &c,
        "pump-0000",
        "198.51.100.30",
        443,
        FlowOutcome::Established,
    );
    admitted.rule = Some(rule.rule_id);
    report(&c, &[admitted]);

    // The profile changes: tcp/443 is no longer allowed.
    let before = c.store.profile("infusion-pump").unwrap().unwrap().yaml;
    let yaml = before.replace("443", "4443");
    assert_ne!(yaml, before, "the profile allowed tcp/443");
    // (The availability warning names the pump's flow: accepted.)
    c.ctx
        .write_accepting(
            "user:erin",
            "CHG-7 infusion server moves to 4443",
            vec![Change::UpsertProfile {
                name: "infusion-pump".into(),
                yaml,
            }],
            true,
        )
        .unwrap();

    let (mut b, _) = c.browser_as("vera", Role::Viewer);
    let p = b.get("/devices/pump-0000").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let row = flow_row(&p.body, "198.51.100.30 (infusion-server)", 443);
    let said = format!(
        "infusion-pump version {} → rule {} (in generation {generation})",
        policy.profile_version, rule.name
    );
    assert!(row.contains(&said), "{said} in {row}");
    assert!(!row.contains("no rule of"), "{row}");
    b.lang = "fr-FR,fr;q=0.9";
    let p = b.get("/devices/pump-0000").await;
    let row = flow_row(&p.body, "198.51.100.30 (infusion-server)", 443);
    assert!(
        row.contains(&format!("(dans la génération {generation})")),
        "{row}"
    );
}
