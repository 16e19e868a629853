//! The engineer's loop on a device, with four eyes (the service is `crate::service::changes`,
//! which wardctl's `changes` subcommands call too): propose a profile from the device's
//! baseline (the `ProposeProfile` service), see it as a rule diff against the device's current
//! policy (a dry run of the write, `write::preview`, in words by `crate::preview`), simulate
//! it over the recorded flows (the `Simulate` service), submit it for approval with a reason
//! (stored pending, `Change::SubmitChange`, audited), and have a second engineer approve it:
//! reviewing it (`GET /changes/ID`: the diff and the simulation again, as they are now), one
//! write holds the approval (proposer and approver in its audit entry) and the change
//! itself (the profile, then the device moved to it), under the approver's name.
//!
//! The approver must not be the proposer (refused here, and by the table's CHECK), and must
//! have logged in less than [`FRESH_LOGIN`] ago: an approval is a second person's decision
//! made now, not a session left open.

use std::{sync::Arc, time::Duration};

use askama::Template;
use axum::{
    Form,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use wardgate_proto::v1 as pb;

use super::{
    Console,
    i18n::Lang,
    page::{self, Frame},
    session::{LoggedIn, Session},
};
use crate::{
    auth::{self, Identity},
    error::Error,
    preview::DeviceChange,
    service::{
        changes::{self, diff, profile_name},
        learning,
    },
    store::{Change, Closure, PendingChangeRow},
};

/// An approval needs a login at most this old.
pub const FRESH_LOGIN: Duration = Duration::from_secs(15 * 60);

#[derive(Template)]
#[template(path = "console/proposal.html")]
struct ProposalPage {
    f: Frame,
    device: String,
    /// `/devices/NAME`, percent-encoded.
    base: String,
    profile: String,
    yaml: String,
    /// Notes of the proposal (what it left out, rules wider than seen).
    notes: Vec<String>,
    changes: Vec<DeviceChange>,
    /// Flows replayed and the blocked ones in words, after a simulation.
    simulation: Option<(u64, Vec<String>)>,
    reason: String,
    /// The availability warning (`crate::impact`), and whether it needs a confirmation.
    impact: Vec<ImpactView>,
    impact_over: bool,
}

/// One class on one ward of the availability warning, as the pages show it.
struct ImpactView {
    class: String,
    ward: String,
    devices: usize,
    blocked: usize,
    over: bool,
    /// Device, gateway, its lost flows in words.
    cut: Vec<(String, String, Vec<String>)>,
}

fn impact_view(i: &crate::impact::Impact) -> Vec<ImpactView> {
    i.wards
        .iter()
        .map(|w| ImpactView {
            class: w.class.clone(),
            ward: w.ward.clone(),
            devices: w.devices,
            blocked: w.blocked.len(),
            over: w.over_threshold,
            cut: w
                .blocked
                .iter()
                .map(|(d, (g, lost))| {
                    let words = lost.iter().map(crate::impact::Lost::words).collect();
                    (d.clone(), g.clone(), words)
                })
                .collect(),
        })
        .collect()
}

/// A ticked confirmation checkbox.
fn ticked(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| !v.is_empty())
}

#[derive(Deserialize, Default)]
pub struct LoopForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    yaml: String,
    #[serde(default)]
    reason: String,
    /// The availability warning's confirmation checkbox.
    #[serde(default)]
    accept_impact: Option<String>,
}

/// The CSRF token, then the writer role: the one gate of every POST here.
fn writer(lang: Lang, s: &Session, csrf: &str) -> Result<Identity, Box<Response>> {
    if !s.csrf_ok(csrf) {
        tracing::warn!(
            user = s.principal.name,
            "console: POST without its CSRF token"
        );
        return Err(Box::new(page::forbidden(lang, Some(s))));
    }
    auth::require(s.principal.identity(), auth::WRITERS).map_err(|e| {
        tracing::warn!(user = s.principal.name, error = %e, "console: refused write");
        Box::new(page::forbidden(lang, Some(s)))
    })
}

