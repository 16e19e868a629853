//! The availability warning (pure): which devices a change would cut off from traffic seen in
//! the last days, grouped by device class (profile) and ward (location), and whether any
//! class loses traffic on more than the configured share of its devices on a ward. Over that
//! share a write needs an explicit acceptance, recorded in its audit entry.
//! `crate::service::impact` gathers the inputs (the devices after the change, and the flows
//! each would newly have blocked); this module only decides.

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use serde::{Deserialize, Serialize};

/// The `availability:` key of the controller's configuration.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Availability {
    /// A change that would block traffic on more than this share (0 to 1) of a class's
    /// devices on a ward needs `accept_impact`. Default 0.2.
    #[serde(default = "default_share")]
    pub max_blocked_share: f64,
    /// Traffic seen in this many last days counts. Default 7.
    #[serde(default = "default_days")]
    pub window_days: u32,
}

// Checked finite by `check`: never NaN.
impl Eq for Availability {}

fn default_share() -> f64 {
    0.2
}

fn default_days() -> u32 {
    7
}

impl Default for Availability {
    fn default() -> Self {
        Availability {
            max_blocked_share: default_share(),
            window_days: default_days(),
        }
    }
}

impl Availability {
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.max_blocked_share) {
            return Err(format!(
                "`max_blocked_share` is a share from 0 to 1, not {}",
                self.max_blocked_share
            ));
        }
        if self.window_days == 0 || self.window_days > 365 {
            return Err(format!(
                "`window_days` must be 1 to 365, not {}",
                self.window_days
            ));
        }
        Ok(())
    }

    /// The start of the window ending at `now_ns`.
    pub fn window_start_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(u64::from(self.window_days) * 86_400 * 1_000_000_000)
    }
}

/// A device after the change: its class and ward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub device: String,
    pub gateway: String,
    /// Its profile.
    pub class: String,
    /// Its location ("" where none is recorded).
    pub ward: String,
}

/// Flows of one kind a device would newly have dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lost {
    /// `from-device` or `to-device`.
    pub direction: &'static str,
    pub peer: IpAddr,
    pub peer_group: String,
    pub proto: u8,
    pub port: u16,
    pub flows: u64,
    pub last_seen_ns: u64,
}

impl Lost {
    /// `tcp 198.51.100.30 (pacs) port 104, from-device: 12 flows`.
    pub fn words(&self) -> String {
        let peer = if self.peer_group.is_empty() {
            self.peer.to_string()
        } else {
            format!("{} ({})", self.peer, self.peer_group)
        };
        format!(
            "{} {peer} port {}, {}: {} flows",
            wardgate_analysis::baseline::proto_name(self.proto),
            self.port,
            self.direction,
            self.flows
        )
    }
}

/// One class on one ward.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WardImpact {
    pub class: String,
    pub ward: String,
    /// Devices of the class on the ward after the change.
    pub devices: usize,
    /// Device -> (gateway, its lost flows), for the devices that would lose traffic.
    pub blocked: BTreeMap<String, (String, Vec<Lost>)>,
    pub over_threshold: bool,
}

/// What a change would cut off, per class and ward (only those where something would be).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Impact {
    pub wards: Vec<WardImpact>,
}

impl Impact {
    /// Some class is over the share on some ward: the change needs acceptance.
    pub fn over_threshold(&self) -> bool {
        self.wards.iter().any(|w| w.over_threshold)
    }

    /// The warning in words: per class and ward, the devices and their flows.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for w in &self.wards {
            let ward = if w.ward.is_empty() {
                "(no ward)"
            } else {
                &w.ward
            };
            let _ = writeln!(
                s,
                "{} of {} `{}` devices on ward {ward} would lose traffic seen recently{}",
                w.blocked.len(),
                w.devices,
                w.class,
                if w.over_threshold {
                    " (over the allowed share)"
                } else {
                    ""
                }
            );
            for (device, (gateway, lost)) in &w.blocked {
                let _ = writeln!(s, "  {device} on {gateway}:");
                for l in lost {
                    let _ = writeln!(s, "    - {}", l.words());
                }
            }
        }
        s
    }

    /// The summary an accepted change's audit entry keeps: per class and ward, the counts,
    /// the devices and their flows in words.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!(
            self.wards
                .iter()
                .map(|w| serde_json::json!({
                    "class": w.class,
                    "ward": w.ward,
                    "devices": w.devices,
                    "blocked_devices": w.blocked.len(),
                    "over_threshold": w.over_threshold,
                    "blocked": w.blocked.iter().map(|(d, (_, lost))| (
                        d.clone(),
                        lost.iter().map(Lost::words).collect::<Vec<_>>(),
                    )).collect::<BTreeMap<_, _>>(),
                }))
                .collect::<Vec<_>>()
        )
    }
}

