//! Scanning within windows: vertical (many ports on one host) and horizontal (many hosts on one
//! port), counting the opener's failed contacts (refused, unanswered, denied, half-open, flag
//! and ACK probes: `flow::probe::failed_contact`, Zeek's rule) whichever side opened the flow:
//! a device scanning out is the subject of its own findings; a host scanning devices in is the
//! subject of findings whose evidence lists the devices it probed.
//!
//! Three windows each: a burst (2 s: a quick sweep of ~10 ports or hosts), Zeek's 5 min (15
//! ports or 25 hosts for any host; a medical device, whose peers are few and fixed, gets 8 and
//! 10), and a slow one (4 h at twice those counts) for scans paced to stay under 5 min windows.
//! Counts scale with the subject device's sensitivity.

use std::{collections::HashMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, DeviceFacts, NS, Observation, Threshold,
    finding::{Finding, FlowRef, MAX_LISTED, Matrix, Metric, Severity, Technique},
    window::WindowSet,
};
use crate::{
    decode::proto,
    flow::{
        DeviceRef, FlowDirection, FlowRecord,
        probe::{self, failed_contact},
    },
};

/// One counting window and its thresholds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanWindow {
    pub window_s: u64,
    /// Distinct ports on one target.
    pub vertical: Threshold,
    /// Distinct targets on one port.
    pub horizontal: Threshold,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    /// Burst, Zeek's 5 min, slow (defaults above).
    pub windows: Vec<ScanWindow>,
    /// Count answered flows too (default false: only failed contacts count, as Zeek).
    pub count_answered: bool,
    /// UDP services that never answer (syslog, SNMP traps, NetFlow/IPFIX, sFlow): a datagram
    /// to them is no failed contact.
    pub one_way_udp: Vec<u16>,
    /// The single window of earlier releases (`window_s`, `vertical`, `horizontal`): when set,
    /// they replace the 5 min window's values, so an existing config keeps meaning the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vertical: Option<Threshold>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub horizontal: Option<Threshold>,
}

impl ScanConfig {
    /// The windows with an earlier release's single-window keys applied to the middle one.
    fn resolved(mut self) -> ScanConfig {
        let mid = self.windows.len() / 2;
        if let Some(w) = self.windows.get_mut(mid) {
            if let Some(s) = self.window_s.take() {
                w.window_s = s;
            }
            if let Some(t) = self.vertical.take() {
                w.vertical = t;
            }
            if let Some(t) = self.horizontal.take() {
                w.horizontal = t;
            }
        }
        self
    }

    /// The window a class's `detection:` count sets (the 5 minute one, Zeek's); the others
    /// keep their proportion to it.
    fn main(&self, pick: fn(&ScanWindow) -> Threshold) -> u32 {
        self.windows
            .get(self.windows.len() / 2)
            .map_or(1, |w| pick(w).device)
    }
}

impl Default for ScanConfig {
    fn default() -> Self {
        let t = |host, device| Threshold { host, device };
        ScanConfig {
            windows: vec![
                ScanWindow {
                    window_s: 2,
                    vertical: t(8, 6),
                    horizontal: t(8, 6),
                },
                ScanWindow {
                    window_s: 300,
                    vertical: t(15, 8),
                    horizontal: t(25, 10),
                },
                ScanWindow {
                    window_s: 4 * 3600,
                    vertical: t(30, 16),
                    horizontal: t(50, 20),
                },
            ],
            count_answered: false,
            one_way_udp: vec![514, 162, 2055, 4739, 6343],
            window_s: None,
            vertical: None,
            horizontal: None,
        }
    }
}

const VERTICAL: &str = "scan_vertical";
const HORIZONTAL: &str = "scan_horizontal";

/// Distinct keys tracked per window set (bounds memory on a full-range scan).
const CAP: usize = 4096;
/// Subject/target pairs tracked at once; past it, pairs with nothing left in their windows go.
const MAX_PAIRS: usize = 65_536;

/// Whether `r` is a contact the scan detectors count.
pub(crate) fn counted(r: &FlowRecord, cfg: &ScanConfig) -> bool {
    let (_, target) = probe::opener_and_target(r);
    matches!(r.proto, proto::TCP | proto::UDP)
        && r.port != 0
        && !super::is_group_address(target)
        && !(r.proto == proto::UDP && cfg.one_way_udp.contains(&r.port))
        && (cfg.count_answered || failed_contact(r))
}

pub(crate) fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast() || v4.octets()[3] == 255)
}

