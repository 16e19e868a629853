//! The audit trail, newest first, 50 a page, under the result of its verification: the same
//! check `wardgate-controller audit verify` and `AdminService.VerifyAudit` run
//! (`audit::verify_store`, the chain against the audit head file and the generations), read by
//! the roles the gRPC API lets read the trail.

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{Query, State},
    http::StatusCode,
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
    audit::{self, AuditEntry, Report},
    auth,
    error::Error,
};

/// One entry as the table shows it.
pub struct EntryView {
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub reason: String,
}

impl From<&AuditEntry> for EntryView {
    fn from(e: &AuditEntry) -> EntryView {
        EntryView {
            seq: e.seq,
            time: page::time_ms(e.unix_ms),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            reason: e.reason.clone(),
        }
    }
}

/// What verification found.
pub enum Verdict {
    /// Intact; the head file's report (`None`: a store without a head file, the chain alone).
    Intact(Option<Report>),
    Broken(String),
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    f: Frame,
    verdict: Verdict,
    total: u64,
    entries: Vec<EntryView>,
    page: u64,
    pages: u64,
    prev: Option<String>,
    next: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct Paging {
    #[serde(default)]
    page: Option<u64>,
}

/// The verification `audit verify` runs, and the trail it read.
fn verify(store: &dyn crate::store::Store) -> Result<(Verdict, Vec<AuditEntry>), Error> {
    let verdict = match store.audit_head_path() {
        Some(head) => match audit::verify_store(store, &head)? {
            Ok(r) => Verdict::Intact(Some(r)),
            Err(problem) => Verdict::Broken(problem),
        },
        // A store without a head file (in memory): the chain alone, as VerifyAudit does.
        None => match audit::verify(&store.audit()?) {
            Ok(_) => Verdict::Intact(None),
            Err(problem) => Verdict::Broken(problem),
        },
    };
    Ok((verdict, store.audit()?))
}

pub async fn page(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Query(paging): Query<Paging>,
) -> Response {
    if auth::require(s.principal.identity(), auth::READERS).is_err() {
        return page::forbidden(lang, Some(&s));
    }
    let (verdict, trail) = match tokio::task::block_in_place(|| verify(console.ctx.store.as_ref()))
    {
        Ok(x) => x,
        Err(e) => return page::service_error(lang, &s, &e),
    };
    let total = trail.len() as u64;
    let size = u64::from(PAGE_SIZE);
    let pages = page::page_count(total);
    let page_no = paging.page.unwrap_or(1).clamp(1, pages);
    let (prev, next) = page::prev_next(page_no, pages, |n| page::list_link("/audit", n, &[]));
    let entries = trail
        .iter()
        .rev()
        .skip(usize::try_from((page_no - 1) * size).unwrap_or(usize::MAX))
        .take(PAGE_SIZE as usize)
        .map(EntryView::from)
        .collect();
    page::render(
        StatusCode::OK,
        &AuditPage {
            f: Frame::new(lang, Some(&s)),
            verdict,
            total,
            entries,
            page: page_no,
            pages,
            prev,
            next,
        },
    )
}
