//! Flow records folded per device, direction, peer, protocol, service port and UTC day: what the
//! controller keeps (bounded per row, so a day of a chatty device is one row per service and
//! peer, not one per flow). An aggregate keeps what baselines, proposals and simulation read:
//! counts both ways, first and last seen, volume per hour of that day, a bounded sample of flow
//! starts (periodicity), the app identities seen (bounded), TCP outcomes and flow outcomes
//! (completed, refused, unanswered, denied).

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    app::AppIdentity,
    baseline::TcpCounts,
    decode::proto,
    flow::{DeviceRef, FlowDirection, FlowOutcome, FlowRecord, OutcomeCounts, TcpOutcome},
};

pub const NS_PER_HOUR: u64 = 3_600_000_000_000;
pub const NS_PER_DAY: u64 = 24 * NS_PER_HOUR;
/// Flow starts kept per row (as many as a baseline keeps per peer).
pub const MAX_STARTS: usize = 64;
/// App identities kept per row; further ones are counted in `apps_overflow`.
pub const MAX_APPS: usize = 4;

/// The UTC day (days since the Unix epoch) of a time in ns.
pub fn day_of(ns: u64) -> u32 {
    (ns / NS_PER_DAY) as u32
}

/// What one aggregate row is about. The peer's own port is left out (ephemeral).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AggregateKey {
    pub device: String,
    pub direction: FlowDirection,
    pub peer: IpAddr,
    pub proto: u8,
    /// The service port (see [`FlowRecord::port`]).
    pub port: u16,
    /// UTC day of the flows' first packets.
    pub day: u32,
}

/// An app identity and how many flows of the row carried it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSeen {
    pub identity: AppIdentity,
    pub flows: u64,
    pub last_seen_ns: u64,
}

/// What a row keeps beyond its counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateDetail {
    /// Hour of the day (0-23) -> (bytes, flows) of the flows that started in it.
    pub hours: BTreeMap<u8, (u64, u64)>,
    /// The first MAX_STARTS flow starts (ns), ascending.
    pub starts: Vec<u64>,
    pub apps: Vec<AppSeen>,
    pub apps_overflow: u64,
    pub tcp: TcpCounts,
    /// Flows per outcome (rows stored before outcomes have none: see
    /// [`FlowAggregate::outcomes`]).
    #[serde(default)]
    pub outcomes: OutcomeCounts,
    /// The rule the gateway reported admitting the latest of the row's flows that had one
    /// (live records; none offline, in learn mode, for denied flows and in older rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidedBy>,
}

/// A rule of one generation: what admitted a flow at the time, whatever the profile says now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DecidedBy {
    /// The rule id the datapath reported (`Rule::rule_id` of the generation).
    pub rule: u32,
    /// The generation the gateway had applied when its record was stored (0: not known).
    pub generation: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowAggregate {
    pub key: AggregateKey,
    pub flows: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub detail: AggregateDetail,
    /// The DNS name the device resolved the peer from (the latest seen), and how many of the
    /// row's flows had one: the row's records carry the name only when all of them did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_name: Option<String>,
    #[serde(default)]
    pub named_flows: u64,
}

impl FlowAggregate {
    pub fn key_of(r: &FlowRecord) -> AggregateKey {
        AggregateKey {
            device: r.device.name.clone(),
            direction: r.direction,
            peer: r.peer,
            proto: r.proto,
            port: r.port,
            day: day_of(r.first_seen_ns),
        }
    }

