//! What every page shares: the frame (language, messages, who is logged in), rendering, error
//! pages, and small formatters.

use askama::Template;
use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

use super::{i18n::Lang, i18n::Messages, session::Session};

/// The frame of a page (`base.html`).
pub struct Frame {
    pub lang: &'static str,
    pub m: &'static Messages,
    /// The logged-in user's name and role, and their CSRF token (for the logout form).
    pub user: Option<(String, String, String)>,
}

impl Frame {
    pub fn new(lang: Lang, session: Option<&Session>) -> Frame {
        Frame {
            lang: lang.code(),
            m: lang.messages(),
            user: session.map(|s| {
                (
                    s.principal.name.clone(),
                    s.principal.role.to_string(),
                    s.csrf.clone(),
                )
            }),
        }
    }
}

/// A rendered template as an HTML response.
pub fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => {
            let mut r = (status, Html(body)).into_response();
            r.headers_mut().insert(
                header::VARY,
                HeaderValue::from_static("HX-Request, Accept-Language, Cookie"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "console: rendering a page");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Whether htmx asked for a fragment rather than the whole page (a history restore, after
/// Back with nothing cached, wants the whole page).
pub fn is_htmx(headers: &HeaderMap) -> bool {
    headers.get("hx-request").is_some_and(|v| v == "true")
        && !headers.contains_key("hx-history-restore-request")
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    f: Frame,
    message: &'a str,
    detail: &'a str,
}

/// An error page: `message` for people, `detail` (may be empty) what the service said.
pub fn error(
    lang: Lang,
    session: Option<&Session>,
    status: StatusCode,
    message: &str,
    detail: &str,
) -> Response {
    render(
        status,
        &ErrorPage {
            f: Frame::new(lang, session),
            message,
            detail,
        },
    )
}

pub fn forbidden(lang: Lang, session: Option<&Session>) -> Response {
    error(
        lang,
        session,
        StatusCode::FORBIDDEN,
        lang.messages().forbidden,
        "",
    )
}

/// A service error as a page with its status (the gRPC API's codes, as HTTP).
pub fn service_error(lang: Lang, session: &Session, e: &crate::error::Error) -> Response {
    use crate::error::Error as E;
    let m = lang.messages();
    let (status, message) = match e {
        E::NotFound { .. } => (StatusCode::NOT_FOUND, m.not_found),
        E::Denied(_) | E::Unauthenticated(_) => (StatusCode::FORBIDDEN, m.forbidden),
        E::Invalid(_) | E::TooLarge(_) | E::Precondition(_) => {
            (StatusCode::BAD_REQUEST, m.bad_request)
        }
        E::Unavailable(_) => {
            tracing::warn!(error = %e, "console: store unavailable");
            return error(
                lang,
                Some(session),
                StatusCode::SERVICE_UNAVAILABLE,
                m.unavailable,
                "",
            );
        }
        _ => {
            tracing::error!(error = %e, "console: service error");
            return error(
                lang,
                Some(session),
                StatusCode::INTERNAL_SERVER_ERROR,
                m.internal,
                "",
            );
        }
    };
    error(lang, Some(session), status, message, &e.to_string())
}

pub async fn not_found(lang: Lang) -> Response {
    error(
        lang,
        None,
        StatusCode::NOT_FOUND,
        lang.messages().not_found,
        "",
    )
}

/// `ns` since the Unix epoch as `YYYY-MM-DD HH:MM UTC`.
pub fn time_ns(ns: u64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)) else {
        return ns.to_string();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM UTC`.
pub fn time_ms(ms: i64) -> String {
    time_ns(u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000))
}

/// `s` percent-encoded for a URL path segment or query value (everything but unreserved
/// characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `PATH?page=N` and each filter that is set, percent-encoded: the link to a filtered list's
/// page `page`.
pub fn list_link(path: &str, page: u64, filters: &[(&str, &str)]) -> String {
    let mut out = format!("{path}?page={page}");
    for (k, v) in filters {
        if !v.is_empty() {
            out.push_str(&format!("&{k}={}", encode(v)));
        }
    }
    out
}

/// How many pages of [`super::PAGE_SIZE`] rows `total` rows make (at least one).
pub fn page_count(total: u64) -> u64 {
    total.div_ceil(u64::from(super::PAGE_SIZE)).max(1)
}

/// The links to the pages before and after `page_no` of `pages`, made by `link`.
pub fn prev_next(
    page_no: u64,
    pages: u64,
    link: impl Fn(u64) -> String,
) -> (Option<String>, Option<String>) {
    (
        (page_no > 1).then(|| link(page_no - 1)),
        (page_no < pages).then(|| link(page_no + 1)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_urls() {
        assert_eq!(time_ns(1_700_000_000_000_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(encode("pump 3/a&b"), "pump%203%2Fa%26b");
    }
}
