//! The engineer's loop with four eyes, over real HTTPS with logins through the mock Pro Santé
//! Connect: propose a profile from a device's recorded flows, see the rule diff, simulate,
//! submit with a reason; the proposer cannot approve their own change (nor can the store be
//! made to record it), a viewer cannot approve, an approval needs a fresh login, and a second
//! engineer's approval applies it with both names in the audit trail.

mod console_harness;

use console_harness::{psc::MockPsc, psc::User, *};
use hyper::StatusCode;
use wardgate_analysis::{FlowDirection, FlowOutcome, FlowRecord, TcpOutcome, flow::DeviceRef};
use wardgate_controller::{
    auth::Role,
    console::{approval::FRESH_LOGIN, session},
    service::learning,
    store::{Change, SessionRow, Store},
};
use wardgate_proto::v1 as pb;

const DEVICE: &str = "pump-0000";

fn eng1() -> User {
    User::new("899700000001", "Hélène", "Martin")
}
fn eng2() -> User {
    User::new("899700000002", "Karim", "Benali")
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// pump-0000 talked to the infusion server (198.51.100.30) on tcp/8443 and to the DNS.
fn report_flows(c: &Console) {
    let d = c.store.device(DEVICE).unwrap().unwrap();
    let t = now_ns() - 3_600_000_000_000;
    let flow = |peer: &str, proto: u8, port: u16| FlowRecord {
        device: DeviceRef {
            name: DEVICE.into(),
            id: None,
            mac: None,
        },
        direction: FlowDirection::Opened,
        device_addr: d.addresses[0],
        device_port: 40_000,
        peer: peer.parse().unwrap(),
        peer_port: port,
        proto,
        port,
        icmp_type: None,
        vlan: None,
        packets_out: 4,
        bytes_out: 400,
        packets_in: 4,
        bytes_in: 800,
        first_seen_ns: t,
        last_seen_ns: t + 1_000_000_000,
        tcp: (proto == 6).then_some(TcpOutcome::Established),
        outcome: FlowOutcome::Established,
        rule: None,
        app: None,
        tcp_flags: None,
    };
    let records = [
        flow("198.51.100.30", 6, 8443),
        flow("198.51.100.53", 17, 53),
    ];
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
    assert_eq!(ack.stored, 2);
}

async fn start(psc: &MockPsc) -> Console {
    let c = Console::start_with(4, |cfg, addr| {
        cfg.oidc = Some(oidc_config(
            psc,
            addr,
            &["899700000001", "899700000002"],
            &["899700000003"],
        ));
    })
    .await;
    report_flows(&c);
    c
}

async fn logged_in<'a>(c: &'a Console, psc: &MockPsc, who: &User) -> Browser<'a> {
    let mut b = c.browser();
    psc.log_in_as(who, "eidas1");
    assert_eq!(b.oidc_login().await.status, StatusCode::OK);
    b
}

