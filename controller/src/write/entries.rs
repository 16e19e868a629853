//! The audit entries of a write: one per change (what it was before and after), chained by
//! hash after the store's last entry; the generations the write made go in the last one.

use serde_json::{Value, json};
use wardgate_analysis::baseline::lifecycle::Action;

use crate::{
    audit::{AuditEntry, enforcement::Enforcement},
    error::{Error, Result},
    store::{Applied, Change},
};

/// One change, worded for its entry.
pub(super) struct Described {
    action: String,
    target: String,
    diff: Value,
}

impl Described {
    /// Records that the writer accepted `impact` (the availability warning's summary).
    pub(super) fn note_impact(&mut self, impact: Value) {
        self.diff["impact_accepted"] = impact;
    }
}

fn diff(before: Value, after: Value) -> Value {
    json!({"before": before, "after": after})
}

/// `change` (as stored: a device upsert carries its id) and what the store found before it;
/// a store that answers a change with another kind's before is an internal error.
pub(super) fn describe(change: &Change, applied: Applied) -> Result<Described> {
    let mismatch = || {
        Error::Internal(format!(
            "the store answered {applied:?} to a change of kind {:?}",
            std::mem::discriminant(change)
        ))
    };
    let device_before = match &applied {
        Applied::Device(d) => d.as_ref(),
        _ if matches!(
            change,
            Change::UpsertDevice(_)
                | Change::AssignProfile { .. }
                | Change::SetMode { .. }
                | Change::SetLocation { .. }
        ) =>
        {
            return Err(mismatch());
        }
        _ => None,
    };
    let (action, target, diff) = match change {
        Change::UpsertDevice(d) => (
            "upsert_device",
            d.name.clone(),
            diff(json!(device_before), json!(d)),
        ),
        Change::AssignProfile { device, profile } => (
            "assign_profile",
            device.clone(),
            diff(
                json!({"profile": device_before.map(|d| &d.profile)}),
                json!({"profile": profile}),
            ),
        ),
        Change::SetMode { device, mode } => (
            "set_mode",
            device.clone(),
            diff(
                json!({"mode": device_before.map(|d| d.mode)}),
                json!({"mode": mode}),
            ),
        ),
        Change::SetLocation { device, location } => (
            "set_location",
            device.clone(),
            diff(
                json!({"location": device_before.map(|d| &d.location)}),
                json!({"location": location}),
            ),
        ),
        Change::UpsertProfile { name, yaml } => {
            let (before, version) = match &applied {
                Applied::Profile { before, version } => (
                    before
                        .as_ref()
                        .map(|p| json!({"version": p.version, "yaml": p.yaml})),
                    *version,
                ),
                _ => return Err(mismatch()),
            };
            (
                "upsert_profile",
                name.clone(),
                diff(json!(before), json!({"version": version, "yaml": yaml})),
            )
        }
        Change::UpsertGroup { name, cidrs } => {
            let before = match &applied {
                Applied::Group(b) => json!(b),
                _ => return Err(mismatch()),
            };
            ("upsert_group", name.clone(), diff(before, json!(cidrs)))
        }
        Change::UpsertGateway(g) => (
            "upsert_gateway",
            g.name.clone(),
            diff(
                Value::Null,
                json!({"interfaces": g.interfaces, "location": g.location}),
            ),
        ),
        Change::SetBaseline { device, action, .. } => {
            let verb = match action {
                Action::Freeze => "baseline_freeze",
                Action::Approve => "baseline_approve",
                Action::Relearn { .. } => "baseline_relearn",
            };
            let d = match &applied {
                Applied::Baseline {
                    before,
                    after,
                    cleared,
                } => diff(
                    json!(before),
                    json!({"lifecycle": after, "flow_rows_cleared": cleared}),
                ),
                _ => return Err(mismatch()),
            };
            (verb, device.clone(), d)
        }
        Change::SuppressAlerts {
            device,
            detector,
            peer,
            ..
        } => (
            "suppress_alerts",
            device.clone(),
            diff(Value::Null, json!({"detector": detector, "peer": peer})),
        ),
        Change::RequestQuarantine {
            device,
            by,
            minutes,
            ..
        } => (
            "quarantine_requested",
            device.clone(),
            diff(
                Value::Null,
                json!({"requested_by": by, "for_minutes": minutes, "state": "pending"}),
            ),
        ),
        Change::ApproveQuarantine {
            id,
            device,
            approver,
            ..
        } => (
            "quarantine_approved",
            device.clone(),
            diff(
                json!({"request": id, "state": "pending"}),
                json!({"request": id, "state": "approved", "approver": approver}),
            ),
        ),
        Change::QuarantineTimer {
            device,
            until_ms,
            restore_mode,
            set_by,
        } => (
            "quarantine_timer_set",
            device.clone(),
            diff(
                Value::Null,
                json!({"until_ms": until_ms, "then": restore_mode.as_str(), "set_by": set_by}),
            ),
        ),
        Change::ClearQuarantineTimer { device } => (
            "quarantine_timer_cleared",
            device.clone(),
            diff(json!({"timer": true}), Value::Null),
        ),
        Change::Refused {
            action,
            target,
            why,
        } => (
            "refused",
            target.clone(),
            diff(Value::Null, json!({"attempted": action, "refused": why})),
        ),
        Change::UnsuppressAlerts {
            device,
            detector,
            peer,
        } => (
            "unsuppress_alerts",
            device.clone(),
            diff(json!({"detector": detector, "peer": peer}), Value::Null),
        ),
        Change::IssueEnrollmentToken {
            gateway,
            token_hash,
            expires_ms,
        } => (
            "enrollment_token_issued",
            gateway.clone(),
            // A prefix of the hash names the token in later entries; the token is not stored.
            diff(
                Value::Null,
                json!({"token_sha256_prefix": &token_hash[..token_hash.len().min(12)], "expires_ms": expires_ms}),
            ),
        ),
        Change::Enroll {
            gateway,
            token_hash,
            cert,
            ..
        } => (
            "gateway_enrolled",
            gateway.clone(),
            diff(
                Value::Null,
                json!({"token_sha256_prefix": &token_hash[..token_hash.len().min(12)], "serial": cert.serial, "not_after_ms": cert.not_after_ms}),
            ),
        ),
        Change::RenewCertificate { gateway, cert } => (
            "certificate_renewed",
            gateway.clone(),
            diff(
                Value::Null,
                json!({"serial": cert.serial, "not_after_ms": cert.not_after_ms}),
            ),
        ),
        Change::RefuseCertificate { gateway, kind, why } => (
            match kind {
                crate::store::CertRequest::Enroll => "enrollment_refused",
                crate::store::CertRequest::Renew => "renewal_refused",
            },
            gateway.clone(),
            diff(Value::Null, json!({"refused": why})),
        ),
        Change::RevokeGateway { gateway } => (
            "gateway_revoked",
            gateway.clone(),
            diff(json!({"revoked": false}), json!({"revoked": true})),
        ),
        Change::SubmitChange(p) => (
            "submit_change",
            p.device.clone(),
            diff(
                Value::Null,
                json!({"profile": p.profile, "yaml": p.yaml, "proposer": p.proposer,
                       "state": "pending"}),
            ),
        ),
        Change::ApproveChange {
            id,
            device,
            proposer,
            approver,
            ..
        } => (
            "approve_change",
            device.clone(),
            diff(
                json!({"change": id, "state": "pending", "proposer": proposer}),
                json!({"change": id, "state": "approved", "proposer": proposer,
                       "approver": approver}),
            ),
        ),
        Change::CloseChange {
            id,
            device,
            proposer,
            by,
            closure,
            why,
            ..
        } => (
            match closure {
                crate::store::Closure::Withdrawn => "withdraw_change",
                crate::store::Closure::Rejected => "reject_change",
            },
            device.clone(),
            diff(
                json!({"change": id, "state": "pending", "proposer": proposer}),
                json!({"change": id, "state": closure.as_str(), "proposer": proposer,
                       "by": by, "why": why}),
            ),
        ),
        Change::ConsoleLogin {
            user,
            event,
            source,
            address,
            why,
        } => (
            event.action(),
            user.clone(),
            diff(
                Value::Null,
                json!({"source": source, "address": address, "why": why}),
            ),
        ),
        Change::RecordImport { source, fields } => (
            "import_devices",
            source.file.clone(),
            diff(
                Value::Null,
                json!({"format": source.format, "file": source.file, "sha256": source.sha256,
                       "devices": fields.len(),
                       "fields": fields.iter().map(|f| json!({"device": f.device, "set": f.fields}))
                           .collect::<Vec<_>>()}),
            ),
        ),
        Change::AcknowledgeAlerts { ids, .. } => (
            "acknowledge_alerts",
            ids.join(","),
            diff(
                json!({"acknowledged": false}),
                json!({"acknowledged": true}),
            ),
        ),
    };
    Ok(Described {
        action: action.to_string(),
        target,
        diff,
    })
}