/// Who opened the flow, as a finding's subject: the device itself, or the peer that opened it
/// (a site device by its name, any other host by its address), with what the site says of it.
pub(crate) fn opener(r: &FlowRecord, ctx: &Context<'_>) -> (DeviceRef, DeviceFacts) {
    match r.direction {
        FlowDirection::Opened => (r.device.clone(), ctx.facts(&r.device)),
        FlowDirection::Received => match ctx.site.owner_of_addr(r.peer) {
            Some(f) => (
                DeviceRef {
                    name: f.name.clone(),
                    id: None,
                    mac: f.mac,
                },
                f.clone(),
            ),
            None => {
                let d = DeviceRef {
                    name: r.peer.to_string(),
                    id: None,
                    mac: None,
                };
                let facts = ctx.facts(&d);
                (d, facts)
            }
        },
    }
}

/// A scan's severity: high when a site device scans or is scanned.
pub(crate) fn severity(subject: &DeviceFacts, r: &FlowRecord, ctx: &Context<'_>) -> Severity {
    let target_is_device = match r.direction {
        FlowDirection::Received => true,
        FlowDirection::Opened => ctx.site.owner_of_addr(r.peer).is_some(),
    };
    if subject.is_site_device() || (target_is_device && !ctx.site.is_empty()) {
        Severity::High
    } else {
        Severity::Medium
    }
}

/// The action for a finding whose subject is `facts`: quarantine a device; investigate a host
/// wardgate does not enforce.
pub(crate) fn action(subject: &DeviceRef, facts: &DeviceFacts) -> Option<String> {
    (!facts.is_site_device() && facts.mac.is_none() && subject.mac.is_none()).then(|| {
        format!(
            "investigate {}: not a device of the site; block it upstream (wardgate enforces devices only)",
            subject.name
        )
    })
}

/// Of the windows where an observation was new, the one over its count holding the most
/// (the shortest of equals): one finding per observation, with the fullest evidence.
fn over<V>(
    windows: Vec<(usize, &WindowSet<V>)>,
    limit: impl Fn(usize) -> u32,
) -> Option<(usize, &WindowSet<V>, u32, u32)>
where
    V: Copy + Eq + std::hash::Hash,
{
    windows
        .into_iter()
        .map(|(i, set)| (i, set, set.len() as u32, limit(i)))
        .filter(|(_, _, n, limit)| n >= limit)
        .max_by_key(|(i, _, n, _)| (*n, std::cmp::Reverse(*i)))
}

fn proto_label(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        _ => "ip",
    }
}

fn window_label(s: u64) -> String {
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else {
        format!("{s} s")
    }
}

/// Window sets per key, one per configured window, bounded in number.
struct Windows<K, V> {
    sets: HashMap<K, Vec<WindowSet<V>>>,
}

impl<K: std::hash::Hash + Eq + Clone, V: std::hash::Hash + Eq + Copy> Windows<K, V> {
    fn new() -> Self {
        Windows {
            sets: HashMap::new(),
        }
    }

    /// Records `value` under `key` at `now_ns` in every window; returns the windows (index,
    /// set) where it was new.
    fn insert(
        &mut self,
        cfg: &ScanConfig,
        key: K,
        now_ns: u64,
        value: V,
    ) -> Vec<(usize, &WindowSet<V>)> {
        if self.sets.len() >= MAX_PAIRS && !self.sets.contains_key(&key) {
            self.sets.retain(|_, w| {
                w.iter_mut().any(|s| {
                    s.expire(now_ns);
                    !s.is_empty()
                })
            });
            if self.sets.len() >= MAX_PAIRS {
                return Vec::new();
            }
        }
        let sets = self.sets.entry(key).or_insert_with(|| {
            cfg.windows
                .iter()
                .map(|w| WindowSet::new(w.window_s * NS, CAP))
                .collect()
        });
        let new: Vec<bool> = sets.iter_mut().map(|s| s.insert(now_ns, value)).collect();
        sets.iter().enumerate().filter(|(i, _)| new[*i]).collect()
    }
}

pub struct VerticalScan {
    cfg: ScanConfig,
    /// (opener, target) -> (proto, port)
    windows: Windows<(IpAddr, IpAddr), (u8, u16)>,
}

impl VerticalScan {
    pub fn new(cfg: ScanConfig) -> Self {
        VerticalScan {
            cfg: cfg.resolved(),
            windows: Windows::new(),
        }
    }
}

impl VerticalScan {
    /// The configuration in effect.
    pub fn config(&self) -> &ScanConfig {
        &self.cfg
    }
}

