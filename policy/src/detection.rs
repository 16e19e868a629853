//! A class's detector tuning: the `detection:` key of a profile. Each engine's defaults suit
//! most classes, but not all: a PACS archive legitimately opens many associations, a CT's
//! service tool probes ports of its own workstations. A profile can set a detector's count
//! for its class, or turn the detector off for it:
//!
//! ```yaml
//! detection:
//!   scan_vertical: 40     # distinct ports of one peer in 5 minutes before a finding
//!   fanout: 60
//!   beacon: off
//! ```
//!
//! A count replaces the detector's default for the class's devices (its main window; a
//! detector with shorter and longer windows keeps their proportion) and is not scaled by
//! `baseline_sensitivity`, which scales only the defaults. `off` drops what the detector raises
//! about the class's devices (an outside host that scans them is still reported). The names
//! are the detectors' as findings carry them; the analysis crate checks it knows each one.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::span::Located;

/// Detectors with a count a class can set, and what the count counts.
pub const COUNTED: &[(&str, &str)] = &[
    ("scan_vertical", "distinct ports of one peer in 5 minutes"),
    ("scan_horizontal", "distinct peers on one port in 5 minutes"),
    ("fanout", "new peers in the window"),
    (
        "brute_force",
        "short sessions to one login service in 5 minutes",
    ),
    ("dns_tunnel", "long or encoded names under one domain"),
    ("dns_nxdomain", "distinct names answered NXDOMAIN"),
];

/// Every detector of the engine, which a class can turn `off`.
pub const DETECTORS: &[&str] = &[
    "scan_vertical",
    "scan_horizontal",
    "scan_trw",
    "scan_flag_probe",
    "fanout",
    "class_protocol",
    "flood_syn",
    "flood_udp",
    "flood_icmp",
    "spoof",
    "brute_force",
    "rogue_dhcp",
    "rogue_router",
    "lateral",
    "dns_tunnel",
    "dns_nxdomain",
    "new_peer",
    "new_service",
    "new_protocol",
    "new_app",
    "volume",
    "beacon",
];

/// The smallest and largest count a class may set.
pub const COUNT_RANGE: std::ops::RangeInclusive<u32> = 2..=100_000;

/// One setting as written: a count or a word (`off`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Setting {
    Count(i64),
    /// YAML 1.1 readers take a bare `off` for false.
    Flag(bool),
    Word(String),
}

/// The `detection:` map as written, each key and value with its place in the file.
pub type Written = BTreeMap<Located<String>, Located<Setting>>;

/// One detector's tuning for a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tuning {
    /// The class's count (see [`COUNTED`]).
    Count(u32),
    Off,
}

/// A class's tuning, by detector name: parsed and checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClassDetection(BTreeMap<String, Tuning>);

impl ClassDetection {
    /// The class's count for `detector`, if it set one.
    pub fn count(&self, detector: &str) -> Option<u32> {
        match self.0.get(detector) {
            Some(Tuning::Count(n)) => Some(*n),
            _ => None,
        }
    }

    /// Whether the class turned `detector` off.
    pub fn is_off(&self, detector: &str) -> bool {
        matches!(self.0.get(detector), Some(Tuning::Off))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Tuning)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Adds one detector's tuning, checked as a profile's is (for bundles read back).
    pub fn insert(&mut self, detector: &str, t: Tuning) -> Result<(), String> {
        check(detector, t)?;
        self.0.insert(detector.to_string(), t);
        Ok(())
    }

