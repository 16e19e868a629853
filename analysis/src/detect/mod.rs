//! Detectors: flow records and address claims in, findings (alerts) out, each with its evidence.
//!
//! Every detector is one module behind [`Detector`], its parameters in a config struct (all in
//! [`DetectConfig`], serde with defaults, so a config file may set any of them). The [`Engine`]
//! feeds each observation, in time order, to every detector, fills the device context (class,
//! location, asset id) and aggregates (one finding per device, detector and peer per window).
//!
//! Time is the observations' own clock (capture time offline, wall time live): nothing here
//! reads a clock. Detectors that compare against a device's baseline run only when baselines are
//! given; the others (scans, fan-out, class protocols, floods, spoofing) need none.

pub mod aggregate;
pub mod arp;
pub mod beacon;
pub mod brute_force;
pub mod class_protocol;
pub mod dns_nxdomain;
pub mod dns_tunnel;
pub mod fanout;
pub mod finding;
pub mod flag_probe;
pub mod flood;
pub mod format;
pub mod lateral;
pub mod learned;
pub mod new_activity;
pub mod rogue_dhcp;
pub mod rogue_router;
pub mod scan;
pub mod spoof;
pub mod trw;
pub mod volume;
pub mod window;

use std::{collections::HashMap, net::IpAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use wardgate_policy::{detection::ClassDetection, profile::Sensitivity};

pub use aggregate::{AggregateConfig, Aggregator};
pub use arp::{AddressClaim, ClaimKind};
pub use finding::{Evidence, Finding, FlowRef, Matrix, Metric, Severity, Technique};
pub use learned::{Baselines, Learned, LearnedHour};

use crate::{
    dns::DnsEvent,
    flow::{DeviceRef, FlowRecord},
    mac::Mac,
};

pub(crate) const NS: u64 = 1_000_000_000;

/// A multicast or broadcast address (IPv4 limited broadcast, or a last octet of 255, the
/// broadcast of the /24 subnets wards use): DHCP, NetBIOS name queries, mDNS and SSDP go there
/// from ordinary devices, so they mean nothing as a new peer, a class's protocol or a scan.
pub(crate) fn is_group_address(ip: IpAddr) -> bool {
    ip.is_multicast() || scan::is_broadcast(ip)
}

/// What detectors read, in time order.
#[derive(Clone, Copy, Debug)]
pub enum Observation<'a> {
    /// A flow record (live: as the flow table finishes it; offline: ordered by first packet).
    Flow(&'a FlowRecord),
    /// A link-layer claim of an address (ARP).
    Claim(&'a AddressClaim),
    /// A DNS message of a device (its query, or the answer it got), at the packet's time.
    Dns(&'a DnsEvent),
}

impl Observation<'_> {
    pub fn time_ns(&self) -> u64 {
        match self {
            Observation::Flow(r) => r.first_seen_ns,
            Observation::Claim(c) => c.ts_ns,
            Observation::Dns(d) => d.ts_ns,
        }
    }
}

/// One detector. `observe` is called for every observation in time order and pushes any
/// detections (raw, not yet aggregated) into `out`.
pub trait Detector: Send {
    /// The detector's name as findings carry it (`scan_vertical`, `class_protocol`, ...).
    fn name(&self) -> &'static str;
    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>);
    /// Whether it reads continuation records ([`FlowRecord::continuation`]: what a flow already
    /// recorded moved since). Detectors of amounts (bytes, packet rates) do; the engine gives
    /// the others none, as a continuation is no new contact, attempt or period.
    fn takes_continuations(&self) -> bool {
        false
    }
}

/// What the site says about one device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFacts {
    pub name: String,
    /// Profile (class) name; `None` for devices found without a site.
    pub class: Option<String>,
    pub location: Option<String>,
    pub asset_id: Option<String>,
    pub gateway: Option<String>,
    pub mac: Option<Mac>,
    pub addresses: Vec<IpAddr>,
    /// The profile's `baseline_sensitivity` (default medium).
    pub sensitivity: Sensitivity,
    /// The profile's `detection:` tuning: a detector's count for the class, or off.
    #[serde(default, skip_serializing_if = "ClassDetection::is_empty")]
    pub detection: ClassDetection,
}

impl DeviceFacts {
    /// A device from the site file (a medical device of a class), as opposed to one discovered
    /// in a capture (a general host). Thresholds are tighter for devices.
    pub fn is_site_device(&self) -> bool {
        self.class.is_some()
    }
}

