//! Reading datapath events from the ring buffer and naming what they are about, from the
//! generation that produced each event (it carries its number): an event read just after a
//! switch still names the device, rule and profile version it was about.

use std::{collections::VecDeque, sync::Arc};

use aya::maps::{MapData, RingBuf};
use tokio::io::Interest;
use tokio::{io::unix::AsyncFd, sync::watch};
use wardgate_policy::DesiredState;

use crate::{
    alerts::{self, AlertQueue},
    datapath::convert::{self, DatapathEvent},
};

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The last few applied generations, newest last, to name events by the generation that
/// produced them. Events are read within milliseconds of being made, so a handful is plenty.
#[derive(Debug, Default)]
pub struct Generations {
    recent: VecDeque<Arc<DesiredState>>,
}

impl Generations {
    pub const KEPT: usize = 8;

    /// Records an applied state. A state with the number of one already kept replaces it (a
    /// generation of another controller store reuses numbers; the newest is what runs).
    pub fn observe(&mut self, state: Arc<DesiredState>) {
        if self.recent.back().is_some_and(|b| Arc::ptr_eq(b, &state)) {
            return;
        }
        self.recent.retain(|s| s.generation != state.generation);
        self.recent.push_back(state);
        while self.recent.len() > Self::KEPT {
            self.recent.pop_front();
        }
    }

    /// The state of `generation`, if it is one of the last applied.
    pub fn get(&self, generation: u32) -> Option<&DesiredState> {
        self.recent
            .iter()
            .rev()
            .find(|s| s.generation == generation)
            .map(Arc::as_ref)
    }
}

/// At most this many events are read per wake-up; with more waiting the reader hands what it
/// has to the outbox and yields before it reads on, so a flood of events cannot hold a worker
/// thread (the sync task, the metrics endpoint, the flow reader share them).
pub const EVENTS_PER_WAKE: usize = 1024;

