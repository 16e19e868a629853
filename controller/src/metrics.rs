//! Prometheus metrics of the controller, served on `GET /metrics` when the config has
//! `metrics: { listen: ADDR }`: gateways (known, connected), latest vs applied generation per
//! gateway (read from the store at every scrape, one query), alerts received, policy bundles
//! sent, store write latency, and per SOC sink its lag (alerts stored after its cursor that it
//! has yet to deliver, read at every scrape) and the alerts it delivered and batches that
//! failed.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{
        MetricType,
        counter::Counter,
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::store::{GatewayGenerations, Store};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub gateway: String,
    pub severity: String,
}

/// What a store write was.
#[derive(Clone, Copy, Debug)]
pub enum WriteKind {
    /// An audited change (device, profile, group, gateway, acknowledgement).
    Change,
    /// A batch of alerts from an agent.
    Alerts,
    /// An agent's applied-generation report.
    Status,
}

impl WriteKind {
    fn name(self) -> &'static str {
        match self {
            WriteKind::Change => "change",
            WriteKind::Alerts => "alerts",
            WriteKind::Status => "status",
        }
    }
}

type WriteLabels = [(&'static str, &'static str); 1];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub gateway: String,
    /// permission_denied | invalid_argument
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

/// The controller's metrics; the services update them, the registry serves them.
#[derive(Debug)]
pub struct ControllerMetrics {
    alerts_received: Family<AlertLabels, Counter>,
    alerts_refused: Family<RefusedLabels, Counter>,
    bundles_sent: Counter,
    writes: Family<WriteLabels, Histogram>,
    /// Open policy watches per gateway (an agent holds one while connected).
    watching: Mutex<BTreeMap<String, u32>>,
    /// The running SOC sinks, by name (their lag is read at scrape time).
    sinks: Mutex<Vec<String>>,
    sink_delivered: Family<SinkLabels, Counter>,
    sink_failures: Family<SinkLabels, Counter>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        ControllerMetrics {
            alerts_received: Family::default(),
            alerts_refused: Family::default(),
            bundles_sent: Counter::default(),
            // 0.5 ms to about 2 s: a SQLite commit in WAL mode, up to a large compile.
            writes: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 13))
            }),
            watching: Mutex::new(BTreeMap::new()),
            sinks: Mutex::new(Vec::new()),
            sink_delivered: Family::default(),
            sink_failures: Family::default(),
        }
    }
}

/// Held while an agent watches its gateway's policy; dropping it ends the watch.
pub struct Watching {
    metrics: Arc<ControllerMetrics>,
    gateway: String,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut w = self.metrics.watching_map();
        if let Some(n) = w.get_mut(&self.gateway) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.gateway);
            }
        }
    }
}

