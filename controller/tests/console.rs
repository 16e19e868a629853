//! The browser console over real HTTPS on loopback (rustls, the lab CA trusted, the
//! controller's server certificate): login, sessions and their timeouts, CSRF, roles, the
//! inventory's paging and filters at 1,000 devices, the mode change in the audit trail, the
//! security headers and the language.

mod console_harness;

use std::time::Duration;

use console_harness::*;
use hyper::{StatusCode, header};
use wardgate_controller::{auth::Role, console::session, store::Store};
use wardgate_policy::Mode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_the_break_glass_account_and_a_bad_password() {
    let c = Console::start(4, 900).await;
    let mut b = c.browser();
    // Not logged in: every page sends to the login form.
    let p = b.get("/").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/login");

    let p = b.login("admin", "wrong").await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.body.contains("Wrong user name or password"), "{}", p.body);
    assert!(!b.cookies.contains_key(session::COOKIE));
    let p = b.login("root", PASSWORD).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED, "a wrong name");
    assert_eq!(b.get("/").await.status, StatusCode::SEE_OTHER);

    let p = b.login("admin", PASSWORD).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location(), "/");
    let cookie = p
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(session::COOKIE))
        .expect("a session cookie");
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let p = b.get("/").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("admin (engineer)"), "{}", p.body);
    // The session is stored hashed, listed for its user.
    let id = b.cookies[session::COOKIE].clone();
    let sessions = c.store.sessions_of("admin").unwrap();
    assert_eq!(sessions.len(), 1);
    assert_ne!(sessions[0].id_hash, id);
    assert_eq!(sessions[0].source, "local");
    assert!(b.get("/sessions").await.body.contains("this session"));

    // A login form posted without the login cookie's token is refused before the password.
    let mut other = c.browser();
    let p = other
        .send(
            "POST",
            "/login",
            Some(&[
                ("csrf", "forged"),
                ("name", "admin"),
                ("password", PASSWORD),
            ]),
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(!other.cookies.contains_key(session::COOKIE));

    // Logout revokes: the old cookie no longer opens a page.
    let csrf = b.get("/").await.csrf();
    let p = b.send("POST", "/logout", Some(&[("csrf", &csrf)])).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert!(
        c.store.sessions_of("admin").unwrap()[0]
            .revoked_ms
            .is_some()
    );
    b.cookies.insert(session::COOKIE.into(), id);
    assert_eq!(b.get("/").await.location(), "/login?ended=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_sent_back_to_the_login() {
    let c = Console::start(4, 1).await;
    let mut b = c.browser();
    assert_eq!(
        b.login("admin", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    // Used within the idle timeout, it lives on past it.
    for _ in 0..3 {
        assert_eq!(b.get("/").await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p = b.get("/").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/login?ended=1");
    let p = b.get(p.location()).await;
    assert!(p.body.contains("Your session has ended"), "{}", p.body);
    assert!(
        c.store.sessions_of("admin").unwrap()[0]
            .revoked_ms
            .is_some()
    );
    // htmx is told where to go too.
    let p = b
        .send_with("GET", "/", None, &[("HX-Request", "true")])
        .await;
    assert_eq!(p.headers.get("hx-redirect").unwrap(), "/login?ended=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_its_csrf_token_is_refused() {
    let c = Console::start(4, 900).await;
    let mut b = c.browser();
    b.login("admin", PASSWORD).await;
    let audit = c.store.audit().unwrap().len();
    for form in [
        vec![("mode", "enforce"), ("reason", "CHG-9")],
        vec![("csrf", "0000"), ("mode", "enforce"), ("reason", "CHG-9")],
        vec![("csrf", ""), ("mode", "enforce"), ("reason", "CHG-9")],
    ] {
        let p = b.send("POST", "/devices/pump-0002/mode", Some(&form)).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{form:?}");
    }
    let p = b.send("POST", "/logout", Some(&[])).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.store.device("pump-0002").unwrap().unwrap().mode,
        Mode::Learn
    );
    assert_eq!(c.store.audit().unwrap().len(), audit);
    assert_eq!(b.get("/").await.status, StatusCode::OK, "still logged in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_write_button_and_a_forged_post_is_refused() {
    let c = Console::start(4, 900).await;
    let audit = c.store.audit().unwrap().len();
    let (mut viewer, csrf) = c.browser_as("vic", Role::Viewer);
    let p = viewer.get("/devices/pump-0002").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("infusion-pump"));
    assert!(
        !p.body.contains("/mode\""),
        "a viewer is offered the mode form"
    );
    assert!(!p.body.contains("Change the mode"));
    // With its own valid CSRF token: refused for the role.
    let p = viewer
        .send(
            "POST",
            "/devices/pump-0002/mode",
            Some(&[("csrf", &csrf), ("mode", "enforce"), ("reason", "CHG-9")]),
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.store.device("pump-0002").unwrap().unwrap().mode,
        Mode::Learn
    );
    assert_eq!(c.store.audit().unwrap().len(), audit);
    // The SOC reads but does not change modes either; an engineer is offered the form.
    let (mut soc, _) = c.browser_as("sam", Role::Soc);
    assert!(!soc.get("/devices/pump-0002").await.body.contains("/mode\""));
    let (mut eng, _) = c.browser_as("eve", Role::Engineer);
    assert!(eng.get("/devices/pump-0002").await.body.contains("/mode\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_pages_and_filters_a_thousand_devices() {
    let c = Console::start(1000, 900).await;
    let (mut b, _) = c.browser_as("vic", Role::Viewer);
    let total = |p: &Page| -> u64 {
        let at = p.body.find(r#"<span id="total">"#).expect("a total") + 17;
        p.body[at..].split('<').next().unwrap().parse().unwrap()
    };
    let p = b.get("/").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(total(&p), 1000);
    assert_eq!(p.rows(), 50);
    assert!(p.body.contains("Page 1 of 20"));
    assert!(p.body.contains(r#"href="/?page=2""#));
    assert!(
        p.body.contains("monitor-0001"),
        "sorted by name: monitors first"
    );
    let p = b.get("/?page=20").await;
    assert_eq!(p.rows(), 50);
    assert!(p.body.contains("pump-0998"));
    assert!(!p.body.contains(r#"rel="next""#));
    assert_eq!(b.get("/?page=21").await.rows(), 0);

    for (query, want) in [
        ("/?profile=infusion-pump", 500),
        ("/?gateway=gw-ward-4", 500),
        ("/?mode=enforce", 100),
        ("/?profile=infusion-pump&gateway=gw-ward-3&mode=enforce", 50),
        ("/?q=pump-004", 5),
        ("/?q=BIO-00777", 1),
        ("/?q=203.0.113.", 250),
        ("/?q=2001%3Adb8%3A3%3A%3A3e7", 1),
        ("/?q=02%3A00%3A00%3A00%3A03%3Ae7", 1),
        ("/?q=%25", 0),
        ("/?baseline=none", 1000),
        ("/?baseline=learning", 0),
    ] {
        let p = b.get(query).await;
        assert_eq!(p.status, StatusCode::OK, "{query}");
        assert_eq!(total(&p), want, "{query}");
        assert_eq!(p.rows() as u64, want.min(50), "{query}");
    }
    // The next page keeps the filters.
    let p = b.get("/?profile=infusion-pump&q=pump").await;
    assert!(
        p.body
            .contains(r#"href="/?page=2&#38;q=pump&#38;profile=infusion-pump""#),
        "{}",
        p.body
    );
    let p = b.get("/?page=10&profile=infusion-pump").await;
    assert_eq!(p.rows(), 50);
    assert!(p.body.contains("pump-0998"));
    // htmx gets the results alone.
    let p = b
        .send_with("GET", "/?mode=enforce", None, &[("HX-Request", "true")])
        .await;
    assert_eq!(total(&p), 100);
    assert!(!p.body.contains("<html"), "a fragment");
    assert!(
        p.headers
            .get(header::VARY)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("HX-Request")
    );
    assert_eq!(
        b.get("/?mode=sideways").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_change_lands_in_the_audit_trail_with_the_users_name() {
    let c = Console::start(4, 900).await;
    let mut b = c.browser();
    b.login("admin", PASSWORD).await;
    let p = b.get("/devices/pump-0002").await;
    assert!(p.body.contains(r#"<dd id="mode">learn</dd>"#), "{}", p.body);
    // The mode form's token (the page's first is the logout form's; both are the session's).
    let csrf = p.csrf();
    // A reason is required, as in the gRPC API.
    let audit = c.store.audit().unwrap().len();
    let p = b
        .send(
            "POST",
            "/devices/pump-0002/mode",
            Some(&[("csrf", &csrf), ("mode", "monitor"), ("reason", " ")]),
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.body.contains("reason"), "{}", p.body);
    assert_eq!(c.store.audit().unwrap().len(), audit);

    let p = b
        .send(
            "POST",
            "/devices/pump-0002/mode",
            Some(&[
                ("csrf", &csrf),
                ("mode", "monitor"),
                ("reason", "CHG-42 pump commissioning"),
            ]),
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let last = c.store.audit().unwrap().pop().unwrap();
    assert_eq!(
        p.location(),
        format!("/devices/pump-0002?audit={}", last.seq)
    );
    assert_eq!(last.actor, "user:admin");
    assert_eq!(last.action, "set_mode");
    assert_eq!(last.target, "pump-0002");
    assert_eq!(last.reason, "CHG-42 pump commissioning");
    assert_eq!(
        c.store.device("pump-0002").unwrap().unwrap().mode,
        Mode::Monitor
    );
    // And a new generation for the device's gateway, as any write makes.
    assert!(last.diff.contains(r#""gw-ward-4":{"#), "{}", last.diff);
    let p = b.get(p.location()).await;
    assert!(p.body.contains(r#"<dd id="mode">monitor</dd>"#));
    assert!(p.body.contains("Mode changed"));
    // A device that is not there.
    let p = b
        .send(
            "POST",
            "/devices/nope/mode",
            Some(&[("csrf", &csrf), ("mode", "monitor"), ("reason", "CHG-42")]),
        )
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let _ = &c.ctx;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers_and_no_inline_script() {
    let c = Console::start(4, 900).await;
    let mut b = c.browser();
    let mut pages = vec![b.get("/login").await, b.get("/").await];
    b.login("admin", PASSWORD).await;
    for path in [
        "/",
        "/devices/pump-0002",
        "/devices/nope",
        "/sessions",
        "/nowhere",
        "/assets/htmx.min.js",
        "/assets/console.css",
    ] {
        pages.push(b.get(path).await);
    }
    for p in &pages {
        let h = |k: &str| {
            p.headers
                .get(k)
                .unwrap_or_else(|| panic!("no {k}"))
                .to_str()
                .unwrap()
                .to_string()
        };
        let csp = h("content-security-policy");
        for want in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(want), "{csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h("x-frame-options"), "DENY");
        assert_eq!(h("x-content-type-options"), "nosniff");
        assert_eq!(h("referrer-policy"), "no-referrer");
        assert!(h("strict-transport-security").starts_with("max-age="));
        let html = p
            .headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/html"));
        if html {
            assert_eq!(h("cache-control"), "no-store");
            // Nothing the CSP would have to allow: scripts only by src, no inline styles or
            // handlers.
            for bad in [
                "<script>",
                " style=",
                " onclick=",
                " onload=",
                "javascript:",
            ] {
                assert!(!p.body.contains(bad), "{bad} in {}", p.body);
            }
        }
    }
    let htmx = b.get("/assets/htmx.min.js").await;
    assert!(htmx.body.contains("htmx"));
    assert!(
        htmx.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn french_when_the_browser_asks_for_it() {
    let c = Console::start(4, 900).await;
    let mut b = c.browser();
    b.lang = "fr-FR,fr;q=0.9,en;q=0.5";
    let p = b.get("/login").await;
    assert!(p.body.contains(r#"<html lang="fr">"#));
    assert!(p.body.contains("Connexion à wardgate"), "{}", p.body);
    assert!(p.body.contains("Mot de passe"));
    let p = b.login("admin", "faux").await;
    assert!(p.body.contains("Identifiant ou mot de passe incorrect"));
    b.login("admin", PASSWORD).await;
    let p = b.get("/").await;
    assert!(p.body.contains("Inventaire"));
    assert!(p.body.contains("Passerelle"));
    assert!(p.body.contains("Se déconnecter"));
    b.lang = "en-US";
    let p = b.get("/").await;
    assert!(p.body.contains("Inventory"));
    assert!(!p.body.contains("Inventaire"));
}
