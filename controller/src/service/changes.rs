//! Four eyes on a device's profile (the engineer's loop): one engineer submits a candidate
//! profile for a device (stored pending, `Change::SubmitChange`, audited), another reviews it
//! (the rule diff against the device's current policy and the simulation over its recorded
//! flows, computed at review time) and approves it: one write holds the approval (proposer
//! and approver in its audit entry) and the change itself (the profile, then the device
//! moved to it), under the approver's name. The console's approval pages and wardctl's
//! `changes` subcommands (through `AdminService`) both call these functions.

use wardgate_proto::v1 as pb;

use super::{Ctx, learning};
use crate::{
    compile,
    error::{Error, Result},
    impact::Impact,
    preview::DeviceChange,
    store::{Change, PendingChangeRow},
};

/// The profile's name in `yaml` (it must parse).
pub fn profile_name(yaml: &str) -> Result<String> {
    wardgate_policy::parse_profile("candidate", yaml)
        .map(|p| p.name.value)
        .map_err(|e| Error::Invalid(format!("candidate profile: {e}")))
}

/// The changes that move `device` to the profile of `yaml`.
pub fn changes(device: &str, profile: &str, yaml: &str) -> Vec<Change> {
    vec![
        Change::UpsertProfile {
            name: profile.to_string(),
            yaml: yaml.to_string(),
        },
        Change::AssignProfile {
            device: device.to_string(),
            profile: profile.to_string(),
        },
    ]
}

/// What moving `device` to `yaml` would change, in words (a dry run: nothing stored).
pub fn diff(ctx: &Ctx, device: &str, profile: &str, yaml: &str) -> Result<Vec<DeviceChange>> {
    let p = crate::write::preview(
        ctx.store.as_ref(),
        &changes(device, profile, yaml),
        &compile::affected,
    )?;
    Ok(p.gateways
        .values()
        .flat_map(|(before, after)| {
            crate::preview::device_changes(before.as_ref(), after, &p.groups)
        })
        .filter(|c| c.device == device)
        .collect())
}

/// What moving `device` to `yaml` would cut off (the write service's own assessment,
/// `crate::impact`).
pub fn impact_of(ctx: &Ctx, device: &str, profile: &str, yaml: &str) -> Result<Impact> {
    super::impact::assess(ctx, &changes(device, profile, yaml))
}

/// `proposer` (a user name; `actor` in the audit trail) submits `yaml` for `device`. Refused
/// now, not at approval, if the candidate does not compile for the device's gateway, and if
/// it would cut off recent traffic over the availability share without `accept_impact` (the
/// approver's write checks it again).
pub fn submit(
    ctx: &Ctx,
    actor: &str,
    proposer: &str,
    device: &str,
    yaml: &str,
    reason: &str,
    accept_impact: bool,
) -> Result<pb::WriteResponse> {
    let profile = profile_name(yaml)?;
    diff(ctx, device, &profile, yaml)?;
    let impact = impact_of(ctx, device, &profile, yaml)?;
    if impact.over_threshold() && !accept_impact {
        return Err(Error::Precondition(impact.render()));
    }
    ctx.write(
        actor,
        reason,
        Change::SubmitChange(PendingChangeRow {
            id: 0,
            device: device.to_string(),
            profile,
            yaml: yaml.to_string(),
            reason: reason.trim().to_string(),
            proposer: proposer.to_string(),
            proposed_ms: crate::audit::now_ms(),
            approver: None,
            decided_ms: None,
            closed: None,
            closed_by: None,
            close_reason: String::new(),
        }),
    )
}

/// A pending change as a reviewer sees it: the change, its rule diff, its simulation and the
/// availability warning (computed now; none once decided or closed).
pub struct Review {
    pub change: PendingChangeRow,
    pub diff: Vec<DeviceChange>,
    pub simulation: pb::SimulateResponse,
    pub impact: Impact,
}

/// Change `id` for review; `None` if there is no such change.
pub fn review(ctx: &Ctx, id: i64) -> Result<Option<Review>> {
    let Some(p) = ctx.store.pending_change(id)? else {
        return Ok(None);
    };
    if !p.is_pending() {
        return Ok(Some(Review {
            change: p,
            diff: Vec::new(),
            simulation: pb::SimulateResponse::default(),
            impact: Impact::default(),
        }));
    }
    let diff = diff(ctx, &p.device, &p.profile, &p.yaml)?;
    let simulation = learning::simulate(
        ctx,
        &pb::SimulateRequest {
            device: p.device.clone(),
            yaml: p.yaml.clone(),
            since_s: 0,
        },
    )?;
    let impact = impact_of(ctx, &p.device, &p.profile, &p.yaml)?;
    Ok(Some(Review {
        change: p,
        diff,
        simulation,
        impact,
    }))
}

/// Pending change `id`; refused if there is none or it is decided or closed.
pub fn pending(ctx: &Ctx, id: i64) -> Result<PendingChangeRow> {
    match ctx.store.pending_change(id)? {
        Some(p) if p.is_pending() => Ok(p),
        Some(_) => Err(Error::Precondition(format!(
            "change {id} is already decided"
        ))),
        None => Err(Error::NotFound {
            what: "change",
            name: id.to_string(),
        }),
    }
}

/// `approver` (a user name; `actor` in the audit trail) approves pending change `id`, which
/// applies it. Refused (and audited) if `approver` proposed it; refused by the write service
/// over the availability share unless `accept_impact` (the accepted impact then goes in the
/// audit entry). `note` is added to the proposer's reason in the audit entry.
pub fn approve(
    ctx: &Ctx,
    actor: &str,
    approver: &str,
    id: i64,
    note: &str,
    accept_impact: bool,
) -> Result<pb::WriteResponse> {
    let p = pending(ctx, id)?;
    if p.proposer == approver {
        let why = format!(
            "change {id} was submitted by {approver}: another engineer approves it (four eyes)"
        );
        ctx.audit_refusal(actor, "approve_change", &p.device, &why);
        return Err(Error::Denied(why));
    }
    let mut all = vec![Change::ApproveChange {
        id,
        device: p.device.clone(),
        proposer: p.proposer.clone(),
        approver: approver.to_string(),
        at_ms: crate::audit::now_ms(),
    }];
    all.extend(changes(&p.device, &p.profile, &p.yaml));
    let mut reason = format!("change {id} by {}, approved: {}", p.proposer, p.reason);
    if !note.trim().is_empty() {
        reason = format!("{reason} ({})", note.trim());
    }
    ctx.write_accepting(actor, &reason, all, accept_impact)
}

/// A stored change as the API returns it.
pub fn change_pb(p: PendingChangeRow) -> pb::PendingChange {
    pb::PendingChange {
        id: p.id,
        device: p.device,
        profile: p.profile,
        yaml: p.yaml,
        reason: p.reason,
        proposer: p.proposer,
        proposed_unix_ms: p.proposed_ms,
        approver: p.approver.unwrap_or_default(),
        decided_unix_ms: p.decided_ms.unwrap_or_default(),
    }
}