fn blocked(b: &pb::BlockedFlow) -> String {
    let peer = if b.peer_group.is_empty() {
        b.peer.clone()
    } else {
        format!("{} ({})", b.peer_group, b.peer)
    };
    let proto = match b.proto {
        1 => "icmp".to_string(),
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        58 => "icmpv6".to_string(),
        n => format!("protocol {n}"),
    };
    format!(
        "{} {proto} {peer} port {}: {} flows",
        b.direction, b.port, b.flows
    )
}

/// A candidate profile as the proposal page shows it.
struct Candidate {
    yaml: String,
    /// The proposal's notes (none after the first page).
    notes: Vec<String>,
    /// Run the simulation too.
    simulate: bool,
    /// The reason typed so far.
    reason: String,
}

fn proposal_page(
    console: &Console,
    lang: Lang,
    s: &Session,
    device: &str,
    Candidate {
        yaml,
        notes,
        simulate,
        reason,
    }: Candidate,
) -> Response {
    let read = tokio::task::block_in_place(|| -> Result<_, Error> {
        let profile = profile_name(&yaml)?;
        let changes = diff(&console.ctx, device, &profile, &yaml)?;
        let simulation = if simulate {
            let out = learning::simulate(
                &console.ctx,
                &pb::SimulateRequest {
                    device: device.to_string(),
                    yaml: yaml.clone(),
                    since_s: 0,
                },
            )?;
            Some((out.flows, out.blocked.iter().map(blocked).collect()))
        } else {
            None
        };
        let impact = changes::impact_of(&console.ctx, device, &profile, &yaml)?;
        Ok((profile, changes, simulation, impact))
    });
    match read {
        Ok((profile, changes, simulation, impact)) => page::render(
            StatusCode::OK,
            &ProposalPage {
                f: Frame::new(lang, Some(s)),
                base: format!("/devices/{}", page::encode(device)),
                device: device.to_string(),
                profile,
                yaml,
                notes,
                changes,
                simulation,
                reason,
                impact_over: impact.over_threshold(),
                impact: impact_view(&impact),
            },
        ),
        Err(e) => page::service_error(lang, s, &e),
    }
}

/// `POST /devices/NAME/propose`: a profile from the baseline, and its diff.
pub async fn propose(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Path(name): Path<String>,
    Form(form): Form<LoopForm>,
) -> Response {
    if let Err(r) = writer(lang, &s, &form.csrf) {
        return *r;
    }
    let proposed =
        tokio::task::block_in_place(|| learning::propose(&console.ctx, &name, Default::default()));
    match proposed {
        Ok(p) => {
            let mut notes: Vec<String> = p.left_out.iter().map(|l| l.summary.clone()).collect();
            notes.extend(p.widened.iter().cloned());
            let candidate = Candidate {
                yaml: p.yaml,
                notes,
                simulate: false,
                reason: String::new(),
            };
            proposal_page(&console, lang, &s, &name, candidate)
        }
        Err(e) => page::service_error(lang, &s, &e),
    }
}

/// `POST /devices/NAME/simulate`: the candidate's diff and what it would block.
pub async fn simulate(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Path(name): Path<String>,
    Form(form): Form<LoopForm>,
) -> Response {
    if let Err(r) = writer(lang, &s, &form.csrf) {
        return *r;
    }
    let candidate = Candidate {
        yaml: form.yaml,
        notes: Vec::new(),
        simulate: true,
        reason: form.reason,
    };
    proposal_page(&console, lang, &s, &name, candidate)
}

