//! The login form (the local break-glass account and the identity provider's button) and
//! logout. Failed logins count against the rate limit (`limit.rs`) by source address and by
//! name; logins, failures and logouts are audited (`logins.rs`).
//!
//! The login form is protected against login CSRF by a double-submit token: `GET /login` sets
//! a random `__Host-` cookie and puts the same value in the form; a POST whose field and
//! cookie differ is refused (403) before any password is checked.

use std::sync::Arc;

use argon2::{Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _};
use askama::Template;
use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    Console,
    i18n::Lang,
    logins::{self, Peer},
    page::{self, Frame},
    session::{self, LoggedIn, LoginSource, Principal},
};
use crate::auth::Role;

const LOGIN_COOKIE: &str = "__Host-wardgate-login";

/// The PHC string (`$argon2id$...`) of `password` with a random salt, for
/// `console.admin.password_hash`.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Ok(Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?
        .to_string())
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    f: Frame,
    csrf: &'a str,
    failed: bool,
    ended: bool,
    no_account: bool,
    oidc: bool,
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default)]
    ended: Option<String>,
}

fn login_page(
    console: &Console,
    lang: Lang,
    status: StatusCode,
    failed: bool,
    ended: bool,
) -> Response {
    let token = match session::random_token() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "console: login token");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut r = page::render(
        status,
        &LoginPage {
            f: Frame::new(lang, None),
            csrf: &token,
            failed,
            ended,
            no_account: console.admin.is_none() && console.oidc.is_none(),
            oidc: console.oidc.is_some(),
        },
    );
    if let Ok(v) = session::set_cookie(LOGIN_COOKIE, Some(&token)).parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

pub async fn form(
    State(console): State<Arc<Console>>,
    lang: Lang,
    Query(q): Query<LoginQuery>,
) -> Response {
    login_page(&console, lang, StatusCode::OK, false, q.ended.is_some())
}

#[derive(Deserialize, Default)]
pub struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// Whether `name` and `password` are the break-glass account's. A wrong name costs the same
/// argon2 verification as a wrong password.
fn local_login(console: &Console, name: &str, password: &str) -> bool {
    let Some(admin) = &console.admin else {
        return false;
    };
    let Ok(hash) = PasswordHash::new(&admin.password_hash) else {
        return false; // checked when the config loaded
    };
    let verified = Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok();
    verified && name == admin.name
}

pub async fn submit(
    State(console): State<Arc<Console>>,
    lang: Lang,
    peer: Peer,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let expected = session::cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || expected != f.csrf {
        return page::forbidden(lang, None);
    }
    // Before the password is checked: a locked-out address or name costs no argon2 run.
    if let Some(wait) = logins::locked(&console, peer, Some(&f.name)) {
        return logins::too_many(lang, wait);
    }
    let ok = tokio::task::block_in_place(|| local_login(&console, &f.name, &f.password));
    if !ok {
        logins::failed(
            &console,
            peer,
            Some(&f.name),
            &f.name,
            "local",
            "wrong name or password",
        )
        .await;
        return login_page(&console, lang, StatusCode::UNAUTHORIZED, true, false);
    }
    let who = Principal {
        name: f.name,
        role: Role::Engineer,
        source: LoginSource::Local,
    };
    let mut r = logins::logged_in(&console, lang, peer, who, "/").await;
    if let Ok(v) = session::set_cookie(LOGIN_COOKIE, None).parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize, Default)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(console): State<Arc<Console>>,
    lang: Lang,
    peer: Peer,
    LoggedIn(s): LoggedIn,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !s.csrf_ok(&f.csrf) {
        return page::forbidden(lang, Some(&s));
    }
    let revoked = tokio::task::block_in_place(|| {
        console
            .ctx
            .store
            .revoke_session(&s.id_hash, crate::audit::now_ms())
    });
    if let Err(e) = revoked {
        return page::service_error(lang, &s, &e);
    }
    logins::logged_out(&console, peer, &s);
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = session::set_cookie(session::COOKIE, None).parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
