//! The inventory: devices by class (profile), gateway, mode, baseline state and last seen,
//! searched and filtered by GET parameters (a plain form, so it works without JavaScript; htmx
//! swaps only the results), 50 a page, filtered, counted and paged in the store's query.

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::Deserialize;

use super::{
    Console, PAGE_SIZE,
    i18n::Lang,
    page::{self, Frame},
    session::LoggedIn,
};
use crate::{
    auth,
    store::{InventoryQuery, InventoryRow},
};

/// The filters, as the form sends them.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub profile: String,
    #[serde(default)]
    pub gateway: String,
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub baseline: String,
    #[serde(default)]
    pub page: Option<u64>,
}

impl Filters {
    /// The link to these filters at `page`.
    fn link(&self, page: u64) -> String {
        page::list_link(
            "/",
            page,
            &[
                ("q", &self.q),
                ("profile", &self.profile),
                ("gateway", &self.gateway),
                ("mode", &self.mode),
                ("baseline", &self.baseline),
            ],
        )
    }
}

/// One row as the table shows it.
pub struct Row {
    pub name: String,
    pub href: String,
    pub profile: String,
    pub gateway: String,
    pub mode: String,
    pub baseline: Option<String>,
    pub last_seen: Option<String>,
    pub location: String,
}

impl From<InventoryRow> for Row {
    fn from(r: InventoryRow) -> Row {
        Row {
            href: format!("/devices/{}", page::encode(&r.device.name)),
            name: r.device.name,
            profile: r.device.profile,
            gateway: r.device.gateway,
            mode: r.device.mode.to_string(),
            baseline: r.baseline,
            last_seen: r.last_seen_ns.map(page::time_ns),
            location: r.device.location,
        }
    }
}

#[derive(Template)]
#[template(path = "console/inventory.html")]
struct InventoryPage {
    f: Frame,
    filters: Filters,
    rows: Vec<Row>,
    total: u64,
    page: u64,
    pages: u64,
    prev: Option<String>,
    next: Option<String>,
    profiles: Vec<String>,
    gateways: Vec<String>,
    modes: [&'static str; 4],
    baselines: [&'static str; 4],
}

/// The results alone, for htmx (the same template's `results` block).
#[derive(Template)]
#[template(path = "console/inventory.html", block = "results")]
struct Results {
    f: Frame,
    rows: Vec<Row>,
    total: u64,
    page: u64,
    pages: u64,
    prev: Option<String>,
    next: Option<String>,
}

pub async fn page(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    if auth::require(s.principal.identity(), auth::READERS).is_err() {
        return page::forbidden(lang, Some(&s));
    }
    let mode = match filters.mode.as_str() {
        "" => None,
        m => match m.parse() {
            Ok(m) => Some(m),
            Err(e) => {
                return page::error(
                    lang,
                    Some(&s),
                    StatusCode::BAD_REQUEST,
                    lang.messages().bad_request,
                    &format!("{e}"),
                );
            }
        },
    };
    let page_no = filters.page.unwrap_or(1).max(1);
    let q = InventoryQuery {
        search: filters.q.clone(),
        profile: filters.profile.clone(),
        gateway: filters.gateway.clone(),
        mode,
        baseline: filters.baseline.clone(),
        offset: (page_no - 1).saturating_mul(u64::from(PAGE_SIZE)),
        limit: PAGE_SIZE,
    };
    let found = tokio::task::block_in_place(|| console.ctx.store.inventory(&q));
    let found = match found {
        Ok(f) => f,
        Err(e) => return page::service_error(lang, &s, &e),
    };
    let pages = page::page_count(found.total);
    let (prev, next) = page::prev_next(page_no, pages, |n| filters.link(n));
    let rows: Vec<Row> = found.rows.into_iter().map(Row::from).collect();
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
    page::render(
        StatusCode::OK,
        &InventoryPage {
            f,
            filters,
            rows,
            total: found.total,
            page: page_no,
            pages,
            prev,
            next,
            profiles: found.profiles,
            gateways: found.gateways,
            modes: ["learn", "monitor", "enforce", "quarantine"],
            baselines: ["learning", "frozen", "approved", "none"],
        },
    )
}
