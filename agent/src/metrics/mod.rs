//! Prometheus metrics of the agent, served on `GET /metrics` when the config has
//! `metrics: { listen: ADDR }`. Three sources, each read where it is cheap:
//!
//! - `pins`: the datapath's own counters (verdicts per reason, events lost, active generation,
//!   heartbeat, watchdog), read from the pinned maps at every scrape (a few dozen lookups);
//! - `fill`: map fill levels (conntrack entries among them) and devices at their flow cap,
//!   which need a walk over up to 262,144 keys: sampled in the background every
//!   `map_fill_every_s` and served from the last sample;
//! - `Live`: what only the agent process sees (events read from the ring, the controller
//!   link, the alert outbox, flow records reported), updated as it happens, and its resources
//!   against their limits (`limits::Usage`, sampled every 10 s);
//! - the last applied policy (the map writer's watch channel): the controller store epoch it
//!   came from, at every scrape.
//!
//! Not here yet, on purpose (no zero-valued series for features that do not exist):
//! - flow records (`wardgate_agent_flows_recorded_total`, `..._flows_lost_total`): with the
//!   flow recorder, as `Live` counters;
//! - detector counts (`wardgate_agent_detections_total{detector}`): with detection, as `Live`
//!   counters.

mod fill;
mod pins;

use std::{path::PathBuf, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::Counter, family::Family, gauge::ConstGauge, gauge::Gauge},
    registry::Registry,
};
use tokio::sync::watch;
use wardgate_common::EVENT_KINDS;
use wardgate_policy::DesiredState;

use crate::{
    alerts::{AlertQueue, SEVERITIES},
    config::AgentConfig,
    datapath::convert::EventKind,
};

pub use fill::{Fill, MapFill, Sample, sample};

/// Label set of one label.
type Label = [(&'static str, &'static str); 1];

