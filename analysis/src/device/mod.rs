//! Which end of a flow is a device: the site file's devices (by MAC, else by address), or,
//! without a site, every unicast MAC seen sending (with its addresses), named by its vendor.

pub mod oui;

use std::{collections::BTreeSet, net::IpAddr};

use foldhash::{HashMap, HashMapExt as _};
use serde::{Deserialize, Serialize};

use crate::{flow::DeviceRef, mac::Mac};

/// Addresses kept per discovered device.
const MAX_ADDRS: usize = 16;
/// A MAC sending from more addresses than this is a router forwarding for others, not a device.
const ROUTER_ADDRS: usize = 8;

/// A device as the learning output lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("site device {device}: {source}")]
    Mac {
        device: String,
        #[source]
        source: crate::mac::BadMac,
    },
    #[error("site device {device}: address {address:?} is not an IP address")]
    Address { device: String, address: String },
}

struct Seen {
    /// Made once, when the MAC is first seen (records ask for it for every flow).
    name: String,
    addrs: BTreeSet<IpAddr>,
    /// More distinct addresses than ROUTER_ADDRS were seen.
    router: bool,
}

enum Source {
    Site {
        list: Vec<DeviceInfo>,
        by_mac: HashMap<Mac, usize>,
        by_addr: HashMap<IpAddr, usize>,
    },
    Discover {
        by_mac: HashMap<Mac, Seen>,
        /// Senders on links without MACs (raw IP, loopback).
        by_addr: BTreeSet<IpAddr>,
    },
}

pub struct Devices {
    source: Source,
}

impl Devices {
    /// The site file's devices; flows with no site device on either end are not recorded.
    pub fn from_site(site: &wardgate_policy::Site) -> Result<Devices, DeviceError> {
        let mut list = Vec::new();
        for (i, d) in site.devices.iter().enumerate() {
            let name = d.name.value.clone();
            let mac: Mac = d.mac.value.parse().map_err(|source| DeviceError::Mac {
                device: name.clone(),
                source,
            })?;
            let mut addresses = Vec::new();
            for a in &d.addresses {
                // An address may be written as a host prefix (`/32`, `/128`).
                let text = a.value.split('/').next().unwrap_or_default();
                let ip: IpAddr = text.parse().map_err(|_| DeviceError::Address {
                    device: name.clone(),
                    address: a.value.clone(),
                })?;
                addresses.push(ip);
            }
            list.push(DeviceInfo {
                name,
                id: Some(site.device_id(i)),
                mac: Some(mac),
                vendor: oui::vendor(mac).map(|v| v.name.to_string()),
                profile: Some(d.profile.value.clone()),
                addresses,
            });
        }
        Ok(Devices::from_list(list))
    }

    /// Known devices given directly (the live agent's, from the generation it enforces): as
    /// [`Devices::from_site`], by MAC, else by address.
    pub fn from_list(list: Vec<DeviceInfo>) -> Devices {
        let mut by_mac = HashMap::new();
        let mut by_addr = HashMap::new();
        for (i, d) in list.iter().enumerate() {
            if let Some(m) = d.mac {
                by_mac.insert(m, i);
            }
            for a in &d.addresses {
                by_addr.insert(*a, i);
            }
        }
        Devices {
            source: Source::Site {
                list,
                by_mac,
                by_addr,
            },
        }
    }

    /// No site: each unicast MAC that sends is a device.
    pub fn discover() -> Devices {
        Devices {
            source: Source::Discover {
                by_mac: HashMap::new(),
                by_addr: BTreeSet::new(),
            },
        }
    }

