//! The console's OIDC login against a mock Pro Santé Connect (`console_harness/psc.rs`:
//! metadata at PSC's own discovery path, RS256, `acr` in the ID token, userinfo as a signed
//! JWT, PKCE checked): the mapped role, a weak `acr` and an unmapped user refused, replayed
//! and forged states refused, every login, failure and logout in the audit trail, and the
//! login rate limit.

mod console_harness;

use console_harness::{
    psc::{Forge, MockPsc, User},
    *,
};
use hyper::{StatusCode, header};
use wardgate_controller::{
    config::LoginLimit,
    console::session,
    store::{SqliteStore, Store},
};

fn engineer() -> User {
    User::new("899700000001", "Hélène", "Martin")
}
fn viewer() -> User {
    User::new("899700000003", "Victor", "Durand")
}

/// A console whose OIDC login is the mock PSC's, engineer 899700000001 and viewer
/// 899700000003.
async fn start(psc: &MockPsc) -> Console {
    Console::start_with(3, |cfg, addr| {
        cfg.oidc = Some(oidc_config(psc, addr, &["899700000001"], &["899700000003"]));
    })
    .await
}

fn console_audit(store: &SqliteStore) -> Vec<(String, String, String, String)> {
    store
        .audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("console_"))
        .map(|e| (e.actor, e.action, e.target, e.diff))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psc_login_lands_on_the_inventory_with_the_mapped_role() {
    let psc = MockPsc::start().await;
    let c = start(&psc).await;
    let mut b = c.browser();
    let login = b.get("/login").await;
    assert!(
        login.body.contains(r#"href="/login/oidc""#),
        "{}",
        login.body
    );

    psc.log_in_as(&engineer(), "eidas1");
    let p = b.oidc_login().await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(psc.refused().is_empty(), "{:?}", psc.refused());
    // A page of ours moves on to the inventory (the session cookie is SameSite=Strict).
    assert!(
        p.body
            .contains(r#"http-equiv="refresh" content="0; url=/""#),
        "{}",
        p.body
    );
    assert!(b.cookies.contains_key(session::COOKIE));
    let inv = b.get("/").await;
    assert_eq!(inv.status, StatusCode::OK);
    assert!(inv.body.contains("899700000001 (engineer)"), "{}", inv.body);
    assert_eq!(inv.rows(), 3);
    let sessions = c.store.sessions_of("899700000001").unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].source, format!("oidc:{}", psc.issuer));
    assert_eq!(sessions[0].subject, "f:899700000001");
    assert_eq!(sessions[0].acr, "eidas1");

    // Another person, another role: a viewer sees no write form.
    let mut v = c.browser();
    psc.log_in_as(&viewer(), "eidas1");
    assert_eq!(v.oidc_login().await.status, StatusCode::OK);
    let page = v.get("/devices/pump-0000").await;
    assert!(page.body.contains("899700000003 (viewer)"), "{}", page.body);
    assert!(!page.body.contains(r#"action="/devices/pump-0000/mode""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_weaker_than_the_required_acr_is_refused() {
    let psc = MockPsc::start().await;
    let c = start(&psc).await;
    let mut b = c.browser();
    psc.log_in_as(&engineer(), "eidas0");
    let p = b.oidc_login().await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    assert!(p.body.contains("not strong enough"), "{}", p.body);
    assert!(!b.cookies.contains_key(session::COOKIE));
    assert!(c.store.sessions_of("899700000001").unwrap().is_empty());
    assert_eq!(b.get("/").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_a_mapped_role_is_refused_whatever_their_display_name() {
    let psc = MockPsc::start().await;
    let c = start(&psc).await;
    let mut b = c.browser();
    // The mock's userinfo says `preferred_username: 899700000001` (the engineer's id) for
    // everyone: the role comes from SubjectNameID only.
    psc.log_in_as(&User::new("899700000999", "Nadia", "Petit"), "eidas1");
    let p = b.oidc_login().await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    assert!(p.body.contains("no role in this console"), "{}", p.body);
    assert!(!b.cookies.contains_key(session::COOKIE));
    let audit = console_audit(&c.store);
    let last = audit.last().unwrap();
    assert_eq!(last.1, "console_login_failed");
    assert_eq!(last.2, "f:899700000999");
    assert!(last.3.contains("no console role"), "{}", last.3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_forged_and_other_browsers_states_are_refused() {
    let psc = MockPsc::start().await;
    let c = start(&psc).await;
    psc.log_in_as(&engineer(), "eidas1");

    // A state the console never issued.
    let mut b = c.browser();
    let back = b.oidc_authorize().await;
    let forged = back.replace("state=", "state=0000");
    let p = b.get(&forged).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert!(p.body.contains("unknown, already used or expired"));

    // A callback carried to another browser (login CSRF: the attacker's code in the victim's
    // browser) is refused, and the flow is spent for the first browser too.
    let mut b = c.browser();
    let back = b.oidc_authorize().await;
    let mut victim = c.browser();
    assert_eq!(victim.get(&back).await.status, StatusCode::BAD_REQUEST);
    assert!(!victim.cookies.contains_key(session::COOKIE));
    assert_eq!(b.get(&back).await.status, StatusCode::BAD_REQUEST);

    // A good login, then its callback replayed.
    let mut b = c.browser();
    let back = b.oidc_authorize().await;
    assert_eq!(b.get(&back).await.status, StatusCode::OK);
    let mut replay = c.browser();
    replay.cookies = b.cookies.clone();
    replay.cookies.remove(session::COOKIE);
    assert_eq!(replay.get(&back).await.status, StatusCode::BAD_REQUEST);
    assert!(!replay.cookies.contains_key(session::COOKIE));
    // Only the good login's code was exchanged (and its PKCE verifier matched).
    assert!(psc.refused().is_empty(), "{:?}", psc.refused());
    assert_eq!(
        psc.codes_outstanding(),
        2,
        "the refused callbacks' codes, never sent"
    );
    assert_eq!(c.store.sessions_of("899700000001").unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_not_signed_by_the_providers_keys_are_refused_and_json_userinfo_accepted() {
    let psc = MockPsc::start().await;
    let c = start(&psc).await;
    psc.log_in_as(&engineer(), "eidas1");
    for forged in [Forge::IdToken, Forge::Userinfo] {
        psc.forge(forged);
        let mut b = c.browser();
        let p = b.oidc_login().await;
        assert!(
            p.status == StatusCode::UNAUTHORIZED || p.status == StatusCode::BAD_GATEWAY,
            "{forged:?}: {} {}",
            p.status,
            p.body
        );
        assert!(!b.cookies.contains_key(session::COOKIE), "{forged:?}");
    }
    assert!(c.store.sessions_of("899700000001").unwrap().is_empty());
    let audit = console_audit(&c.store);
    assert!(audit[0].3.contains("ID token"), "{}", audit[0].3);
    assert!(audit[1].3.contains("userinfo"), "{}", audit[1].3);
    // Genuine again, userinfo as plain JSON: accepted.
    psc.genuine();
    psc.userinfo_as_json();
    let mut b = c.browser();
    assert_eq!(b.oidc_login().await.status, StatusCode::OK);
    assert!(b.get("/").await.body.contains("899700000001 (engineer)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_no_redirect_from_the_provider() {
    let psc = MockPsc::start().await;
    let c = start(&psc).await;
    psc.log_in_as(&engineer(), "eidas1");
    psc.redirect_token_endpoint();
    let mut b = c.browser();
    let p = b.oidc_login().await;
    assert_eq!(p.status, StatusCode::BAD_GATEWAY, "{}", p.body);
    assert!(!b.cookies.contains_key(session::COOKIE));
    assert!(c.store.sessions_of("899700000001").unwrap().is_empty());
    // The redirect's target was never asked: the code is still there.
    assert_eq!(psc.codes_outstanding(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_failed_logins_and_logouts_are_in_the_audit_trail() {
    let psc = MockPsc::start().await;
    let c = start(&psc).await;
    let mut b = c.browser();
    assert_eq!(
        b.login("admin", "wrong").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        b.login("admin", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let csrf = b.get("/").await.csrf();
    assert_eq!(
        b.send("POST", "/logout", Some(&[("csrf", &csrf)]))
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    psc.log_in_as(&engineer(), "eidas1");
    assert_eq!(b.oidc_login().await.status, StatusCode::OK);

    let audit = console_audit(&c.store);
    let got: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|(actor, action, target, _)| (actor.as_str(), action.as_str(), target.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("console", "console_login_failed", "admin"),
            ("user:admin", "console_login", "admin"),
            ("user:admin", "console_logout", "admin"),
            ("user:899700000001", "console_login", "899700000001"),
        ]
    );
    assert!(
        audit[0].3.contains(r#""address":"127.0.0.1""#),
        "{}",
        audit[0].3
    );
    assert!(
        audit[0].3.contains("wrong name or password"),
        "{}",
        audit[0].3
    );
    assert!(
        audit[3].3.contains(&format!("oidc:{}", psc.issuer)),
        "{}",
        audit[3].3
    );
    // The trail's hash chain still verifies with them in it.
    let entries = c.store.audit().unwrap();
    assert!(
        entries
            .windows(2)
            .all(|w| w[1].prev_hash == w[0].hash && w[1].hash == w[1].content_hash())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_rate_limit_locks_a_name_then_an_address_out() {
    let psc = MockPsc::start().await;
    let c = Console::start_with(1, |cfg, addr| {
        cfg.oidc = Some(oidc_config(&psc, addr, &["899700000001"], &[]));
        cfg.login_limit = LoginLimit {
            per_address: 5,
            per_name: 3,
            window_seconds: 600,
        };
    })
    .await;
    let mut b = c.browser();
    for _ in 0..3 {
        assert_eq!(
            b.login("admin", "guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // The name is locked: even the right password is refused, before it is checked.
    let audit_before = c.store.audit().unwrap().len();
    let p = b.login("admin", PASSWORD).await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS, "{}", p.body);
    assert!(p.body.contains("Too many failed logins"), "{}", p.body);
    assert_eq!(p.headers[header::RETRY_AFTER], "600");
    assert!(!b.cookies.contains_key(session::COOKIE));
    assert_eq!(
        c.store.audit().unwrap().len(),
        audit_before,
        "nothing tried"
    );
    // Other names from this address: two more failures reach the address's limit.
    for name in ["root", "eve"] {
        assert_eq!(
            b.login(name, "guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        b.login("sam", "guess").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The address is locked for the identity provider's login too.
    psc.log_in_as(&engineer(), "eidas1");
    let p = b.get("/login/oidc").await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        console_audit(&c.store)
            .iter()
            .filter(|e| e.1 == "console_login_failed")
            .count(),
        5
    );
}
