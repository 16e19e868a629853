//! The SOC's alerts: the list (newest first, filtered by GET parameters, 50 a page, filtered,
//! counted and paged in the store's query; htmx polls the results every few seconds, a reload
//! does the same without JavaScript), an alert's evidence, and its two writes, acknowledge and
//! suppress, through the same service functions, roles and audit entries as
//! `AlertService.Acknowledge` and `AlertService.Suppress`.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use wardgate_analysis::detect::{Finding, Severity};
use wardgate_proto::v1 as pb;

use super::{
    Console, PAGE_SIZE,
    i18n::Lang,
    page::{self, Frame},
    session::{LoggedIn, Session},
};
use crate::{
    alerts as stored, auth,
    error::Error,
    service::alerts::{self as service, ACK},
    store::{AlertPageQuery, AlertState, ConsoleAlert},
};

/// Seconds between two polls of the list by htmx.
pub const POLL_SECONDS: u32 = 5;

/// The filters, as the form sends them.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub detector: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub page: Option<u64>,
}

impl Filters {
    /// The link to these filters at `page`.
    fn link(&self, page: u64) -> String {
        page::list_link(
            "/alerts",
            page,
            &[
                ("severity", &self.severity),
                ("device", &self.device),
                ("detector", &self.detector),
                ("state", &self.state),
            ],
        )
    }
}

/// One alert as the list shows it.
pub struct Row {
    pub href: String,
    pub received: String,
    pub severity: String,
    pub detector: String,
    pub device: String,
    pub summary: String,
    pub state: &'static str,
}

fn state_of(a: &ConsoleAlert) -> AlertState {
    if a.acknowledged {
        AlertState::Acknowledged
    } else if a.suppressed {
        AlertState::Suppressed
    } else {
        AlertState::Open
    }
}

fn finding(a: &ConsoleAlert) -> Option<Finding> {
    match stored::from_body(&a.gateway, &a.body) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(seq = a.first_seq, error = %e, "console: a stored alert does not read");
            None
        }
    }
}

fn row(lang: Lang, a: &ConsoleAlert) -> Row {
    let f = finding(a);
    Row {
        href: format!("/alerts/{}", a.first_seq),
        received: page::time_ms(a.received_ms),
        severity: f
            .as_ref()
            .map(|f| f.severity.to_string())
            .unwrap_or_default(),
        detector: f.as_ref().map(|f| f.detector.clone()).unwrap_or_default(),
        device: a.device.clone(),
        summary: f.map(|f| f.summary).unwrap_or_default(),
        state: state_word(lang, state_of(a)),
    }
}

fn state_word(lang: Lang, s: AlertState) -> &'static str {
    let m = lang.messages();
    match s {
        AlertState::Open => m.state_open,
        AlertState::Acknowledged => m.state_acknowledged,
        AlertState::Suppressed => m.state_suppressed,
    }
}

#[derive(Template)]
#[template(path = "console/alerts.html")]
struct AlertsPage {
    f: Frame,
    filters: Filters,
    rows: Vec<Row>,
    total: u64,
    page: u64,
    pages: u64,
    prev: Option<String>,
    next: Option<String>,
    here: String,
    poll: String,
    severities: Vec<&'static str>,
    detectors: &'static [&'static str],
    states: [(&'static str, &'static str); 3],
}

/// The results alone, for htmx (the same template's `results` block).
#[derive(Template)]
#[template(path = "console/alerts.html", block = "results")]
struct Results {
    f: Frame,
    rows: Vec<Row>,
    total: u64,
    page: u64,
    pages: u64,
    prev: Option<String>,
    next: Option<String>,
}

fn bad_request(lang: Lang, s: &Session, e: &Error) -> Response {
    page::service_error(lang, s, e)
}