impl ControllerMetrics {
    fn watching_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u32>> {
        self.watching
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Alerts of `gateway` stored (new or already there), by severity.
    pub fn alerts_received(&self, gateway: &str, severity: &str) {
        self.alerts_received
            .get_or_create(&AlertLabels {
                gateway: gateway.to_string(),
                severity: if severity.is_empty() { "low" } else { severity }.to_string(),
            })
            .inc();
    }

    pub fn bundle_sent(&self) {
        self.bundles_sent.inc();
    }

    /// Runs a store write and records how long it took.
    pub fn time_write<T>(&self, kind: WriteKind, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.writes
            .get_or_create(&[("kind", kind.name())])
            .observe(start.elapsed().as_secs_f64());
        out
    }

    /// A SOC sink started: its lag is reported from now on, and its counters start at 0.
    pub fn sink_started(&self, sink: &str) {
        let mut sinks = self
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !sinks.iter().any(|s| s == sink) {
            sinks.push(sink.to_string());
        }
        let l = SinkLabels { sink: sink.into() };
        let _ = self.sink_delivered.get_or_create(&l);
        let _ = self.sink_failures.get_or_create(&l);
    }

    /// `sink` delivered `n` alerts (its cursor moved past them).
    pub fn sink_delivered(&self, sink: &str, n: u64) {
        self.sink_delivered
            .get_or_create(&SinkLabels { sink: sink.into() })
            .inc_by(n);
    }

    /// A delivery of `sink` failed (it reconnects and sends the batch again).
    pub fn sink_failed(&self, sink: &str) {
        self.sink_failures
            .get_or_create(&SinkLabels { sink: sink.into() })
            .inc();
    }

    /// Counts an agent watching `gateway` until the guard drops.
    pub fn watching(self: &Arc<Self>, gateway: &str) -> Watching {
        *self.watching_map().entry(gateway.to_string()).or_default() += 1;
        Watching {
            metrics: self.clone(),
            gateway: gateway.to_string(),
        }
    }

    /// An alert of `gateway` refused for what it holds (`reason`: permission_denied or
    /// invalid_argument): answered as refused, never stored.
    pub fn alert_refused(&self, gateway: &str, reason: &str) {
        self.alerts_refused
            .get_or_create(&RefusedLabels {
                gateway: gateway.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The registry: these metrics and the store's gateways.
    pub fn registry(self: &Arc<Self>, store: Arc<dyn Store>) -> Registry {
        let mut r = Registry::default();
        r.register(
            "wardgate_controller_alerts_received",
            "Alerts received from agents and stored, by gateway and severity (an alert re-sent \
             after a reconnect counts again)",
            self.alerts_received.clone(),
        );
        r.register(
            "wardgate_controller_alerts_refused",
            "Alerts from agents refused and not stored, by gateway and reason (permission_denied: \
             a device of another gateway; invalid_argument: a bad field, a control character in \
             an identifier, a time out of range)",
            self.alerts_refused.clone(),
        );
        r.register(
            "wardgate_controller_policy_bundles_sent",
            "Policy generations sent to watching agents",
            self.bundles_sent.clone(),
        );
        r.register_with_unit(
            "wardgate_controller_store_write_duration",
            "Store writes, by kind (change: audited change with compile; alerts; status)",
            prometheus_client::registry::Unit::Seconds,
            self.writes.clone(),
        );
        r.register(
            "wardgate_controller_sink_delivered_alerts",
            "Alerts each SOC sink delivered (a batch sent again after a crash counts again)",
            self.sink_delivered.clone(),
        );
        r.register(
            "wardgate_controller_sink_failures",
            "Failed deliveries of each SOC sink (the batch is sent again after a backoff)",
            self.sink_failures.clone(),
        );
        r.register_collector(Box::new(GatewaysCollector {
            store: store.clone(),
            metrics: self.clone(),
        }));
        r.register_collector(Box::new(SinkLagCollector {
            store,
            metrics: self.clone(),
        }));
        r
    }
}

/// Each SOC sink's lag at scrape time: the alerts stored after its cursor that it will
/// deliver (suppressed ones and numbers freed by updates or the quota are not counted, so an
/// idle sink reads 0).
struct SinkLagCollector {
    store: Arc<dyn Store>,
    metrics: Arc<ControllerMetrics>,
}

impl std::fmt::Debug for SinkLagCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkLagCollector")
    }
}

impl Collector for SinkLagCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sinks = self
            .metrics
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut lags = Vec::with_capacity(sinks.len());
        for sink in &sinks {
            let lag = self
                .store
                .sink_cursor(sink)
                .and_then(|after| self.store.alerts_pending(after));
            match lag {
                Ok(n) => lags.push((sink, n)),
                // The scrape still answers; the missing series and the log say why.
                Err(e) => tracing::warn!(sink, error = %e, "metrics: sink lag not read"),
            }
        }
        let mut m = encoder.encode_descriptor(
            "wardgate_controller_sink_lag_alerts",
            "Alerts stored after the SOC sink's cursor, not yet delivered by it.",
            None,
            MetricType::Gauge,
        )?;
        for (sink, n) in lags {
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                .encode(m.encode_family(&[("sink", sink.as_str())])?)?;
        }
        Ok(())
    }
}

/// Gateways at scrape time: from the store (one query) and the open watches.
struct GatewaysCollector {
    store: Arc<dyn Store>,
    metrics: Arc<ControllerMetrics>,
}

impl std::fmt::Debug for GatewaysCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewaysCollector")
    }
}

impl Collector for GatewaysCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gateways = match self.store.gateway_generations() {
            Ok(g) => g,
            Err(e) => {
                // The scrape still answers; the missing gateway series and the log say why.
                tracing::warn!(error = %e, "metrics: gateways not read from the store");
                return Ok(());
            }
        };
        let watching = self.metrics.watching_map().clone();
        let connected = |g: &str| watching.get(g).is_some_and(|n| *n > 0);
        ConstGauge::new(gateways.len() as i64).encode(encoder.encode_descriptor(
            "wardgate_controller_gateways",
            "Gateways in the store.",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(gateways.iter().filter(|g| connected(&g.gateway)).count() as i64).encode(
            encoder.encode_descriptor(
                "wardgate_controller_gateways_connected",
                "Gateways whose agent is watching its policy now.",
                None,
                MetricType::Gauge,
            )?,
        )?;
        type Value = fn(&GatewayGenerations) -> i64;
        let gauges: [(&str, &str, Value); 2] = [
            (
                "wardgate_controller_gateway_latest_generation",
                "Latest policy generation compiled for the gateway.",
                |g| i64::from(g.latest),
            ),
            (
                "wardgate_controller_gateway_applied_generation",
                "Policy generation the gateway's agent last reported applied.",
                |g| i64::from(g.applied),
            ),
        ];
        for (name, help, value) in gauges {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for g in &gateways {
                ConstGauge::new(value(g))
                    .encode(m.encode_family(&[("gateway", g.gateway.as_str())])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "wardgate_controller_gateway_connected",
            "1 while the gateway's agent is watching its policy.",
            None,
            MetricType::Gauge,
        )?;
        for g in &gateways {
            ConstGauge::new(i64::from(connected(&g.gateway)))
                .encode(m.encode_family(&[("gateway", g.gateway.as_str())])?)?;
        }
        Ok(())
    }
}

/// `GET /metrics` on a listener: the one HTTP handler both daemons share.
pub use wardgate_daemon::metrics::serve;
