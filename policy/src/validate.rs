//! Validation: every problem in profiles and the site, each with file:line:column and a hint.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    desired::{MacAddr, Proto},
    diag::{Diagnostics, closest},
    profile::{Peer, Profile, ProfileSet},
    site::Site,
};

/// Checks one profile on its own (peers, ports, contradictions). Site references (groups) are
/// checked by [`validate`].
pub fn validate_profile(file: &str, p: &Profile) -> Diagnostics {
    let mut d = Diagnostics::default();
    let name = &p.name;
    if name.value.is_empty()
        || !name
            .value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        d.at(
            file,
            name,
            format!(
                "profile name `{}` must be lowercase letters, digits and dashes",
                name.value
            ),
            None,
        );
    }
    // (direction, protocol, peers, ports) -> (idle timeout, flow index) for contradictions.
    let mut seen: BTreeMap<String, (Option<u32>, usize)> = BTreeMap::new();
    for (i, f) in p.flows.iter().enumerate() {
        if f.peers.is_empty() {
            d.at(
                file,
                &f.protocol,
                format!("flow {} has no peers", i + 1),
                Some("add `peers: [any]` to allow every peer".into()),
            );
        }
        for peer in &f.peers {
            if let Err(e) = Peer::parse(&peer.value) {
                d.at(file, peer, e, None);
            }
        }
        if let Some(ports) = &f.ports {
            if !f.protocol.value.has_ports() && f.protocol.value != Proto::Any {
                d.at(
                    file,
                    ports,
                    format!(
                        "flow {} is {:?} but lists ports: contradictory",
                        i + 1,
                        f.protocol.value
                    )
                    .to_lowercase(),
                    Some(
                        "ports apply to tcp and udp only; remove them or change the protocol"
                            .into(),
                    ),
                );
            }
            if let Err(errs) = ports.value.ranges() {
                for e in errs {
                    d.at(
                        file,
                        ports,
                        e,
                        Some("ports are 1-65535; ranges are written \"low-high\"".into()),
                    );
                }
            }
        }
        if let Some(t) = &f.idle_timeout_s
            && t.value == 0
        {
            d.at(file, t, "idle_timeout_s must be at least 1 second", None);
        }
        let mut peers: Vec<&str> = f.peers.iter().map(|p| p.value.trim()).collect();
        peers.sort();
        let key = format!(
            "{:?}|{:?}|{:?}|{:?}",
            f.direction,
            f.protocol.value,
            peers,
            f.ports.as_ref().map(|p| &p.value)
        );
        let timeout = f.idle_timeout_s.as_ref().map(|t| t.value);
        match seen.get(&key) {
            Some((other_timeout, j)) if *other_timeout != timeout => d.at(
                file,
                &f.protocol,
                format!(
                    "flow {} contradicts flow {}: same traffic, different idle timeout",
                    i + 1,
                    j + 1
                ),
                Some("keep one of them".into()),
            ),
            Some((_, j)) => d.at(
                file,
                &f.protocol,
                format!("flow {} repeats flow {}", i + 1, j + 1),
                Some("remove the duplicate".into()),
            ),
            None => {
                seen.insert(key, (timeout, i));
            }
        }
    }
    d
}

/// Checks the site and its references to profiles and groups, and the profiles' references to
/// site groups. Returns every problem found.
/// [`validate`] and [`validate_profile`] for every profile: what must be clean before a site
/// compiles.
pub fn validate_all(site_file: &str, site: &Site, profiles: &ProfileSet) -> Diagnostics {
    let mut diags = validate(site_file, site, profiles);
    for (file, p) in profiles.profiles.values() {
        diags.extend(validate_profile(file, p));
    }
    diags
}