    /// For people: `scan_vertical 40, beacon off` (empty when nothing is set).
    pub fn describe(&self) -> String {
        self.iter()
            .map(|(d, t)| match t {
                Tuning::Count(n) => format!("{d} {n}"),
                Tuning::Off => format!("{d} off"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn check(detector: &str, t: Tuning) -> Result<(), String> {
    if !DETECTORS.contains(&detector) {
        return Err(format!("`{detector}` is not a detector"));
    }
    match t {
        Tuning::Off => Ok(()),
        Tuning::Count(_) if !COUNTED.iter().any(|(d, _)| *d == detector) => Err(format!(
            "`{detector}` has no count to set; it can only be turned `off`"
        )),
        Tuning::Count(n) if !COUNT_RANGE.contains(&n) => Err(format!(
            "a count of {n} for `{detector}` is out of range ({}-{})",
            COUNT_RANGE.start(),
            COUNT_RANGE.end()
        )),
        Tuning::Count(_) => Ok(()),
    }
}

/// A problem in a written `detection:` map: where it is, and what is wrong.
pub struct Problem<'a> {
    pub key: &'a Located<String>,
    pub value: &'a Located<Setting>,
    /// Whether the key (rather than its value) is what is wrong.
    pub at_key: bool,
    pub why: String,
}

/// Parses a written `detection:` map, or every problem in it.
pub fn parse(written: &Written) -> Result<ClassDetection, Vec<Problem<'_>>> {
    let mut out = ClassDetection::default();
    let mut problems = Vec::new();
    for (key, value) in written {
        let tuning = match &value.value {
            Setting::Word(w) if w.trim() == "off" => Tuning::Off,
            Setting::Flag(false) => Tuning::Off,
            Setting::Flag(true) => {
                problems.push(Problem {
                    key,
                    value,
                    at_key: false,
                    why: "`on` is not a setting: a detector is on unless turned `off`; give a count to change when it fires".into(),
                });
                continue;
            }
            Setting::Count(n) => match u32::try_from(*n) {
                Ok(n) => Tuning::Count(n),
                // Negative or past u32: out of range whatever the detector.
                Err(_) if DETECTORS.contains(&key.value.as_str()) => {
                    problems.push(Problem {
                        key,
                        value,
                        at_key: false,
                        why: format!(
                            "a count of {n} for `{}` is out of range ({}-{})",
                            key.value,
                            COUNT_RANGE.start(),
                            COUNT_RANGE.end()
                        ),
                    });
                    continue;
                }
                Err(_) => Tuning::Off,
            },
            Setting::Word(w) => {
                problems.push(Problem {
                    key,
                    value,
                    at_key: false,
                    why: format!("`{w}` is neither a count nor `off`"),
                });
                continue;
            }
        };
        if let Err(why) = out.insert(&key.value, tuning) {
            let at_key = !DETECTORS.contains(&key.value.as_str());
            problems.push(Problem {
                key,
                value,
                at_key,
                why,
            });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The hint for a problem: the detectors with a count, or all of them.
pub fn hint(p: &Problem<'_>) -> String {
    if p.at_key {
        format!("detectors: {}", DETECTORS.join(", "))
    } else {
        let counted: Vec<String> = COUNTED.iter().map(|(d, w)| format!("{d} ({w})")).collect();
        format!(
            "a count ({}-{}) for {}; or `off` for any detector",
            COUNT_RANGE.start(),
            COUNT_RANGE.end(),
            counted.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(pairs: &[(&str, Setting)]) -> Written {
        pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let line = i as u32 + 2;
                (
                    Located::at(k.to_string(), line, 3),
                    Located::at(v.clone(), line, 20),
                )
            })
            .collect()
    }

    #[test]
    fn counts_and_off_parse() {
        let w = written(&[
            ("scan_vertical", Setting::Count(40)),
            ("beacon", Setting::Word("off".into())),
        ]);
        let c = parse(&w).unwrap_or_else(|_| panic!("valid"));
        assert_eq!(c.count("scan_vertical"), Some(40));
        assert_eq!(c.count("fanout"), None);
        assert!(c.is_off("beacon"));
        assert!(!c.is_off("scan_vertical"));
        assert_eq!(c.describe(), "beacon off, scan_vertical 40");
    }

    #[test]
    fn every_mistake_is_reported_where_it_is() {
        let w = written(&[
            ("scan_vertcal", Setting::Count(40)),
            ("beacon", Setting::Count(5)),
            ("fanout", Setting::Count(1)),
            ("dns_tunnel", Setting::Word("sometimes".into())),
            ("brute_force", Setting::Count(-3)),
        ]);
        let Err(problems) = parse(&w) else {
            panic!("five mistakes")
        };
        let mut got: Vec<(u32, bool, String)> = problems
            .iter()
            .map(|p| (p.key.line, p.at_key, p.why.clone()))
            .collect();
        got.sort();
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(
            got.iter()
                .any(|(_, k, w)| *k && w.contains("`scan_vertcal` is not"))
        );
        assert!(
            got.iter()
                .any(|(_, k, w)| !k && w.contains("`beacon` has no count"))
        );
        assert!(
            got.iter()
                .any(|(_, _, w)| w.contains("count of 1 for `fanout`"))
        );
        assert!(
            got.iter()
                .any(|(_, _, w)| w.contains("`sometimes` is neither"))
        );
        assert!(
            got.iter()
                .any(|(_, _, w)| w.contains("count of -3 for `brute_force`"))
        );
    }
}