/// The text of the page's textarea, unescaped.
fn textarea(body: &str) -> String {
    let start = body.find("<textarea").expect("a textarea");
    let start = start + body[start..].find('>').unwrap() + 1;
    let end = start + body[start..].find("</textarea>").unwrap();
    // askama writes `&#NN;` for the five HTML characters.
    let mut out = String::new();
    let mut rest = &body[start..end];
    while let Some(at) = rest.find("&#") {
        out.push_str(&rest[..at]);
        let semi = at + rest[at..].find(';').unwrap();
        let code: u32 = rest[at + 2..semi].parse().unwrap();
        out.push(char::from_u32(code).unwrap());
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    out
}

fn profile_of(c: &Console) -> String {
    c.store.device(DEVICE).unwrap().unwrap().profile
}

/// Engineer 1 proposes, simulates and submits; returns the pending change's id and the
/// proposed profile's name.
async fn submit(b: &mut Browser<'_>, c: &Console) -> (i64, String) {
    let page = b.get(&format!("/devices/{DEVICE}")).await;
    assert!(page.body.contains(r#"id="propose""#), "{}", page.body);
    let csrf = page.csrf();
    let p = b
        .send(
            "POST",
            &format!("/devices/{DEVICE}/propose"),
            Some(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let yaml = textarea(&p.body);
    // The rule diff against infusion-pump: the seen flows, in words.
    assert!(p.body.contains("Rules against the current profile"));
    assert!(p.body.contains(r#"<li class="added">+ "#), "{}", p.body);
    assert!(p.body.contains("8443"), "{}", p.body);

    let sim = b
        .send(
            "POST",
            &format!("/devices/{DEVICE}/simulate"),
            Some(&[("csrf", &csrf), ("yaml", &yaml)]),
        )
        .await;
    assert_eq!(sim.status, StatusCode::OK, "{}", sim.body);
    assert!(
        sim.body.contains("2 flows replayed; 0 would be blocked"),
        "{}",
        sim.body
    );

    let no_reason = b
        .send(
            "POST",
            &format!("/devices/{DEVICE}/submit"),
            Some(&[("csrf", &csrf), ("yaml", &yaml), ("reason", " ")]),
        )
        .await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
    assert!(c.store.pending_changes(DEVICE, 10).unwrap().is_empty());

    let sent = b
        .send(
            "POST",
            &format!("/devices/{DEVICE}/submit"),
            Some(&[
                ("csrf", &csrf),
                ("yaml", &yaml),
                ("reason", "CHG-42 pump-0000 from its baseline"),
            ]),
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    assert!(sent.location().contains("?submitted="));
    let pending = c.store.pending_changes(DEVICE, 10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].proposer, "899700000001");
    assert_eq!(pending[0].approver, None);
    // Submitted, not applied.
    assert_eq!(profile_of(c), "infusion-pump");
    (pending[0].id, pending[0].profile.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engineer_approves_and_both_names_are_in_the_audit_trail() {
    let psc = MockPsc::start().await;
    let c = start(&psc).await;
    let mut b1 = logged_in(&c, &psc, &eng1()).await;
    let (id, profile) = submit(&mut b1, &c).await;
    assert_ne!(profile, "infusion-pump");

    // The proposer sees no approve button, and a forged approval is refused.
    let page = b1.get(&format!("/devices/{DEVICE}")).await;
    assert!(
        page.body.contains("You proposed this change"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(r#"class="approve""#));
    let csrf = page.csrf();
    let own = b1
        .send(
            "POST",
            &format!("/changes/{id}/approve"),
            Some(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(own.status, StatusCode::FORBIDDEN, "{}", own.body);
    assert_eq!(profile_of(&c), "infusion-pump");

    // A viewer cannot approve either.
    let (mut viewer, vcsrf) = c.browser_as("vic", Role::Viewer);
    assert!(
        !viewer
            .get(&format!("/devices/{DEVICE}"))
            .await
            .body
            .contains(r#"class="approve""#)
    );
    let forged = viewer
        .send(
            "POST",
            &format!("/changes/{id}/approve"),
            Some(&[("csrf", &vcsrf)]),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(profile_of(&c), "infusion-pump");

    // The second engineer approves: the device moves to the proposed profile.
    let mut b2 = logged_in(&c, &psc, &eng2()).await;
    let page = b2.get(&format!("/devices/{DEVICE}")).await;
    assert!(page.body.contains(r#"class="approve""#), "{}", page.body);
    let ok = b2
        .send(
            "POST",
            &format!("/changes/{id}/approve"),
            Some(&[("csrf", &page.csrf())]),
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(profile_of(&c), profile);
    let decided = c.store.pending_change(id).unwrap().unwrap();
    assert_eq!(decided.approver.as_deref(), Some("899700000002"));
    // Once.
    let again = b2
        .send(
            "POST",
            &format!("/changes/{id}/approve"),
            Some(&[("csrf", &page.csrf())]),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    let audit = c.store.audit().unwrap();
    let find = |action: &str| {
        audit
            .iter()
            .find(|e| e.action == action)
            .unwrap_or_else(|| panic!("no {action} entry"))
    };
    let submitted = find("submit_change");
    assert_eq!(submitted.actor, "user:899700000001");
    assert_eq!(submitted.reason, "CHG-42 pump-0000 from its baseline");
    let approved = find("approve_change");
    assert_eq!(approved.actor, "user:899700000002");
    assert!(
        approved.diff.contains(r#""proposer":"899700000001""#),
        "{}",
        approved.diff
    );
    assert!(
        approved.diff.contains(r#""approver":"899700000002""#),
        "{}",
        approved.diff
    );
    let assigned = find("assign_profile");
    assert_eq!(assigned.actor, "user:899700000002");
    assert_eq!(assigned.target, DEVICE);
    assert!(
        assigned.reason.contains("899700000001"),
        "{}",
        assigned.reason
    );
    assert!(assigned.reason.contains("CHG-42"), "{}", assigned.reason);
    assert_eq!(
        assigned.seq,
        approved.seq + 2,
        "one write: approval, profile, device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_needs_a_login_less_than_fifteen_minutes_old() {
    let psc = MockPsc::start().await;
    let c = start(&psc).await;
    let mut b1 = logged_in(&c, &psc, &eng1()).await;
    let (id, profile) = submit(&mut b1, &c).await;

    // Engineer 2's session, still live (used a minute ago) but logged in 16 minutes ago.
    let now = wardgate_controller::audit::now_ms();
    let id_cookie = "stale-login-cookie";
    c.store
        .insert_session(&SessionRow {
            id_hash: sha256_hex(id_cookie),
            user: "899700000002".into(),
            role: Role::Engineer,
            source: "local".into(),
            subject: String::new(),
            acr: String::new(),
            csrf: "c".repeat(64),
            created_ms: now - i64::try_from(FRESH_LOGIN.as_millis()).unwrap() - 60_000,
            last_seen_ms: now - 60_000,
            revoked_ms: None,
        })
        .unwrap();
    let mut stale = c.browser();
    stale
        .cookies
        .insert(session::COOKIE.into(), id_cookie.into());
    let page = stale.get(&format!("/devices/{DEVICE}")).await;
    assert_eq!(page.status, StatusCode::OK, "the session itself is live");
    let r = stale
        .send(
            "POST",
            &format!("/changes/{id}/approve"),
            Some(&[("csrf", &page.csrf())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("less than 15 minutes"), "{}", r.body);
    assert_eq!(profile_of(&c), "infusion-pump");

    // Logged in again: approved.
    let mut fresh = logged_in(&c, &psc, &eng2()).await;
    let page = fresh.get(&format!("/devices/{DEVICE}")).await;
    let r = fresh
        .send(
            "POST",
            &format!("/changes/{id}/approve"),
            Some(&[("csrf", &page.csrf())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(profile_of(&c), profile);
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_refuses_a_self_approval_whatever_calls_it() {
    let psc = MockPsc::start().await;
    let c = start(&psc).await;
    let mut b1 = logged_in(&c, &psc, &eng1()).await;
    let (id, _) = submit(&mut b1, &c).await;
    let e = tokio::task::block_in_place(|| {
        c.ctx.write(
            "user:899700000001",
            "approving my own",
            Change::ApproveChange {
                id,
                device: DEVICE.into(),
                proposer: "899700000001".into(),
                approver: "899700000001".into(),
                at_ms: 0,
            },
        )
    })
    .unwrap_err();
    assert!(e.to_string().contains("CHECK"), "{e}");
    assert_eq!(c.store.pending_change(id).unwrap().unwrap().approver, None);
}
