//! The logged-in user's sessions: when each started, how, when it was last used, and whether
//! it is still live.

use std::sync::Arc;

use askama::Template;
use axum::{extract::State, http::StatusCode, response::Response};

use super::{
    Console,
    i18n::Lang,
    page::{self, Frame},
    session::LoggedIn,
};

pub struct SessionView {
    pub created: String,
    pub last_seen: String,
    pub source: String,
    pub live: bool,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "console/sessions.html")]
struct SessionsPage {
    f: Frame,
    sessions: Vec<SessionView>,
}

pub async fn page(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
) -> Response {
    let rows = tokio::task::block_in_place(|| console.ctx.store.sessions_of(&s.principal.name));
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return page::service_error(lang, &s, &e),
    };
    let now = crate::audit::now_ms();
    let t = console.timeouts;
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let sessions = rows
        .into_iter()
        .map(|r| SessionView {
            created: page::time_ms(r.created_ms),
            last_seen: page::time_ms(r.last_seen_ms),
            live: r.revoked_ms.is_none()
                && now - r.last_seen_ms <= ms(t.idle)
                && now - r.created_ms <= ms(t.absolute),
            current: r.id_hash == s.id_hash,
            source: r.source,
        })
        .collect();
    page::render(
        StatusCode::OK,
        &SessionsPage {
            f: Frame::new(lang, Some(&s)),
            sessions,
        },
    )
}
