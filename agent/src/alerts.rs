//! Alerts for the SOC: which datapath events become alerts (with what severity), and the
//! outbox that holds them until the controller acknowledges their ids (at-least-once; the
//! controller stores each id once).

use std::collections::VecDeque;

use wardgate_policy::{DesiredState, Mode};
use wardgate_proto::v1 as pb;

use crate::datapath::convert::{DatapathEvent, EventKind};

/// Alerts kept while the controller is unreachable; past this the oldest are dropped (and
/// counted), so a long outage cannot exhaust the gateway's memory.
pub const OUTBOX_CAP: usize = 10_000;

/// Largest batch sent in one message.
pub const BATCH: usize = 100;

/// The alert for a datapath event, or `None` for events that are learning data (new flows).
/// `id` must be unique for this gateway (the agent uses its start time and a sequence number).
pub fn from_event(
    ev: &DatapathEvent,
    state: Option<&DesiredState>,
    id: String,
    observed_unix_ms: i64,
) -> Option<pb::Alert> {
    // Spoofing is how an attacker gets a device's allowlist (ATT&CK for ICS T0830,
    // Adversary-in-the-Middle); a denied flow from an enforced device is the allowlist working
    // against something real; would-deny is the same seen in monitor mode.
    let (severity, technique) = match ev.kind {
        EventKind::Spoof => ("critical", "T0830"),
        EventKind::Deny => ("high", ""),
        EventKind::WouldDeny => ("medium", ""),
        EventKind::UnknownDevice => ("low", ""),
        EventKind::NewFlow | EventKind::Other(_) => return None,
    };
    let device = state.and_then(|s| s.device(ev.device_id));
    let profile = state
        .and_then(|s| {
            s.policies
                .iter()
                .find(|p| p.policy_id == ev.policy_id && ev.device_id != 0)
        })
        .map(|p| p.profile.clone());
    let mode = device.map(|d| match d.mode {
        Mode::Learn => "learn",
        Mode::Monitor => "monitor",
        Mode::Enforce => "enforce",
        Mode::Quarantine => "quarantine",
    });
    Some(pb::Alert {
        id,
        device: device.map(|d| d.name.clone()).unwrap_or_default(),
        profile: profile.unwrap_or_default(),
        rule_id: ev.rule_id,
        kind: ev.kind.name().into(),
        severity: severity.into(),
        mode: mode.unwrap_or_default().into(),
        src: ev.src.to_string(),
        src_port: ev.sport.into(),
        dst: ev.dst.to_string(),
        dst_port: ev.dport.into(),
        protocol: ev.proto.into(),
        mitre_technique: technique.into(),
        observed_unix_ms,
        generation: ev.generation,
        ..Default::default()
    })
}

/// Alerts not yet acknowledged, oldest first. `sent` of them went out on the current
/// connection; a new connection sends them all again.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: VecDeque<pb::Alert>,
    sent: usize,
    pub dropped: u64,
}

impl Outbox {
    pub fn push(&mut self, alert: pb::Alert) {
        if self.pending.len() >= OUTBOX_CAP {
            self.pending.pop_front();
            self.sent = self.sent.saturating_sub(1);
            self.dropped += 1;
        }
        self.pending.push_back(alert);
    }

    /// The next batch to send on this connection (empty when all were sent).
    pub fn next_batch(&mut self) -> Vec<pb::Alert> {
        let end = (self.sent + BATCH).min(self.pending.len());
        let batch = self.pending.range(self.sent..end).cloned().collect();
        self.sent = end;
        batch
    }

    /// Removes acknowledged alerts.
    pub fn ack(&mut self, ids: &[String]) {
        let before = self.pending.len();
        let mut acked_sent = 0;
        let mut i = 0;
        self.pending.retain(|a| {
            let keep = !ids.contains(&a.id);
            if !keep && i < self.sent {
                acked_sent += 1;
            }
            i += 1;
            keep
        });
        debug_assert!(self.pending.len() <= before);
        self.sent -= acked_sent;
    }

    /// A new connection: everything pending goes out again.
    pub fn reconnected(&mut self) {
        self.sent = 0;
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str) -> pb::Alert {
        pb::Alert {
            id: id.into(),
            ..Default::default()
        }
    }

    fn ids(v: &[pb::Alert]) -> Vec<&str> {
        v.iter().map(|a| a.id.as_str()).collect()
    }

    #[test]
    fn unacknowledged_alerts_are_sent_again_after_a_reconnect() {
        let mut o = Outbox::default();
        for id in ["a", "b", "c"] {
            o.push(alert(id));
        }
        assert_eq!(ids(&o.next_batch()), ["a", "b", "c"]);
        assert!(
            o.next_batch().is_empty(),
            "nothing is sent twice on one connection"
        );
        o.ack(&["b".to_string()]);
        o.push(alert("d"));
        assert_eq!(ids(&o.next_batch()), ["d"]);
        o.reconnected();
        assert_eq!(ids(&o.next_batch()), ["a", "c", "d"]);
        o.ack(&["a".into(), "c".into(), "d".into()]);
        assert!(o.is_empty());
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts() {
        let mut o = Outbox::default();
        for i in 0..OUTBOX_CAP + 5 {
            o.push(alert(&i.to_string()));
        }
        assert_eq!((o.len(), o.dropped), (OUTBOX_CAP, 5));
        assert_eq!(o.next_batch()[0].id, "5");
    }

    #[test]
    fn batches_are_bounded() {
        let mut o = Outbox::default();
        for i in 0..BATCH + 1 {
            o.push(alert(&i.to_string()));
        }
        assert_eq!(o.next_batch().len(), BATCH);
        assert_eq!(o.next_batch().len(), 1);
    }
}
