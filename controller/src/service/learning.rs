//! Learning at the controller: flow batches from agents into the store, and a device's
//! baseline, proposal and simulation from its stored aggregates. A shell: folding, baselines,
//! the lifecycle, proposals and simulation are the analysis crate's.

use wardgate_analysis::{
    FlowRecord,
    aggregate::FlowAggregate,
    baseline::{BaselineBuilder, Groups, Limits, lifecycle::Action},
    flow::DeviceRef,
    propose::{ProposeOptions, propose_weighted},
    simulate::{SimulateError, simulate_weighted},
};
use wardgate_proto::{
    flows::{MAX_FLOWS_PER_BATCH, records_from_pb},
    v1 as pb,
};

use super::Ctx;
use crate::{
    error::{Error, Result},
    store::{Change, DeviceRow},
};

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

/// Stores one batch of `gateway`'s flow records (all or nothing).
pub fn report_flows(ctx: &Ctx, gateway: &str, batch: pb::FlowBatch) -> Result<pb::FlowAck> {
    if !batch.gateway.is_empty() && batch.gateway != gateway {
        return Err(Error::Denied(format!(
            "flow batch names gateway {}, certificate is {gateway}",
            batch.gateway
        )));
    }
    if batch.records.len() > MAX_FLOWS_PER_BATCH {
        return Err(Error::Invalid(format!(
            "{} flow records in one batch, over {MAX_FLOWS_PER_BATCH}",
            batch.records.len()
        )));
    }
    let records = records_from_pb(batch.records).map_err(|e| Error::Invalid(e.to_string()))?;
    let stored = tokio::task::block_in_place(|| {
        ctx.store
            .insert_flows(gateway, &records, now_ns(), ctx.flow_limits)
    })?;
    if stored.unknown_device > 0 || stored.expired > 0 {
        tracing::debug!(
            gateway,
            unknown_device = stored.unknown_device,
            expired = stored.expired,
            "flow records not stored"
        );
    }
    Ok(pb::FlowAck {
        stored: stored.stored,
        unknown_device: stored.unknown_device,
        expired: stored.expired,
        over_cap: stored.over_cap,
    })
}

fn groups(groups: &std::collections::BTreeMap<String, Vec<String>>) -> Groups {
    Groups::from_pairs(
        groups
            .iter()
            .flat_map(|(g, cidrs)| cidrs.iter().map(move |c| (g.as_str(), c.as_str()))),
    )
}

pub(crate) fn device_ref(d: &DeviceRow) -> DeviceRef {
    DeviceRef {
        name: d.name.clone(),
        id: Some(d.id),
        mac: Some(wardgate_analysis::mac::Mac(d.mac.0)),
    }
}

fn need_device(ctx: &Ctx, name: &str) -> Result<DeviceRow> {
    if name.trim().is_empty() {
        return Err(Error::Invalid("device is required".into()));
    }
    ctx.store.device(name)?.ok_or_else(|| Error::NotFound {
        what: "device",
        name: name.to_string(),
    })
}

/// The device's lifecycle, its window now and the aggregates in it.
struct InWindow {
    lifecycle: wardgate_analysis::baseline::lifecycle::Lifecycle,
    changed_ms: i64,
    window: wardgate_analysis::baseline::Window,
    rows: Vec<FlowAggregate>,
}

fn in_window(ctx: &Ctx, device: &str) -> Result<InWindow> {
    let (lifecycle, changed_ms) =
        ctx.store
            .baseline_lifecycle(device)?
            .ok_or_else(|| Error::NotFound {
                what: "baseline of device",
                name: device.to_string(),
            })?;
    let window = lifecycle.window(now_ns());
    let rows = ctx
        .store
        .flow_aggregates(device, window.start_ns, window.end_ns)?;
    Ok(InWindow {
        lifecycle,
        changed_ms,
        window,
        rows,
    })
}

pub fn get_baseline(ctx: &Ctx, device: &str) -> Result<pb::BaselineResponse> {
    let d = need_device(ctx, device)?;
    let w = in_window(ctx, device)?;
    let mut b = BaselineBuilder::new(device_ref(&d), Limits::default());
    for a in &w.rows {
        b.add_aggregate(a);
    }
    let baseline = b.finish(&groups(&ctx.store.groups()?), w.window);
    Ok(pb::BaselineResponse {
        device: d.name,
        state: w.lifecycle.state.as_str().into(),
        window_start_unix_ms: ms(w.window.start_ns),
        window_end_unix_ms: ms(w.window.end_ns),
        window_days: w.lifecycle.window_days,
        baseline_json: serde_json::to_string(&baseline)
            .map_err(|e| Error::Internal(format!("baseline of {device}: {e}")))?,
        changed_unix_ms: w.changed_ms,
        over_cap: ctx
            .store
            .flow_overflow(device)?
            .into_iter()
            .map(|(day, flows)| pb::FlowOverflowDay {
                day_start_unix_ms: i64::from(day) * 86_400_000,
                flows,
            })
            .collect(),
        rows_per_day_cap: ctx.flow_limits.rows_per_device_day,
    })
}