/// The entries of `described`, chained after `(seq, hash)`, the store's last entry; the
/// generations (`enforced`) go in the last one.
pub(super) fn chain(
    (mut seq, mut prev_hash): (u64, String),
    described: Vec<Described>,
    enforced: Enforcement,
    actor: &str,
    reason: &str,
    unix_ms: i64,
) -> Vec<AuditEntry> {
    let last = described.len().saturating_sub(1);
    let mut out = Vec::with_capacity(described.len());
    for (i, mut d) in described.into_iter().enumerate() {
        if i == last && !enforced.is_empty() {
            d.diff["enforcement"] = json!(enforced);
        }
        seq += 1;
        let mut e = AuditEntry {
            seq,
            unix_ms,
            actor: actor.to_string(),
            action: d.action,
            target: d.target,
            // Stored as text and hashed as stored: the hash does not depend on how a later
            // serde_json would write the value.
            diff: d.diff.to_string(),
            reason: reason.to_string(),
            prev_hash,
            hash: String::new(),
        };
        e.hash = e.content_hash();
        prev_hash = e.hash.clone();
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{self, GENESIS, enforcement::GatewayChange};

    #[test]
    fn entries_chain_after_the_head_and_the_last_holds_the_generations() {
        let change = |name: &str| Change::UpsertGroup {
            name: name.into(),
            cidrs: vec!["198.51.100.0/24".into()],
        };
        let described = vec![
            describe(&change("a"), Applied::Group(None)).unwrap(),
            describe(
                &change("b"),
                Applied::Group(Some(vec!["203.0.113.0/24".into()])),
            )
            .unwrap(),
        ];
        let enforced = Enforcement::from([(
            "gw".to_string(),
            GatewayChange {
                generation: 3,
                ..GatewayChange::default()
            },
        )]);
        let first = chain(
            (0, GENESIS.to_string()),
            described,
            enforced,
            "user:sam",
            "INC-1",
            7,
        );
        assert_eq!(audit::verify(&first), Ok(2));
        assert_eq!(
            audit::enforcement::of_diff(&first[1].diff).unwrap()["gw"].generation,
            3
        );
        assert!(
            audit::enforcement::of_diff(&first[0].diff)
                .unwrap()
                .is_empty()
        );
        assert!(first[1].diff.contains(r#""before":["203.0.113.0/24"]"#));
        let next = chain(
            (2, first[1].hash.clone()),
            vec![describe(&change("c"), Applied::Group(None)).unwrap()],
            Enforcement::new(),
            "user:sam",
            "INC-2",
            8,
        );
        let all: Vec<_> = first.into_iter().chain(next).collect();
        assert_eq!(audit::verify(&all), Ok(3));
        assert!(describe(&change("d"), Applied::Recorded).is_err());
    }
}
