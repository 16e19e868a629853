//! The SOC's emergency quarantine (issue 24 point 6). At night the SOC sees an alert and no
//! engineer answers: it may quarantine the device itself where the controller allows it
//! (`--soc-quarantine direct`), for a bounded time, or else file a request an engineer
//! approves. Either way a reason is required, the write is audited under the SOC user's name,
//! and the sinks carry an `operator_quarantine` alert so the engineers learn of it. A timer
//! puts the device back in its mode before when the time is up, unless an engineer set its
//! mode since. The SOC may set no other mode; a refusal is audited.

use std::time::Duration;

use wardgate_analysis::{
    detect::{Finding, Matrix, Severity, Technique},
    flow::DeviceRef,
};
use wardgate_policy::Mode;
use wardgate_proto::v1 as pb;

use super::Ctx;
use crate::{
    audit::now_ms,
    auth::Identity,
    error::{Error, Result},
    store::{Change, DeviceRow, NewAlert},
    words,
};

/// What the SOC may do, from the controller's settings.
#[derive(Clone, Copy, Debug)]
pub struct SocQuarantine {
    /// Quarantine at once (else: a request an engineer approves).
    pub direct: bool,
    /// The longest a SOC quarantine lasts (and how long one lasts unless the SOC says less).
    pub max: Duration,
}

impl Default for SocQuarantine {
    fn default() -> Self {
        SocQuarantine {
            direct: false,
            max: Duration::from_secs(4 * 3600),
        }
    }
}

/// The detector name of the alert that tells the sinks.
pub const DETECTOR: &str = "operator_quarantine";

/// A SOC user's `SetMode`.
pub fn soc_set_mode(ctx: &Ctx, who: &Identity, r: pb::SetModeRequest) -> Result<pb::WriteResponse> {
    let actor = who.actor();
    let mode = r.mode_value().map_err(|e| Error::Invalid(e.to_string()))?;
    if mode != Mode::Quarantine {
        let why = format!(
            "the SOC may quarantine a device (an emergency quarantine), not set it to {mode}; an engineer sets other modes"
        );
        ctx.audit_refusal(&actor, "set_mode", &r.device, &why);
        return Err(Error::Denied(why));
    }
    let dev = device(ctx, &r.device)?;
    if dev.mode == Mode::Quarantine {
        return Err(Error::Precondition(format!(
            "{} is already quarantined",
            dev.name
        )));
    }
    let lasts = lasts(ctx.soc_quarantine.max, r.for_minutes);
    let minutes = lasts.as_secs().div_ceil(60).min(u64::from(u32::MAX)) as u32;
    if r.dry_run {
        return ctx.preview(&[Change::SetMode {
            device: dev.name.clone(),
            mode,
        }]);
    }
    if ctx.soc_quarantine.direct {
        let until_ms = now_ms() + lasts.as_millis() as i64;
        let mut w = ctx.write_all(
            &actor,
            &r.reason,
            vec![
                Change::SetMode {
                    device: dev.name.clone(),
                    mode: Mode::Quarantine,
                },
                Change::QuarantineTimer {
                    device: dev.name.clone(),
                    until_ms,
                    restore_mode: dev.mode,
                    set_by: actor.clone(),
                },
            ],
        )?;
        let when = words::when(until_ms, false);
        w.note = format!(
            "{} quarantined by the SOC until {when}; then it goes back to {} (an engineer may end or extend it with `wardctl mode`)",
            dev.name, dev.mode
        );
        notify(
            ctx,
            &dev,
            format!(
                "{actor} quarantined {} until {when}: {}",
                dev.name, r.reason
            ),
        );
        return Ok(w);
    }
    let at_ms = now_ms();
    let mut w = ctx.write(
        &actor,
        &r.reason,
        Change::RequestQuarantine {
            device: dev.name.clone(),
            reason: r.reason.clone(),
            by: actor.clone(),
            at_ms,
            minutes,
        },
    )?;
    let id = ctx
        .store
        .pending_quarantines()?
        .into_iter()
        .rev()
        .find(|q| q.device == dev.name && q.requested_by == actor && q.requested_ms == at_ms)
        .map(|q| q.id)
        .ok_or_else(|| Error::Internal("the quarantine request just stored is not there".into()))?;
    w.note = format!(
        "quarantine of {} requested (request {id}); this controller lets the SOC request it, an engineer approves: wardctl quarantine approve {id} --reason ...",
        dev.name
    );
    notify(
        ctx,
        &dev,
        format!(
            "{actor} asks to quarantine {} for {minutes} min (request {id}): {}",
            dev.name, r.reason
        ),
    );
    Ok(w)
}

/// An engineer's approval of request `id`: the device is quarantined for the minutes asked.
pub fn approve(ctx: &Ctx, who: &Identity, id: i64, reason: &str) -> Result<pb::WriteResponse> {
    let q = ctx
        .store
        .quarantine_request(id)?
        .ok_or_else(|| Error::NotFound {
            what: "quarantine request",
            name: id.to_string(),
        })?;
    let dev = device(ctx, &q.device)?;
    let actor = who.actor();
    let until_ms = now_ms() + lasts(ctx.soc_quarantine.max, q.minutes).as_millis() as i64;
    let mut w = ctx.write_all(
        &actor,
        reason,
        vec![
            Change::ApproveQuarantine {
                id,
                device: dev.name.clone(),
                approver: actor.clone(),
                at_ms: now_ms(),
            },
            Change::SetMode {
                device: dev.name.clone(),
                mode: Mode::Quarantine,
            },
            Change::QuarantineTimer {
                device: dev.name.clone(),
                until_ms,
                restore_mode: dev.mode,
                set_by: q.requested_by.clone(),
            },
        ],
    )?;
    let when = words::when(until_ms, false);
    w.note = format!(
        "{} quarantined until {when} (requested by {}, approved by {actor})",
        dev.name, q.requested_by
    );
    notify(
        ctx,
        &dev,
        format!(
            "{actor} approved {}'s request {id}: {} quarantined until {when}",
            q.requested_by, dev.name
        ),
    );
    Ok(w)
}

