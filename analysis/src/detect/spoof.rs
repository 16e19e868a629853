//! Spoofing: a MAC claiming an address that belongs to another device. With a site, the site
//! says whose each address is: an ARP claim or an IP packet sent from a site device's address by
//! another MAC is raised at once. Without a site, the first MAC seen claiming an address owns it
//! until it has been silent for `owner_idle_s`; a different MAC claiming it sooner is raised
//! (a DHCP lease moving to another device after a quiet hour is not).

use std::{collections::HashMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, NS, Observation,
    finding::{Finding, FlowRef, Matrix, Metric, Severity, Technique},
};
use crate::{
    flow::{DeviceRef, FlowDirection},
    mac::Mac,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoofConfig {
    /// Without a site: how long an address stays its first claimer's (default 3600 s).
    pub owner_idle_s: u64,
}

impl Default for SpoofConfig {
    fn default() -> Self {
        SpoofConfig { owner_idle_s: 3600 }
    }
}

pub struct Spoof {
    cfg: SpoofConfig,
    /// Address -> (owner MAC, last claim).
    owners: HashMap<IpAddr, (Mac, u64)>,
}

impl Spoof {
    pub fn new(cfg: SpoofConfig) -> Self {
        Spoof {
            cfg,
            owners: HashMap::new(),
        }
    }

    /// The owner of `addr` if it is not `mac`: from the site, else from earlier claims.
    fn other_owner(
        &mut self,
        ctx: &Context<'_>,
        mac: Mac,
        addr: IpAddr,
        now: u64,
    ) -> Option<(String, Option<Mac>)> {
        if let Some(owner) = ctx.site.owner_of_addr(addr) {
            return match owner.mac {
                Some(m) if m != mac => Some((owner.name.clone(), Some(m))),
                _ => None,
            };
        }
        if !ctx.site.is_empty() && ctx.site.owner_of_mac(mac).is_none() {
            // A site is given but neither the address nor the MAC is a device: not ours to judge.
            return None;
        }
        let idle = self.cfg.owner_idle_s * NS;
        match self.owners.get_mut(&addr) {
            Some((m, last)) if *m == mac => {
                *last = now;
                None
            }
            Some((m, last)) if now.saturating_sub(*last) <= idle => {
                Some((format!("the holder {m}"), Some(*m)))
            }
            _ => {
                self.owners.insert(addr, (mac, now));
                None
            }
        }
    }
}

fn claimer(ctx: &Context<'_>, mac: Mac) -> DeviceRef {
    match ctx.site.owner_of_mac(mac) {
        Some(d) => DeviceRef {
            name: d.name.clone(),
            id: None,
            mac: Some(mac),
        },
        None => DeviceRef {
            name: format!("dev-{mac}"),
            id: None,
            mac: Some(mac),
        },
    }
}

impl Detector for Spoof {
    fn name(&self) -> &'static str {
        "spoof"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let (mac, addr, now, how, flow) = match obs {
            Observation::Claim(c) => {
                let how = format!("{:?} claim", c.kind).to_lowercase();
                (c.mac, c.addr, c.ts_ns, how, None)
            }
            Observation::Flow(r) => {
                // The device's own packets: the address it sent from.
                let Some(mac) = r.device.mac else { return };
                if r.direction != FlowDirection::Opened {
                    return;
                }
                (
                    mac,
                    r.device_addr,
                    r.first_seen_ns,
                    "packets sent".to_string(),
                    Some(FlowRef::from(*r)),
                )
            }
            Observation::Dns(_) => return,
        };
        if addr.is_unspecified() || addr.is_multicast() {
            return;
        }
        let Some((owner, owner_mac)) = self.other_owner(ctx, mac, addr, now) else {
            return;
        };
        let device = match obs {
            Observation::Flow(r) => r.device.clone(),
            Observation::Claim(_) | Observation::Dns(_) => claimer(ctx, mac),
        };
        let mut f = Finding::new(
            self.name(),
            &device,
            now,
            Severity::High,
            if ctx.site.owner_of_addr(addr).is_some() {
                0.9
            } else {
                0.6
            },
            Technique::new("T0830", "Adversary-in-the-Middle", Matrix::Ics),
        );
        f.peer = Some(addr);
        f.summary = format!(
            "{mac} claimed {addr} ({how}), which belongs to {owner}{}",
            owner_mac.map(|m| format!(" ({m})")).unwrap_or_default()
        );
        f.flows.extend(flow);
        f.evidence.window_start_ns = now;
        f.evidence.window_end_ns = now;
        f.evidence.metrics = vec![Metric::new("claims", 1.0)];
        f.evidence.peers = vec![addr];
        f.evidence.names = vec![how];
        out.push(f);
    }
}