    /// One flow as an aggregate.
    pub fn from_record(r: &FlowRecord) -> Self {
        let mut tcp = TcpCounts::default();
        match r.tcp {
            Some(TcpOutcome::Established) => tcp.established = 1,
            Some(TcpOutcome::Refused) => tcp.refused = 1,
            Some(TcpOutcome::NoAnswer) => tcp.no_answer = 1,
            Some(TcpOutcome::Unknown) => tcp.unknown = 1,
            None => {}
        }
        let hour = ((r.first_seen_ns % NS_PER_DAY) / NS_PER_HOUR) as u8;
        FlowAggregate {
            key: Self::key_of(r),
            flows: 1,
            packets_out: r.packets_out,
            packets_in: r.packets_in,
            bytes_out: r.bytes_out,
            bytes_in: r.bytes_in,
            first_seen_ns: r.first_seen_ns,
            last_seen_ns: r.last_seen_ns.max(r.first_seen_ns),
            detail: AggregateDetail {
                hours: BTreeMap::from([(hour, (r.bytes(), 1))]),
                starts: vec![r.first_seen_ns],
                apps: r
                    .app
                    .iter()
                    .map(|a| AppSeen {
                        identity: a.clone(),
                        flows: 1,
                        last_seen_ns: r.last_seen_ns,
                    })
                    .collect(),
                apps_overflow: 0,
                tcp,
                outcomes: OutcomeCounts::one(r.outcome),
                decided_by: r.rule.map(|rule| DecidedBy {
                    rule,
                    generation: 0,
                }),
            },
            peer_name: r.peer_name.clone(),
            named_flows: u64::from(r.peer_name.is_some()),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes_out.saturating_add(self.bytes_in)
    }

    /// Adds `other` (same key) into this row: counts saturate rather than wrap (counters come
    /// from the network), bounded lists keep their bounds.
    pub fn merge(&mut self, other: &FlowAggregate) {
        debug_assert_eq!(self.key, other.key);
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.flows, other.flows);
        add(&mut self.packets_out, other.packets_out);
        add(&mut self.packets_in, other.packets_in);
        add(&mut self.bytes_out, other.bytes_out);
        add(&mut self.bytes_in, other.bytes_in);
        if other.peer_name.is_some()
            && (self.peer_name.is_none() || other.last_seen_ns >= self.last_seen_ns)
        {
            self.peer_name = other.peer_name.clone();
        }
        add(&mut self.named_flows, other.named_flows);
        if other.detail.decided_by.is_some()
            && (self.detail.decided_by.is_none() || other.last_seen_ns >= self.last_seen_ns)
        {
            self.detail.decided_by = other.detail.decided_by;
        }
        self.first_seen_ns = self.first_seen_ns.min(other.first_seen_ns);
        self.last_seen_ns = self.last_seen_ns.max(other.last_seen_ns);
        let d = &mut self.detail;
        for (h, (b, f)) in &other.detail.hours {
            let e = d.hours.entry(*h).or_default();
            add(&mut e.0, *b);
            add(&mut e.1, *f);
        }
        d.starts.extend_from_slice(&other.detail.starts);
        d.starts.sort_unstable();
        d.starts.truncate(MAX_STARTS);
        for a in &other.detail.apps {
            if let Some(mine) = d.apps.iter_mut().find(|m| m.identity == a.identity) {
                add(&mut mine.flows, a.flows);
                mine.last_seen_ns = mine.last_seen_ns.max(a.last_seen_ns);
            } else if d.apps.len() < MAX_APPS {
                d.apps.push(a.clone());
            } else {
                add(&mut d.apps_overflow, a.flows);
            }
        }
        add(&mut d.apps_overflow, other.detail.apps_overflow);
        let (t, o) = (&mut d.tcp, &other.detail.tcp);
        add(&mut t.established, o.established);
        add(&mut t.refused, o.refused);
        add(&mut t.no_answer, o.no_answer);
        add(&mut t.unknown, o.unknown);
        d.outcomes.merge(&other.detail.outcomes);
    }

    /// Flows per outcome: as counted, or for a row stored before outcomes, inferred from its
    /// TCP outcomes (TCP) or from whether anything came back (other protocols).
    pub fn outcomes(&self) -> OutcomeCounts {
        let counted = self.detail.outcomes;
        if counted.total() > 0 || self.flows == 0 {
            return counted;
        }
        let mut c = OutcomeCounts::default();
        if self.key.proto == proto::TCP {
            let t = &self.detail.tcp;
            c.add(FlowOutcome::Established, t.established);
            c.add(FlowOutcome::Refused, t.refused);
            c.add(FlowOutcome::Unanswered, t.no_answer);
            c.add(FlowOutcome::Unknown, self.flows.saturating_sub(c.total()));
        } else {
            let back = match self.key.direction {
                FlowDirection::Opened => self.packets_in,
                FlowDirection::Received => self.packets_out,
            };
            let o = if back > 0 {
                FlowOutcome::Established
            } else {
                FlowOutcome::Unanswered
            };
            c.add(o, self.flows);
        }
        c
    }