/// `POST /devices/NAME/submit`: stored pending, with its reason, for another engineer.
pub async fn submit(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Path(name): Path<String>,
    Form(form): Form<LoopForm>,
) -> Response {
    let who = match writer(lang, &s, &form.csrf) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let written = tokio::task::block_in_place(|| -> Result<_, Error> {
        // Over the share, the proposer confirms too (the approver's write checks it again):
        // the page says which devices and flows.
        let profile = profile_name(&form.yaml)?;
        let impact = changes::impact_of(&console.ctx, &name, &profile, &form.yaml)?;
        if impact.over_threshold() && !ticked(&form.accept_impact) {
            return Ok(Err(impact.render()));
        }
        changes::submit(
            &console.ctx,
            &who.actor(),
            &s.principal.name,
            &name,
            &form.yaml,
            &form.reason,
            ticked(&form.accept_impact),
        )
        .map(Ok)
    });
    match written {
        Ok(Ok(w)) => Redirect::to(&format!(
            "/devices/{}?submitted={}",
            page::encode(&name),
            w.audit_seq
        ))
        .into_response(),
        Ok(Err(warning)) => page::error(
            lang,
            Some(&s),
            StatusCode::BAD_REQUEST,
            lang.messages().impact_needs_accept,
            &warning,
        ),
        Err(e) => page::service_error(lang, &s, &e),
    }
}

#[derive(Template)]
#[template(path = "console/change.html")]
struct ChangePage {
    f: Frame,
    p: PendingChangeRow,
    device_url: String,
    proposed: String,
    changes: Vec<DeviceChange>,
    flows: u64,
    blocked: Vec<String>,
    can_write: bool,
    /// The viewer proposed it.
    own: bool,
    /// The viewer's login is older than [`FRESH_LOGIN`].
    stale: bool,
    impact: Vec<ImpactView>,
    impact_over: bool,
}

/// Whether `s` logged in less than [`FRESH_LOGIN`] ago.
fn fresh(s: &Session) -> bool {
    let age = crate::audit::now_ms().saturating_sub(s.created_ms);
    u128::try_from(age).unwrap_or(u128::MAX) <= FRESH_LOGIN.as_millis()
}

/// `GET /changes/ID`: what approving would do (the rule diff and the simulation, computed
/// now), and the approve button for whoever may press it.
pub async fn review(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Path(id): Path<i64>,
) -> Response {
    if auth::require(s.principal.identity(), auth::READERS).is_err() {
        return page::forbidden(lang, Some(&s));
    }
    let read = tokio::task::block_in_place(|| changes::review(&console.ctx, id)).map(|r| {
        r.map(|r| {
            let blocked = r.simulation.blocked.iter().map(blocked).collect();
            (r.change, r.diff, r.simulation.flows, blocked, r.impact)
        })
    });
    let (p, changes, flows, blocked, impact) = match read {
        Ok(Some(r)) => r,
        Ok(None) => {
            let m = lang.messages();
            return page::error(
                lang,
                Some(&s),
                StatusCode::NOT_FOUND,
                m.not_found,
                &id.to_string(),
            );
        }
        Err(e) => return page::service_error(lang, &s, &e),
    };
    page::render(
        StatusCode::OK,
        &ChangePage {
            f: Frame::new(lang, Some(&s)),
            device_url: format!("/devices/{}", page::encode(&p.device)),
            proposed: page::time_ms(p.proposed_ms),
            own: p.proposer == s.principal.name,
            stale: !fresh(&s),
            can_write: auth::require(s.principal.identity(), auth::WRITERS).is_ok(),
            p,
            changes,
            flows,
            blocked,
            impact_over: impact.over_threshold(),
            impact: impact_view(&impact),
        },
    )
}

#[derive(Deserialize, Default)]
pub struct ApproveForm {
    #[serde(default)]
    csrf: String,
    /// The availability warning's confirmation checkbox.
    #[serde(default)]
    accept_impact: Option<String>,
}

/// Change `id` if it is still pending; a 404 page if it is not (decided, closed or unknown).
fn still_pending(
    console: &Console,
    lang: Lang,
    s: &Session,
    id: i64,
) -> Result<PendingChangeRow, Box<Response>> {
    match tokio::task::block_in_place(|| console.ctx.store.pending_change(id)) {
        Ok(Some(p)) if p.is_pending() => Ok(p),
        Ok(_) => Err(Box::new(page::error(
            lang,
            Some(s),
            StatusCode::NOT_FOUND,
            lang.messages().not_found,
            &id.to_string(),
        ))),
        Err(e) => Err(Box::new(page::service_error(lang, s, &e))),
    }
}

