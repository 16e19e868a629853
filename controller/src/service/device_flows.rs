//! A device's flows over the last days with their verdict and what decided it: the rule of
//! the device's current profile that allows each flow (profile -> rule), or that none does
//! (denied in enforce, "would be denied" in learn and monitor), and the generation its
//! gateway applied. The console's device page only shows it.
//!
//! Stored flow rows do not keep the rule id the agent reported (aggregates fold it away), so
//! the rule is found by looking each flow up in the current profile
//! (`wardgate_policy::matrix::matching`, the console matrix's lookup): the answer is the same
//! for every row, old or new.

use std::{collections::BTreeMap, net::IpAddr};

use wardgate_analysis::{
    FlowDirection,
    aggregate::{FlowAggregate, NS_PER_DAY, day_of},
};
use wardgate_policy::{Mode, ValidSite, matrix};

use super::Ctx;
use crate::{
    compile,
    error::Result,
    store::{DeviceRow, Snapshot},
};

/// Days of flow rows listed (today included).
pub const DAYS: u32 = 7;

/// What happened to a flow, from its outcome counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// At least one flow completed (and none was dropped).
    Allowed,
    /// The datapath dropped it.
    Denied,
    /// Refused by the peer, unanswered, or not known.
    NotCompleted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::NotCompleted => "not-completed",
        }
    }
}

/// What decides a flow under the device's current profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The profile's rule `rule` allows it.
    Rule { profile: String, rule: String },
    /// No rule of the profile allows it: dropped in enforce, reported in monitor ("would be
    /// denied": `would_be`), passed in learn (also `would_be`).
    NoRule { profile: String, would_be: bool },
    /// The device is quarantined: everything but the management allowlist is dropped.
    Quarantine,
    /// The profile is not stored or does not validate with the site (the reason).
    Unknown(String),
}

/// One flow row: a direction, peer, protocol and port over the days listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFlow {
    pub direction: FlowDirection,
    pub peer: IpAddr,
    /// The site groups whose networks hold the peer.
    pub groups: Vec<String>,
    pub proto: u8,
    pub port: u16,
    pub flows: u64,
    pub bytes: u64,
    pub last_seen_ns: u64,
    pub verdict: Verdict,
    pub decision: Decision,
}

/// A device's flow list: newest first, at most the limit asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFlows {
    pub flows: Vec<DeviceFlow>,
    /// Rows left out past the limit.
    pub more: usize,
    /// The generation the device's gateway applied (0: none reported).
    pub generation: u32,
}

/// `device`'s flows of the last [`DAYS`] days at `now_ns`, at most `limit`.
pub fn device_flows(
    ctx: &Ctx,
    device: &DeviceRow,
    now_ns: u64,
    limit: usize,
) -> Result<DeviceFlows> {
    let store = ctx.store.as_ref();
    let from_ns = u64::from(day_of(now_ns).saturating_sub(DAYS - 1)) * NS_PER_DAY;
    let rows = store.flow_aggregates(&device.name, from_ns, now_ns)?;
    let gateway = store.gateway(&device.gateway)?;
    let generation = gateway.as_ref().map_or(0, |g| g.applied_generation);
    // Only what the device's profile needs: the device, its profile, the groups, its gateway
    // (reading the whole site for one page would not scale to 20,000 devices).
    let snap = Snapshot {
        devices: vec![device.clone()],
        profiles: store.profile(&device.profile)?.into_iter().collect(),
        groups: store.groups()?,
        gateways: gateway.into_iter().collect(),
        ..Snapshot::default()
    };
    let site = compile::profiles(&snap).and_then(|set| compile::valid_site(&snap, &set));
    Ok(build(
        device,
        site.as_ref().map_err(ToString::to_string),
        &rows,
        generation,
        limit,
    ))
}