/// The impact of a change: `members` are every device after it, `lost` what each device would
/// newly have blocked (flows last seen before the window are left out here, so a flow of
/// eight days ago on a 7-day window does not count).
pub fn assess(
    settings: &Availability,
    now_ns: u64,
    members: &[Member],
    lost: BTreeMap<String, Vec<Lost>>,
) -> Impact {
    let start = settings.window_start_ns(now_ns);
    let mut population: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for m in members {
        *population.entry((&m.class, &m.ward)).or_default() += 1;
    }
    let by_name: BTreeMap<&str, &Member> = members.iter().map(|m| (m.device.as_str(), m)).collect();
    let mut wards: BTreeMap<(String, String), WardImpact> = BTreeMap::new();
    for (device, flows) in lost {
        let mut flows: Vec<Lost> = flows
            .into_iter()
            .filter(|l| l.last_seen_ns >= start)
            .collect();
        let Some(m) = by_name.get(device.as_str()) else {
            continue;
        };
        if flows.is_empty() {
            continue;
        }
        flows.sort_by(|a, b| b.flows.cmp(&a.flows).then(a.peer.cmp(&b.peer)));
        let w = wards
            .entry((m.class.clone(), m.ward.clone()))
            .or_insert_with(|| WardImpact {
                class: m.class.clone(),
                ward: m.ward.clone(),
                devices: population
                    .get(&(m.class.as_str(), m.ward.as_str()))
                    .copied()
                    .unwrap_or(1),
                blocked: BTreeMap::new(),
                over_threshold: false,
            });
        w.blocked.insert(device, (m.gateway.clone(), flows));
    }
    let mut out = Impact::default();
    for (_, mut w) in wards {
        // Strictly over: 1 of 5 at 0.2 is allowed. The epsilon keeps 0.1 * 3 from counting
        // 3 of 10 as over 0.3.
        w.over_threshold =
            w.blocked.len() as f64 > settings.max_blocked_share * w.devices as f64 + 1e-9;
        out.wards.push(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_NS: u64 = 86_400 * 1_000_000_000;
    const NOW: u64 = 100 * DAY_NS;

    fn members(class: &str, ward: &str, n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                device: format!("{class}-{ward}-{i}"),
                gateway: "gw".into(),
                class: class.into(),
                ward: ward.into(),
            })
            .collect()
    }

    fn lost(last_seen_ns: u64) -> Vec<Lost> {
        vec![Lost {
            direction: "from-device",
            peer: "198.51.100.30".parse().unwrap(),
            peer_group: "pacs".into(),
            proto: 6,
            port: 104,
            flows: 12,
            last_seen_ns,
        }]
    }

    fn cut(names: &[&str], at: u64) -> BTreeMap<String, Vec<Lost>> {
        names.iter().map(|n| (n.to_string(), lost(at))).collect()
    }

    #[test]
    fn the_share_is_per_class_and_ward_and_strictly_over() {
        let s = Availability::default(); // 0.2
        let mut all = members("pump", "icu", 5);
        all.extend(members("pump", "er", 2));
        // 1 of 5 on the ICU is exactly the share: allowed.
        let one = assess(&s, NOW, &all, cut(&["pump-icu-0"], NOW));
        assert_eq!(one.wards.len(), 1);
        assert_eq!(one.wards[0].devices, 5);
        assert!(!one.over_threshold());
        // 2 of 5: over.
        let two = assess(&s, NOW, &all, cut(&["pump-icu-0", "pump-icu-1"], NOW));
        assert!(two.over_threshold());
        // 1 device on the other ward is 1 of 2 there, not 1 of 7: over.
        let er = assess(&s, NOW, &all, cut(&["pump-er-0"], NOW));
        assert_eq!(er.wards[0].ward, "er");
        assert_eq!(er.wards[0].devices, 2);
        assert!(er.over_threshold());
        // 3 of 10 at 0.3 is not over (no floating-point surprise).
        let ten = members("mon", "w", 10);
        let s3 = Availability {
            max_blocked_share: 0.3,
            ..s
        };
        let three = assess(&s3, NOW, &ten, cut(&["mon-w-0", "mon-w-1", "mon-w-2"], NOW));
        assert!(!three.over_threshold());
        // A share of 0 refuses any loss; a share of 1 none.
        let s0 = Availability {
            max_blocked_share: 0.0,
            ..s
        };
        assert!(assess(&s0, NOW, &all, cut(&["pump-icu-0"], NOW)).over_threshold());
        let s1 = Availability {
            max_blocked_share: 1.0,
            ..s
        };
        let every = cut(&["pump-er-0", "pump-er-1"], NOW);
        assert!(!assess(&s1, NOW, &all, every).over_threshold());
    }

    #[test]
    fn only_flows_seen_in_the_window_count() {
        let s = Availability::default(); // 7 days
        let all = members("pump", "icu", 2);
        let start = NOW - 7 * DAY_NS;
        // Last seen exactly at the window's start: in it.
        let edge = assess(&s, NOW, &all, cut(&["pump-icu-0"], start));
        assert_eq!(edge.wards[0].blocked.len(), 1);
        assert!(edge.over_threshold());
        // One nanosecond earlier, eight days ago: nothing to warn about.
        let old = assess(&s, NOW, &all, cut(&["pump-icu-0"], start - 1));
        assert!(old.wards.is_empty());
        assert!(!old.over_threshold());
        let eight = assess(&s, NOW, &all, cut(&["pump-icu-0"], NOW - 8 * DAY_NS));
        assert!(eight.wards.is_empty());
        // A 10-day window keeps it.
        let s10 = Availability {
            window_days: 10,
            ..s
        };
        let kept = assess(&s10, NOW, &all, cut(&["pump-icu-0"], NOW - 8 * DAY_NS));
        assert!(kept.over_threshold());
        let words = kept.render();
        assert!(
            words.contains("1 of 2 `pump` devices on ward icu"),
            "{words}"
        );
        assert!(
            words.contains("tcp 198.51.100.30 (pacs) port 104, from-device: 12 flows"),
            "{words}"
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(Availability::default().check().is_ok());
        for bad in [
            Availability {
                max_blocked_share: 1.5,
                window_days: 7,
            },
            Availability {
                max_blocked_share: f64::NAN,
                window_days: 7,
            },
            Availability {
                max_blocked_share: 0.2,
                window_days: 0,
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