/// The label of a controller's series: its configured address.
pub type AddressLabel = [(&'static str, String); 1];

fn address_label(address: &str) -> AddressLabel {
    [("address", address.to_string())]
}

/// What the agent process counts itself. Cheap to clone (every metric is an `Arc` inside).
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// Events read from the datapath's ring buffer, by kind.
    pub events: Family<Label, Counter>,
    /// Ring-buffer records that did not decode as an event.
    pub events_malformed: Counter,
    /// Per configured controller address: 1 while the agent has a registered session with
    /// it (at most one at a time), else 0.
    pub controller_connected: Family<AddressLabel, Gauge>,
    /// Sessions with the controller that got as far as registering.
    pub controller_connects: Counter,
    /// The newest generation the controller offered (0 before the first).
    pub controller_generation: Gauge,
    /// Flow records the controller acknowledged (`flow_report`).
    pub flow_records_sent: Counter,
    /// Flow records dropped before the controller had them, by reason (`queue_full`,
    /// `refused`).
    pub flow_records_dropped: Family<Label, Counter>,
    /// When the gateway's certificate expires (seconds since the Unix epoch; 0 before it is
    /// read).
    pub cert_expiry: Gauge,
    /// Certificate renewals that succeeded / attempts that failed (each retried).
    pub cert_renewals: Counter,
    pub cert_renewal_failures: Counter,
    /// Usage and limit of each bounded resource (`limits::Resource`), in bytes or entries.
    pub usage_bytes: Family<Label, Gauge>,
    pub limit_bytes: Family<Label, Gauge>,
    pub usage_entries: Family<Label, Gauge>,
    pub limit_entries: Family<Label, Gauge>,
    /// File writes not done (over their budget, or failed), by file (`state`, `outbox`).
    pub disk_writes_refused: Family<Label, Counter>,
    /// Flows on grace (do-not-disrupt), all devices, at the last recount of conntrack.
    pub flows_on_grace: Gauge,
    /// DNS messages of devices the name watcher read but could not hand to the detectors
    /// (their queue full: a flood faster than the flow reader takes them).
    pub dns_messages_dropped: Counter,
}

impl Live {
    /// Counts one event read from the ring.
    pub fn event(&self, kind: EventKind) {
        self.events.get_or_create(&[("kind", kind.name())]).inc();
    }

    /// The controller link is registered with `current` (None: with none), one of
    /// `addresses`; every configured address keeps a series.
    pub fn controller_at(&self, addresses: &[String], current: Option<&str>) {
        for a in addresses {
            let on = current == Some(a.as_str());
            self.controller_connected
                .get_or_create(&address_label(a))
                .set(i64::from(on));
        }
    }

    /// 1 while the link is registered with the controller at `address`.
    pub fn controller_connected_to(&self, address: &str) -> i64 {
        self.controller_connected
            .get(&address_label(address))
            .map_or(0, |g| g.get())
    }

    /// Counts `n` flow records dropped for `reason`.
    pub fn flow_records_dropped(&self, reason: &'static str, n: u64) {
        self.flow_records_dropped
            .get_or_create(&[("reason", reason)])
            .inc_by(n);
    }

    /// Flow records dropped for `reason` so far.
    pub fn flow_records_dropped_of(&self, reason: &'static str) -> u64 {
        self.flow_records_dropped
            .get_or_create(&[("reason", reason)])
            .get()
    }

    /// Sets a resource's usage and limit gauges.
    pub fn resource(&self, r: crate::limits::Resource, usage: u64, limit: u64) {
        let (u, l) = if r.bytes() {
            (&self.usage_bytes, &self.limit_bytes)
        } else {
            (&self.usage_entries, &self.limit_entries)
        };
        let label = [("resource", r.name())];
        u.get_or_create(&label)
            .set(i64::try_from(usage).unwrap_or(i64::MAX));
        l.get_or_create(&label)
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// Counts `n` writes of `file` not done.
    pub fn disk_write_refused(&self, file: &'static str, n: u64) {
        self.disk_writes_refused
            .get_or_create(&[("file", file)])
            .inc_by(n);
    }

    fn register(&self, r: &mut Registry) {
        // Every known kind starts at 0, so a rate over the first event is not lost.
        for kind in 0..EVENT_KINDS {
            let kind = EventKind::from_raw(kind);
            if !matches!(kind, EventKind::Other(_)) {
                let _ = self.events.get_or_create(&[("kind", kind.name())]);
            }
        }
        r.register(
            "wardgate_agent_events",
            "Datapath events read from the ring buffer, by kind",
            self.events.clone(),
        );
        r.register(
            "wardgate_agent_events_malformed",
            "Ring-buffer records that were not an event (skipped)",
            self.events_malformed.clone(),
        );
        r.register(
            "wardgate_agent_controller_connected",
            "1 while the agent is registered with the controller at `address` (one per configured address)",
            self.controller_connected.clone(),
        );
        r.register(
            "wardgate_agent_controller_connects",
            "Sessions with the controller that registered",
            self.controller_connects.clone(),
        );
        r.register(
            "wardgate_agent_cert_expiry_timestamp_seconds",
            "When the gateway's certificate expires (Unix time); alert on it minus time()",
            self.cert_expiry.clone(),
        );
        r.register(
            "wardgate_agent_cert_renewals",
            "Certificate renewals through the controller",
            self.cert_renewals.clone(),
        );
        r.register(
            "wardgate_agent_cert_renewal_failures",
            "Certificate renewal attempts that failed (retried with backoff)",
            self.cert_renewal_failures.clone(),
        );
        r.register(
            "wardgate_agent_dns_messages_dropped",
            "DNS messages of devices not handed to the detectors (their queue was full)",
            self.dns_messages_dropped.clone(),
        );
        r.register(
            "wardgate_agent_flows_on_grace",
            "Established flows a tightening generation denies, kept going for their grace \
             (do-not-disrupt), at the last conntrack recount (every 30 s)",
            self.flows_on_grace.clone(),
        );
        r.register(
            "wardgate_agent_controller_generation",
            "Newest policy generation the controller offered",
            self.controller_generation.clone(),
        );
        for reason in [
            crate::flow_report::DROP_QUEUE_FULL,
            crate::flow_report::DROP_REFUSED,
        ] {
            let _ = self
                .flow_records_dropped
                .get_or_create(&[("reason", reason)]);
        }
        r.register(
            "wardgate_agent_flow_records_sent",
            "Flow records the controller acknowledged",
            self.flow_records_sent.clone(),
        );
        r.register(
            "wardgate_agent_flow_records_dropped",
            "Flow records dropped before the controller had them, by reason",
            self.flow_records_dropped.clone(),
        );
        r.register(
            "wardgate_agent_resource_usage_bytes",
            "Usage of a bounded resource counted in bytes (sampled every 10 s)",
            self.usage_bytes.clone(),
        );
        r.register(
            "wardgate_agent_resource_limit_bytes",
            "Limit of a bounded resource counted in bytes",
            self.limit_bytes.clone(),
        );
        r.register(
            "wardgate_agent_resource_usage_entries",
            "Usage of a bounded resource counted in entries (sampled every 10 s)",
            self.usage_entries.clone(),
        );
        r.register(
            "wardgate_agent_resource_limit_entries",
            "Limit of a bounded resource counted in entries",
            self.limit_entries.clone(),
        );
        for file in [crate::limits::FILE_STATE, crate::limits::FILE_OUTBOX] {
            let _ = self.disk_writes_refused.get_or_create(&[("file", file)]);
        }
        r.register(
            "wardgate_agent_disk_writes_refused",
            "File writes not done (over the file's budget, or failed), by file; enforcement goes on",
            self.disk_writes_refused.clone(),
        );
    }
}

/// The alert outbox at scrape time: pending alerts and drops past the cap.
#[derive(Debug)]
struct OutboxCollector(Arc<AlertQueue>);

impl Collector for OutboxCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (depth, dropped) = {
            let outbox = self.0.lock();
            (outbox.len(), outbox.dropped().clone())
        };
        ConstGauge::new(depth as i64).encode(encoder.encode_descriptor(
            "wardgate_agent_outbox_alerts",
            "Alerts waiting for the controller's acknowledgement.",
            None,
            MetricType::Gauge,
        )?)?;
        let mut m = encoder.encode_descriptor(
            "wardgate_agent_outbox_dropped_alerts",
            "Alerts dropped past the outbox limits (lowest severity first), by kind and severity.",
            None,
            MetricType::Counter,
        )?;
        // A series per kind and severity that lost an alert since the start.
        for ((kind, rank), n) in &dropped.by_kind {
            prometheus_client::metrics::counter::ConstCounter::new(*n).encode(
                m.encode_family(&[("kind", kind.as_str()), ("severity", SEVERITIES[*rank])])?,
            )?;
        }
        Ok(())
    }
}

