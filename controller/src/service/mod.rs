//! The gRPC services, split by audience: agents, engineers (admin), the SOC (alerts).

pub mod admin;
pub mod agent;
pub mod alert_admission;
pub mod alerts;
pub mod changes;
pub mod device_flows;
pub mod enroll;
pub mod gateway_health;
pub mod impact;
pub mod import;
pub mod learning;
pub mod matrix;
pub mod quarantine;

use std::sync::Arc;

use wardgate_proto::v1::{DeviceChange, WriteResponse};

use crate::{
    compile,
    error::{Error, Result},
    metrics::{ControllerMetrics, WriteKind},
    push::{Published, Push},
    store::{Change, FlowLimits, Store},
    write,
};

/// Shared by every service.
#[derive(Clone)]
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub push: Arc<Push>,
    pub metrics: Arc<ControllerMetrics>,
    /// Retention and row cap of flow records.
    pub flow_limits: FlowLimits,
    /// Enrollment, renewal and revocation of gateway certificates.
    pub fleet: Arc<crate::fleet::Fleet>,
    /// What the SOC may do about quarantine (`quarantine.rs`).
    pub soc_quarantine: quarantine::SocQuarantine,
    /// When a change needs its availability impact accepted (`crate::impact`).
    pub availability: crate::impact::Availability,
    /// The audited writes waiting to be committed (several are committed together:
    /// `crate::write::group`).
    pub writes: Arc<write::group::Groups>,
}

impl Ctx {
    /// The caller must have one of `roles` to write; a refusal is audited (who tried what on
    /// which target) as well as answered.
    pub fn require_write<T>(
        &self,
        req: &tonic::Request<T>,
        roles: &[crate::auth::Role],
        action: &str,
        target: &str,
    ) -> Result<crate::auth::Identity> {
        self.check_write(crate::auth::identity(req)?, roles, action, target)
    }

    /// `id` must have one of `roles` to write; a refusal is audited as in
    /// [`Ctx::require_write`] (the console's actions check their logged-in user with it).
    pub fn check_write(
        &self,
        id: crate::auth::Identity,
        roles: &[crate::auth::Role],
        action: &str,
        target: &str,
    ) -> Result<crate::auth::Identity> {
        match crate::auth::require(id.clone(), roles) {
            Err(Error::Denied(why)) => {
                self.audit_refusal(&id.actor(), action, target, &why);
                Err(Error::Denied(why))
            }
            r => r,
        }
    }

    /// Records a refused write in the audit trail and the log (a failure to record is logged).
    pub fn audit_refusal(&self, actor: &str, action: &str, target: &str, why: &str) {
        tracing::warn!(actor, action, target, why, "write refused");
        let refused = Change::Refused {
            action: action.to_string(),
            target: target.to_string(),
            why: why.to_string(),
        };
        if let Err(e) = self.write(actor, "refused", refused) {
            tracing::error!(error = %e, actor, action, "recording a refused write");
        }
    }

    /// One audited write of one change (see [`Ctx::write_all`]).
    pub fn write(&self, actor: &str, reason: &str, change: Change) -> Result<WriteResponse> {
        self.write_all(actor, reason, vec![change])
    }

    /// [`Ctx::write_accepting`] without an accepted impact.
    pub fn write_all(
        &self,
        actor: &str,
        reason: &str,
        changes: Vec<Change>,
    ) -> Result<WriteResponse> {
        self.write_accepting(actor, reason, changes, false)
    }

