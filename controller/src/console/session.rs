//! Who is logged in, and their session.
//!
//! A login of any kind ends in a [`Principal`] (name, role, how they logged in), and
//! [`start`] turns it into a session: the local break-glass account (`login.rs`) and an
//! OpenID Connect provider (`oidc.rs`, [`LoginSource::Oidc`]) both end in
//! `logins::logged_in`, which calls [`start`] and audits the login.
//!
//! A session is an opaque random id (256 bits) in a `__Host-` cookie (Secure, HttpOnly,
//! SameSite=Strict, path /); the store keeps only its SHA-256, with the principal, a CSRF
//! token every POST must carry, and the times the idle and absolute timeouts count from.
//! Logout revokes it; an expired session is revoked when it is next presented.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use sha2::{Digest as _, Sha256};

use super::Console;
use crate::{
    auth::{Identity, Role},
    error::{Error, Result},
    store::{SessionRow, Store},
};

/// The session cookie (`__Host-`: Secure, path /, no Domain, so no other host can set it).
pub const COOKIE: &str = "__Host-wardgate-session";

/// How the user logged in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginSource {
    /// The local break-glass account of the console config.
    Local,
    /// An OpenID Connect provider (`oidc.rs`): its issuer, the user's subject there and the
    /// authentication context it asserted.
    Oidc {
        issuer: String,
        subject: String,
        acr: String,
    },
}

/// A logged-in person, however they logged in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub source: LoginSource,
}

impl Principal {
    /// The identity the service layer checks roles on and the audit trail records
    /// (`user:NAME`, as for a client certificate).
    pub fn identity(&self) -> Identity {
        Identity::User {
            name: self.name.clone(),
            role: self.role,
        }
    }
}

/// How long sessions last.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Without a request for this long, a session is over.
    pub idle: Duration,
    /// This long after its login, a session is over.
    pub absolute: Duration,
}

/// A live session.
#[derive(Clone, Debug)]
pub struct Session {
    pub id_hash: String,
    pub principal: Principal,
    pub csrf: String,
    pub created_ms: i64,
}