pub fn validate(site_file: &str, site: &Site, profiles: &ProfileSet) -> Diagnostics {
    let mut d = Diagnostics::default();
    let group_names: Vec<&str> = site.groups.keys().map(String::as_str).collect();
    for (group, cidrs) in &site.groups {
        if cidrs.is_empty() {
            d.push(site_file, 0, 0, format!("group `{group}` is empty"), None);
        }
        for c in cidrs {
            match Peer::parse(&c.value) {
                Ok(Peer::Net(_)) => {}
                Ok(_) => d.at(
                    site_file,
                    c,
                    format!("group `{group}`: `{}` is not a CIDR", c.value),
                    None,
                ),
                Err(e) => d.at(site_file, c, format!("group `{group}`: {e}"), None),
            }
        }
    }
    // Group references in profiles.
    for (name, (file, p)) in &profiles.profiles {
        for f in &p.flows {
            for peer in &f.peers {
                if let Ok(Peer::Group(g)) = Peer::parse(&peer.value)
                    && !site.groups.contains_key(&g)
                {
                    let hint = closest(&g, &group_names)
                        .map(|c| format!("did you mean `group:{c}`?"))
                        .or_else(|| {
                            Some(format!(
                                "define group `{g}` in the site file (profile `{name}`)"
                            ))
                        });
                    d.at(file, peer, format!("unknown group `{g}`"), hint);
                }
            }
        }
    }
    let mut gateways = BTreeSet::new();
    for g in &site.gateways {
        if !gateways.insert(g.name.value.as_str()) {
            d.at(
                site_file,
                &g.name,
                format!("gateway `{}` is defined twice", g.name.value),
                None,
            );
        }
        if g.interfaces.is_empty() {
            d.at(
                site_file,
                &g.name,
                format!("gateway `{}` has no device-facing interface", g.name.value),
                None,
            );
        }
    }
    let gateway_names: Vec<&str> = gateways.iter().copied().collect();
    let profile_names: Vec<&str> = profiles.profiles.keys().map(String::as_str).collect();
    let mut names = BTreeMap::new();
    let mut ids = BTreeMap::new();
    let mut macs: BTreeMap<MacAddr, &str> = BTreeMap::new();
    let mut addrs: BTreeMap<std::net::IpAddr, &str> = BTreeMap::new();
    for (i, dev) in site.devices.iter().enumerate() {
        let n = dev.name.value.as_str();
        if names.insert(n, i).is_some() {
            d.at(
                site_file,
                &dev.name,
                format!("device `{n}` is defined twice"),
                None,
            );
        }
        let id = site.device_id(i);
        if let Some(other) = ids.insert(id, n) {
            d.at(
                site_file,
                &dev.name,
                format!("device id {id} of `{n}` is already used by `{other}`"),
                Some("ids must be unique".into()),
            );
        }
        match dev.mac.value.parse::<MacAddr>() {
            Ok(mac) => {
                if let Some(other) = macs.insert(mac, n) {
                    d.at(
                        site_file,
                        &dev.mac,
                        format!("duplicate MAC {mac}: `{n}` and `{other}`"),
                        Some("each device has its own MAC".into()),
                    );
                }
            }
            Err(e) => d.at(site_file, &dev.mac, e, None),
        }
        if dev.addresses.is_empty() {
            d.at(
                site_file,
                &dev.name,
                format!("device `{n}` has no address"),
                None,
            );
        }
        for a in &dev.addresses {
            match a.value.trim().parse::<std::net::IpAddr>() {
                Ok(ip) => {
                    if let Some(other) = addrs.insert(ip, n) {
                        d.at(
                            site_file,
                            a,
                            format!("duplicate address {ip}: `{n}` and `{other}`"),
                            None,
                        );
                    }
                }
                Err(_) => d.at(
                    site_file,
                    a,
                    format!("`{}` is not an IP address", a.value),
                    Some("device addresses are single IPv4 or IPv6 addresses, not CIDRs".into()),
                ),
            }
        }
        if profiles.get(&dev.profile.value).is_none() {
            let hint =
                closest(&dev.profile.value, &profile_names).map(|c| format!("did you mean `{c}`?"));
            d.at(
                site_file,
                &dev.profile,
                format!("unknown profile `{}`", dev.profile.value),
                hint,
            );
        }
        if !gateways.contains(dev.gateway.value.as_str()) {
            let hint = closest(&dev.gateway.value, &gateway_names)
                .map(|c| format!("did you mean `{c}`?"))
                .or_else(|| {
                    Some("every device must be behind a gateway listed under `gateways`".into())
                });
            d.at(
                site_file,
                &dev.gateway,
                format!(
                    "device `{n}` is on no known gateway (`{}`)",
                    dev.gateway.value
                ),
                hint,
            );
        }
    }
    d
}
