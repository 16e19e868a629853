//! The datapath's counters, read from the pinned maps at every scrape (the read-only path
//! `wardgate-agent status` uses: a few dozen lookups, no walk).

use std::path::PathBuf;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};
use wardgate_common::{EVENT_KINDS, Reason};

use crate::datapath::{
    convert::{EventKind, LossReason},
    pinned,
};

#[derive(Debug)]
pub(super) struct PinsCollector {
    pub pin_root: PathBuf,
}

impl Collector for PinsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = match pinned::status(&self.pin_root) {
            Ok(st) => st,
            Err(e) => {
                // The scrape still answers (the agent's own metrics stay useful); the gap in
                // the datapath series is the signal, and the log says why.
                tracing::warn!(error = %e, "metrics: pinned maps unreadable");
                return Ok(());
            }
        };
        let mut m = encoder.encode_descriptor(
            "wardgate_agent_packets",
            "Packets the datapath decided on, by verdict and reason.",
            None,
            MetricType::Counter,
        )?;
        for reason in Reason::ALL {
            let verdict = if reason.is_drop() { "drop" } else { "pass" };
            let n = st.reasons.get(&reason).copied().unwrap_or(0);
            ConstCounter::new(n)
                .encode(m.encode_family(&[("verdict", verdict), ("reason", reason.name())])?)?;
        }
        let mut m = encoder.encode_descriptor(
            "wardgate_agent_events_lost",
            "Datapath events not delivered, by why (rate_limited: over the per-device budget; \
             ring_buffer_full) and kind.",
            None,
            MetricType::Counter,
        )?;
        for why in LossReason::ALL {
            for kind in 0..EVENT_KINDS {
                let kind = EventKind::from_raw(kind);
                if matches!(kind, EventKind::Other(_)) {
                    continue;
                }
                let n = st.events_lost.get(&(why, kind)).copied().unwrap_or(0);
                ConstCounter::new(n)
                    .encode(m.encode_family(&[("why", why.name()), ("kind", kind.name())])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "wardgate_agent_app_refused",
            "Flows an application rule refused (or, for monitored devices, would have), by why: \
             calling_ae, called_ae, dicom_malformed, msh3, msh4, msh5, msh9, hl7_malformed, \
             unverified (payload before a handshake).",
            None,
            MetricType::Counter,
        )?;
        for (why, n) in &st.app_refused {
            ConstCounter::new(*n).encode(m.encode_family(&[("why", *why)])?)?;
        }
        ConstGauge::new(i64::from(st.generation)).encode(encoder.encode_descriptor(
            "wardgate_agent_policy_generation",
            "Policy generation the datapath enforces (0: none applied yet).",
            None,
            MetricType::Gauge,
        )?)?;
        if let Some(age_ms) = st.heartbeat_age_ms {
            ConstGauge::new(age_ms as f64 / 1000.0).encode(encoder.encode_descriptor(
                "wardgate_agent_heartbeat_age_seconds",
                "Age of the agent's last heartbeat as the datapath's clock sees it.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        ConstGauge::new(i64::from(st.watchdog.stale != 0)).encode(encoder.encode_descriptor(
            "wardgate_agent_watchdog_fired",
            "1 while the fail-open watchdog has fired (fail-open devices only monitored).",
            None,
            MetricType::Gauge,
        )?)?;
        let mut m = encoder.encode_descriptor(
            "wardgate_agent_watchdog_transitions",
            "Fail-open watchdog transitions, by direction.",
            None,
            MetricType::Counter,
        )?;
        for (to, n) in [
            ("fired", st.watchdog.went_stale),
            ("recovered", st.watchdog.recovered),
        ] {
            ConstCounter::new(u64::from(n)).encode(m.encode_family(&[("to", to)])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason has its own counter slot and the verdict its name says (grace and DNS
    /// rules were both given 15 on their branches; the counters are indexed by the value).
    #[test]
    fn every_reason_has_its_own_slot_and_its_names_verdict() {
        let mut seen = std::collections::BTreeSet::new();
        for r in Reason::ALL {
            assert!((r as u32) < Reason::COUNT, "{r:?}");
            assert!(seen.insert(r as u32), "{r:?} shares its value");
            assert_eq!(Reason::from_u32(r as u32), Some(r));
            let pass = r.name().starts_with("pass_");
            assert_eq!(r.is_drop(), !pass, "{r:?}");
        }
        assert_eq!(Reason::PassGrace as u32, 15);
        assert_eq!(Reason::PassDnsUnlearned as u32, 28);
        assert!(!Reason::PassDnsUnlearned.is_drop());
        assert!(Reason::HoldDnsAnswer.is_drop());
    }
}