/// The process's log output and the lines its budget kept out, at scrape time.
#[derive(Debug)]
struct LogCollector;

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::counter::ConstCounter;
        let budget = wardgate_daemon::log::budget();
        ConstCounter::new(budget.written()).encode(encoder.encode_descriptor(
            "wardgate_agent_log_bytes",
            "Bytes of log lines written (stderr, the journal under systemd).",
            None,
            MetricType::Counter,
        )?)?;
        let mut m = encoder.encode_descriptor(
            "wardgate_agent_log_lines_suppressed",
            "Log lines not written, over limits.log_bytes_per_minute, by level.",
            None,
            MetricType::Counter,
        )?;
        for level in wardgate_daemon::log::LEVELS {
            let name = level.as_str().to_ascii_lowercase();
            ConstCounter::new(budget.suppressed(level))
                .encode(m.encode_family(&[("level", name.as_str())])?)?;
        }
        Ok(())
    }
}

/// The last policy the map writer applied, as the event reader sees it.
pub type Applied = watch::Receiver<Option<Arc<DesiredState>>>;

/// The controller store epoch of the last applied policy, at scrape time. The epoch is a
/// random hex id, not a number, so it is a label on an info-style gauge of 1 (left out before
/// the first policy, and for one compiled offline, which has no epoch).
#[derive(Debug)]
struct EpochCollector(Applied);

impl Collector for EpochCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((generation, epoch)) = self
            .0
            .borrow()
            .as_deref()
            .filter(|s| !s.epoch.is_empty())
            .map(|s| (s.generation.to_string(), s.epoch.clone()))
        else {
            return Ok(());
        };
        let mut m = encoder.encode_descriptor(
            "wardgate_agent_policy_epoch_info",
            "Controller store epoch of the last applied policy generation (value 1).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1).encode(m.encode_family(&[
            ("epoch", epoch.as_str()),
            ("generation", generation.as_str()),
        ])?)
    }
}

/// The registry of everything above for an agent with `pin_root`; `outbox` when there is a
/// controller; `fill` the map-fill samples; `applied` the map writer's last applied policy.
pub fn registry(
    pin_root: PathBuf,
    live: &Live,
    outbox: Option<Arc<AlertQueue>>,
    fill: Arc<Fill>,
    applied: Applied,
) -> Registry {
    let mut r = Registry::default();
    live.register(&mut r);
    r.register_collector(Box::new(pins::PinsCollector { pin_root }));
    r.register_collector(Box::new(EpochCollector(applied)));
    r.register_collector(Box::new(fill::FillCollector(fill)));
    r.register_collector(Box::new(LogCollector));
    if let Some(q) = outbox {
        r.register_collector(Box::new(OutboxCollector(q)));
    }
    r
}