/// The site as detectors see it: its devices by name, MAC and address, and its own networks
/// (groups and device addresses), to tell inside peers from outside ones.
#[derive(Clone, Debug, Default)]
pub struct SiteFacts {
    devices: HashMap<String, DeviceFacts>,
    by_addr: HashMap<IpAddr, String>,
    by_mac: HashMap<Mac, String>,
    networks: Vec<IpNet>,
    groups: Vec<(String, IpNet)>,
}

impl SiteFacts {
    /// From a parsed site file. Devices whose MAC or addresses do not parse keep what parses
    /// (the flow table's device list reports the bad ones).
    pub fn from_site(site: &wardgate_policy::Site) -> SiteFacts {
        let mut f = SiteFacts::default();
        for (name, cidrs) in &site.groups {
            for c in cidrs {
                let net = c
                    .value
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| c.value.parse::<IpAddr>().ok().map(IpNet::from));
                if let Some(net) = net {
                    f.add_group(name, net);
                }
            }
        }
        for d in &site.devices {
            let addresses: Vec<IpAddr> = d
                .addresses
                .iter()
                .filter_map(|a| a.value.split('/').next()?.parse().ok())
                .collect();
            f.add(DeviceFacts {
                name: d.name.value.clone(),
                class: Some(d.profile.value.clone()),
                location: (!d.location.is_empty()).then(|| d.location.clone()),
                asset_id: (!d.asset_id.is_empty()).then(|| d.asset_id.clone()),
                gateway: Some(d.gateway.value.clone()),
                mac: d.mac.value.parse().ok(),
                addresses,
                sensitivity: Sensitivity::default(),
                detection: ClassDetection::default(),
            });
        }
        f
    }

    /// A site group's network: inside the site, and named by [`SiteFacts::group_of`].
    pub fn add_group(&mut self, name: &str, net: IpNet) {
        self.networks.push(net);
        self.groups.push((name.to_string(), net));
    }

    pub fn add(&mut self, d: DeviceFacts) {
        for a in &d.addresses {
            self.by_addr.insert(*a, d.name.clone());
            self.networks.push(IpNet::from(*a));
        }
        if let Some(m) = d.mac {
            self.by_mac.insert(m, d.name.clone());
        }
        self.devices.insert(d.name.clone(), d);
    }

    /// Sets a class's sensitivity (from its profile's `baseline_sensitivity`).
    pub fn set_sensitivity(&mut self, class: &str, s: Sensitivity) {
        for d in self.devices.values_mut() {
            if d.class.as_deref() == Some(class) {
                d.sensitivity = s;
            }
        }
    }

    /// Sets a class's detector tuning (from its profile's `detection:`).
    pub fn set_detection(&mut self, class: &str, t: &ClassDetection) {
        for d in self.devices.values_mut() {
            if d.class.as_deref() == Some(class) {
                d.detection = t.clone();
            }
        }
    }

    pub fn device(&self, name: &str) -> Option<&DeviceFacts> {
        self.devices.get(name)
    }

    pub fn owner_of_addr(&self, ip: IpAddr) -> Option<&DeviceFacts> {
        self.by_addr.get(&ip).and_then(|n| self.devices.get(n))
    }

    pub fn owner_of_mac(&self, mac: Mac) -> Option<&DeviceFacts> {
        self.by_mac.get(&mac).and_then(|n| self.devices.get(n))
    }

    /// Whether the site knows `ip` (a group or a device address).
    pub fn is_inside(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(&ip))
    }

    /// The site group with the longest prefix holding `ip`.
    pub fn group_of(&self, ip: IpAddr) -> Option<&str> {
        self.groups
            .iter()
            .filter(|(_, n)| n.contains(&ip))
            .max_by_key(|(_, n)| n.prefix_len())
            .map(|(g, _)| g.as_str())
    }

    /// Whether a site was given at all.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.networks.is_empty()
    }
}

/// What detectors may consult besides the observation.
pub struct Context<'a> {
    pub site: &'a SiteFacts,
    pub baselines: &'a Baselines,
}

