//! The site at a glance: device classes against site groups (`service::matrix` computes it;
//! this page only shows it). Every logged-in role may read it.

use std::sync::Arc;

use askama::Template;
use axum::{extract::State, http::StatusCode, response::Response};

use super::{
    Console,
    i18n::Lang,
    page::{self, Frame},
    session::LoggedIn,
};
use crate::{auth, service::matrix};

/// Devices named in a cell (the rest is counted).
const DEVICES_SHOWN: usize = 5;

/// A cell as the table shows it.
pub struct CellView {
    pub allowed: String,
    pub denied_flows: u64,
    pub device_count: usize,
    /// Name and link of the first devices.
    pub devices: Vec<(String, String)>,
}

pub struct RowView {
    pub profile: String,
    pub href: String,
    pub devices: usize,
    pub cells: Vec<CellView>,
}

#[derive(Template)]
#[template(path = "console/matrix.html")]
struct MatrixPage {
    f: Frame,
    groups: Vec<String>,
    rows: Vec<RowView>,
    days: u32,
}

pub async fn page(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
) -> Response {
    if auth::require(s.principal.identity(), auth::READERS).is_err() {
        return page::forbidden(lang, Some(&s));
    }
    let now = crate::audit::now_ms().max(0) as u64 * 1_000_000;
    let m = match tokio::task::block_in_place(|| matrix::matrix(&console.ctx, now)) {
        Ok(m) => m,
        Err(e) => return page::service_error(lang, &s, &e),
    };
    let rows = m
        .rows
        .into_iter()
        .map(|r| RowView {
            href: format!("/?profile={}", page::encode(&r.profile)),
            cells: r
                .cells
                .into_iter()
                .map(|c| CellView {
                    allowed: c.allowed.join(", "),
                    denied_flows: c.denied_flows,
                    device_count: c.denied_devices.len(),
                    devices: c
                        .denied_devices
                        .into_iter()
                        .take(DEVICES_SHOWN)
                        .map(|d| (format!("/devices/{}", page::encode(&d)), d))
                        .collect(),
                })
                .collect(),
            profile: r.profile,
            devices: r.devices,
        })
        .collect();
    page::render(
        StatusCode::OK,
        &MatrixPage {
            f: Frame::new(lang, Some(&s)),
            groups: m.groups,
            rows,
            days: matrix::OBSERVED_DAYS,
        },
    )
}
