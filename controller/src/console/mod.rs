//! The browser console: server-rendered pages for biomedical engineers and the SOC, on an HTTPS
//! listener of its own (`console: {listen: ...}` in the controller config; off unless
//! configured), beside the agents' mTLS gRPC port.
//!
//! Pages are askama templates (`controller/templates/console/`) rendered here, readable without
//! JavaScript; the vendored htmx (served from the binary) only swaps fragments (a page asked
//! with `HX-Request` gets its fragment, `Vary: HX-Request`). Every response carries a strict
//! Content-Security-Policy and the other security headers (`headers.rs`). Every action goes
//! through the service layer the gRPC API uses (`crate::service::Ctx`, the write service), with
//! the same roles (`crate::auth`) and audit trail. French or English from Accept-Language
//! (`i18n.rs`).
//!
//! What each file holds: `tls.rs` the listener; `session.rs` who is logged in and their
//! session (cookie, CSRF, timeouts); `login.rs` the login form and logout; `oidc.rs` the
//! identity provider's login; `logins.rs` what every login shares (address, rate limit,
//! audit, session start); `limit.rs` the login rate limit; `inventory.rs` the
//! device list; `device.rs` a device's page and its mode change; `approval.rs` the engineer's
//! loop (propose, diff, simulate, submit, a second engineer's approval); `sessions.rs` a user's
//! sessions; `page.rs` what every page shares; `assets.rs` htmx and the stylesheet;
//! `alerts.rs` the SOC's alerts (list, evidence, acknowledge, suppress); `audit.rs` the audit
//! trail and its verification; `import.rs` the inventory import (upload, diff, confirm) and
//! `multipart.rs` its uploads; `matrix.rs` classes against groups and `gateways.rs` the
//! gateways' health (the site at a glance).

mod alerts;
pub mod approval;
mod assets;
mod audit;
mod charts;
mod device;
mod gateways;
mod headers;
pub mod i18n;
mod import;
mod inventory;
mod limit;
mod login;
mod logins;
mod matrix;
mod multipart;
mod oidc;
mod page;
pub mod session;
mod sessions;
mod tls;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{get, post},
};

pub use self::{login::hash_password, tls::serve};
use crate::{
    config::{ConsoleConfig, LocalAdmin},
    service::Ctx,
};

/// Devices per inventory page.
pub const PAGE_SIZE: u32 = 50;

/// What every handler shares.
pub struct Console {
    pub ctx: Ctx,
    pub admin: Option<LocalAdmin>,
    pub oidc: Option<oidc::Oidc>,
    pub limiter: limit::Limiter,
    pub timeouts: session::Timeouts,
}

impl Console {
    /// Fails if the OIDC client secret file cannot be read or the HTTP client not built.
    pub fn new(ctx: Ctx, cfg: &ConsoleConfig) -> anyhow::Result<Console> {
        Ok(Console {
            ctx,
            admin: cfg.admin.clone(),
            oidc: cfg.oidc.as_ref().map(oidc::Oidc::new).transpose()?,
            limiter: limit::Limiter::new(cfg.login_limit),
            timeouts: session::Timeouts {
                idle: Duration::from_secs(cfg.idle_timeout_seconds),
                absolute: Duration::from_secs(cfg.absolute_timeout_seconds),
            },
        })
    }
}

/// The console's routes, security headers on every response.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(inventory::page))
        .route("/login", get(login::form).post(login::submit))
        .route("/login/oidc", get(oidc::start))
        .route("/login/oidc/callback", get(oidc::callback))
        .route("/logout", post(login::logout))
        .route("/sessions", get(sessions::page))
        .route("/devices/{name}", get(device::page))
        .route("/devices/{name}/mode", post(device::set_mode))
        .route("/devices/{name}/propose", post(approval::propose))
        .route("/devices/{name}/simulate", post(approval::simulate))
        .route("/devices/{name}/submit", post(approval::submit))
        .route("/changes/{id}", get(approval::review))
        .route("/changes/{id}/approve", post(approval::approve))
        .route("/alerts", get(alerts::list))
        .route("/alerts/{seq}", get(alerts::show))
        .route("/alerts/{seq}/acknowledge", post(alerts::acknowledge))
        .route("/alerts/{seq}/suppress", post(alerts::suppress))
        .route("/audit", get(audit::page))
        .route("/matrix", get(matrix::page))
        .route("/gateways", get(gateways::page))
        .route("/assets/htmx.min.js", get(assets::htmx))
        .route("/assets/console.css", get(assets::css))
        .route(
            "/import",
            get(import::form)
                .post(import::upload)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::import::MAX_FILE_BYTES + (64 << 10),
                )),
        )
        .route(
            "/import/confirm",
            post(import::confirm).layer(axum::extract::DefaultBodyLimit::max(
                crate::import::MAX_FILE_BYTES * 2,
            )),
        )
        .route("/changes/{id}/withdraw", post(approval::withdraw))
        .route("/changes/{id}/reject", post(approval::reject))
        .fallback(page::not_found)
        .layer(axum::middleware::map_response(headers::secure))
        .with_state(console)
}