    /// Notes a packet's sender (discovery only).
    pub fn observe(&mut self, mac: Option<Mac>, ip: IpAddr) {
        let Source::Discover { by_mac, by_addr } = &mut self.source else {
            return;
        };
        if ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip) {
            return;
        }
        match mac {
            Some(m) if m.is_group() => {}
            Some(m) => {
                let seen = by_mac.entry(m).or_insert_with(|| Seen {
                    name: discovered_name(m),
                    addrs: BTreeSet::new(),
                    router: false,
                });
                if seen.router || seen.addrs.contains(&ip) {
                    return;
                }
                if seen.addrs.len() >= ROUTER_ADDRS {
                    seen.router = true;
                } else {
                    seen.addrs.insert(ip);
                }
            }
            None => {
                by_addr.insert(ip);
            }
        }
    }

    /// The device at an end of a flow (its MAC when the link has one, and its address).
    pub fn resolve(&self, mac: Option<Mac>, ip: IpAddr) -> Option<DeviceRef> {
        match &self.source {
            Source::Site {
                list,
                by_mac,
                by_addr,
            } => {
                let i = match mac {
                    Some(m) => by_mac.get(&m).copied(),
                    None => None,
                }
                .or_else(|| by_addr.get(&ip).copied())?;
                let d = &list[i];
                Some(DeviceRef {
                    name: d.name.clone(),
                    id: d.id,
                    mac: d.mac,
                })
            }
            Source::Discover { by_mac, by_addr } => match mac {
                Some(m) => {
                    let seen = by_mac.get(&m)?;
                    (!seen.router).then(|| DeviceRef {
                        name: seen.name.clone(),
                        id: None,
                        mac: Some(m),
                    })
                }
                None => by_addr.contains(&ip).then(|| DeviceRef {
                    name: format!("host-{ip}"),
                    id: None,
                    mac: None,
                }),
            },
        }
    }

    /// Every device (site order, or discovered by MAC then address; routers left out).
    pub fn list(&self) -> Vec<DeviceInfo> {
        match &self.source {
            Source::Site { list, .. } => list.clone(),
            Source::Discover { by_mac, by_addr } => {
                let mut macs: Vec<_> = by_mac.iter().filter(|(_, s)| !s.router).collect();
                macs.sort_by_key(|(m, _)| **m);
                macs.into_iter()
                    .map(|(m, s)| DeviceInfo {
                        name: s.name.clone(),
                        id: None,
                        mac: Some(*m),
                        vendor: oui::vendor(*m).map(|v| v.name.to_string()),
                        profile: None,
                        addresses: s.addrs.iter().copied().take(MAX_ADDRS).collect(),
                    })
                    .chain(by_addr.iter().map(|ip| DeviceInfo {
                        name: format!("host-{ip}"),
                        id: None,
                        mac: None,
                        vendor: None,
                        profile: None,
                        addresses: vec![*ip],
                    }))
                    .collect()
            }
        }
    }

    /// MACs left out as routers (discovery only).
    pub fn routers(&self) -> Vec<Mac> {
        match &self.source {
            Source::Site { .. } => Vec::new(),
            Source::Discover { by_mac, .. } => {
                let mut v: Vec<Mac> = by_mac
                    .iter()
                    .filter(|(_, s)| s.router)
                    .map(|(m, _)| *m)
                    .collect();
                v.sort();
                v
            }
        }
    }
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// `Philips-00:09:fb:..` for a known medical vendor, `dev-aa:bb:..` otherwise.
fn discovered_name(mac: Mac) -> String {
    match oui::vendor(mac) {
        Some(v) => format!("{}-{mac}", v.short),
        None => format!("dev-{mac}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn discovery_names_by_vendor_and_leaves_routers_out() {
        let mut d = Devices::discover();
        let pump: Mac = "00:03:b1:00:00:01".parse().unwrap();
        let router: Mac = "02:00:00:00:00:fe".parse().unwrap();
        d.observe(Some(pump), ip("192.0.2.10"));
        d.observe(Some(pump), ip("0.0.0.0"));
        for i in 0..20 {
            d.observe(Some(router), ip(&format!("198.51.100.{i}")));
        }
        let r = d.resolve(Some(pump), ip("192.0.2.10")).unwrap();
        assert_eq!(r.name, "ICUMedic-00:03:b1:00:00:01");
        assert!(d.resolve(Some(router), ip("198.51.100.1")).is_none());
        assert_eq!(d.routers(), vec![router]);
        let list = d.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].addresses, vec![ip("192.0.2.10")]);
        assert_eq!(list[0].vendor.as_deref(), Some("ICU Medical, Inc."));
        // Without a MAC, the address is the device.
        d.observe(None, ip("127.0.0.1"));
        assert_eq!(
            d.resolve(None, ip("127.0.0.1")).unwrap().name,
            "host-127.0.0.1"
        );
        assert!(d.resolve(None, ip("127.0.0.2")).is_none());
    }

    #[test]
    fn site_devices_by_mac_then_address() {
        let site = wardgate_policy::parse_site(
            "site.yaml",
            "site: t\ndevices:\n  - name: ct-1\n    mac: 00:03:b1:00:00:01\n    addresses: [192.0.2.10]\n    profile: ct\n    gateway: gw\n",
        )
        .unwrap();
        let d = Devices::from_site(&site).unwrap();
        let by_mac = d
            .resolve(
                Some("00:03:b1:00:00:01".parse().unwrap()),
                ip("203.0.113.1"),
            )
            .unwrap();
        assert_eq!((by_mac.name.as_str(), by_mac.id), ("ct-1", Some(1)));
        assert_eq!(d.resolve(None, ip("192.0.2.10")).unwrap().name, "ct-1");
        assert!(d.resolve(None, ip("192.0.2.11")).is_none());
        let bad = wardgate_policy::parse_site(
            "site.yaml",
            "site: t\ndevices:\n  - name: x\n    mac: nope\n    addresses: [192.0.2.10]\n    profile: ct\n    gateway: gw\n",
        )
        .unwrap();
        let e = Devices::from_site(&bad).err().unwrap().to_string();
        assert!(e.contains("site device x"), "{e}");
    }
}
