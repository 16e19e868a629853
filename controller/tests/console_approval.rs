//! The engineer's loop with four eyes, over real HTTPS with logins through the mock Pro Santé
//! Connect: propose a profile from a device's recorded flows, see the rule diff, simulate,
//! submit with a reason; the proposer cannot approve their own change (nor can the store be
//! made to record it), a viewer cannot approve, an approval needs a fresh login, and a second
//! engineer's approval applies it with both names in the audit trail.

mod console_harness;

use console_harness::{psc::MockPsc, psc::User, *};
use hyper::StatusCode;
use wardgate_controller::{
    auth::Role,
    console::{approval::FRESH_LOGIN, session},
    store::{Change, SessionRow, Store},
};

const DEVICE: &str = "pump-0000";

fn eng1() -> User {
    User::new("899700000001", "Hélène", "Martin")
}
fn eng2() -> User {
    User::new("899700000002", "Karim", "Benali")
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
    report_flows(&c, DEVICE);
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

    // The device page links the change's review.
    let device_page = b1.get(&format!("/devices/{DEVICE}")).await;
    assert!(
        device_page
            .body
            .contains(&format!(r#"<a href="/changes/{id}">"#)),
        "{}",
        device_page.body
    );
    // The proposer sees the review without an approve button, and a forged approval is
    // refused.
    let page = b1.get(&format!("/changes/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("tcp/8443"), "the diff: {}", page.body);
    assert!(page.body.contains("0 would be blocked"), "{}", page.body);
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
            .get(&format!("/changes/{id}"))
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
    let page = b2.get(&format!("/changes/{id}")).await;
    assert!(page.body.contains(r#"class="approve""#), "{}", page.body);
    let ok = b2
        .send(
            "POST",
            &format!("/changes/{id}/approve"),
            Some(&[("csrf", &page.csrf())]),
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert!(ok.location().contains("?approved="), "{}", ok.location());
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
    let page = stale.get(&format!("/changes/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "the session itself is live");
    assert!(page.body.contains("less than 15 minutes"), "{}", page.body);
    assert!(!page.body.contains(r#"class="approve""#));
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