/// `POST /changes/ID/approve`: a second engineer, freshly logged in, applies it.
pub async fn approve(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Path(id): Path<i64>,
    Form(form): Form<ApproveForm>,
) -> Response {
    let who = match writer(lang, &s, &form.csrf) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let m = lang.messages();
    let p = match still_pending(&console, lang, &s, id) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if p.proposer == s.principal.name {
        tracing::warn!(
            user = s.principal.name,
            id,
            "console: approving one's own change"
        );
        return page::error(lang, Some(&s), StatusCode::FORBIDDEN, m.own_change, "");
    }
    if !fresh(&s) {
        return page::error(lang, Some(&s), StatusCode::FORBIDDEN, m.relogin_needed, "");
    }
    // The write service refuses it over the availability share unless the box is ticked, and
    // keeps the accepted impact in the audit entry.
    let accept = ticked(&form.accept_impact);
    let written = tokio::task::block_in_place(|| {
        changes::approve(
            &console.ctx,
            &who.actor(),
            &s.principal.name,
            id,
            "",
            accept,
        )
    });
    match written {
        Ok(w) => Redirect::to(&format!(
            "/devices/{}?approved={}",
            page::encode(&p.device),
            w.audit_seq
        ))
        .into_response(),
        Err(e) => page::service_error(lang, &s, &e),
    }
}

#[derive(Deserialize, Default)]
pub struct CloseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// `POST /changes/ID/withdraw` (the proposer) and `POST /changes/ID/reject` (another
/// engineer, with a reason): the change is closed unapplied, in one audited write; the store
/// refuses a withdrawal by anyone but the proposer and a rejection by the proposer.
async fn close(
    console: &Console,
    lang: Lang,
    s: &Session,
    id: i64,
    form: CloseForm,
    closure: Closure,
) -> Response {
    let who = match writer(lang, s, &form.csrf) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let m = lang.messages();
    let p = match still_pending(console, lang, s, id) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let own = p.proposer == s.principal.name;
    if own != (closure == Closure::Withdrawn) {
        tracing::warn!(
            user = s.principal.name,
            id,
            ?closure,
            "console: closing a change refused"
        );
        return page::error(lang, Some(s), StatusCode::FORBIDDEN, m.forbidden, "");
    }
    let why = form.reason.trim().to_string();
    // A withdrawal needs no reason of its own: the audit entry says who withdrew what.
    let reason = match closure {
        Closure::Withdrawn if why.is_empty() => format!("change {id} withdrawn by its proposer"),
        _ => why.clone(),
    };
    let change = Change::CloseChange {
        id,
        device: p.device.clone(),
        proposer: p.proposer.clone(),
        by: s.principal.name.clone(),
        closure,
        why,
        at_ms: crate::audit::now_ms(),
    };
    let written = tokio::task::block_in_place(|| console.ctx.write(&who.actor(), &reason, change));
    match written {
        Ok(w) => Redirect::to(&format!(
            "/devices/{}?{}={}",
            page::encode(&p.device),
            closure.as_str(),
            w.audit_seq
        ))
        .into_response(),
        Err(e) => page::service_error(lang, s, &e),
    }
}

/// `POST /changes/ID/withdraw`.
pub async fn withdraw(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Path(id): Path<i64>,
    Form(form): Form<CloseForm>,
) -> Response {
    close(&console, lang, &s, id, form, Closure::Withdrawn).await
}

/// `POST /changes/ID/reject`.
pub async fn reject(
    State(console): State<Arc<Console>>,
    lang: Lang,
    LoggedIn(s): LoggedIn,
    Path(id): Path<i64>,
    Form(form): Form<CloseForm>,
) -> Response {
    close(&console, lang, &s, id, form, Closure::Rejected).await
}
