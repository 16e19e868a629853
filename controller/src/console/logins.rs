//! What every kind of login shares: the client's address, the rate limit, the audit trail
//! (every login, failed login and logout is an entry, written by the write service as any
//! other change), and starting the session.
//!
//! After an OIDC login the browser arrives from the provider's site, so the session cookie
//! (SameSite=Strict) would not go with a redirect chain that began there: the login answers
//! with a page of ours that moves on to the console (a meta refresh and a link), a same-site
//! navigation.

use std::{net::SocketAddr, time::Duration};

use askama::Template;
use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};

use super::{
    Console,
    i18n::Lang,
    limit::Key,
    page::{self, Frame},
    session::{self, Principal, Session},
};
use crate::store::{Change, LoginEvent};

/// The client's address as the listener accepted it (unspecified if unknown: behind a
/// reverse proxy every client counts as the proxy).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0),
        ))
    }
}

fn keys(peer: Peer, name: Option<&str>) -> Vec<Key> {
    let mut k = vec![Key::address(peer.0.ip())];
    if let Some(n) = name {
        k.push(Key::Name(n.to_string()));
    }
    k
}

/// How long `peer` (and break-glass `name`) must wait, if locked out.
pub fn locked(console: &Console, peer: Peer, name: Option<&str>) -> Option<Duration> {
    console
        .limiter
        .locked(&keys(peer, name), std::time::Instant::now())
}

/// 429 with how many minutes to wait.
pub fn too_many(lang: Lang, wait: Duration) -> Response {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let minutes = secs.div_ceil(60).to_string();
    let mut r = page::error(
        lang,
        None,
        StatusCode::TOO_MANY_REQUESTS,
        lang.messages().too_many_logins,
        &minutes,
    );
    if let Ok(v) = secs.to_string().parse() {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// One audit entry for a login event. The write service refuses an empty reason: each event
/// says what it was.
fn audit(console: &Console, actor: &str, change: Change) -> crate::error::Result<()> {
    let reason = match &change {
        Change::ConsoleLogin { event, .. } => event.action().replace('_', " "),
        _ => String::new(),
    };
    tokio::task::block_in_place(|| console.ctx.write(actor, &reason, change)).map(|_| ())
}

/// A failed login from `peer` (break-glass: `name` tried): counted against the rate limit and
/// audited (actor `console`; `user` the name tried or the provider's subject, may be empty).
pub async fn failed(
    console: &Console,
    peer: Peer,
    name: Option<&str>,
    user: &str,
    source: &str,
    why: &str,
) {
    console
        .limiter
        .failed(&keys(peer, name), std::time::Instant::now());
    tracing::warn!(
        user = user.escape_debug().to_string(),
        source,
        why,
        address = %peer.0.ip(),
        "console: failed login"
    );
    let change = Change::ConsoleLogin {
        user: user.chars().take(200).collect(),
        event: LoginEvent::Failed,
        source: source.to_string(),
        address: peer.0.ip().to_string(),
        why: why.to_string(),
    };
    if let Err(e) = audit(console, "console", change) {
        tracing::error!(error = %e, "console: auditing a failed login");
    }
}

fn source_of(who: &Principal) -> String {
    match &who.source {
        session::LoginSource::Local => "local".into(),
        session::LoginSource::Oidc { issuer, .. } => format!("oidc:{issuer}"),
    }
}

#[derive(Template)]
#[template(path = "console/logged_in.html")]
struct LoggedInPage<'a> {
    f: Frame,
    to: &'a str,
}

/// Starts `who`'s session and audits the login (no entry, no session: a login the trail
/// cannot record is refused); then on to `to`, by a redirect after a local login and by a
/// page of ours after a provider's (see the module comment).
pub async fn logged_in(
    console: &Console,
    lang: Lang,
    peer: Peer,
    who: Principal,
    to: &str,
) -> Response {
    let started =
        tokio::task::block_in_place(|| session::start(console.ctx.store.as_ref(), who.clone()));
    let (id, s) = match started {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "console: starting a session");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let change = Change::ConsoleLogin {
        user: who.name.clone(),
        event: LoginEvent::Login,
        source: source_of(&who),
        address: peer.0.ip().to_string(),
        why: String::new(),
    };
    if let Err(e) = audit(console, &who.identity().actor(), change) {
        tracing::error!(error = %e, "console: auditing a login; the session is revoked");
        let _ = tokio::task::block_in_place(|| {
            console
                .ctx
                .store
                .revoke_session(&s.id_hash, crate::audit::now_ms())
        });
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if who.source == session::LoginSource::Local {
        console.limiter.succeeded(&Key::Name(who.name.clone()));
    }
    tracing::info!(user = who.name, role = %who.role, source = source_of(&who), "console: login");
    let mut r = match who.source {
        session::LoginSource::Local => Redirect::to(to).into_response(),
        session::LoginSource::Oidc { .. } => page::render(
            StatusCode::OK,
            &LoggedInPage {
                f: Frame::new(lang, Some(&s)),
                to,
            },
        ),
    };
    if let Ok(v) = session::set_cookie(session::COOKIE, Some(&id)).parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Audits a logout (after the session is revoked).
pub fn logged_out(console: &Console, peer: Peer, s: &Session) {
    let change = Change::ConsoleLogin {
        user: s.principal.name.clone(),
        event: LoginEvent::Logout,
        source: source_of(&s.principal),
        address: peer.0.ip().to_string(),
        why: String::new(),
    };
    if let Err(e) = audit(console, &s.principal.identity().actor(), change) {
        tracing::error!(error = %e, "console: auditing a logout");
    }
}