/// The list from `rows` (pure): `site` is the device's validated site or why it is not.
pub fn build(
    device: &DeviceRow,
    site: std::result::Result<&ValidSite, String>,
    rows: &[FlowAggregate],
    generation: u32,
    limit: usize,
) -> DeviceFlows {
    #[derive(Default)]
    struct Sum {
        flows: u64,
        bytes: u64,
        last_seen_ns: u64,
        established: u64,
        denied: u64,
    }
    let mut sums: BTreeMap<(FlowDirection, IpAddr, u8, u16), Sum> = BTreeMap::new();
    for r in rows {
        let s = sums
            .entry((r.key.direction, r.key.peer, r.key.proto, r.key.port))
            .or_default();
        let o = r.outcomes();
        s.flows = s.flows.saturating_add(r.flows);
        s.bytes = s
            .bytes
            .saturating_add(r.bytes_out)
            .saturating_add(r.bytes_in);
        s.last_seen_ns = s.last_seen_ns.max(r.last_seen_ns);
        s.established = s.established.saturating_add(o.established);
        s.denied = s.denied.saturating_add(o.denied);
    }
    let profile = site.as_ref().map_err(Clone::clone).and_then(|s| {
        s.profiles()
            .get(&device.profile)
            .ok_or_else(|| format!("profile {} not stored", device.profile))
    });
    let would_be = matches!(device.mode, Mode::Learn | Mode::Monitor);
    let mut flows: Vec<DeviceFlow> = sums
        .into_iter()
        .map(|((direction, peer, proto, port), s)| {
            let decision = match (&profile, device.mode) {
                (_, Mode::Quarantine) => Decision::Quarantine,
                (Err(e), _) => Decision::Unknown(e.clone()),
                (Ok(p), _) => match matrix::matching(p, direction.to_policy(), peer, proto, port) {
                    Some(f) => Decision::Rule {
                        profile: device.profile.clone(),
                        rule: f.name.clone(),
                    },
                    None => Decision::NoRule {
                        profile: device.profile.clone(),
                        would_be,
                    },
                },
            };
            let groups = site.as_ref().map_or_else(
                |_| Vec::new(),
                |s| {
                    s.groups()
                        .iter()
                        .filter(|(_, nets)| nets.iter().any(|n| n.contains(&peer)))
                        .map(|(g, _)| g.clone())
                        .collect()
                },
            );
            let verdict = if s.denied > 0 {
                Verdict::Denied
            } else if s.established > 0 {
                Verdict::Allowed
            } else {
                Verdict::NotCompleted
            };
            DeviceFlow {
                direction,
                peer,
                groups,
                proto,
                port,
                flows: s.flows,
                bytes: s.bytes,
                last_seen_ns: s.last_seen_ns,
                verdict,
                decision,
            }
        })
        .collect();
    flows.sort_by(|a, b| {
        b.last_seen_ns
            .cmp(&a.last_seen_ns)
            .then(a.peer.cmp(&b.peer))
            .then(a.port.cmp(&b.port))
    });
    let more = flows.len().saturating_sub(limit);
    flows.truncate(limit);
    DeviceFlows {
        flows,
        more,
        generation,
    }
}

#[cfg(test)]
mod tests {
    use wardgate_analysis::{
        OutcomeCounts,
        aggregate::{AggregateDetail, AggregateKey},
    };

    use super::*;

    fn row(peer: &str, port: u16, day: u32, flows: u64, outcomes: OutcomeCounts) -> FlowAggregate {
        let t = u64::from(day) * NS_PER_DAY + 1_000;
        FlowAggregate {
            key: AggregateKey {
                device: "pump".into(),
                direction: FlowDirection::Opened,
                peer: peer.parse().unwrap(),
                proto: 6,
                port,
                day,
            },
            flows,
            packets_out: flows,
            packets_in: 0,
            bytes_out: 100 * flows,
            bytes_in: 10,
            first_seen_ns: t,
            last_seen_ns: t + 5,
            detail: AggregateDetail {
                outcomes,
                ..AggregateDetail::default()
            },
            peer_name: None,
            named_flows: 0,
        }
    }

    fn device(mode: Mode) -> DeviceRow {
        DeviceRow {
            name: "pump".into(),
            id: 1,
            mac: "02:00:00:00:00:01".parse().unwrap(),
            addresses: vec!["192.0.2.1".parse().unwrap()],
            profile: "infusion-pump".into(),
            mode,
            gateway: "gw".into(),
            location: String::new(),
            asset_id: String::new(),
        }
    }

    #[test]
    fn rows_of_several_days_are_summed_listed_newest_first_and_capped() {
        let rows = [
            row(
                "198.51.100.30",
                8443,
                10,
                2,
                OutcomeCounts {
                    established: 2,
                    ..Default::default()
                },
            ),
            row(
                "198.51.100.30",
                8443,
                11,
                3,
                OutcomeCounts {
                    denied: 3,
                    ..Default::default()
                },
            ),
            row(
                "198.51.100.53",
                53,
                12,
                1,
                OutcomeCounts {
                    unanswered: 1,
                    ..Default::default()
                },
            ),
            row(
                "198.51.100.30",
                443,
                9,
                4,
                OutcomeCounts {
                    established: 4,
                    ..Default::default()
                },
            ),
        ];
        let list = build(&device(Mode::Enforce), Err("no site".into()), &rows, 7, 2);
        assert_eq!(list.generation, 7);
        assert_eq!(list.more, 1, "three keys, two shown");
        let ports: Vec<u16> = list.flows.iter().map(|f| f.port).collect();
        assert_eq!(ports, [53, 8443], "newest first");
        assert_eq!(list.flows[0].verdict, Verdict::NotCompleted);
        let summed = &list.flows[1];
        assert_eq!((summed.flows, summed.bytes), (5, 520));
        assert_eq!(
            summed.verdict,
            Verdict::Denied,
            "a dropped flow makes the row denied"
        );
        assert_eq!(summed.last_seen_ns, 11 * NS_PER_DAY + 1_005);
        assert_eq!(summed.decision, Decision::Unknown("no site".into()));
        let q = build(
            &device(Mode::Quarantine),
            Err("no site".into()),
            &rows,
            7,
            10,
        );
        assert_eq!(q.more, 0);
        assert!(q.flows.iter().all(|f| f.decision == Decision::Quarantine));
        assert_eq!(q.flows[2].verdict, Verdict::Allowed);
    }
}
