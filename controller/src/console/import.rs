//! `/import` (engineers): upload a FHIR R4 Bundle of Devices or a CSV export with its column
//! mapping (multipart), see the diff (new, changed, unmatched, refused), confirm. The diff
//! page carries the file (base64) and the plan's digest in its confirmation form, so the
//! confirmation writes exactly the diff shown or nothing (`Ctx::import_devices`).

use std::sync::Arc;

use askama::Template;
use axum::{
    Form,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use base64::Engine as _;
use serde::Deserialize;

use super::{
    Console,
    i18n::Lang,
    multipart,
    page::{self, Frame},
    session::{LoggedIn, Session},
};
use crate::{
    auth,
    error::Error,
    import::{Format, plan},
    service::import::{ImportOutcome, ImportRequest},
};

/// Unmatched devices listed on the diff page (the rest counted).
const UNMATCHED_SHOWN: usize = 200;

#[derive(Template)]
#[template(path = "console/import.html")]
struct ImportPage {
    f: Frame,
    done: Option<Done>,
}

#[derive(Deserialize, Default)]
pub struct Done {
    #[serde(default)]
    audit: u64,
    #[serde(default)]
    file: String,
    #[serde(default)]
    new: usize,
    #[serde(default)]
    changed: usize,
}

#[derive(Template)]
#[template(path = "console/import_diff.html")]
struct DiffPage {
    f: Frame,
    file_name: String,
    sha256: String,
    plan: plan::Plan,
    unmatched_more: usize,
    /// The confirmation form's hidden fields.
    format: &'static str,
    content_b64: String,
    mapping: String,
    gateway: String,
    profile: String,
    digest: String,
}

/// Engineers only (anyone else gets a 403 page).
fn engineer(s: &Session) -> Option<auth::Identity> {
    auth::require(s.principal.identity(), auth::WRITERS)
        .map_err(|e| tracing::warn!(user = s.principal.name, error = %e, "console: refused import"))
        .ok()
}

pub async fn form(lang: Lang, LoggedIn(s): LoggedIn, Query(done): Query<Done>) -> Response {
    if engineer(&s).is_none() {
        return page::forbidden(lang, Some(&s));
    }
    page::render(
        StatusCode::OK,
        &ImportPage {
            f: Frame::new(lang, Some(&s)),
            done: (done.audit > 0).then_some(done),
        },
    )
}

fn diff_page(lang: Lang, s: &Session, req: &ImportRequest, out: ImportOutcome) -> Response {
    let mut plan = out.plan;
    let unmatched_more = plan.unmatched.len().saturating_sub(UNMATCHED_SHOWN);
    plan.unmatched.truncate(UNMATCHED_SHOWN);
    page::render(
        StatusCode::OK,
        &DiffPage {
            f: Frame::new(lang, Some(s)),
            file_name: req.file_name.clone(),
            sha256: out.sha256,
            plan,
            unmatched_more,
            format: req.format.as_str(),
            content_b64: base64::engine::general_purpose::STANDARD.encode(&req.content),
            mapping: req.mapping.clone(),
            gateway: req.options.gateway.clone(),
            profile: req.options.profile.clone(),
            digest: out.digest,
        },
    )
}

fn bad_request(lang: Lang, s: &Session, detail: &str) -> Response {
    page::error(
        lang,
        Some(s),
        StatusCode::BAD_REQUEST,
        lang.messages().bad_request,
        detail,
    )
}

/// `POST /import` (multipart: csrf, file, format, mapping, gateway, profile): the diff page.
pub async fn upload(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parts = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(multipart::boundary)
        .ok_or_else(|| "expected multipart/form-data".to_string())
        .and_then(|b| multipart::parse(&body, &b));
    let parts = match parts {
        Ok(p) => p,
        Err(e) => {
            // No CSRF token could be read either: refused as a forged POST.
            tracing::warn!(
                user = s.principal.name,
                error = e,
                "console: bad import upload"
            );
            return page::forbidden(lang, Some(&s));
        }
    };
    let text = |name: &str| {
        parts
            .iter()
            .find(|p| p.name == name)
            .map(|p| String::from_utf8_lossy(&p.data).trim().to_string())
            .unwrap_or_default()
    };
    if !s.csrf_ok(&text("csrf")) {
        tracing::warn!(
            user = s.principal.name,
            "console: POST without its CSRF token"
        );
        return page::forbidden(lang, Some(&s));
    }
    let Some(who) = engineer(&s) else {
        return page::forbidden(lang, Some(&s));
    };
    let Some(file) = parts
        .iter()
        .find(|p| p.name == "file" && !p.data.is_empty())
    else {
        return bad_request(lang, &s, "no file");
    };
    let file_name = file
        .file_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "upload".into());
    let format = match text("format").as_str() {
        "" => Format::guess(&file_name),
        f => match Format::parse(f) {
            Ok(f) => f,
            Err(e) => return bad_request(lang, &s, &e.to_string()),
        },
    };
    let req = ImportRequest {
        format,
        file_name,
        content: file.data.clone(),
        mapping: text("mapping"),
        options: plan::Options {
            gateway: text("gateway"),
            profile: text("profile"),
        },
    };
    match console.ctx.import_devices(&who.actor(), "", &req, None) {
        Ok(out) => diff_page(lang, &s, &req, out),
        Err(e) => page::service_error(lang, &s, &e),
    }
}

#[derive(Deserialize, Default)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    file_name: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    mapping: String,
    #[serde(default)]
    gateway: String,
    #[serde(default)]
    profile: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    reason: String,
}

/// `POST /import/confirm`: CSRF, role, then the write of the diff that was shown.
pub async fn confirm(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Form(form): Form<ConfirmForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        tracing::warn!(
            user = s.principal.name,
            "console: POST without its CSRF token"
        );
        return page::forbidden(lang, Some(&s));
    }
    let Some(who) = engineer(&s) else {
        return page::forbidden(lang, Some(&s));
    };
    let content = match base64::engine::general_purpose::STANDARD.decode(form.content.trim()) {
        Ok(c) => c,
        Err(_) => return bad_request(lang, &s, "the file did not come back whole"),
    };
    let format = match Format::parse(&form.format) {
        Ok(f) => f,
        Err(e) => return bad_request(lang, &s, &e.to_string()),
    };
    let req = ImportRequest {
        format,
        file_name: form.file_name,
        content,
        mapping: form.mapping,
        options: plan::Options {
            gateway: form.gateway,
            profile: form.profile,
        },
    };
    let written: Result<_, Error> =
        console
            .ctx
            .import_devices(&who.actor(), &form.reason, &req, Some(&form.digest));
    match written {
        Ok(out) => Redirect::to(&format!(
            "/import?audit={}&file={}&new={}&changed={}",
            out.audit_seq.unwrap_or(0),
            page::encode(&req.file_name),
            out.plan.new.len(),
            out.plan.changed.len()
        ))
        .into_response(),
        Err(e) => page::service_error(lang, &s, &e),
    }
}