/// Starts the endpoint and the map-fill sampler if the config asks for metrics. A listen
/// address that cannot be bound is logged and the agent runs on without metrics: enforcement
/// never stops for observability.
pub async fn start(
    cfg: &AgentConfig,
    live: &Live,
    outbox: Option<Arc<AlertQueue>>,
    applied: Applied,
) {
    let Some(m) = &cfg.metrics else { return };
    let fill = Arc::new(Fill::default());
    let registry = registry(cfg.pin_root.clone(), live, outbox, fill.clone(), applied);
    match tokio::net::TcpListener::bind(m.listen).await {
        Ok(listener) => {
            tracing::info!(listen = %m.listen, "metrics served on /metrics");
            fill::spawn_sampler(cfg.pin_root.clone(), m.map_fill_every(), fill);
            tokio::spawn(wardgate_daemon::metrics::serve(
                listener,
                Arc::new(registry),
            ));
        }
        Err(e) => tracing::error!(listen = %m.listen, error = %e,
            "metrics endpoint not started; the agent runs on without it"),
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::prometheus_text;
    use wardgate_proto::v1 as pb;

    use super::*;
    use crate::alerts::{OUTBOX_CAP, Outbox};
    use wardgate_testkit::prometheus::promtool_check;

    fn text(r: &Registry) -> String {
        let mut t = String::new();
        prometheus_text::encode(&mut t, r).unwrap();
        t
    }

    fn state(generation: u32, epoch: &str) -> DesiredState {
        DesiredState {
            gateway: "gw".into(),
            generation,
            epoch: epoch.into(),
            content_hash: String::new(),
            devices: vec![],
            policies: vec![],
            peers: vec![],
            ports: vec![],
            groups: Default::default(),
            dns: Default::default(),
        }
    }

    #[test]
    fn the_epoch_series_follows_the_last_applied_policy() {
        let epoch_lines = |r: &Registry| -> Vec<String> {
            text(r)
                .lines()
                .filter(|l| l.starts_with("wardgate_agent_policy_epoch_info{"))
                .map(str::to_string)
                .collect()
        };
        let (applied, rx) = watch::channel(None);
        let r = registry(
            "/nonexistent/wardgate".into(),
            &Live::default(),
            None,
            Arc::new(Fill::default()),
            rx,
        );
        assert!(epoch_lines(&r).is_empty(), "nothing applied yet");
        // A desired-state file compiled offline has no epoch: no series.
        applied.send_replace(Some(Arc::new(state(3, ""))));
        assert!(epoch_lines(&r).is_empty(), "offline policy has no epoch");
        applied.send_replace(Some(Arc::new(state(4, "aa01"))));
        assert_eq!(
            epoch_lines(&r),
            ["wardgate_agent_policy_epoch_info{epoch=\"aa01\",generation=\"4\"} 1"]
        );
        // A recreated store: one series, the new epoch's.
        applied.send_replace(Some(Arc::new(state(1, "bb02"))));
        assert_eq!(
            epoch_lines(&r),
            ["wardgate_agent_policy_epoch_info{epoch=\"bb02\",generation=\"1\"} 1"]
        );
        promtool_check(&text(&r));
    }

    fn alert(i: usize, severity: &str) -> pb::Alert {
        pb::Alert {
            id: format!("a-{i}"),
            kind: "deny".into(),
            severity: severity.into(),
            ..Default::default()
        }
    }

    #[test]
    fn outbox_depth_and_drops_and_live_counters_are_served() {
        let queue = AlertQueue::new(Outbox::default());
        queue.push_all((0..OUTBOX_CAP).map(|i| alert(i, "high")).collect());
        queue.push_all((0..3).map(|i| alert(OUTBOX_CAP + i, "low")).collect());
        let live = Live::default();
        live.event(EventKind::Deny);
        live.event(EventKind::Deny);
        live.controller_at(
            &[
                "https://198.51.100.20:7443".into(),
                "https://198.51.100.21:7443".into(),
            ],
            Some("https://198.51.100.21:7443"),
        );
        // No pins under this root: the datapath series are left out, the rest still served.
        let (_applied, rx) = watch::channel(Some(Arc::new(state(7, "5eed"))));
        let r = registry(
            "/nonexistent/wardgate".into(),
            &live,
            Some(queue),
            Arc::new(Fill::default()),
            rx,
        );
        let t = text(&r);
        for line in [
            format!("wardgate_agent_outbox_alerts {OUTBOX_CAP}"),
            "wardgate_agent_outbox_dropped_alerts_total{kind=\"deny\",severity=\"low\"} 3".into(),
            "wardgate_agent_events_total{kind=\"deny\"} 2".into(),
            "wardgate_agent_events_total{kind=\"spoof\"} 0".into(),
            "wardgate_agent_controller_connected{address=\"https://198.51.100.20:7443\"} 0".into(),
            "wardgate_agent_controller_connected{address=\"https://198.51.100.21:7443\"} 1".into(),
            "wardgate_agent_policy_epoch_info{epoch=\"5eed\",generation=\"7\"} 1".into(),
        ] {
            assert!(t.lines().any(|l| l == line), "missing `{line}` in:\n{t}");
        }
        assert!(
            !t.contains("severity=\"high\""),
            "no high alert dropped: {t}"
        );
        assert!(!t.contains("wardgate_agent_packets_total"), "{t}");
        assert!(
            !t.contains("wardgate_agent_map_entries"),
            "no sample yet: {t}"
        );
        promtool_check(&t);
    }
}