impl Detector for VerticalScan {
    fn name(&self) -> &'static str {
        VERTICAL
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        if !counted(r, &self.cfg) {
            return;
        }
        let (from, target) = probe::opener_and_target(r);
        let (subject, facts) = opener(r, ctx);
        let cfg = &self.cfg;
        let Some((i, set, n, limit)) = over(
            self.windows
                .insert(cfg, (from, target), r.first_seen_ns, (r.proto, r.port)),
            |i| {
                cfg.windows[i]
                    .vertical
                    .in_window(&facts, VERTICAL, cfg.main(|w| w.vertical))
            },
        ) else {
            return;
        };
        let w = &cfg.windows[i];
        let mut ports: Vec<u16> = set.keys().map(|(_, p)| *p).collect();
        ports.sort_unstable();
        ports.dedup();
        ports.truncate(MAX_LISTED);
        let secs = r.first_seen_ns.saturating_sub(set.start_ns()) as f64 / 1e9;
        let mut f = Finding::new(
            VERTICAL,
            &subject,
            r.first_seen_ns,
            severity(&facts, r, ctx),
            confidence(n, limit),
            Technique::new("T1046", "Network Service Discovery", Matrix::Enterprise),
        );
        f.peer = Some(target);
        f.summary = format!(
            "{} probed {n} {} ports on {target} in {secs:.3} s (limit {limit} in {})",
            subject.name,
            proto_label(r.proto),
            window_label(w.window_s)
        );
        if let Some(a) = action(&subject, &facts) {
            f.action = a;
        }
        f.flows.push(FlowRef::from_opener(r));
        // Live records come in the order their flows' fates are known, not opened: this one
        // may have opened before the set's first (a scan's refused port seen before an
        // unanswered one). The window spans both either way.
        let (first, this) = (set.start_ns(), r.first_seen_ns);
        f.evidence.window_start_ns = first.min(this);
        f.evidence.window_end_ns = first.max(this);
        f.evidence.metrics =
            vec![Metric::new("distinct_ports", f64::from(n)).threshold(f64::from(limit))];
        f.evidence.ports = ports;
        f.evidence.peers = vec![target];
        out.push(f);
    }
}

pub struct HorizontalScan {
    cfg: ScanConfig,
    /// (opener, proto, port) -> targets
    windows: Windows<(IpAddr, u8, u16), IpAddr>,
}

impl HorizontalScan {
    pub fn new(cfg: ScanConfig) -> Self {
        HorizontalScan {
            cfg: cfg.resolved(),
            windows: Windows::new(),
        }
    }
}

impl Detector for HorizontalScan {
    fn name(&self) -> &'static str {
        HORIZONTAL
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        if !counted(r, &self.cfg) {
            return;
        }
        let (from, target) = probe::opener_and_target(r);
        let (subject, facts) = opener(r, ctx);
        let cfg = &self.cfg;
        let Some((i, set, n, limit)) = over(
            self.windows
                .insert(cfg, (from, r.proto, r.port), r.first_seen_ns, target),
            |i| {
                cfg.windows[i]
                    .horizontal
                    .in_window(&facts, HORIZONTAL, cfg.main(|w| w.horizontal))
            },
        ) else {
            return;
        };
        let w = &cfg.windows[i];
        let mut peers: Vec<IpAddr> = set.keys().copied().collect();
        peers.sort_unstable();
        peers.truncate(MAX_LISTED);
        let secs = r.first_seen_ns.saturating_sub(set.start_ns()) as f64 / 1e9;
        let mut f = Finding::new(
            HORIZONTAL,
            &subject,
            r.first_seen_ns,
            severity(&facts, r, ctx),
            confidence(n, limit),
            Technique::new("T0846", "Remote System Discovery", Matrix::Ics),
        );
        f.summary = format!(
            "{} probed {n} hosts on {}/{} in {secs:.3} s (limit {limit} in {})",
            subject.name,
            proto_label(r.proto),
            r.port,
            window_label(w.window_s)
        );
        if let Some(a) = action(&subject, &facts) {
            f.action = a;
        }
        f.flows.push(FlowRef::from_opener(r));
        // Live records come in the order their flows' fates are known, not opened: this one
        // may have opened before the set's first (a scan's refused port seen before an
        // unanswered one). The window spans both either way.
        let (first, this) = (set.start_ns(), r.first_seen_ns);
        f.evidence.window_start_ns = first.min(this);
        f.evidence.window_end_ns = first.max(this);
        f.evidence.metrics =
            vec![Metric::new("distinct_hosts", f64::from(n)).threshold(f64::from(limit))];
        f.evidence.ports = vec![r.port];
        f.evidence.peers = peers;
        out.push(f);
    }
}

/// At the threshold 0.6, rising towards 0.99 at three times it.
pub(crate) fn confidence(n: u32, limit: u32) -> f64 {
    let x = f64::from(n) / f64::from(limit.max(1));
    (0.6 + 0.2 * (x - 1.0)).clamp(0.6, 0.99)
}
