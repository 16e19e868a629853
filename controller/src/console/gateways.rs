//! Each gateway's health (`service::gateway_health`): connected, the generation applied
//! against the latest, its last error, certificate expiry with a warning under
//! `CERT_WARN_DAYS`, and what its agent reports: release, fail-open watchdog (fired since when,
//! transitions), the fail-open devices it only monitors meanwhile, the report's age once it is
//! `HEALTH_STALE_MINUTES` old; "not reported" for an agent that reports none. Every logged-in
//! role.

use std::sync::Arc;

use askama::Template;
use axum::{extract::State, http::StatusCode, response::Response};

use super::{
    Console,
    i18n::Lang,
    page::{self, Frame},
    session::LoggedIn,
};
use crate::{
    auth,
    service::gateway_health::{self, CERT_WARN_DAYS},
};

pub struct GatewayView {
    pub name: String,
    pub location: String,
    pub connected: bool,
    pub applied: u32,
    pub latest: u32,
    pub up_to_date: bool,
    pub other_store: bool,
    pub last_error: String,
    /// Expiry date and days left.
    pub cert: Option<(String, i64)>,
    pub cert_warning: bool,
    pub fail_open_devices: usize,
    pub reported: Option<ReportedView>,
}

/// What the gateway's agent last reported of its health.
pub struct ReportedView {
    pub version: String,
    /// When the watchdog was first reported fired (`None`: it has not).
    pub fired_since: Option<String>,
    pub fired_count: u32,
    pub recovered_count: u32,
    /// Enforced fail-open devices the agent counts (only monitored while fired).
    pub fail_open: u32,
    /// Minutes since the report, once it is old.
    pub stale_minutes: Option<i64>,
}

#[derive(Template)]
#[template(path = "console/gateways.html")]
struct GatewaysPage {
    f: Frame,
    gateways: Vec<GatewayView>,
    warn_days: i64,
}

pub async fn page(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
) -> Response {
    if auth::require(s.principal.identity(), auth::READERS).is_err() {
        return page::forbidden(lang, Some(&s));
    }
    let rows = match tokio::task::block_in_place(|| gateway_health::gateways(&console.ctx)) {
        Ok(r) => r,
        Err(e) => return page::service_error(lang, &s, &e),
    };
    let now = crate::audit::now_ms();
    let gateways = rows
        .into_iter()
        .map(|g| {
            let days = g.cert_days_left(now);
            let stale_minutes = g.report_stale_minutes(now);
            GatewayView {
                cert: g
                    .cert_not_after_ms
                    .zip(days)
                    .map(|(t, d)| (page::time_ms(t), d)),
                cert_warning: days.is_some_and(|d| d < CERT_WARN_DAYS),
                up_to_date: g.applied_generation == g.latest_generation && !g.other_store,
                name: g.name,
                location: g.location,
                connected: g.connected,
                applied: g.applied_generation,
                latest: g.latest_generation,
                other_store: g.other_store,
                last_error: g.last_error,
                fail_open_devices: g.fail_open_devices,
                reported: g.reported.map(|r| ReportedView {
                    fired_since: r.watchdog_fired_since_ms.map(page::time_ms),
                    fired_count: r.health.watchdog_fired_count,
                    recovered_count: r.health.watchdog_recovered_count,
                    fail_open: r.health.fail_open_devices,
                    version: r.health.agent_version,
                    stale_minutes,
                }),
            }
        })
        .collect();
    page::render(
        StatusCode::OK,
        &GatewaysPage {
            f: Frame::new(lang, Some(&s)),
            gateways,
            warn_days: CERT_WARN_DAYS,
        },
    )
}
