//! A device's page (identity, profile, mode, gateway and the generation applied there,
//! baseline, recent findings) and its one write: the mode, with a required reason, through
//! the same service layer, role check and audit trail as `AdminService.SetMode`.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    Console,
    i18n::Lang,
    page::{self, Frame},
    session::{LoggedIn, Session},
};
use crate::{
    auth,
    compile::parse_mode,
    error::Error,
    store::{AlertQuery, Change, DeviceRow, GatewayRow, PendingChangeRow},
};

/// Findings shown on a device's page.
const RECENT_FINDINGS: u32 = 20;

pub struct FindingView {
    pub severity: String,
    pub detector: String,
    pub summary: String,
    pub last_seen: String,
    pub acknowledged: bool,
}

#[derive(Template)]
#[template(path = "console/device.html")]
struct DevicePage {
    f: Frame,
    d: DeviceRow,
    addresses: String,
    mode: String,
    gateway: Option<GatewayRow>,
    latest_generation: u32,
    baseline: Option<String>,
    findings: Vec<FindingView>,
    can_write: bool,
    action: String,
    modes: [&'static str; 4],
    done: Option<u64>,
    submitted: Option<u64>,
    approved: Option<u64>,
    /// `/devices/NAME` for the engineer's loop (`approval.rs`).
    loop_action: String,
    pending: Vec<PendingChangeRow>,
}

#[derive(Deserialize, Default)]
pub struct Done {
    #[serde(default)]
    audit: Option<u64>,
    #[serde(default)]
    submitted: Option<u64>,
    #[serde(default)]
    approved: Option<u64>,
}

/// Submitted changes shown on a device's page.
const RECENT_CHANGES: u32 = 10;

fn finding(body: &str, acknowledged: bool) -> FindingView {
    match serde_json::from_str::<wardgate_analysis::detect::Finding>(body) {
        Ok(f) => FindingView {
            severity: f.severity.to_string(),
            detector: f.detector,
            summary: f.summary,
            last_seen: page::time_ns(f.last_seen_ns),
            acknowledged,
        },
        // Bodies stored before findings (the old alert fields) are shown as they are.
        Err(_) => FindingView {
            severity: String::new(),
            detector: String::new(),
            summary: body.chars().take(300).collect(),
            last_seen: String::new(),
            acknowledged,
        },
    }
}

fn render(console: &Console, lang: Lang, s: &Session, name: &str, done: Done) -> Response {
    let store = console.ctx.store.as_ref();
    let read = tokio::task::block_in_place(|| -> Result<_, Error> {
        let Some(d) = store.device(name)? else {
            return Ok(None);
        };
        let gateway = store.gateway(&d.gateway)?;
        let latest = store.latest_generation(&d.gateway)?;
        let baseline = store
            .baseline_lifecycle(&d.name)?
            .map(|(lc, _)| lc.state.as_str().to_string());
        let alerts = store.alerts(&AlertQuery {
            device: d.name.clone(),
            include_acknowledged: true,
            limit: RECENT_FINDINGS,
            ..Default::default()
        })?;
        let pending = store.pending_changes(&d.name, RECENT_CHANGES)?;
        Ok(Some((d, gateway, latest, baseline, alerts, pending)))
    });
    let (d, gateway, latest_generation, baseline, alerts, pending) = match read {
        Ok(Some(r)) => r,
        Ok(None) => {
            return page::error(
                lang,
                Some(s),
                StatusCode::NOT_FOUND,
                lang.messages().not_found,
                name,
            );
        }
        Err(e) => return page::service_error(lang, s, &e),
    };
    let can_write = auth::require(s.principal.identity(), auth::WRITERS).is_ok();
    page::render(
        StatusCode::OK,
        &DevicePage {
            f: Frame::new(lang, Some(s)),
            addresses: d
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            mode: d.mode.to_string(),
            action: format!("/devices/{}/mode", page::encode(&d.name)),
            loop_action: format!("/devices/{}", page::encode(&d.name)),
            pending,
            submitted: done.submitted,
            approved: done.approved,
            d,
            gateway,
            latest_generation,
            baseline,
            findings: alerts
                .iter()
                .map(|a| finding(&a.body, a.acknowledged))
                .collect(),
            can_write,
            modes: ["learn", "monitor", "enforce", "quarantine"],
            done: done.audit,
        },
    )
}

pub async fn page(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Path(name): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    if auth::require(s.principal.identity(), auth::READERS).is_err() {
        return page::forbidden(lang, Some(&s));
    }
    render(&console, lang, &s, &name, done)
}

#[derive(Deserialize, Default)]
pub struct ModeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    reason: String,
}

/// `POST /devices/NAME/mode`: CSRF first (403), then the role (403, as the gRPC API's
/// `PERMISSION_DENIED`), then the write service (reason required, device must exist).
pub async fn set_mode(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Path(name): Path<String>,
    Form(form): Form<ModeForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        tracing::warn!(
            user = s.principal.name,
            "console: POST without its CSRF token"
        );
        return page::forbidden(lang, Some(&s));
    }
    let who = match auth::require(s.principal.identity(), auth::WRITERS) {
        Ok(who) => who,
        Err(e) => {
            tracing::warn!(user = s.principal.name, error = %e, "console: refused write");
            return page::forbidden(lang, Some(&s));
        }
    };
    let written = tokio::task::block_in_place(|| -> Result<_, Error> {
        let mode = parse_mode(&form.mode)?;
        if console.ctx.store.device(&name)?.is_none() {
            return Err(Error::NotFound {
                what: "device",
                name: name.clone(),
            });
        }
        console.ctx.write(
            &who.actor(),
            &form.reason,
            Change::SetMode {
                device: name.clone(),
                mode,
            },
        )
    });
    match written {
        Ok(w) => Redirect::to(&format!(
            "/devices/{}?audit={}",
            page::encode(&name),
            w.audit_seq
        ))
        .into_response(),
        Err(e) => page::service_error(lang, &s, &e),
    }
}