/// The audited change for `action` ("freeze", "approve", "relearn").
pub fn baseline_change(ctx: &Ctx, r: &pb::SetBaselineStateRequest) -> Result<Change> {
    let action =
        Action::parse(&r.action, r.window_days).map_err(|e| Error::Invalid(e.to_string()))?;
    if r.window_days != 0 && !matches!(action, Action::Relearn { .. }) {
        return Err(Error::Invalid("window_days applies to relearn only".into()));
    }
    need_device(ctx, &r.device)?;
    Ok(Change::SetBaseline {
        device: r.device.clone(),
        action,
        now_ns: now_ns(),
    })
}

pub(crate) fn weighted(rows: &[FlowAggregate], d: &DeviceRef) -> Vec<(FlowRecord, u64)> {
    rows.iter().flat_map(|a| a.records(d)).collect()
}

pub(crate) fn direction_name(d: wardgate_analysis::FlowDirection) -> &'static str {
    match d {
        wardgate_analysis::FlowDirection::Opened => "from-device",
        wardgate_analysis::FlowDirection::Received => "to-device",
    }
}

/// A profile from the device's rows in its window: completed flows only unless
/// `opts.include_incomplete`; what was left out and what was widened come back with it.
pub fn propose(
    ctx: &Ctx,
    device: &str,
    opts: ProposeOptions,
) -> Result<pb::ProposeProfileResponse> {
    let d = need_device(ctx, device)?;
    let w = in_window(ctx, device)?;
    let records = weighted(&w.rows, &device_ref(&d));
    let flows: u64 = records.iter().map(|(_, n)| n).sum();
    if flows == 0 {
        return Err(Error::Precondition(format!(
            "no flows of `{device}` in its learning window"
        )));
    }
    let p = propose_weighted(
        device,
        records.iter().map(|(r, n)| (r, *n)),
        &groups(&ctx.store.groups()?),
        opts,
    );
    // A proposal always validates; one that does not is a bug, not the caller's error.
    let profile = wardgate_policy::parse_profile("proposal", &p.yaml)
        .map_err(|e| Error::Internal(format!("proposed profile does not parse: {e}")))?;
    let problems = wardgate_policy::validate_profile("proposal", &profile);
    if !problems.is_empty() {
        return Err(Error::Internal(format!(
            "proposed profile does not validate: {problems}"
        )));
    }
    Ok(pb::ProposeProfileResponse {
        profile: profile.name.value.clone(),
        flows: p.flows,
        left_out_flows: p.left_out_flows(),
        left_out: p
            .left_out
            .iter()
            .map(|l| pb::LeftOutFlow {
                direction: direction_name(l.direction).into(),
                peer: l.peer.to_string(),
                proto: l.proto.into(),
                summary: l.describe(),
                ports: l.ports.iter().map(|&p| p.into()).collect(),
                outcome: l.outcome.as_str().into(),
                flows: l.flows,
                last_seen_unix_ms: ms(l.last_seen_ns),
            })
            .collect(),
        widened: p.widened,
        yaml: p.yaml,
    })
}

pub fn simulate(ctx: &Ctx, r: &pb::SimulateRequest) -> Result<pb::SimulateResponse> {
    let d = need_device(ctx, &r.device)?;
    let profile = wardgate_policy::parse_profile("candidate", &r.yaml)
        .map_err(|e| Error::Invalid(format!("candidate profile: {e}")))?;
    let now = now_ns();
    let from = match r.since_s {
        0 => 0,
        s => now.saturating_sub(s.saturating_mul(1_000_000_000)),
    };
    let rows = ctx.store.flow_aggregates(&r.device, from, u64::MAX >> 1)?;
    let records = weighted(&rows, &device_ref(&d));
    let site_groups = ctx.store.groups()?;
    let site = groups_site(&site_groups);
    let pairs: Vec<(&FlowRecord, u64)> = records.iter().map(|(r, n)| (r, *n)).collect();
    // A candidate that does not validate or compile against the site is the caller's error.
    let blocked = simulate_weighted(&profile, Some(&site), &pairs)
        .map_err(|e: SimulateError| Error::Invalid(e.to_string()))?;
    let g = groups(&site_groups);
    Ok(pb::SimulateResponse {
        flows: pairs.iter().map(|(_, n)| n).sum(),
        blocked: blocked
            .into_iter()
            .map(|b| pb::BlockedFlow {
                direction: match b.direction {
                    wardgate_analysis::FlowDirection::Opened => "from-device",
                    wardgate_analysis::FlowDirection::Received => "to-device",
                }
                .into(),
                peer: b.peer.to_string(),
                peer_group: g.name(b.peer).unwrap_or_default().to_string(),
                proto: b.proto.into(),
                port: b.port.into(),
                flows: b.flows,
                bytes: b.bytes,
                last_seen_unix_ms: ms(b.last_seen_ns),
            })
            .collect(),
    })
}

/// The stored site groups as a site of groups only, for simulating a profile against them.
pub(super) fn groups_site(
    groups: &std::collections::BTreeMap<String, Vec<String>>,
) -> wardgate_policy::Site {
    wardgate_policy::Site {
        site: "controller".into(),
        groups: groups
            .iter()
            .map(|(g, cidrs)| {
                let located = cidrs
                    .iter()
                    .map(|c| wardgate_policy::span::Located::new(c.clone()))
                    .collect();
                (g.clone(), located)
            })
            .collect(),
        gateways: Vec::new(),
        devices: Vec::new(),
    }
}