/// Reads events until the task is dropped, logging each with device, profile and rule names
/// from the generation that produced it, and adding alerts to `alerts` (the outbox the controller
/// sync sends from) when there is a controller, one batch per wake-up. Malformed records are
/// counted and skipped, never fatal; the reader never waits for the controller.
pub async fn read_events(
    ring: RingBuf<MapData>,
    state: watch::Receiver<Option<Arc<DesiredState>>>,
    alerts: Option<Arc<AlertQueue>>,
    metrics: crate::metrics::Live,
    claims: tokio::sync::mpsc::Sender<wardgate_analysis::detect::AddressClaim>,
) -> anyhow::Result<()> {
    // Alert ids: this reader's start time and a sequence number, unique per gateway.
    let started = unix_ms();
    let mut seq = 0u64;
    // Safety: the ring buffer owns its fd and outlives the registration (both live in `fd`).
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the event ring buffer: {e}"))?;
    let mut skipped = 0u64;
    let mut state = state;
    let mut generations = Generations::default();
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut batch = Vec::new();
        let mut read = 0;
        while read < EVENTS_PER_WAKE
            && let Some(item) = ring.next()
        {
            read += 1;
            match convert::event(&item) {
                Some(ev) => {
                    metrics.event(ev.kind);
                    if let Some(s) = state.borrow_and_update().clone() {
                        generations.observe(s);
                    }
                    let named = generations.get(ev.generation);
                    log_event(&ev, named);
                    let now_ns = unix_ms() as u64 * 1_000_000;
                    let mut detected = false;
                    if let Some(c) = crate::flows::claim_of(&ev, now_ns) {
                        if claims.try_send(c).is_ok() {
                            detected = claims_anothers_address(&ev, named);
                        } else {
                            tracing::warn!(
                                "address claim not handed to the detectors (queue full)"
                            );
                        }
                    }
                    // One alert per attack: an ARP claim of another device's address is raised
                    // by the spoof detector (which names whose address it is), not twice.
                    if alerts.is_none() || detected {
                        continue;
                    }
                    seq += 1;
                    let id = format!("{started}-{seq}");
                    batch.extend(
                        alerts::from_event(&ev, named, id, unix_ms())
                            .map(|f| wardgate_proto::v1::Alert::from(&f)),
                    );
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
        if read < EVENTS_PER_WAKE {
            guard.clear_ready();
        } else {
            // More may be waiting: the ring stays ready, read again after others had a turn.
            drop(guard);
            tokio::task::yield_now().await;
        }
    }
}

/// Whether an ARP claim event claims an address listed for another device (another MAC), in
/// the generation that produced it: the spoof detector raises every such claim.
fn claims_anothers_address(ev: &DatapathEvent, state: Option<&DesiredState>) -> bool {
    state.is_some_and(|s| {
        s.devices
            .iter()
            .any(|d| d.addrs.contains(&ev.src) && d.mac.0 != ev.src_mac)
    })
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
    let version = state
        .and_then(|s| s.policies.iter().find(|p| p.policy_id == ev.policy_id))
        .map_or(0, |p| p.profile_version);
    let rule = state
        .and_then(|s| s.rule(ev.rule_id))
        .map_or("-", |(_, r)| r.name.as_str());
    let reason = ev.reason.map_or("unknown", |r| r.name());
    // An application refusal: what the check read (both AE titles, or the MSH fields).
    let app = ev.app.as_ref().map_or(String::new(), |a| {
        format!(
            "{} refused={} fields={}",
            a.app,
            a.why,
            a.fields.join(" -> ")
        )
    });
    tracing::info!(
        target: "wardgate::event",
        kind = ev.kind.name(),
        reason,
        device,
        device_id = ev.device_id,
        profile,
        profile_version = version,
        rule,
        rule_id = ev.rule_id,
        generation = ev.generation,
        proto = ev.proto,
        from_device = ev.from_device,
        flow = %format_args!("{}:{} -> {}:{}", ev.src, ev.sport, ev.dst, ev.dport),
        app,
        "datapath event"
    );
}

#[cfg(test)]
mod tests {
    use wardgate_policy::desired::{
        DeviceEntry, Direction, MacAddr, Mode, PolicyEntry, PortRange, Proto, Rule,
    };

    use super::*;
    use crate::datapath::convert::EventKind;

    /// Generation `generation` of a one-device gateway: the pump (id 7) under profile version
    /// `version`, named `device`.
    fn state(generation: u32, version: u32, device: &str) -> Arc<DesiredState> {
        let rule = Rule {
            rule_id: 41,
            name: format!("dicom to pacs (v{version})"),
            direction: Direction::FromDevice,
            proto: Proto::Tcp,
            peers: vec!["198.51.100.10/32".parse().unwrap()],
            ports: Some(PortRange::single(104)),
            idle_timeout_s: 600,
            inspect: false,
            app: None,
        };
        let dev = DeviceEntry {
            device_id: 7,
            name: device.into(),
            addrs: vec!["192.0.2.10".parse().unwrap()],
            mac: MacAddr([2, 0, 0, 0, 0, 7]),
            policy_id: 3,
            mode: Mode::Enforce,
            max_flows: 0,
            fail_open: false,
            grace_s: wardgate_common::DEFAULT_GRACE_S,
        };
        let policy = PolicyEntry {
            policy_id: 3,
            profile: "infusion-pump".into(),
            profile_version: version,
            rules: vec![rule],
            sensitivity: Default::default(),
            detection: Default::default(),
        };
        Arc::new(wardgate_policy::lower::lower("gw", generation, vec![dev], vec![policy]).unwrap())
    }

    fn event(generation: u32) -> DatapathEvent {
        DatapathEvent {
            kind: EventKind::WouldDeny,
            reason: None,
            device_id: 7,
            policy_id: 3,
            rule_id: 41,
            generation,
            proto: 6,
            from_device: true,
            src: "192.0.2.10".parse().unwrap(),
            sport: 40000,
            dst: "198.51.100.10".parse().unwrap(),
            dport: 104,
            src_mac: [2, 0, 0, 0, 0, 7],
            app: None,
        }
    }

    fn named(g: &Generations, generation: u32) -> (String, String, u32) {
        let a = alerts::from_event(&event(generation), g.get(generation), "x".into(), 0).unwrap();
        (
            a.device.name,
            a.rule_name.unwrap_or_default(),
            a.profile_version.unwrap_or(0),
        )
    }

    #[test]
    fn events_are_named_from_the_generation_that_produced_them() {
        let mut g = Generations::default();
        g.observe(state(5, 1, "pump-3a-bed12"));
        // The profile moved to version 2 and the device was renamed; an event of generation 5
        // read after the switch still names what generation 5 enforced.
        g.observe(state(6, 2, "pump-3a-bed14"));
        assert_eq!(
            named(&g, 5),
            ("pump-3a-bed12".into(), "dicom to pacs (v1)".into(), 1)
        );
        assert_eq!(
            named(&g, 6),
            ("pump-3a-bed14".into(), "dicom to pacs (v2)".into(), 2)
        );
        // A generation no longer known names nothing rather than the wrong thing.
        assert_eq!(named(&g, 4), (String::new(), String::new(), 0));
    }

    #[test]
    fn an_application_refusal_becomes_an_alert_naming_both_ae_titles_and_the_class() {
        let mut g = Generations::default();
        g.observe(state(5, 1, "ct-3a"));
        let mut ev = event(5);
        ev.kind = EventKind::AppRefused;
        ev.reason = Some(wardgate_common::Reason::DropAppRefused);
        // `wg_payload` knows the device, not its policy: the class comes from the device.
        ev.policy_id = 0;
        ev.app = Some(crate::datapath::convert::AppRefusal {
            why: "calling_ae",
            app: "dicom",
            fields: vec!["WRONG".into(), "PACS".into()],
        });
        let f = alerts::from_event(&ev, g.get(5), "x".into(), 0).expect("an alert");
        assert_eq!(f.detector, "datapath_app_refused");
        assert_eq!(f.severity, wardgate_analysis::detect::Severity::High);
        assert_eq!(f.class.as_deref(), Some("infusion-pump"));
        assert_eq!(f.device.name, "ct-3a");
        assert_eq!(
            f.evidence.names,
            ["dicom WRONG -> PACS", "refused: calling_ae"]
        );
        assert!(f.summary.contains("dicom WRONG -> PACS"), "{}", f.summary);
        let alert = wardgate_proto::v1::Alert::from(&f);
        assert_eq!(alert.kind, "app_refused");
    }

    #[test]
    fn a_few_generations_are_kept_and_a_reused_number_is_replaced() {
        let mut g = Generations::default();
        for n in 1..=20 {
            g.observe(state(n, n, "pump"));
        }
        assert!(g.get(20 - Generations::KEPT as u32).is_none());
        assert_eq!(g.get(20).unwrap().policies[0].profile_version, 20);
        // Another store's generation 19: the newest of that number is what ran.
        g.observe(state(19, 99, "pump"));
        assert_eq!(g.get(19).unwrap().policies[0].profile_version, 99);
    }
}
