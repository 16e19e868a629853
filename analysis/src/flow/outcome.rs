//! How a flow ended up, for every protocol: what proposals need to tell a conversation the
//! device really had from a contact that failed (a scan, a refused or unanswered SYN, a
//! datapath drop). Derived from what both ends of the flow did: the TCP handshake, and for
//! other protocols whether anything came back.

use serde::{Deserialize, Serialize};

use super::{FlowDirection, TcpOutcome};
use crate::decode::proto;

/// The outcome of one flow.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FlowOutcome {
    /// A completed exchange: TCP handshake answered (SYN-ACK), or for other protocols at least
    /// one packet back from the responder.
    Established,
    /// The responder refused: RST to a SYN (an ICMP unreachable is not in the conntrack entry
    /// the live agent reads, so a UDP flow refused that way is `Unanswered` there).
    Refused,
    /// Nothing came back from the responder.
    Unanswered,
    /// The datapath dropped the opening packet (enforce or quarantine): no entry was made.
    Denied,
    /// Not known: a TCP flow seen mid-stream one way only, or a record from an agent that
    /// predates outcomes with nothing to infer from.
    #[default]
    Unknown,
}

impl FlowOutcome {
    /// Whether the flow was a completed exchange (what proposals allow by default).
    pub fn is_completed(self) -> bool {
        self == FlowOutcome::Established
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FlowOutcome::Established => "established",
            FlowOutcome::Refused => "refused",
            FlowOutcome::Unanswered => "unanswered",
            FlowOutcome::Denied => "denied",
            FlowOutcome::Unknown => "unknown",
        }
    }

    /// The outcome of a flow of protocol `proto` from what it holds: the datapath denied it,
    /// its TCP handshake (TCP only) and the packets the responder sent.
    pub fn derive(
        proto: u8,
        tcp: Option<TcpOutcome>,
        responder_packets: u64,
        denied: bool,
    ) -> FlowOutcome {
        if denied {
            return FlowOutcome::Denied;
        }
        if proto == proto::TCP {
            return match tcp {
                Some(TcpOutcome::Established) => FlowOutcome::Established,
                Some(TcpOutcome::Refused) => FlowOutcome::Refused,
                Some(TcpOutcome::NoAnswer) => FlowOutcome::Unanswered,
                Some(TcpOutcome::Unknown) | None => FlowOutcome::Unknown,
            };
        }
        if responder_packets > 0 {
            FlowOutcome::Established
        } else {
            FlowOutcome::Unanswered
        }
    }

    /// As [`derive`](Self::derive) for a record seen from the device: the responder is the
    /// peer when the device opened the flow, the device when it received it.
    pub fn of_record(
        proto: u8,
        direction: FlowDirection,
        tcp: Option<TcpOutcome>,
        packets_out: u64,
        packets_in: u64,
        denied: bool,
    ) -> FlowOutcome {
        let responder = match direction {
            FlowDirection::Opened => packets_in,
            FlowDirection::Received => packets_out,
        };
        Self::derive(proto, tcp, responder, denied)
    }
}

/// Flows per outcome (a folded row's, a baseline's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    #[serde(default)]
    pub established: u64,
    #[serde(default)]
    pub refused: u64,
    #[serde(default)]
    pub unanswered: u64,
    #[serde(default)]
    pub denied: u64,
    #[serde(default)]
    pub unknown: u64,
}

impl OutcomeCounts {
    pub fn one(o: FlowOutcome) -> Self {
        let mut c = OutcomeCounts::default();
        c.add(o, 1);
        c
    }

    pub fn add(&mut self, o: FlowOutcome, n: u64) {
        let slot = match o {
            FlowOutcome::Established => &mut self.established,
            FlowOutcome::Refused => &mut self.refused,
            FlowOutcome::Unanswered => &mut self.unanswered,
            FlowOutcome::Denied => &mut self.denied,
            FlowOutcome::Unknown => &mut self.unknown,
        };
        *slot = slot.saturating_add(n);
    }

    pub fn merge(&mut self, o: &OutcomeCounts) {
        for (k, n) in o.each() {
            self.add(k, n);
        }
    }

    pub fn total(&self) -> u64 {
        self.each().map(|(_, n)| n).fold(0, u64::saturating_add)
    }

    /// Every outcome with its count, completed first.
    pub fn each(&self) -> impl Iterator<Item = (FlowOutcome, u64)> {
        [
            (FlowOutcome::Established, self.established),
            (FlowOutcome::Refused, self.refused),
            (FlowOutcome::Unanswered, self.unanswered),
            (FlowOutcome::Denied, self.denied),
            (FlowOutcome::Unknown, self.unknown),
        ]
        .into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_follows_the_handshake_and_a_drop_is_denied_whatever_came_back() {
        use FlowOutcome as O;
        let cases = [
            (Some(TcpOutcome::Established), 0, false, O::Established),
            (Some(TcpOutcome::Refused), 1, false, O::Refused),
            (Some(TcpOutcome::NoAnswer), 0, false, O::Unanswered),
            (Some(TcpOutcome::Unknown), 3, false, O::Unknown),
            (Some(TcpOutcome::NoAnswer), 0, true, O::Denied),
            (Some(TcpOutcome::Established), 5, true, O::Denied),
        ];
        for (tcp, back, denied, want) in cases {
            assert_eq!(
                FlowOutcome::derive(proto::TCP, tcp, back, denied),
                want,
                "{tcp:?} {back} {denied}"
            );
        }
    }

    #[test]
    fn other_protocols_are_established_only_with_an_answer() {
        for p in [proto::UDP, proto::ICMP, proto::ICMPV6, 132] {
            assert_eq!(
                FlowOutcome::derive(p, None, 1, false),
                FlowOutcome::Established
            );
            assert_eq!(
                FlowOutcome::derive(p, None, 0, false),
                FlowOutcome::Unanswered
            );
            assert_eq!(FlowOutcome::derive(p, None, 0, true), FlowOutcome::Denied);
        }
    }

    #[test]
    fn the_responder_is_the_peer_or_the_device_by_direction() {
        // A DNS query the device sent, answered: packets in.
        assert_eq!(
            FlowOutcome::of_record(proto::UDP, FlowDirection::Opened, None, 1, 1, false),
            FlowOutcome::Established
        );
        // A query to the device it never answered: packets in, none out.
        assert_eq!(
            FlowOutcome::of_record(proto::UDP, FlowDirection::Received, None, 0, 4, false),
            FlowOutcome::Unanswered
        );
        assert_eq!(
            FlowOutcome::of_record(proto::UDP, FlowDirection::Opened, None, 3, 0, false),
            FlowOutcome::Unanswered
        );
    }

    #[test]
    fn counts_add_merge_and_saturate() {
        let mut c = OutcomeCounts::one(FlowOutcome::Established);
        c.add(FlowOutcome::Unanswered, 7);
        let mut d = OutcomeCounts::one(FlowOutcome::Denied);
        d.add(FlowOutcome::Established, u64::MAX);
        c.merge(&d);
        assert_eq!((c.established, c.unanswered, c.denied), (u64::MAX, 7, 1));
        assert_eq!(c.total(), u64::MAX);
        // Rows stored before outcomes read as no counts.
        let old: OutcomeCounts = serde_json::from_str("{}").unwrap();
        assert_eq!(old.total(), 0);
    }
}
