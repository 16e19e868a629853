//! Reading datapath events from the ring buffer and naming what they are about.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use tokio::io::Interest;
use tokio::{io::unix::AsyncFd, sync::watch};
use wardgate_policy::DesiredState;

use crate::{
    alerts::{self, AlertQueue},
    datapath::convert::{self, DatapathEvent},
};

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads events until the task is dropped, logging each with device, profile and rule names
/// from the current desired state, and adding alerts to `alerts` (the outbox the controller
/// sync sends from) when there is a controller, one batch per wake-up. Malformed records are
/// counted and skipped, never fatal; the reader never waits for the controller.
pub async fn read_events(
    ring: RingBuf<MapData>,
    state: watch::Receiver<Option<Arc<DesiredState>>>,
    alerts: Option<Arc<AlertQueue>>,
    metrics: crate::metrics::Live,
) -> anyhow::Result<()> {
    // Alert ids: this reader's start time and a sequence number, unique per gateway.
    let started = unix_ms();
    let mut seq = 0u64;
    // Safety: the ring buffer owns its fd and outlives the registration (both live in `fd`).
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the event ring buffer: {e}"))?;
    let mut skipped = 0u64;
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            match convert::event(&item) {
                Some(ev) => {
                    metrics.event(ev.kind);
                    let current = state.borrow().clone();
                    log_event(&ev, current.as_deref());
                    if alerts.is_none() {
                        continue;
                    }
                    seq += 1;
                    let id = format!("{started}-{seq}");
                    batch.extend(alerts::from_event(&ev, current.as_deref(), id, unix_ms()));
                }
                None => {
                    skipped += 1;
                    metrics.events_malformed.inc();
                    tracing::warn!(
                        skipped,
                        len = item.len(),
                        "skipping malformed datapath event"
                    );
                }
            }
        }
        if let Some(queue) = &alerts {
            queue.push_all(batch);
        }
        guard.clear_ready();
    }
}

pub fn log_event(ev: &DatapathEvent, state: Option<&DesiredState>) {
    let device = state
        .and_then(|s| s.device(ev.device_id))
        .map_or("-", |d| d.name.as_str());
    // The profile comes from the device's policy: a denied flow matched no rule.
    let profile = state
        .and_then(|s| {
            s.policies
                .iter()
                .find(|p| p.policy_id == ev.policy_id && ev.device_id != 0)
        })
        .map_or("-", |p| p.profile.as_str());
    let rule = state
        .and_then(|s| s.rule(ev.rule_id))
        .map_or("-", |(_, r)| r.name.as_str());
    let reason = ev.reason.map_or("unknown", |r| r.name());
    tracing::info!(
        target: "wardgate::event",
        kind = ev.kind.name(),
        reason,
        device,
        device_id = ev.device_id,
        profile,
        rule,
        rule_id = ev.rule_id,
        generation = ev.generation,
        proto = ev.proto,
        from_device = ev.from_device,
        flow = %format_args!("{}:{} -> {}:{}", ev.src, ev.sport, ev.dst, ev.dport),
        "datapath event"
    );
}
