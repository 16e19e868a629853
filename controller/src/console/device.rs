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
    Console, charts,
    i18n::{Lang, Messages},
    page::{self, Frame},
    session::{LoggedIn, Session},
};
use crate::{
    auth,
    compile::parse_mode,
    error::Error,
    service::device_flows,
    store::{AlertQuery, Change, DeviceRow, FieldRow, GatewayRow, PendingChangeRow},
};

/// Findings shown on a device's page.
const RECENT_FINDINGS: u32 = 20;

/// Flow rows shown on a device's page (the rest are counted).
const FLOW_LIST: usize = 100;

/// One row of the device's flow list, in the page's language.
pub struct FlowView {
    pub direction: &'static str,
    pub peer: String,
    pub groups: String,
    pub proto: String,
    pub port: u16,
    pub flows: u64,
    pub bytes: u64,
    pub last_seen: String,
    /// `allowed`, `denied`, `not-completed` (a CSS class; the words are in `verdict`).
    pub verdict_class: &'static str,
    pub verdict: &'static str,
    pub decided: String,
    pub would_be_denied: bool,
}

fn flow_view(m: &Messages, f: device_flows::DeviceFlow) -> FlowView {
    use device_flows::{Decision, Verdict};
    let decided = match &f.decision {
        Decision::Admitted {
            profile,
            version,
            rule,
            generation,
        } => format!(
            "{profile} {} {version} → {} {rule} ({} {generation})",
            m.version, m.rule_of, m.in_generation
        ),
        Decision::Rule { profile, rule } => format!("{profile} → {} {rule}", m.rule_of),
        // Enforced now, yet it passed: the policy changed since (or it passed under grace).
        Decision::NoRule {
            profile,
            would_be: false,
        } if f.verdict == Verdict::Allowed => format!(
            "{} {profile} {} {}",
            m.no_rule_of, m.allows_it, m.allowed_earlier
        ),
        Decision::NoRule { profile, .. } => format!("{} {profile} {}", m.no_rule_of, m.allows_it),
        Decision::Quarantine => m.quarantined_all.to_string(),
        Decision::Unknown(why) => format!("{} ({why})", m.rule_unknown),
    };
    FlowView {
        direction: match f.direction {
            wardgate_analysis::FlowDirection::Opened => m.dir_out,
            wardgate_analysis::FlowDirection::Received => m.dir_in,
        },
        peer: f.peer.to_string(),
        groups: f.groups.join(", "),
        proto: wardgate_analysis::baseline::proto_name(f.proto),
        port: f.port,
        flows: f.flows,
        bytes: f.bytes,
        last_seen: page::time_ns(f.last_seen_ns),
        verdict_class: f.verdict.as_str(),
        verdict: match f.verdict {
            Verdict::Allowed => m.verdict_allowed,
            Verdict::Denied => m.verdict_denied,
            Verdict::NotCompleted => m.verdict_not_completed,
        },
        would_be_denied: matches!(f.decision, Decision::NoRule { would_be: true, .. }),
        decided,
    }
}

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
    /// Each identity field's value and where it came from (`crate::import`).
    provenance: Vec<FieldView>,
    traffic: charts::TrafficChart,
    baseline_chart: Option<charts::BaselineChart>,
    chart: (u32, u32),
    flow_list: Vec<FlowView>,
    flows_more: usize,
    flows_generation: u32,
}

/// One row of "where each field came from".
pub struct FieldView {
    pub field: String,
    pub value: String,
    /// `fhir`, `csv`, ... ('' = not recorded).
    pub source: String,
    pub file: String,
    pub sha256: String,
    pub set: String,
}

/// The identity fields and their provenance rows (fields no import set are shown as not
/// recorded: they came from the site file or the API before provenance was kept).
fn provenance(d: &DeviceRow, rows: Vec<FieldRow>) -> Vec<FieldView> {
    let row_value = |field: &str| match field {
        "name" => d.name.clone(),
        "mac" => d.mac.to_string(),
        "location" => d.location.clone(),
        "asset_id" => d.asset_id.clone(),
        "address" => d
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    let mut out: Vec<FieldView> = ["name", "mac", "address", "location", "asset_id"]
        .iter()
        .map(|f| FieldView {
            field: (*f).to_string(),
            value: row_value(f),
            source: String::new(),
            file: String::new(),
            sha256: String::new(),
            set: String::new(),
        })
        .collect();
    for r in rows {
        let view = FieldView {
            // A row field shows its current value (an edit since may have changed it).
            value: if crate::import::plan::EXTRA_FIELDS.contains(&r.field.as_str()) {
                r.value
            } else {
                row_value(&r.field)
            },
            field: r.field.clone(),
            source: r.source,
            file: r.file,
            sha256: r.sha256.chars().take(12).collect(),
            set: page::time_ms(r.set_ms),
        };
        match out.iter_mut().find(|v| v.field == r.field) {
            Some(v) => *v = view,
            None => out.push(view),
        }
    }
    out
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
        let lifecycle = store.baseline_lifecycle(&d.name)?.map(|(lc, _)| lc);
        let now_ns = u64::try_from(crate::audit::now_ms())
            .unwrap_or(0)
            .saturating_mul(1_000_000);
        let flows = store.flow_aggregates(&d.name, charts::window_start(now_ns), now_ns)?;
        let charts = (
            charts::traffic(&flows, now_ns),
            lifecycle.as_ref().map(|lc| charts::baseline(lc, now_ns)),
        );
        let baseline = lifecycle.map(|lc| lc.state.as_str().to_string());
        let fields = store.device_fields(Some(&d.name))?;
        let alerts = store.alerts(&AlertQuery {
            device: d.name.clone(),
            include_acknowledged: true,
            limit: RECENT_FINDINGS,
            ..Default::default()
        })?;
        let pending = store.pending_changes(&d.name, RECENT_CHANGES)?;
        let list = device_flows::device_flows(&console.ctx, &d, now_ns, FLOW_LIST)?;
        Ok(Some((
            d, gateway, latest, baseline, alerts, pending, fields, charts, list,
        )))
    });
    let (d, gateway, latest_generation, baseline, alerts, pending, fields, (traffic, bchart), list) =
        match read {
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
            provenance: provenance(&d, fields),
            traffic,
            baseline_chart: bchart,
            chart: (charts::WIDTH, charts::HEIGHT),
            flows_more: list.more,
            flows_generation: list.generation,
            flow_list: list
                .flows
                .into_iter()
                .map(|f| flow_view(lang.messages(), f))
                .collect(),
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