pub async fn list(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    if auth::require(s.principal.identity(), auth::READERS).is_err() {
        return page::forbidden(lang, Some(&s));
    }
    let min_severity = match crate::service::severity_rank(&filters.severity) {
        Ok(r) => r,
        Err(e) => return bad_request(lang, &s, &e),
    };
    let state = match filters.state.as_str() {
        "" => None,
        x => match x.parse::<AlertState>() {
            Ok(st) => Some(st),
            Err(e) => return bad_request(lang, &s, &e),
        },
    };
    let page_no = filters.page.unwrap_or(1).max(1);
    let q = AlertPageQuery {
        device: filters.device.trim().to_string(),
        detector: filters.detector.clone(),
        min_severity,
        state,
        offset: (page_no - 1).saturating_mul(u64::from(PAGE_SIZE)),
        limit: PAGE_SIZE,
    };
    let found = match tokio::task::block_in_place(|| console.ctx.store.alert_page(&q)) {
        Ok(f) => f,
        Err(e) => return page::service_error(lang, &s, &e),
    };
    let pages = page::page_count(found.total);
    let (prev, next) = page::prev_next(page_no, pages, |n| filters.link(n));
    let rows: Vec<Row> = found.rows.iter().map(|a| row(lang, a)).collect();
    let f = Frame::new(lang, Some(&s));
    if page::is_htmx(&headers) {
        return page::render(
            StatusCode::OK,
            &Results {
                f,
                rows,
                total: found.total,
                page: page_no,
                pages,
                prev,
                next,
            },
        );
    }
    let m = lang.messages();
    page::render(
        StatusCode::OK,
        &AlertsPage {
            f,
            here: filters.link(page_no),
            poll: format!("every {POLL_SECONDS}s"),
            filters,
            rows,
            total: found.total,
            page: page_no,
            pages,
            prev,
            next,
            severities: Severity::ALL.iter().map(|s| s.as_str()).collect(),
            detectors: wardgate_analysis::detect::format::DETECTORS,
            states: [
                ("open", m.state_open),
                ("acknowledged", m.state_acknowledged),
                ("suppressed", m.state_suppressed),
            ],
        },
    )
}

/// One measure of the evidence, as the page shows it.
pub struct MetricView {
    pub name: String,
    pub observed: String,
    pub baseline: String,
    pub threshold: String,
}

/// One flow the alert rests on.
pub struct FlowView {
    pub device_end: String,
    pub peer_end: String,
    pub proto: u8,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen: String,
}

#[derive(Template)]
#[template(path = "console/alert.html")]
struct AlertPage {
    f: Frame,
    seq: i64,
    /// `GATEWAY/ID`, as acknowledgements name it.
    name: String,
    gateway: String,
    device: String,
    device_href: String,
    state: &'static str,
    acknowledged: bool,
    acknowledged_by: String,
    received: String,
    x: Option<Finding>,
    first_seen: String,
    last_seen: String,
    window: String,
    technique_url: String,
    metrics: Vec<MetricView>,
    ports: String,
    peers: String,
    names: String,
    flows: Vec<FlowView>,
    /// The suppression form's defaults: the alert's detector and peer.
    detector: String,
    peer: String,
    can_act: bool,
    detectors: &'static [&'static str],
    done_ack: Option<u64>,
    done_suppress: Option<u64>,
}

#[derive(Deserialize, Default)]
pub struct Done {
    #[serde(default)]
    acknowledged: Option<u64>,
    #[serde(default)]
    suppressed: Option<u64>,
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn alert_page(lang: Lang, s: &Session, a: ConsoleAlert, done: Done) -> AlertPage {
    let x = finding(&a);
    let (first_seen, last_seen, window, technique_url) =
        x.as_ref().map_or_else(Default::default, |f| {
            (
                page::time_ns(f.first_seen_ns),
                page::time_ns(f.last_seen_ns),
                format!(
                    "{} – {}",
                    page::time_ns(f.evidence.window_start_ns),
                    page::time_ns(f.evidence.window_end_ns)
                ),
                f.technique.url(),
            )
        });
    let metrics = x.as_ref().map_or_else(Vec::new, |f| {
        f.evidence
            .metrics
            .iter()
            .map(|m| MetricView {
                name: m.name.clone(),
                observed: number(m.observed),
                baseline: m.baseline.map_or_else(String::new, |b| {
                    format!(
                        "{} ± {}",
                        number(b),
                        number(m.baseline_spread.unwrap_or(0.0))
                    )
                }),
                threshold: m.threshold.map(number).unwrap_or_default(),
            })
            .collect()
    });
    let flows = x.as_ref().map_or_else(Vec::new, |f| {
        f.flows
            .iter()
            .map(|fl| FlowView {
                device_end: format!("{}:{}", fl.device_addr, fl.device_port),
                peer_end: format!("{}:{}", fl.peer, fl.peer_port),
                proto: fl.proto,
                packets: fl.packets,
                bytes: fl.bytes,
                first_seen: page::time_ns(fl.first_seen_ns),
            })
            .collect()
    });
    let (ports, peers, names) = x.as_ref().map_or_else(Default::default, |f| {
        (
            join(&f.evidence.ports),
            join(&f.evidence.peers),
            f.evidence.names.join(", "),
        )
    });
    AlertPage {
        f: Frame::new(lang, Some(s)),
        seq: a.first_seq,
        name: format!("{}/{}", a.gateway, a.id),
        device_href: format!("/devices/{}", page::encode(&a.device)),
        state: state_word(lang, state_of(&a)),
        acknowledged: a.acknowledged,
        acknowledged_by: a.acknowledged_by.clone(),
        received: page::time_ms(a.received_ms),
        detector: x.as_ref().map(|f| f.detector.clone()).unwrap_or_default(),
        peer: x
            .as_ref()
            .and_then(|f| f.peer)
            .map(|p| p.to_string())
            .unwrap_or_default(),
        can_act: auth::require(s.principal.identity(), ACK).is_ok(),
        detectors: wardgate_analysis::detect::format::DETECTORS,
        gateway: a.gateway,
        device: a.device,
        x,
        first_seen,
        last_seen,
        window,
        technique_url,
        metrics,
        ports,
        peers,
        names,
        flows,
        done_ack: done.acknowledged,
        done_suppress: done.suppressed,
    }
}

fn not_found(lang: Lang, s: &Session, seq: i64) -> Response {
    page::error(
        lang,
        Some(s),
        StatusCode::NOT_FOUND,
        lang.messages().not_found,
        &format!("alert {seq}"),
    )
}

pub async fn show(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Path(seq): Path<i64>,
    Query(done): Query<Done>,
) -> Response {
    if auth::require(s.principal.identity(), auth::READERS).is_err() {
        return page::forbidden(lang, Some(&s));
    }
    match tokio::task::block_in_place(|| console.ctx.store.console_alert(seq)) {
        Ok(Some(a)) => page::render(StatusCode::OK, &alert_page(lang, &s, a, done)),
        Ok(None) => not_found(lang, &s, seq),
        Err(e) => page::service_error(lang, &s, &e),
    }
}

#[derive(Deserialize, Default)]
pub struct ActForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    detector: String,
    #[serde(default)]
    peer: String,
}

