//! Validation: every problem in profiles and the site, each with file:line:column and a hint.
//! [`validate_site`] returns either all of them or the typed [`ValidSite`] the compiler takes;
//! [`validate`], [`validate_profile`] and [`validate_all`] are the same checks, problems only.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::{
    desired::{MacAddr, PortRange, Proto},
    diag::{Diagnostics, closest},
    profile::{FailMode, Peer, Profile, ProfileSet},
    site::{Gateway, Site},
    span::Located,
    valid::{
        DeviceInput, ValidDevice, ValidFlow, ValidGateway, ValidPeer, ValidProfile, ValidSite,
    },
};

/// What one profile's own checks parsed, per flow: peers (groups unresolved) and port ranges.
struct FlowParts {
    peers: Vec<Peer>,
    ports: Vec<PortRange>,
}

/// Checks one profile on its own (peers, ports, contradictions). Site references (groups) are
/// checked by [`validate`].
pub fn validate_profile(file: &str, p: &Profile) -> Diagnostics {
    check_profile(file, p).0
}

fn check_profile(file: &str, p: &Profile) -> (Diagnostics, Vec<FlowParts>) {
    let mut d = Diagnostics::default();
    let mut parts = Vec::with_capacity(p.flows.len());
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
    if let Err((at, why)) = p.conntrack.grace_s() {
        d.at(
            file,
            at,
            why,
            Some("e.g. `grace: until_idle`, `grace: 0`, `grace: 10m`, `grace_max: 30m`".into()),
        );
    }
    if let Err(problems) = crate::detection::parse(&p.detection) {
        for pr in problems {
            let hint = Some(crate::detection::hint(&pr));
            if pr.at_key {
                d.at(file, pr.key, format!("detection: {}", pr.why), hint);
            } else {
                d.at(file, pr.value, format!("detection: {}", pr.why), hint);
            }
        }
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
        let mut flow = FlowParts {
            peers: Vec::with_capacity(f.peers.len()),
            ports: Vec::new(),
        };
        for peer in &f.peers {
            match Peer::parse(&peer.value) {
                Ok(Peer::Dns(n)) if crate::dns::name_problem(&n).is_some() => d.at(
                    file,
                    peer,
                    crate::dns::name_problem(&n).unwrap_or_default(),
                    None,
                ),
                Ok(p) => flow.peers.push(p),
                Err(e) => d.at(file, peer, e, None),
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
            match ports.value.ranges() {
                Ok(r) => {
                    // Ports on a protocol without them were reported above.
                    flow.ports = r.into_iter().map(|(lo, hi)| PortRange { lo, hi }).collect();
                }
                Err(errs) => {
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
        }
        parts.push(flow);
        if let Some(app) = &f.app {
            check_app(file, i, f, app, &mut d);
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
    (d, parts)
}

/// [`validate`] and [`validate_profile`] for every profile: what must be clean before a site
/// compiles.
pub fn validate_all(site_file: &str, site: &Site, profiles: &ProfileSet) -> Diagnostics {
    match validate_site(site_file, site, profiles) {
        Ok(_) => Diagnostics::default(),
        Err(d) => d,
    }
}

/// Checks the site and its references to profiles and groups, and the profiles' references to
/// site groups. Returns every problem found.
pub fn validate(site_file: &str, site: &Site, profiles: &ProfileSet) -> Diagnostics {
    check_site(site_file, &SiteInput::of(site), profiles).0
}

/// The site as validation reads it; the controller builds one from its typed rows.
#[derive(Clone, Debug)]
pub struct SiteInput<'a> {
    pub name: &'a str,
    pub groups: &'a BTreeMap<String, Vec<Located<String>>>,
    pub gateways: &'a [Gateway],
    pub devices: Vec<DeviceInput>,
}

impl<'a> SiteInput<'a> {
    pub fn of(site: &'a Site) -> Self {
        SiteInput {
            name: &site.site,
            groups: &site.groups,
            gateways: &site.gateways,
            devices: site
                .devices
                .iter()
                .enumerate()
                .map(|(i, d)| DeviceInput::parse(i, d))
                .collect(),
        }
    }
}

/// Every problem of the site and the profiles (those of [`validate_all`], in its order), or
/// the typed site the compiler takes.
pub fn validate_site(
    site_file: &str,
    site: &Site,
    profiles: &ProfileSet,
) -> Result<ValidSite, Diagnostics> {
    validate_input(site_file, &SiteInput::of(site), profiles)
}

/// [`validate_site`] of a site given as a [`SiteInput`].
pub fn validate_input(
    site_file: &str,
    site: &SiteInput<'_>,
    profiles: &ProfileSet,
) -> Result<ValidSite, Diagnostics> {
    let (mut diags, parts) = check_site(site_file, site, profiles);
    let mut checked = Vec::with_capacity(profiles.profiles.len());
    for (name, (file, p)) in &profiles.profiles {
        let (d, flows) = check_profile(file, p);
        diags.extend(d);
        checked.push((name, file, p, flows));
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let profiles = checked
        .into_iter()
        .map(|(name, file, p, flows)| (name.clone(), valid_profile(file, p, flows, &parts.groups)))
        .collect();
    Ok(ValidSite {
        name: site.name.to_string(),
        groups: parts.groups,
        gateways: site
            .gateways
            .iter()
            .map(|g| ValidGateway {
                name: g.name.value.clone(),
                interfaces: g.interfaces.clone(),
                location: g.location.clone(),
            })
            .collect(),
        devices: parts.devices,
        profiles,
    })
}

/// A profile whose own checks and group references found no problem, typed.
fn valid_profile(
    file: &str,
    p: &Profile,
    parts: Vec<FlowParts>,
    groups: &BTreeMap<String, Vec<IpNet>>,
) -> ValidProfile {
    let ct = &p.conntrack;
    let flows: Vec<ValidFlow> = p
        .flows
        .iter()
        .zip(parts)
        .zip(crate::ids::flow_keys(p))
        .enumerate()
        .map(|(i, ((f, parts), key))| {
            let proto = f.protocol.value;
            ValidFlow {
                key,
                name: if f.name.is_empty() {
                    format!("{}#{}", p.name.value, i + 1)
                } else {
                    f.name.clone()
                },
                direction: f.direction,
                proto,
                peers: parts
                    .peers
                    .into_iter()
                    // An unknown group was reported by `check_site`.
                    .filter_map(|peer| {
                        Some(match peer {
                            Peer::Any => ValidPeer::Any,
                            Peer::SameProfile => ValidPeer::SameProfile,
                            Peer::Net(n) => ValidPeer::Net(n),
                            Peer::Dns(n) => ValidPeer::Dns(n),
                            Peer::Group(g) => ValidPeer::Group {
                                nets: groups.get(&g)?.clone(),
                                name: g,
                            },
                        })
                    })
                    .collect(),
                ports: if proto.has_ports() || proto == Proto::Any {
                    parts.ports
                } else {
                    Vec::new()
                },
                idle_timeout_s: f.idle_timeout_s.as_ref().map_or(
                    match proto {
                        Proto::Tcp => ct.tcp_idle_s,
                        Proto::Udp => ct.udp_idle_s,
                        Proto::Icmp | Proto::Icmpv6 => ct.icmp_idle_s,
                        Proto::Any => ct.tcp_idle_s.max(ct.udp_idle_s),
                    },
                    |t| t.value,
                ),
                app: f.app.clone(),
            }
        })
        .collect();
    let has_dns = flows
        .iter()
        .any(|f: &ValidFlow| f.peers.iter().any(|p| matches!(p, ValidPeer::Dns(_))));
    let resolvers = if has_dns {
        let group = p
            .dns_resolvers
            .as_ref()
            .map_or(DEFAULT_RESOLVER_GROUP, |g| g.value.as_str());
        groups.get(group).cloned().unwrap_or_default()
    } else {
        Vec::new()
    };
    ValidProfile {
        resolvers,
        name: p.name.value.clone(),
        file: file.to_string(),
        default_mode: p.default_mode,
        fail_mode: p.fail_mode,
        sensitivity: p.baseline_sensitivity,
        // Its problems were reported by `check_profile`.
        detection: crate::detection::parse(&p.detection).unwrap_or_default(),
        conntrack: p.conntrack.clone(),
        flows,
    }
}

/// A profile with `dns:` peers needs resolvers: its `dns_resolvers` group, or the site's
/// `dns` group. Without them the names could never be enforced: an error at the first such
/// peer (or at an unknown `dns_resolvers` group).
fn check_resolvers(d: &mut Diagnostics, name: &str, file: &str, p: &Profile, site: &SiteInput<'_>) {
    if let Some(g) = &p.dns_resolvers {
        if !site.groups.contains_key(&g.value) {
            d.at(
                file,
                g,
                format!("dns_resolvers: unknown group `{}`", g.value),
                Some(format!(
                    "define group `{}` in the site file (profile `{name}`)",
                    g.value
                )),
            );
        }
        return;
    }
    if site.groups.contains_key(DEFAULT_RESOLVER_GROUP) {
        return;
    }
    let first_dns = p
        .flows
        .iter()
        .flat_map(|f| &f.peers)
        .find(|peer| matches!(Peer::parse(&peer.value), Ok(Peer::Dns(_))));
    if let Some(peer) = first_dns {
        d.at(
            file,
            peer,
            format!(
                "`{}` has no resolver group: the gateway learns its addresses only from the \
                 device's resolvers",
                peer.value.trim()
            ),
            Some(format!(
                "set `dns_resolvers: GROUP` in profile `{name}` or define a site group `dns`"
            )),
        );
    }
}

/// The site group of resolvers a profile without `dns_resolvers` learns from.
pub const DEFAULT_RESOLVER_GROUP: &str = "dns";

/// What the site checks parsed: the groups' CIDRs and the devices found valid.
struct SiteParts {
    groups: BTreeMap<String, Vec<IpNet>>,
    devices: Vec<ValidDevice>,
}

fn check_site(
    site_file: &str,
    site: &SiteInput<'_>,
    profiles: &ProfileSet,
) -> (Diagnostics, SiteParts) {
    let mut d = Diagnostics::default();
    let mut parts = SiteParts {
        groups: BTreeMap::new(),
        devices: Vec::with_capacity(site.devices.len()),
    };
    let group_names: Vec<&str> = site.groups.keys().map(String::as_str).collect();
    for (group, cidrs) in site.groups {
        if cidrs.is_empty() {
            d.push(site_file, 0, 0, format!("group `{group}` is empty"), None);
        }
        let mut nets = Vec::with_capacity(cidrs.len());
        for c in cidrs {
            match Peer::parse(&c.value) {
                Ok(Peer::Net(n)) => nets.push(n),
                Ok(_) => d.at(
                    site_file,
                    c,
                    format!("group `{group}`: `{}` is not a CIDR", c.value),
                    None,
                ),
                Err(e) => d.at(site_file, c, format!("group `{group}`: {e}"), None),
            }
        }
        parts.groups.insert(group.clone(), nets);
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
        check_resolvers(&mut d, name, file, p, site);
    }
    let mut gateways = BTreeSet::new();
    for g in site.gateways {
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
        let id = dev.id;
        if let Some(other) = ids.insert(id, n) {
            d.at(
                site_file,
                &dev.name,
                format!("device id {id} of `{n}` is already used by `{other}`"),
                Some("ids must be unique".into()),
            );
        }
        match &dev.mac.value {
            Ok(mac) => {
                if let Some(other) = macs.insert(*mac, n) {
                    d.at(
                        site_file,
                        &dev.mac,
                        format!("duplicate MAC {mac}: `{n}` and `{other}`"),
                        Some("each device has its own MAC".into()),
                    );
                }
            }
            Err(e) => d.at(site_file, &dev.mac, e.clone(), None),
        }
        if dev.addresses.is_empty() {
            d.at(
                site_file,
                &dev.name,
                format!("device `{n}` has no address"),
                None,
            );
        }
        let mut addresses = Vec::with_capacity(dev.addresses.len());
        for a in &dev.addresses {
            match &a.value {
                Ok(ip) => {
                    addresses.push(*ip);
                    if let Some(other) = addrs.insert(*ip, n) {
                        d.at(
                            site_file,
                            a,
                            format!("duplicate address {ip}: `{n}` and `{other}`"),
                            None,
                        );
                    }
                }
                Err(text) => d.at(
                    site_file,
                    a,
                    format!("`{text}` is not an IP address"),
                    Some("device addresses are single IPv4 or IPv6 addresses, not CIDRs".into()),
                ),
            }
        }
        let profile = profiles.get(&dev.profile.value);
        if profile.is_none() {
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
        // A device with any problem above has a diagnostic and is left out.
        if let (Ok(mac), Some(p)) = (&dev.mac.value, profile) {
            parts.devices.push(ValidDevice {
                id,
                name: n.to_string(),
                mac: *mac,
                addresses,
                profile: dev.profile.value.clone(),
                mode: dev.mode.unwrap_or(p.default_mode),
                max_flows: p.conntrack.max_flows,
                // A wrong grace was reported with the profile.
                grace_s: p.conntrack.grace_s().unwrap_or(0),
                fail_open: p.fail_mode == FailMode::Open,
                gateway: dev.gateway.value.clone(),
                location: dev.location.clone(),
                asset_id: dev.asset_id.clone(),
            });
        }
    }
    (d, parts)
}

/// An application rule's lists: AE titles are 1-16 printable ASCII characters without `\\`
/// (DICOM PS3.5 AE), not only spaces; HL7 values 1-32 printable ASCII characters without the
/// field separator `|`, the escape `\\` or a repetition `~`, and a message type at most two
/// components (`ORU^R01`). Lists may not be empty. Only tcp flows carry an application.
fn check_app(
    file: &str,
    i: usize,
    f: &crate::profile::Flow,
    app: &crate::profile::App,
    d: &mut Diagnostics,
) {
    use crate::profile::App;
    if f.protocol.value != Proto::Tcp {
        d.at(
            file,
            &f.protocol,
            format!("flow {} has an application rule but is not tcp", i + 1),
            Some("DICOM and HL7 (MLLP) run over tcp".to_string()),
        );
    }
    let mut check = |name: &str,
                     v: &Option<crate::span::Located<crate::profile::Values>>,
                     ae: bool,
                     components: usize| {
        let Some(v) = v else { return };
        let list = v.value.list();
        if list.is_empty() {
            d.at(
                file,
                v,
                format!("`{name}` is an empty list"),
                Some("list at least one value, or leave the key out to check nothing".to_string()),
            );
        }
        for x in list {
            let max = if ae {
                16
            } else {
                wardgate_common::APP_VALUE_LEN
            };
            let problem = if x.is_empty() || (ae && x.trim().is_empty()) {
                Some("is empty".to_string())
            } else if x.len() > max {
                Some(format!(
                    "is {} characters long, more than {max}",
                    x.chars().count()
                ))
            } else if let Some(c) = x.chars().find(|c| !(' '..='~').contains(c)) {
                Some(format!(
                    "holds the non-printable or non-ASCII character {c:?}"
                ))
            } else if x.contains('\\') {
                Some("holds a backslash".to_string())
            } else if ae && x != x.trim() {
                Some("has leading or trailing spaces (not significant in an AE title)".to_string())
            } else if !ae && (x.contains('|') || x.contains('~')) {
                Some("holds an HL7 separator (`|` or `~`)".to_string())
            } else if !ae && x.split('^').count() > components {
                Some(format!("has more than {components} components"))
            } else {
                None
            };
            if let Some(p) = problem {
                let hint = if ae {
                    "AE titles are 1-16 printable ASCII characters, no backslash"
                } else {
                    "HL7 values are 1-32 printable ASCII characters, no `|`, `~` or `\\`"
                };
                d.at(file, v, format!("{name} `{x}` {p}"), Some(hint.to_string()));
            }
        }
    };
    match app {
        App::Dicom {
            calling_ae,
            called_ae,
        } => {
            check("calling_ae", calling_ae, true, 1);
            check("called_ae", called_ae, true, 1);
        }
        App::Hl7 {
            sending_application,
            sending_facility,
            receiving_application,
            message_type,
        } => {
            check("sending_application", sending_application, false, 3);
            check("sending_facility", sending_facility, false, 3);
            check("receiving_application", receiving_application, false, 3);
            check("message_type", message_type, false, 2);
        }
    }
}