impl Session {
    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub fn csrf_ok(&self, token: &str) -> bool {
        let (a, b) = (self.csrf.as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// 256 random bits in hex.
pub fn random_token() -> Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(b))
}

fn hash_id(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

fn now_ms() -> i64 {
    crate::audit::now_ms()
}

/// Sessions are listed this long after they started, then deleted (at the next login).
pub const KEEP_SESSIONS: Duration = Duration::from_secs(30 * 24 * 3600);

/// Starts a session for `who`: returns the id for the cookie (stored only hashed) and the
/// session. Sessions started more than [`KEEP_SESSIONS`] ago are deleted.
pub fn start(store: &dyn Store, who: Principal) -> Result<(String, Session)> {
    let id = random_token()?;
    let now = now_ms();
    let keep = i64::try_from(KEEP_SESSIONS.as_millis()).unwrap_or(i64::MAX);
    store.prune_sessions(now.saturating_sub(keep))?;
    let (source, subject, acr) = match &who.source {
        LoginSource::Local => ("local".to_string(), String::new(), String::new()),
        LoginSource::Oidc {
            issuer,
            subject,
            acr,
        } => (format!("oidc:{issuer}"), subject.clone(), acr.clone()),
    };
    let row = SessionRow {
        id_hash: hash_id(&id),
        user: who.name.clone(),
        role: who.role,
        source,
        subject,
        acr,
        csrf: random_token()?,
        created_ms: now,
        last_seen_ms: now,
        revoked_ms: None,
    };
    store.insert_session(&row)?;
    Ok((
        id,
        Session {
            id_hash: row.id_hash,
            principal: who,
            csrf: row.csrf,
            created_ms: now,
        },
    ))
}

/// The principal of a stored session.
pub fn principal(row: &SessionRow) -> Principal {
    let source = match row.source.strip_prefix("oidc:") {
        Some(issuer) => LoginSource::Oidc {
            issuer: issuer.to_string(),
            subject: row.subject.clone(),
            acr: row.acr.clone(),
        },
        None => LoginSource::Local,
    };
    Principal {
        name: row.user.clone(),
        role: row.role,
        source,
    }
}

/// Why a request has no session.
#[derive(Debug, PartialEq, Eq)]
pub enum NoSession {
    /// No cookie, or one the store does not know.
    Missing,
    /// Revoked, idle too long or past its absolute timeout.
    Ended,
}

/// The session of the cookie `id`, if it is live at `now_ms`; it then counts as used now
/// (recorded at most every tenth of the idle timeout). An expired one is revoked.
pub fn resume(
    store: &dyn Store,
    id: &str,
    timeouts: Timeouts,
    now_ms: i64,
) -> Result<std::result::Result<Session, NoSession>> {
    let id_hash = hash_id(id);
    let Some(row) = store.session(&id_hash)? else {
        return Ok(Err(NoSession::Missing));
    };
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let idle = now_ms.saturating_sub(row.last_seen_ms) > ms(timeouts.idle);
    let old = now_ms.saturating_sub(row.created_ms) > ms(timeouts.absolute);
    if row.revoked_ms.is_some() {
        return Ok(Err(NoSession::Ended));
    }
    if idle || old {
        store.revoke_session(&id_hash, now_ms)?;
        return Ok(Err(NoSession::Ended));
    }
    // Last seen is written at most every tenth of the idle timeout (and 10 s): a page view
    // does not queue a write behind the write service's transactions each time, and the idle
    // timeout runs out at most that much early.
    if now_ms.saturating_sub(row.last_seen_ms) >= ms(timeouts.idle / 10).min(10_000) {
        store.touch_session(&id_hash, now_ms)?;
    }
    Ok(Ok(Session {
        principal: principal(&row),
        id_hash,
        csrf: row.csrf,
        created_ms: row.created_ms,
    }))
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// `Set-Cookie` for a `__Host-` cookie; `None` clears it.
pub fn set_cookie(name: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{name}={v}; Path=/; Secure; HttpOnly; SameSite=Strict"),
        None => format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
    }
}

/// A request with a live session (the extractor every page but the login uses). Without
/// one, the browser is sent to the login page (htmx: `HX-Redirect`).
pub struct LoggedIn(pub Session);

impl FromRequestParts<Arc<Console>> for LoggedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> std::result::Result<Self, Self::Rejection> {
        let to_login = |ended: bool| {
            let to = if ended { "/login?ended=1" } else { "/login" };
            let mut r = Redirect::to(to).into_response();
            r.headers_mut().insert(
                "hx-redirect",
                axum::http::HeaderValue::from_static(if ended {
                    "/login?ended=1"
                } else {
                    "/login"
                }),
            );
            r
        };
        let Some(id) = cookie(&parts.headers, COOKIE) else {
            return Err(to_login(false));
        };
        let found = tokio::task::block_in_place(|| {
            resume(console.ctx.store.as_ref(), id, console.timeouts, now_ms())
        });
        match found {
            Ok(Ok(s)) => Ok(LoggedIn(s)),
            Ok(Err(NoSession::Missing)) => Err(to_login(false)),
            Ok(Err(NoSession::Ended)) => Err(to_login(true)),
            Err(e) => {
                tracing::error!(error = %e, "console: reading a session");
                Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn engineer() -> Principal {
        Principal {
            name: "eve".into(),
            role: Role::Engineer,
            source: LoginSource::Local,
        }
    }

    #[test]
    fn a_session_lives_until_idle_absolute_or_revoked() {
        let store = SqliteStore::in_memory().unwrap();
        let t = Timeouts {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(600),
        };
        let (id, s) = start(&store, engineer()).unwrap();
        let stored = store.session(&s.id_hash).unwrap().unwrap();
        assert_ne!(stored.id_hash, id, "the id is stored hashed");
        let t0 = s.created_ms;
        // Used within the idle timeout, again and again, up to the absolute one.
        let mut at = t0;
        while at + 50_000 < t0 + 600_000 {
            at += 50_000;
            assert!(resume(&store, &id, t, at).unwrap().is_ok(), "at {at}");
        }
        assert_eq!(
            resume(&store, &id, t, t0 + 600_001).unwrap().unwrap_err(),
            NoSession::Ended
        );
        // Idle.
        let (id, s) = start(&store, engineer()).unwrap();
        assert_eq!(
            resume(&store, &id, t, s.created_ms + 60_001)
                .unwrap()
                .unwrap_err(),
            NoSession::Ended
        );
        // Ended stays ended, even back within the timeouts.
        assert!(resume(&store, &id, t, s.created_ms + 1).unwrap().is_err());
        // Revoked; unknown.
        let (id, s) = start(&store, engineer()).unwrap();
        assert!(store.revoke_session(&s.id_hash, s.created_ms).unwrap());
        assert!(resume(&store, &id, t, s.created_ms + 1).unwrap().is_err());
        assert_eq!(
            resume(&store, "nope", t, s.created_ms)
                .unwrap()
                .unwrap_err(),
            NoSession::Missing
        );
        assert_eq!(store.sessions_of("eve").unwrap().len(), 3);
        // Old rows go at the next login.
        store.prune_sessions(s.created_ms + 1).unwrap();
        assert!(store.sessions_of("eve").unwrap().is_empty());
    }

    #[test]
    fn an_oidc_principal_round_trips_through_the_store() {
        let store = SqliteStore::in_memory().unwrap();
        let who = Principal {
            name: "helene.martin".into(),
            role: Role::Soc,
            source: LoginSource::Oidc {
                issuer: "https://auth.esante.gouv.fr/auth/realms/esante-wallet".into(),
                subject: "f:550-123".into(),
                acr: "eidas1".into(),
            },
        };
        let (_, s) = start(&store, who.clone()).unwrap();
        let row = store.session(&s.id_hash).unwrap().unwrap();
        assert_eq!(principal(&row), who);
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        let s = Session {
            id_hash: String::new(),
            principal: engineer(),
            csrf: "abcd".into(),
            created_ms: 0,
        };
        assert!(s.csrf_ok("abcd"));
        assert!(!s.csrf_ok("abc"));
        assert!(!s.csrf_ok(""));
        assert!(!s.csrf_ok("abce"));
    }
}