impl Context<'_> {
    /// The device's facts, or a general host's (no class, medium sensitivity).
    pub fn facts(&self, device: &DeviceRef) -> DeviceFacts {
        self.site
            .device(&device.name)
            .cloned()
            .unwrap_or_else(|| DeviceFacts {
                name: device.name.clone(),
                mac: device.mac,
                ..DeviceFacts::default()
            })
    }
}

/// A count threshold for general hosts and a tighter one for site devices, scaled by the
/// device's sensitivity (low x1.5, medium x1, high x0.67, never under 2), unless the device's
/// class sets the detector's count (`detection:` in its profile), which is taken as written.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub host: u32,
    pub device: u32,
}

impl Threshold {
    /// The threshold of `detector` for the device.
    pub fn for_device(&self, f: &DeviceFacts, detector: &str) -> u32 {
        self.in_window(f, detector, self.device)
    }

    /// The same, for a detector with several windows whose `main` window's device threshold
    /// is what a class's count replaces: this window keeps its proportion to it.
    pub fn in_window(&self, f: &DeviceFacts, detector: &str, main: u32) -> u32 {
        if !f.is_site_device() {
            return scale(self.host, f.sensitivity);
        }
        match f.detection.count(detector) {
            Some(n) => {
                let v = u64::from(self.device) * u64::from(n) / u64::from(main.max(1));
                u32::try_from(v).unwrap_or(u32::MAX).max(2)
            }
            None => scale(self.device, f.sensitivity),
        }
    }
}

pub(crate) fn scale(base: u32, s: Sensitivity) -> u32 {
    let v = match s {
        Sensitivity::Low => f64::from(base) * 1.5,
        Sensitivity::Medium => f64::from(base),
        Sensitivity::High => f64::from(base) / 1.5,
    };
    (v.round() as u32).max(2)
}

/// Every detector's parameters; each field's defaults are documented on its struct.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    pub scan: scan::ScanConfig,
    pub trw: trw::TrwConfig,
    pub fanout: fanout::FanoutConfig,
    pub class_protocol: class_protocol::ClassProtocolConfig,
    pub flood: flood::FloodConfig,
    pub spoof: spoof::SpoofConfig,
    pub new_activity: new_activity::NewActivityConfig,
    pub volume: volume::VolumeConfig,
    pub beacon: beacon::BeaconConfig,
    pub brute_force: brute_force::BruteForceConfig,
    pub rogue_dhcp: rogue_dhcp::RogueDhcpConfig,
    pub lateral: lateral::LateralConfig,
    pub dns_tunnel: dns_tunnel::DnsTunnelConfig,
    pub dns_nxdomain: dns_nxdomain::DnsNxdomainConfig,
    pub aggregate: AggregateConfig,
}

/// The detectors that need no baseline, configured.
pub fn baseline_free(cfg: &DetectConfig) -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(scan::VerticalScan::new(cfg.scan.clone())),
        Box::new(scan::HorizontalScan::new(cfg.scan.clone())),
        Box::new(trw::Trw::new(cfg.trw.clone())),
        Box::new(flag_probe::FlagProbe),
        Box::new(fanout::FanOut::new(cfg.fanout.clone())),
        Box::new(class_protocol::ClassProtocol::new(
            cfg.class_protocol.clone(),
        )),
        Box::new(flood::Flood::new(cfg.flood.clone())),
        Box::new(spoof::Spoof::new(cfg.spoof.clone())),
        Box::new(brute_force::BruteForce::new(cfg.brute_force.clone())),
        Box::new(rogue_dhcp::RogueDhcp::new(cfg.rogue_dhcp.clone())),
        Box::new(rogue_router::RogueRouter),
        Box::new(lateral::Lateral::new(cfg.lateral.clone())),
        Box::new(dns_tunnel::DnsTunnel::new(cfg.dns_tunnel.clone())),
        Box::new(dns_nxdomain::DnsNxdomain::new(cfg.dns_nxdomain.clone())),
    ]
}

/// The detectors that compare against a device's baseline (run only when baselines are given;
/// a device without one is skipped by them).
pub fn with_baseline(cfg: &DetectConfig) -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(new_activity::NewActivity::new(cfg.new_activity.clone())),
        Box::new(volume::Volume::new(cfg.volume.clone())),
        Box::new(beacon::Beacon::new(cfg.beacon.clone())),
    ]
}

