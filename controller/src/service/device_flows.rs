//! A device's flows over the last days with their verdict and what decided it. The console's
//! device page only shows it.
//!
//! A flow the gateway admitted names the rule it reported, which each flow row keeps with the
//! generation the gateway had applied when the row was stored (`AggregateDetail::decided_by`):
//! that generation's stored content gives the profile, its version and the rule's name, as
//! they were, whatever the profile says now. Other flows (denied, learn mode, rows stored
//! before rows kept the rule, a generation no longer stored) are looked up in the device's
//! current profile (`wardgate_policy::matrix::matching`, the console matrix's lookup): the rule
//! that allows it now, or that none does (denied in enforce, "would be denied" in learn and
//! monitor).

use std::{collections::BTreeMap, net::IpAddr};

use wardgate_analysis::{
    FlowDirection,
    aggregate::{DecidedBy, FlowAggregate, NS_PER_DAY, day_of},
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

/// What decided a flow: the rule that admitted it at the time, or what decides it under the
/// device's current profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The gateway reported that rule `rule` of `profile` (version `version`) in generation
    /// `generation` admitted its latest flow.
    Admitted {
        profile: String,
        version: u32,
        rule: String,
        generation: u32,
    },
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
    let admitted = admitted_rules(ctx, device, &rows)?;
    Ok(build(
        device,
        site.as_ref().map_err(ToString::to_string),
        &rows,
        &admitted,
        generation,
        limit,
    ))
}

/// The rules named by `rows`, as their generations stored them: (profile, version, rule name)
/// by rule and generation. A generation not stored (pruned, or 0: not known) names nothing.
fn admitted_rules(
    ctx: &Ctx,
    device: &DeviceRow,
    rows: &[FlowAggregate],
) -> Result<BTreeMap<DecidedBy, (String, u32, String)>> {
    let mut by_generation: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for d in rows.iter().filter_map(|r| r.detail.decided_by) {
        if d.generation != 0 {
            by_generation.entry(d.generation).or_default().push(d.rule);
        }
    }
    let mut out = BTreeMap::new();
    for (generation, rules) in by_generation {
        let Some(stored) = ctx.store.generation(&device.gateway, generation)? else {
            continue;
        };
        let Ok(state) = crate::generation::decode(&stored.content) else {
            continue;
        };
        let Some(entry) = state.devices.iter().find(|d| d.name == device.name) else {
            continue;
        };
        let Some(policy) = state
            .policies
            .iter()
            .find(|p| p.policy_id == entry.policy_id)
        else {
            continue;
        };
        for rule in rules {
            if let Some(r) = policy.rules.iter().find(|r| r.rule_id == rule) {
                out.insert(
                    DecidedBy { rule, generation },
                    (
                        policy.profile.clone(),
                        policy.profile_version,
                        r.name.clone(),
                    ),
                );
            }
        }
    }
    Ok(out)
}

/// The list from `rows` (pure): `site` is the device's validated site or why it is not;
/// `admitted` the rules the rows name, as their generations had them.
pub fn build(
    device: &DeviceRow,
    site: std::result::Result<&ValidSite, String>,
    rows: &[FlowAggregate],
    admitted: &BTreeMap<DecidedBy, (String, u32, String)>,
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
        /// The rule of the latest row that names one, and that row's last flow.
        decided_by: Option<(u64, DecidedBy)>,
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
        if let Some(d) = r.detail.decided_by
            && s.decided_by.is_none_or(|(at, _)| r.last_seen_ns >= at)
        {
            s.decided_by = Some((r.last_seen_ns, d));
        }
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
            let at_the_time = s
                .decided_by
                .and_then(|(_, d)| admitted.get(&d).map(|a| (d.generation, a)));
            let decision = match (&profile, device.mode, at_the_time) {
                (_, _, Some((generation, (profile, version, rule)))) if s.denied == 0 => {
                    Decision::Admitted {
                        profile: profile.clone(),
                        version: *version,
                        rule: rule.clone(),
                        generation,
                    }
                }
                (_, Mode::Quarantine, _) => Decision::Quarantine,
                (Err(e), _, _) => Decision::Unknown(e.clone()),
                (Ok(p), _, _) => {
                    match matrix::matching(p, direction.to_policy(), peer, proto, port) {
                        Some(f) => Decision::Rule {
                            profile: device.profile.clone(),
                            rule: f.name.clone(),
                        },
                        None => Decision::NoRule {
                            profile: device.profile.clone(),
                            would_be,
                        },
                    }
                }
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
        let list = build(
            &device(Mode::Enforce),
            Err("no site".into()),
            &rows,
            &BTreeMap::new(),
            7,
            2,
        );
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
            &BTreeMap::new(),
            7,
            10,
        );
        assert_eq!(q.more, 0);
        assert!(q.flows.iter().all(|f| f.decision == Decision::Quarantine));
        assert_eq!(q.flows[2].verdict, Verdict::Allowed);
    }

    #[test]
    fn an_admitted_flow_names_the_rule_of_its_generation_not_the_current_profile() {
        let allowed = OutcomeCounts {
            established: 1,
            ..OutcomeCounts::default()
        };
        let at = |rule, generation| DecidedBy { rule, generation };
        let mut old = row("198.51.100.30", 443, 10, 1, allowed);
        old.detail.decided_by = Some(at(4, 3));
        let mut new = row("198.51.100.30", 443, 11, 1, allowed);
        new.detail.decided_by = Some(at(9, 5));
        let mut pruned = row("198.51.100.31", 443, 11, 1, allowed);
        pruned.detail.decided_by = Some(at(9, 1));
        let admitted = BTreeMap::from([
            (
                at(4, 3),
                ("infusion-pump".to_string(), 2, "old rule".to_string()),
            ),
            (
                at(9, 5),
                (
                    "infusion-pump".to_string(),
                    3,
                    "infusion server".to_string(),
                ),
            ),
        ]);
        // Quarantined now, no site: what admitted the flows is still what the gateway said.
        let list = build(
            &device(Mode::Quarantine),
            Err("no site".into()),
            &[old, new, pruned],
            &admitted,
            7,
            10,
        );
        let by_peer = |p: &str| {
            list.flows
                .iter()
                .find(|f| f.peer.to_string() == p)
                .unwrap()
                .decision
                .clone()
        };
        assert_eq!(
            by_peer("198.51.100.30"),
            Decision::Admitted {
                profile: "infusion-pump".into(),
                version: 3,
                rule: "infusion server".into(),
                generation: 5,
            },
            "the latest row's rule"
        );
        assert_eq!(
            by_peer("198.51.100.31"),
            Decision::Quarantine,
            "a generation not stored names nothing"
        );
    }
}