/// The timer of `device`, if a SOC quarantine of it is running: an engineer's mode change
/// ends it (the change is the engineer's decision now).
pub fn timer_change(ctx: &Ctx, device: &str) -> Result<Option<Change>> {
    Ok(ctx
        .store
        .due_quarantine_timers(i64::MAX)?
        .into_iter()
        .any(|t| t.device == device)
        .then(|| Change::ClearQuarantineTimer {
            device: device.to_string(),
        }))
}

/// Ends the SOC quarantines whose time is up: back to the mode before, audited as the
/// controller's, the sinks told. A device whose mode was set since only loses its timer.
pub fn expire(ctx: &Ctx) -> Result<usize> {
    let mut ended = 0;
    for t in ctx.store.due_quarantine_timers(now_ms())? {
        let Some(dev) = ctx.store.device(&t.device)? else {
            ctx.write(
                "controller",
                "the device of a SOC quarantine timer is gone",
                Change::ClearQuarantineTimer { device: t.device },
            )?;
            continue;
        };
        let clear = Change::ClearQuarantineTimer {
            device: dev.name.clone(),
        };
        if dev.mode != Mode::Quarantine {
            ctx.write("controller", "SOC quarantine timer: mode set since", clear)?;
            continue;
        }
        ctx.write_all(
            "controller",
            &format!(
                "SOC quarantine set by {} ended at {}",
                t.set_by,
                words::when(t.until_ms, true)
            ),
            vec![
                Change::SetMode {
                    device: dev.name.clone(),
                    mode: t.restore_mode,
                },
                clear,
            ],
        )?;
        notify(
            ctx,
            &dev,
            format!(
                "the SOC quarantine of {} (set by {}) ended: back to {}",
                dev.name, t.set_by, t.restore_mode
            ),
        );
        ended += 1;
    }
    Ok(ended)
}

/// Checks the timers every `every` until the process ends.
pub async fn expire_loop(ctx: Ctx, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let c = ctx.clone();
        match tokio::task::spawn_blocking(move || expire(&c)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(ended = n, "SOC quarantines ended"),
            Ok(Err(e)) => tracing::error!(error = %e, "ending SOC quarantines"),
            Err(e) => tracing::error!(error = %e, "the quarantine timer task"),
        }
    }
}

fn device(ctx: &Ctx, name: &str) -> Result<DeviceRow> {
    ctx.store.device(name)?.ok_or_else(|| Error::NotFound {
        what: "device",
        name: name.to_string(),
    })
}

/// How long a SOC quarantine lasts: the minutes asked, at most the maximum (0: the maximum).
fn lasts(max: Duration, asked_minutes: u32) -> Duration {
    match asked_minutes {
        0 => max,
        m => Duration::from_secs(u64::from(m) * 60).min(max),
    }
}

/// Tells the SOC sinks (and `alerts tail`) through the alert store: engineers who watch the
/// sinks learn of a quarantine they did not make. A failure is logged, not the write's.
fn notify(ctx: &Ctx, dev: &DeviceRow, summary: String) {
    let now = now_ms();
    let now_ns = u64::try_from(now).unwrap_or_default() * 1_000_000;
    let device = DeviceRef {
        name: dev.name.clone(),
        id: Some(dev.id),
        mac: None,
    };
    let mut f = Finding::new(
        DETECTOR,
        &device,
        now_ns,
        Severity::High,
        1.0,
        Technique::new("", "", Matrix::Ics),
    );
    f.id = format!("{DETECTOR}-{}-{now}", dev.name);
    f.gateway = Some(dev.gateway.clone());
    f.summary = summary;
    f.action = format!("wardctl devices show {}", dev.name);
    let body = match serde_json::to_string(&f) {
        Ok(b) => b,
        Err(e) => return tracing::error!(error = %e, "operator quarantine alert"),
    };
    let alert = NewAlert {
        id: f.id.clone(),
        device: dev.name.clone(),
        severity: Severity::High.rank(),
        body,
        detector: DETECTOR.into(),
        peer: String::new(),
        count: 1,
        last_seen_ns: now_ns,
    };
    match ctx.store.insert_alerts(&dev.gateway, &[alert]) {
        Ok(_) => ctx.push.alerts_stored(),
        Err(e) => tracing::error!(error = %e, device = dev.name, "operator quarantine alert"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soc_quarantine_lasts_what_was_asked_within_the_maximum() {
        let max = Duration::from_secs(4 * 3600);
        assert_eq!(lasts(max, 0), max);
        assert_eq!(lasts(max, 30), Duration::from_secs(1800));
        assert_eq!(lasts(max, 10_000), max);
        assert_eq!(lasts(Duration::from_secs(5), 1), Duration::from_secs(5));
    }
}
