//! The availability warning in the console, over real HTTPS with logins through the mock Pro
//! Santé Connect: a candidate profile that would drop the DNS flows an enforced pump had an
//! hour ago shows which device and which flows, after a simulation and on the review page;
//! submitting and approving it need the confirmation checkbox, and the approval's audit entry
//! keeps the accepted impact. A pending change is withdrawn by its proposer or rejected, with
//! a reason, by another engineer; both are audited and neither applies it.

mod console_harness;

use console_harness::{psc::MockPsc, psc::User, *};
use hyper::StatusCode;
use wardgate_controller::store::Store;

const DEVICE: &str = "pump-0000";

/// The pump's profile without its DNS rule, under another name.
fn no_dns() -> String {
    let pump = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../device-profiles/infusion-pump.yaml"),
    )
    .unwrap();
    let y = pump
        .replace("name: infusion-pump\n", "name: infusion-pump-nodns\n")
        .replace(
            "  - name: dns\n    direction: from-device\n    protocol: udp\n    peers: [group:dns]\n    ports: 53\n",
            "",
        );
    assert!(!y.contains("group:dns"), "the DNS rule is gone");
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warning_shows_devices_and_flows_and_needs_the_checkbox_twice() {
    let psc = MockPsc::start().await;
    let c = Console::start_with(4, |cfg, addr| {
        cfg.oidc = Some(oidc_config(
            &psc,
            addr,
            &["899700000001", "899700000002"],
            &[],
        ));
    })
    .await;
    report_flows(&c, DEVICE);
    let mut b1 = c.browser();
    psc.log_in_as(&User::new("899700000001", "Hélène", "Martin"), "eidas1");
    assert_eq!(b1.oidc_login().await.status, StatusCode::OK);
    let csrf = b1.get(&format!("/devices/{DEVICE}")).await.csrf();
    let yaml = no_dns();

    let sim = b1
        .send(
            "POST",
            &format!("/devices/{DEVICE}/simulate"),
            Some(&[("csrf", &csrf), ("yaml", &yaml), ("reason", "CHG-77")]),
        )
        .await;
    assert_eq!(sim.status, StatusCode::OK, "{}", sim.body);
    for want in [
        "Availability warning",
        "1 / 1 devices of class <code>infusion-pump-nodns</code>",
        "udp 198.51.100.53 (dns) port 53, from-device: 1 flows",
        r#"name="accept_impact""#,
    ] {
        assert!(sim.body.contains(want), "{want}: {}", sim.body);
    }

    // Submitted without the box: refused, nothing pending.
    let submit = |accept: bool| {
        let mut form = vec![
            ("csrf", csrf.clone()),
            ("yaml", yaml.clone()),
            ("reason", "CHG-77 no DNS".to_string()),
        ];
        if accept {
            form.push(("accept_impact", "yes".to_string()));
        }
        form
    };
    let form = submit(false);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = b1
        .send("POST", &format!("/devices/{DEVICE}/submit"), Some(&pairs))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused.body.contains("tick the confirmation"),
        "{}",
        refused.body
    );
    assert!(c.store.pending_changes(DEVICE, 10).unwrap().is_empty());
    let form = submit(true);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sent = b1
        .send("POST", &format!("/devices/{DEVICE}/submit"), Some(&pairs))
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let id = c.store.pending_changes(DEVICE, 10).unwrap()[0].id;

    // The second engineer sees the warning on the review page, with the box.
    let mut b2 = c.browser();
    psc.log_in_as(&User::new("899700000002", "Karim", "Benali"), "eidas1");
    assert_eq!(b2.oidc_login().await.status, StatusCode::OK);
    let page = b2.get(&format!("/changes/{id}")).await;
    assert!(page.body.contains("Availability warning"), "{}", page.body);
    assert!(page.body.contains(r#"id="accept-impact""#), "{}", page.body);
    let csrf2 = page.csrf();
    let unticked = b2
        .send(
            "POST",
            &format!("/changes/{id}/approve"),
            Some(&[("csrf", &csrf2)]),
        )
        .await;
    assert_eq!(
        unticked.status,
        StatusCode::BAD_REQUEST,
        "{}",
        unticked.body
    );
    assert!(
        unticked.body.contains("availability warning"),
        "{}",
        unticked.body
    );
    assert_eq!(
        c.store.device(DEVICE).unwrap().unwrap().profile,
        "infusion-pump"
    );
    let ok = b2
        .send(
            "POST",
            &format!("/changes/{id}/approve"),
            Some(&[("csrf", &csrf2), ("accept_impact", "yes")]),
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(
        c.store.device(DEVICE).unwrap().unwrap().profile,
        "infusion-pump-nodns"
    );
    let audit = c.store.audit().unwrap();
    let approved = audit.iter().find(|e| e.action == "approve_change").unwrap();
    assert_eq!(approved.actor, "user:899700000002");
    let diff: serde_json::Value = serde_json::from_str(&approved.diff).unwrap();
    let words = diff["impact_accepted"][0]["blocked"][DEVICE][0]
        .as_str()
        .unwrap_or_default();
    assert!(words.contains("198.51.100.53"), "{}", approved.diff);
}

/// Engineer 1 submits the no-DNS profile (accepting its impact); returns the change's id.
async fn submit_no_dns(b: &mut Browser<'_>, c: &Console) -> i64 {
    let csrf = b.get(&format!("/devices/{DEVICE}")).await.csrf();
    let yaml = no_dns();
    let sent = b
        .send(
            "POST",
            &format!("/devices/{DEVICE}/submit"),
            Some(&[
                ("csrf", csrf.as_str()),
                ("yaml", yaml.as_str()),
                ("reason", "CHG-78 no DNS"),
                ("accept_impact", "yes"),
            ]),
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    c.store.pending_changes(DEVICE, 10).unwrap()[0].id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proposer_withdraws_and_another_engineer_rejects_with_a_reason() {
    let psc = MockPsc::start().await;
    let c = Console::start_with(4, |cfg, addr| {
        cfg.oidc = Some(oidc_config(
            &psc,
            addr,
            &["899700000001", "899700000002"],
            &[],
        ));
    })
    .await;
    report_flows(&c, DEVICE);
    let mut b1 = c.browser();
    psc.log_in_as(&User::new("899700000001", "Hélène", "Martin"), "eidas1");
    assert_eq!(b1.oidc_login().await.status, StatusCode::OK);
    let mut b2 = c.browser();
    psc.log_in_as(&User::new("899700000002", "Karim", "Benali"), "eidas1");
    assert_eq!(b2.oidc_login().await.status, StatusCode::OK);

    // Withdraw: only the proposer (the button is theirs; another engineer's POST is 403).
    let id = submit_no_dns(&mut b1, &c).await;
    let own = b1.get(&format!("/changes/{id}")).await;
    assert!(own.body.contains(r#"id="withdraw""#), "{}", own.body);
    assert!(!own.body.contains(r#"id="reject""#), "{}", own.body);
    let other = b2.get(&format!("/changes/{id}")).await;
    assert!(!other.body.contains(r#"id="withdraw""#), "{}", other.body);
    let forged = b2
        .send(
            "POST",
            &format!("/changes/{id}/withdraw"),
            Some(&[("csrf", other.csrf().as_str())]),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(c.store.pending_change(id).unwrap().unwrap().is_pending());
    let done = b1
        .send(
            "POST",
            &format!("/changes/{id}/withdraw"),
            Some(&[("csrf", own.csrf().as_str())]),
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let row = c.store.pending_change(id).unwrap().unwrap();
    assert!(!row.is_pending());
    assert_eq!(row.closed_by.as_deref(), Some("899700000001"));
    let page = b1.get(&format!("/changes/{id}")).await;
    assert!(
        page.body.contains("withdrawn by 899700000001"),
        "{}",
        page.body
    );
    // Withdrawn cannot be approved.
    let late = b2
        .send(
            "POST",
            &format!("/changes/{id}/approve"),
            Some(&[("csrf", other.csrf().as_str()), ("accept_impact", "yes")]),
        )
        .await;
    assert_eq!(late.status, StatusCode::NOT_FOUND);

    // Reject: not by the proposer; by another engineer with a reason.
    let id = submit_no_dns(&mut b1, &c).await;
    let csrf1 = b1.get(&format!("/changes/{id}")).await.csrf();
    let self_reject = b1
        .send(
            "POST",
            &format!("/changes/{id}/reject"),
            Some(&[("csrf", csrf1.as_str()), ("reason", "mine")]),
        )
        .await;
    assert_eq!(self_reject.status, StatusCode::FORBIDDEN);
    let review = b2.get(&format!("/changes/{id}")).await;
    assert!(review.body.contains(r#"id="reject""#), "{}", review.body);
    let rejected = b2
        .send(
            "POST",
            &format!("/changes/{id}/reject"),
            Some(&[
                ("csrf", review.csrf().as_str()),
                ("reason", "INC-5 pumps resolve the infusion server by DNS"),
            ]),
        )
        .await;
    assert_eq!(rejected.status, StatusCode::SEE_OTHER, "{}", rejected.body);
    assert_eq!(
        c.store.device(DEVICE).unwrap().unwrap().profile,
        "infusion-pump",
        "nothing applied"
    );
    let audit = c.store.audit().unwrap();
    let withdrawn = audit
        .iter()
        .find(|e| e.action == "withdraw_change")
        .unwrap();
    assert_eq!(withdrawn.actor, "user:899700000001");
    let entry = audit.iter().find(|e| e.action == "reject_change").unwrap();
    assert_eq!(entry.actor, "user:899700000002");
    assert_eq!(
        entry.reason,
        "INC-5 pumps resolve the infusion server by DNS"
    );
    assert!(
        entry.diff.contains(r#""state":"rejected""#),
        "{}",
        entry.diff
    );
    let page = b1.get(&format!("/changes/{id}")).await;
    assert!(
        page.body
            .contains("rejected by 899700000002: INC-5 pumps resolve the infusion server by DNS"),
        "{}",
        page.body
    );
}