    /// One audited write: a reason is required, the changes (one audit entry each) and their
    /// new generations (one per affected gateway) are stored atomically, and watching agents
    /// of the affected gateways are told at once. A change that would cut off traffic seen
    /// recently on more than the configured share of a class's devices on a ward is refused
    /// (FAILED_PRECONDITION, the warning in the message) unless `accept_impact`; accepted, the
    /// impact's summary goes in the audit entry.
    pub fn write_accepting(
        &self,
        actor: &str,
        reason: &str,
        changes: Vec<Change>,
        accept_impact: bool,
    ) -> Result<WriteResponse> {
        if reason.trim().is_empty() {
            return Err(Error::Invalid(
                "a reason or ticket id is required for every change".into(),
            ));
        }
        let store = self.store.clone();
        let actor = actor.to_string();
        let reason = reason.to_string();
        // SQLite work is short, but it is blocking: keep it off the async workers.
        let impact = tokio::task::block_in_place(|| impact::assess(self, &changes))?;
        let accepted = match (impact.over_threshold(), accept_impact) {
            (false, _) => None,
            (true, true) => Some(impact.summary()),
            (true, false) => {
                return Err(Error::Precondition(format!(
                    "availability warning: this change would block traffic seen in the last \
                     {} days on more than {}% of a class's devices on a ward:\n{}accept the \
                     impact to apply it anyway (wardctl --accept-impact)",
                    self.availability.window_days,
                    self.availability.max_blocked_share * 100.0,
                    impact.render()
                )));
            }
        };
        let out = tokio::task::block_in_place(|| {
            self.metrics.time_write(WriteKind::Change, || {
                let job = write::group::Job {
                    actor,
                    reason: reason.clone(),
                    changes,
                    accepted_impact: accepted,
                };
                self.writes.write(store.as_ref(), job, &compile::affected)
            })
        })?;
        // Each new generation is built into its bundle here, once, for all its watchers.
        for (gateway, state) in &out.states {
            self.push.generation(
                gateway,
                Arc::new(Published {
                    generation: state.generation,
                    content_hash: state.content_hash.clone(),
                    bundle: wardgate_proto::bundle::to_bundle(state, &reason),
                }),
            );
        }
        Ok(WriteResponse {
            audit_seq: out.audit_seq,
            generations: out.generations.into_iter().collect(),
            impact_over_threshold: impact.over_threshold(),
            impact: impact::to_pb(&impact),
            ..WriteResponse::default()
        })
    }
}

impl Ctx {
    /// [`Ctx::write_accepting`] when `dry_run` is false; else [`Ctx::preview`].
    pub fn write_or_preview(
        &self,
        actor: &str,
        reason: &str,
        changes: Vec<Change>,
        dry_run: bool,
        accept_impact: bool,
    ) -> Result<WriteResponse> {
        if dry_run {
            self.preview(&changes)
        } else {
            self.write_accepting(actor, reason, changes, accept_impact)
        }
    }

    /// What `changes` would change for each device, computed by the write's own steps in a
    /// transaction that is rolled back: no audit entry, no generation, nothing pushed.
    pub fn preview(&self, changes: &[Change]) -> Result<WriteResponse> {
        let store = self.store.clone();
        let p = tokio::task::block_in_place(|| {
            write::preview(store.as_ref(), changes, &compile::affected)
        })?;
        let mut preview = Vec::new();
        for (before, after) in p.gateways.values() {
            for c in crate::preview::device_changes(before.as_ref(), after, &p.groups) {
                let mut change = DeviceChange {
                    gateway: c.gateway,
                    device: c.device,
                    change: c.change.to_string(),
                    profile_before: c.profile_before,
                    profile_after: c.profile_after,
                    allowed_added: c.allowed_added,
                    allowed_removed: c.allowed_removed,
                    warning: c.warning,
                    ..DeviceChange::default()
                };
                change.set_modes(c.mode_before.parse().ok(), c.mode_after.parse().ok());
                preview.push(change);
            }
        }
        let impact = tokio::task::block_in_place(|| impact::assess(self, changes))?;
        Ok(WriteResponse {
            dry_run: true,
            preview,
            impact_over_threshold: impact.over_threshold(),
            impact: impact::to_pb(&impact),
            ..WriteResponse::default()
        })
    }
}

/// Severity order for filters and storage.
pub fn severity_rank(s: &str) -> Result<u8> {
    if s.is_empty() {
        return Ok(0); // no filter
    }
    s.parse::<wardgate_analysis::detect::Severity>()
        .map(|s| s.rank())
        .map_err(|e| Error::Invalid(e.to_string()))
}