    /// The row as representative flow records with the number of flows each stands for: for
    /// its completed flows one per app identity seen and one without an app for those that
    /// carried none, then one per other outcome (app identities come from completed flows).
    /// Counts and bytes ride on the first, so sums over the records are the row's.
    pub fn records(&self, device: &DeviceRef) -> Vec<(FlowRecord, u64)> {
        let addr_zero = match self.key.peer {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        let base = FlowRecord {
            device: device.clone(),
            direction: self.key.direction,
            device_addr: addr_zero,
            device_port: 0,
            peer: self.key.peer,
            peer_port: 0,
            proto: self.key.proto,
            port: self.key.port,
            icmp_type: None,
            vlan: None,
            packets_out: 0,
            bytes_out: 0,
            packets_in: 0,
            bytes_in: 0,
            first_seen_ns: self.first_seen_ns,
            last_seen_ns: self.last_seen_ns,
            tcp: None,
            outcome: FlowOutcome::Unknown,
            rule: None,
            app: None,
            tcp_flags: None,
            peer_name: self
                .peer_name
                .clone()
                .filter(|_| self.named_flows >= self.flows),
            continuation: false,
        };
        let outcomes = self.outcomes();
        let completed = outcomes.established;
        let mut out: Vec<(FlowRecord, u64)> = Vec::new();
        let mut with_app = 0u64;
        for a in &self.detail.apps {
            let n = a.flows.min(completed - with_app);
            if n == 0 {
                continue;
            }
            with_app += n;
            out.push((
                FlowRecord {
                    app: Some(a.identity.clone()),
                    outcome: FlowOutcome::Established,
                    ..base.clone()
                },
                n,
            ));
        }
        if completed > with_app {
            out.push((
                FlowRecord {
                    outcome: FlowOutcome::Established,
                    ..base.clone()
                },
                completed - with_app,
            ));
        }
        for (o, n) in outcomes.each().filter(|(o, n)| !o.is_completed() && *n > 0) {
            out.push((
                FlowRecord {
                    outcome: o,
                    ..base.clone()
                },
                n,
            ));
        }
        if out.is_empty() {
            out.push((base, 1));
        }
        let first = &mut out[0].0;
        first.packets_out = self.packets_out;
        first.packets_in = self.packets_in;
        first.bytes_out = self.bytes_out;
        first.bytes_in = self.bytes_in;
        out
    }
}

/// Folds `records` into aggregates, one per key, in key order.
pub fn aggregate<'a>(records: impl IntoIterator<Item = &'a FlowRecord>) -> Vec<FlowAggregate> {
    let mut by_key: BTreeMap<AggregateKey, FlowAggregate> = BTreeMap::new();
    for r in records {
        let a = FlowAggregate::from_record(r);
        match by_key.get_mut(&a.key) {
            Some(row) => row.merge(&a),
            None => {
                by_key.insert(a.key.clone(), a);
            }
        }
    }
    by_key.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::Hl7Header;

    fn rec(peer: &str, port: u16, first_s: u64, bytes: u64, app: Option<&str>) -> FlowRecord {
        FlowRecord {
            device: DeviceRef {
                name: "pump-1".into(),
                id: None,
                mac: None,
            },
            direction: FlowDirection::Opened,
            device_addr: "192.0.2.10".parse().unwrap(),
            device_port: 40000,
            peer: peer.parse().unwrap(),
            peer_port: port,
            proto: 6,
            port,
            icmp_type: None,
            vlan: None,
            packets_out: 2,
            bytes_out: bytes,
            packets_in: 1,
            bytes_in: 10,
            first_seen_ns: first_s * 1_000_000_000,
            last_seen_ns: (first_s + 5) * 1_000_000_000,
            tcp: Some(TcpOutcome::Established),
            outcome: crate::flow::FlowOutcome::Established,
            rule: Some(3),
            app: app.map(|a| {
                AppIdentity::Hl7(Hl7Header {
                    field_separator: '|',
                    encoding_characters: "^~\\&".into(),
                    sending_application: a.into(),
                    sending_facility: String::new(),
                    receiving_application: "LIS".into(),
                    receiving_facility: String::new(),
                    message_type: "ORU^R01".into(),
                    version: "2.5".into(),
                    mllp: true,
                })
            }),
            tcp_flags: None,
            peer_name: None,
            continuation: false,
        }
    }

    #[test]
    fn same_day_peer_and_port_fold_into_one_row_with_summed_counts() {
        let day = 20_000 * 86_400;
        let rs = [
            rec("198.51.100.5", 2575, day + 3600, 100, Some("PUMP")),
            rec("198.51.100.5", 2575, day + 7200 + 5, 50, None),
            rec("198.51.100.5", 2575, day + 86_400, 7, None), // next day
            rec("198.51.100.5", 443, day + 10, 1, None),      // another port
        ];
        let a = aggregate(&rs);
        assert_eq!(a.len(), 3);
        let row = a
            .iter()
            .find(|r| r.key.port == 2575 && r.key.day == 20_000)
            .unwrap();
        assert_eq!(
            (row.flows, row.packets_out, row.packets_in, row.bytes_out),
            (2, 4, 2, 150)
        );
        assert_eq!(row.first_seen_ns, (day + 3600) * 1_000_000_000);
        assert_eq!(row.last_seen_ns, (day + 7210) * 1_000_000_000);
        assert_eq!(
            row.detail.hours,
            BTreeMap::from([(1, (110, 1)), (2, (60, 1))])
        );
        assert_eq!(row.detail.tcp.established, 2);
        assert_eq!(row.detail.apps.len(), 1);
        // As records: one with the app (1 flow) and one without (1 flow), counts on the first.
        let recs = row.records(&rs[0].device);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs.iter().map(|(_, w)| w).sum::<u64>(), 2);
        assert_eq!(
            recs.iter().map(|(r, _)| r.bytes()).sum::<u64>(),
            row.bytes()
        );
        assert!(recs[0].0.app.is_some() && recs[1].0.app.is_none());
    }

    #[test]
    fn a_row_keeps_the_rule_of_its_latest_flow_that_had_one() {
        let day = 20_000 * 86_400;
        let mut old = rec("198.51.100.5", 443, day + 10, 1, None);
        old.rule = Some(3);
        let mut new = rec("198.51.100.5", 443, day + 500, 1, None);
        new.rule = Some(7);
        let mut none = rec("198.51.100.5", 443, day + 900, 1, None);
        none.rule = None;
        for order in [
            [&old, &new, &none],
            [&none, &new, &old],
            [&new, &none, &old],
        ] {
            let rs: Vec<FlowRecord> = order.iter().map(|r| (*r).clone()).collect();
            let a = aggregate(&rs);
            assert_eq!(a.len(), 1);
            assert_eq!(
                a[0].detail.decided_by,
                Some(DecidedBy {
                    rule: 7,
                    generation: 0
                }),
                "{order:?}"
            );
        }
        // And through the row's stored form (older rows have none).
        let json = serde_json::to_string(&aggregate(&[new])[0].detail).unwrap();
        let back: AggregateDetail = serde_json::from_str(&json).unwrap();
        assert_eq!(back.decided_by.map(|d| d.rule), Some(7));
        let old_row: AggregateDetail = serde_json::from_str(
            r#"{"hours":{},"starts":[],"apps":[],"apps_overflow":0,"tcp":{"established":0,"refused":0,"no_answer":0,"unknown":0}}"#,
        )
        .unwrap();
        assert_eq!(old_row.decided_by, None);
    }

    #[test]
    fn outcomes_are_counted_and_split_into_records_completed_first() {
        let mut ok = rec("198.51.100.5", 443, 100, 10, Some("PUMP"));
        ok.outcome = FlowOutcome::Established;
        let mut syn = rec("198.51.100.5", 443, 101, 0, None);
        syn.outcome = FlowOutcome::Unanswered;
        let mut rst = rec("198.51.100.5", 443, 102, 0, None);
        rst.outcome = FlowOutcome::Refused;
        let a = aggregate(&[syn.clone(), ok, syn, rst]);
        assert_eq!(a.len(), 1);
        let o = a[0].outcomes();
        assert_eq!(
            (o.established, o.unanswered, o.refused, o.total()),
            (1, 2, 1, 4)
        );
        let recs = a[0].records(&rec("198.51.100.5", 1, 1, 1, None).device);
        let got: Vec<(FlowOutcome, bool, u64)> = recs
            .iter()
            .map(|(r, n)| (r.outcome, r.app.is_some(), *n))
            .collect();
        assert_eq!(
            got,
            [
                (FlowOutcome::Established, true, 1),
                (FlowOutcome::Refused, false, 1),
                (FlowOutcome::Unanswered, false, 2),
            ]
        );
    }

    #[test]
    fn a_row_stored_before_outcomes_infers_them() {
        let mut row = aggregate(&[rec("198.51.100.5", 443, 100, 10, None)]).remove(0);
        row.detail.outcomes = OutcomeCounts::default();
        row.detail.tcp = TcpCounts {
            established: 1,
            refused: 0,
            no_answer: 0,
            unknown: 0,
        };
        assert_eq!(row.outcomes().established, 1);
        row.detail.tcp = TcpCounts {
            no_answer: 1,
            ..TcpCounts::default()
        };
        assert_eq!(row.outcomes().unanswered, 1);
        // UDP: by whether anything came back.
        row.key.proto = proto::UDP;
        row.packets_in = 0;
        assert_eq!(row.outcomes().unanswered, 1);
        row.packets_in = 2;
        assert_eq!(row.outcomes().established, 1);
    }

    #[test]
    fn bounded_lists_stay_bounded_and_counts_saturate() {
        let mut row = FlowAggregate::from_record(&rec("198.51.100.5", 2575, 100, 1, Some("A")));
        for i in 0..(MAX_STARTS as u64 + 10) {
            let app = format!("APP{i}");
            row.merge(&FlowAggregate::from_record(&rec(
                "198.51.100.5",
                2575,
                100 + i,
                u64::MAX / 2,
                Some(&app),
            )));
        }
        assert_eq!(row.detail.starts.len(), MAX_STARTS);
        assert_eq!(row.detail.apps.len(), MAX_APPS);
        assert_eq!(row.detail.apps_overflow, MAX_STARTS as u64 + 10 - 3);
        assert_eq!(row.bytes_out, u64::MAX);
        assert_eq!(row.flows, MAX_STARTS as u64 + 11);
    }
}