/// What both writes check first: the CSRF token (403), then the role (403, audited as the
/// gRPC API audits a refused write), then that the alert exists (404).
fn authorize(
    console: &Console,
    lang: Lang,
    s: &Session,
    form: &ActForm,
    action: &str,
    seq: i64,
) -> Result<(auth::Identity, ConsoleAlert), Box<Response>> {
    if !s.csrf_ok(&form.csrf) {
        tracing::warn!(
            user = s.principal.name,
            "console: POST without its CSRF token"
        );
        return Err(Box::new(page::forbidden(lang, Some(s))));
    }
    let who = console
        .ctx
        .check_write(s.principal.identity(), ACK, action, &format!("alert {seq}"))
        .map_err(|_| Box::new(page::forbidden(lang, Some(s))))?;
    match tokio::task::block_in_place(|| console.ctx.store.console_alert(seq)) {
        Ok(Some(a)) => Ok((who, a)),
        Ok(None) => Err(Box::new(not_found(lang, s, seq))),
        Err(e) => Err(Box::new(page::service_error(lang, s, &e))),
    }
}

/// `POST /alerts/SEQ/acknowledge`: `AlertService.Acknowledge` of `GATEWAY/ID` with the reason.
pub async fn acknowledge(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Path(seq): Path<i64>,
    Form(form): Form<ActForm>,
) -> Response {
    let (who, a) = match authorize(&console, lang, &s, &form, "acknowledge", seq) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let ids = vec![format!("{}/{}", a.gateway, a.id)];
    match service::acknowledge(&console.ctx, &who, ids, &form.reason) {
        Ok(w) => {
            Redirect::to(&format!("/alerts/{seq}?acknowledged={}", w.audit_seq)).into_response()
        }
        Err(e) => page::service_error(lang, &s, &e),
    }
}

/// `POST /alerts/SEQ/suppress`: `AlertService.Suppress` of the scope the form names (device,
/// detector, peer or any), with the reason.
pub async fn suppress(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Path(seq): Path<i64>,
    Form(form): Form<ActForm>,
) -> Response {
    let (who, _) = match authorize(&console, lang, &s, &form, "suppress", seq) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let req = pb::SuppressRequest {
        device: form.device.trim().to_string(),
        detector: form.detector.trim().to_string(),
        peer: form.peer.trim().to_string(),
        reason: form.reason.clone(),
    };
    match service::suppress(&console.ctx, &who, &req) {
        Ok(w) => Redirect::to(&format!("/alerts/{seq}?suppressed={}", w.audit_seq)).into_response(),
        Err(e) => page::service_error(lang, &s, &e),
    }
}