/// All detectors that can run: the baseline-free ones, and the baseline ones when there are
/// baselines.
pub fn detectors(cfg: &DetectConfig, have_baselines: bool) -> Vec<Box<dyn Detector>> {
    let mut v = baseline_free(cfg);
    if have_baselines {
        v.extend(with_baseline(cfg));
    }
    v
}

/// Runs detectors over observations and aggregates what they raise.
pub struct Engine {
    detectors: Vec<Box<dyn Detector>>,
    site: SiteFacts,
    baselines: Baselines,
    agg: Aggregator,
    raw: Vec<Finding>,
    last_ns: u64,
}

impl Engine {
    pub fn new(
        detectors: Vec<Box<dyn Detector>>,
        site: SiteFacts,
        baselines: Baselines,
        cfg: AggregateConfig,
    ) -> Self {
        Engine {
            detectors,
            site,
            baselines,
            agg: Aggregator::new(cfg),
            raw: Vec::new(),
            last_ns: 0,
        }
    }

    /// Replaces what the engine knows of the site (live: a new policy generation), keeping
    /// every detector's state.
    pub fn set_site(&mut self, site: SiteFacts) {
        self.site = site;
    }

    /// The detectors' names, in order.
    pub fn detector_names(&self) -> Vec<&'static str> {
        self.detectors.iter().map(|d| d.name()).collect()
    }

    /// Feeds one observation; returns the aggregated findings it opened or updated.
    pub fn observe(&mut self, obs: &Observation<'_>) -> Vec<Finding> {
        self.last_ns = self.last_ns.max(obs.time_ns());
        let ctx = Context {
            site: &self.site,
            baselines: &self.baselines,
        };
        self.raw.clear();
        let continuation = matches!(obs, Observation::Flow(r) if r.continuation);
        for d in &mut self.detectors {
            if continuation && !d.takes_continuations() {
                continue;
            }
            d.observe(obs, &ctx, &mut self.raw);
        }
        let mut changed = Vec::new();
        for mut f in self.raw.drain(..) {
            let facts = ctx.facts(&f.device);
            // The subject's class turned this detector off (its profile's `detection:`).
            if facts.detection.is_off(&f.detector) {
                continue;
            }
            f.class = f.class.or(facts.class);
            f.location = f.location.or(facts.location);
            f.asset_id = f.asset_id.or(facts.asset_id);
            f.gateway = f.gateway.or(facts.gateway);
            changed.push(self.agg.add(f).clone());
        }
        changed
    }

    /// Closes the findings whose window ended by `now_ns` and hands over every closed one,
    /// once (live: the engine then forgets them; see [`Aggregator::expire`]).
    pub fn expire(&mut self, now_ns: u64) -> Vec<Finding> {
        self.agg.expire(now_ns)
    }

    /// The aggregator's sizes and early closes, for the live agent's log.
    pub fn aggregation(&self) -> &Aggregator {
        &self.agg
    }

    /// Every aggregated finding not yet handed over by `expire` (offline: all), by first seen.
    pub fn findings(&self) -> Vec<Finding> {
        self.agg.all()
    }
}

/// Runs the detectors over flow records and claims merged in time order (records by first
/// packet): the offline path, and what the tests and the eval use.
pub fn run_all(
    detectors: Vec<Box<dyn Detector>>,
    site: SiteFacts,
    baselines: Baselines,
    cfg: AggregateConfig,
    flows: &[FlowRecord],
    claims: &[AddressClaim],
) -> Vec<Finding> {
    run_observed(detectors, site, baselines, cfg, flows, claims, &[])
}

/// [`run_all`] with DNS messages too, all merged in time order (a stable sort: at the same
/// instant records come first, then claims, then DNS messages).
pub fn run_observed(
    detectors: Vec<Box<dyn Detector>>,
    site: SiteFacts,
    baselines: Baselines,
    cfg: AggregateConfig,
    flows: &[FlowRecord],
    claims: &[AddressClaim],
    dns: &[DnsEvent],
) -> Vec<Finding> {
    let mut obs: Vec<Observation<'_>> = flows
        .iter()
        .map(Observation::Flow)
        .chain(claims.iter().map(Observation::Claim))
        .chain(dns.iter().map(Observation::Dns))
        .collect();
    obs.sort_by_key(|o| o.time_ns());
    let mut e = Engine::new(detectors, site, baselines, cfg);
    for o in &obs {
        e.observe(o);
    }
    e.findings()
}

#[cfg(test)]
mod tests;
