//! MUD import (RFC 8520 with the YANG ACL model of RFC 8519).
//!
//! Two steps: [`parse_mud`] reads a MUD file into a flat list of ACEs (every ACE kind: IPv4/IPv6
//! networks, source/destination DNS names, ports and ranges, direction-initiated, and the MUD
//! abstractions controller, my-controller, local-networks, same-manufacturer, manufacturer,
//! model); [`import`] turns them into a profile. Abstractions bind to site groups chosen by the
//! engineer (`--bind controller=GROUP`), defaulting to `mud-<abstraction>` groups. DNS names are
//! kept as `dns:NAME` peers, enforced with the addresses the device's resolvers answer (the
//! site's `dns` group, which the import then asks for; `crate::dns`).
//!
//! Conntrack makes MUD's reply ACEs redundant: an ACE that only matches the return traffic of a
//! flow opened from the other side (direction-initiated the other way, or only a source port)
//! is skipped with a note rather than turned into an allow rule the other way.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde_json::Value;
use thiserror::Error;

use crate::{
    desired::{Direction, Mode, Proto},
    profile::{Conntrack, FailMode, Flow, PortItem, Ports, Profile, Sensitivity},
    span::Located,
};

#[derive(Debug, Error)]
pub enum MudError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a MUD file: {0}")]
    NotMud(String),
    #[error(
        "ACL `{acl}` uses the pre-RFC draft syntax (`acl-type`, `access-list-entries`, \
         `ipv4-acl`/`ipv6-acl`), which is not supported; convert the file to RFC 8520"
    )]
    Draft { acl: String },
    #[error("ACE `{ace}` in ACL `{acl}`: {what} is not supported")]
    Unsupported {
        acl: String,
        ace: String,
        what: String,
    },
}

/// A MUD abstraction (RFC 8520 section 8).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Abstraction {
    Controller(String),
    MyController,
    LocalNetworks,
    SameManufacturer,
    Manufacturer(String),
    Model(String),
}

impl Abstraction {
    /// The `--bind` key of this abstraction.
    pub fn key(&self) -> &'static str {
        match self {
            Abstraction::Controller(_) => "controller",
            Abstraction::MyController => "my-controller",
            Abstraction::LocalNetworks => "local-networks",
            Abstraction::SameManufacturer => "same-manufacturer",
            Abstraction::Manufacturer(_) => "manufacturer",
            Abstraction::Model(_) => "model",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortMatch {
    pub lo: u16,
    pub hi: u16,
}

/// One access-control entry, flattened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MudAce {
    pub acl: String,
    pub name: String,
    /// From the policy (from-device-policy / to-device-policy) that lists the ACL.
    pub policy: Direction,
    /// 4, 6, or 0 for an Ethernet-only ACE.
    pub family: u8,
    pub protocol: Option<u8>,
    pub src_dnsname: Option<String>,
    pub dst_dnsname: Option<String>,
    pub src_network: Option<IpNet>,
    pub dst_network: Option<IpNet>,
    pub src_port: Option<PortMatch>,
    pub dst_port: Option<PortMatch>,
    pub direction_initiated: Option<Direction>,
    pub abstractions: Vec<Abstraction>,
    pub accept: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MudFile {
    pub url: String,
    pub systeminfo: String,
    pub mfg_name: Option<String>,
    pub model_name: Option<String>,
    /// The file uses the pre-RFC `ietf-access-control-list:access-lists` container.
    pub older_syntax: bool,
    pub aces: Vec<MudAce>,
    /// ACLs that no policy references (ignored).
    pub unreferenced_acls: Vec<String>,
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn port_match(acl: &str, ace: &str, v: &Value) -> Result<PortMatch, MudError> {
    let unsupported = |what: String| MudError::Unsupported {
        acl: acl.into(),
        ace: ace.into(),
        what,
    };
    let num = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
    };
    if let (Some(lo), Some(hi)) = (num("lower-port"), num("upper-port")) {
        return if lo <= hi {
            Ok(PortMatch { lo, hi })
        } else {
            Err(unsupported(format!("inverted port range {lo}-{hi}")))
        };
    }
    let port = num("port").ok_or_else(|| unsupported(format!("port match {v}")))?;
    match v.get("operator").and_then(Value::as_str).unwrap_or("eq") {
        "eq" => Ok(PortMatch { lo: port, hi: port }),
        "lte" => Ok(PortMatch { lo: 1, hi: port }),
        "gte" => Ok(PortMatch {
            lo: port,
            hi: u16::MAX,
        }),
        other => Err(unsupported(format!("port operator `{other}`"))),
    }
}

fn direction(v: &Value) -> Option<Direction> {
    match v.as_str()? {
        "from-device" => Some(Direction::FromDevice),
        "to-device" => Some(Direction::ToDevice),
        _ => None,
    }
}

/// Reads a MUD file (RFC 8520, or the older `access-lists` container used by MUDgee).
pub fn parse_mud(text: &str) -> Result<MudFile, MudError> {
    let root: Value = serde_json::from_str(text)?;
    let mud = root
        .get("ietf-mud:mud")
        .ok_or_else(|| MudError::NotMud("no `ietf-mud:mud` container".into()))?;
    let (acls, older_syntax) = match (
        root.get("ietf-access-control-list:acls"),
        root.get("ietf-access-control-list:access-lists"),
    ) {
        (Some(a), _) => (a, false),
        (None, Some(a)) => (a, true),
        (None, None) => {
            return Err(MudError::NotMud(
                "no `ietf-access-control-list:acls` container".into(),
            ));
        }
    };
    let mut policy_of: BTreeMap<String, Direction> = BTreeMap::new();
    for (key, dir) in [
        ("from-device-policy", Direction::FromDevice),
        ("to-device-policy", Direction::ToDevice),
    ] {
        let list = mud
            .pointer(&format!("/{key}/access-lists/access-list"))
            .and_then(Value::as_array);
        for entry in list.into_iter().flatten() {
            if let Some(name) = entry.get("name").and_then(Value::as_str) {
                policy_of.insert(name.to_string(), dir);
            }
        }
    }
    let acl_list = acls
        .get("acl")
        .and_then(Value::as_array)
        .ok_or_else(|| MudError::NotMud("ACL container has no `acl` list".into()))?;
    let mut aces = Vec::new();
    let mut unreferenced = Vec::new();
    for acl in acl_list {
        let acl_name = acl.get("name").and_then(s).unwrap_or_default();
        if acl.get("access-list-entries").is_some() || acl.get("acl-type").is_some() {
            return Err(MudError::Draft { acl: acl_name });
        }
        let Some(&policy) = policy_of.get(&acl_name) else {
            unreferenced.push(acl_name);
            continue;
        };
        // An ACE may match only on MUD abstractions; its family then comes from the ACL type.
        let family = match acl.get("type").and_then(Value::as_str).unwrap_or("") {
            t if t.contains("ipv6") => 6,
            t if t.contains("ipv4") || t.contains("mixed") => 4,
            _ => 0,
        };
        let entries = acl.pointer("/aces/ace").and_then(Value::as_array);
        for ace in entries.into_iter().flatten() {
            aces.push(parse_ace(&acl_name, policy, family, ace)?);
        }
    }
    if aces.is_empty() {
        return Err(MudError::NotMud(
            "no access-control entries referenced by the policies".into(),
        ));
    }
    Ok(MudFile {
        url: mud.get("mud-url").and_then(s).unwrap_or_default(),
        systeminfo: mud.get("systeminfo").and_then(s).unwrap_or_default(),
        mfg_name: mud.get("mfg-name").and_then(s),
        model_name: mud.get("model-name").and_then(s),
        older_syntax,
        aces,
        unreferenced_acls: unreferenced,
    })
}

fn parse_ace(acl: &str, policy: Direction, family: u8, ace: &Value) -> Result<MudAce, MudError> {
    let name = ace.get("name").and_then(s).unwrap_or_default();
    let unsupported = |what: String| MudError::Unsupported {
        acl: acl.into(),
        ace: name.clone(),
        what,
    };
    let m = ace.get("matches").cloned().unwrap_or(Value::Null);
    let mut out = MudAce {
        acl: acl.to_string(),
        name: name.clone(),
        policy,
        family,
        protocol: None,
        src_dnsname: None,
        dst_dnsname: None,
        src_network: None,
        dst_network: None,
        src_port: None,
        dst_port: None,
        direction_initiated: None,
        abstractions: Vec::new(),
        accept: ace
            .pointer("/actions/forwarding")
            .and_then(Value::as_str)
            .is_none_or(|a| a == "accept"),
    };
    for (fam, key) in [(4u8, "ipv4"), (6, "ipv6")] {
        let Some(ip) = m.get(key) else { continue };
        out.family = fam;
        out.protocol = ip.get("protocol").and_then(Value::as_u64).map(|p| p as u8);
        for (dns_key, slot) in [
            ("src-dnsname", &mut out.src_dnsname),
            ("dst-dnsname", &mut out.dst_dnsname),
        ] {
            *slot = ip
                .get(format!("ietf-acldns:{dns_key}"))
                .or_else(|| ip.get(dns_key))
                .and_then(s);
        }
        for (net_key, slot) in [
            (format!("source-{key}-network"), &mut out.src_network),
            (format!("destination-{key}-network"), &mut out.dst_network),
        ] {
            if let Some(text) = ip.get(&net_key).and_then(Value::as_str) {
                // Some generators write a bare address for a host.
                let net = text
                    .parse::<IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| unsupported(format!("network `{text}`")))?;
                *slot = Some(net.trunc());
            }
        }
    }
    for l4 in ["tcp", "udp"] {
        let Some(t) = m.get(l4) else { continue };
        if let Some(p) = t.get("source-port") {
            out.src_port = Some(port_match(acl, &name, p)?);
        }
        if let Some(p) = t.get("destination-port") {
            out.dst_port = Some(port_match(acl, &name, p)?);
        }
        out.direction_initiated = t.get("ietf-mud:direction-initiated").and_then(direction);
        if out.protocol.is_none() {
            out.protocol = Some(if l4 == "tcp" { 6 } else { 17 });
        }
    }
    if m.get("icmp").is_some() && out.protocol.is_none() {
        out.protocol = Some(if out.family == 6 { 58 } else { 1 });
    }
    if let Some(mm) = m.get("ietf-mud:mud") {
        let present = |k: &str| mm.get(k).is_some();
        if let Some(c) = mm.get("controller") {
            out.abstractions
                .push(Abstraction::Controller(s(c).unwrap_or_default()));
        }
        if present("my-controller") {
            out.abstractions.push(Abstraction::MyController);
        }
        if present("local-networks") {
            out.abstractions.push(Abstraction::LocalNetworks);
        }
        if present("same-manufacturer") {
            out.abstractions.push(Abstraction::SameManufacturer);
        }
        if let Some(v) = mm.get("manufacturer") {
            out.abstractions
                .push(Abstraction::Manufacturer(s(v).unwrap_or_default()));
        }
        if let Some(v) = mm.get("model") {
            out.abstractions
                .push(Abstraction::Model(s(v).unwrap_or_default()));
        }
    }
    Ok(out)
}

/// The result of an import: the profile and what the engineer should know about it.
#[derive(Clone, Debug)]
pub struct Imported {
    pub profile: Profile,
    pub notes: Vec<String>,
    /// Groups the profile refers to for MUD abstractions (define them in the site file).
    pub groups: Vec<String>,
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

fn proto(p: Option<u8>) -> Option<Proto> {
    match p {
        None => Some(Proto::Any),
        Some(6) => Some(Proto::Tcp),
        Some(17) => Some(Proto::Udp),
        Some(1) => Some(Proto::Icmp),
        Some(58) => Some(Proto::Icmpv6),
        Some(_) => None,
    }
}

/// Turns a parsed MUD file into a profile. `binds` maps abstraction keys (`controller`,
/// `my-controller`, `local-networks`, `same-manufacturer`, `manufacturer`, `model`) to site
/// groups; unbound abstractions use the group `mud-<key>`.
pub fn import(
    mud: &MudFile,
    binds: &BTreeMap<String, String>,
    name: Option<&str>,
) -> Result<Imported, MudError> {
    let mut notes = Vec::new();
    if mud.older_syntax {
        notes.push("older `ietf-access-control-list:access-lists` container (pre-RFC MUDgee syntax) read as `acls`".into());
    }
    for acl in &mud.unreferenced_acls {
        notes.push(format!(
            "ACL `{acl}` is not referenced by either policy; ignored"
        ));
    }
    let mut groups = Vec::new();
    let mut flows: Vec<Flow> = Vec::new();
    for ace in &mud.aces {
        let label = format!("{}/{}", ace.acl, ace.name);
        if !ace.accept {
            notes.push(format!(
                "{label}: drop ACE skipped (profiles list what is allowed)"
            ));
            continue;
        }
        if ace.family == 0 {
            notes.push(format!(
                "{label}: Ethernet-only ACE skipped (not enforceable at L3)"
            ));
            continue;
        }
        // IGMP (2) and IPv6 hop-by-hop/MLD (0) stay on the local link, and 44 is the IPv6
        // fragment header (MUDgee records it as a protocol): none is a flow to allow.
        if let Some(p @ (0 | 2 | 44)) = ace.protocol {
            let why = if p == 44 {
                "an IPv6 fragment header, not a protocol"
            } else {
                "link-local control traffic"
            };
            notes.push(format!("{label}: IP protocol {p} is {why}; skipped"));
            continue;
        }
        let Some(protocol) = proto(ace.protocol) else {
            return Err(MudError::Unsupported {
                acl: ace.acl.clone(),
                ace: ace.name.clone(),
                what: format!("IP protocol {}", ace.protocol.unwrap_or_default()),
            });
        };
        // Which side is the peer, and is this only the return traffic of the other direction?
        let (peer_dns, peer_net, service_port, reply) = match ace.policy {
            Direction::FromDevice => (
                &ace.dst_dnsname,
                ace.dst_network,
                ace.dst_port,
                ace.direction_initiated == Some(Direction::ToDevice)
                    || (ace.dst_port.is_none() && ace.src_port.is_some()),
            ),
            Direction::ToDevice => (
                &ace.src_dnsname,
                ace.src_network,
                ace.dst_port,
                ace.direction_initiated == Some(Direction::FromDevice)
                    || (ace.dst_port.is_none() && ace.src_port.is_some()),
            ),
        };
        if reply {
            notes.push(format!("{label}: return traffic of a flow opened the other way; covered by connection tracking"));
            continue;
        }
        let mut peers: Vec<String> = Vec::new();
        if let Some(d) = peer_dns {
            peers.push(format!("dns:{d}"));
            // `dns:` peers learn from the site's resolvers.
            let group = crate::validate::DEFAULT_RESOLVER_GROUP.to_string();
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        if let Some(n) = peer_net {
            peers.push(n.to_string());
        }
        for a in &ace.abstractions {
            let group = binds
                .get(a.key())
                .cloned()
                .unwrap_or_else(|| format!("mud-{}", a.key()));
            if let Abstraction::Controller(uri)
            | Abstraction::Manufacturer(uri)
            | Abstraction::Model(uri) = a
                && !binds.contains_key(a.key())
            {
                notes.push(format!(
                    "{label}: {} `{uri}` bound to group `{group}` (use --bind {}=GROUP)",
                    a.key(),
                    a.key()
                ));
            }
            if !groups.contains(&group) {
                groups.push(group.clone());
            }
            peers.push(format!("group:{group}"));
        }
        if peers.is_empty() {
            peers.push("any".into());
        }
        let ports = match (protocol.has_ports(), service_port) {
            (true, Some(p)) if p.lo == p.hi => Some(Ports::One(i64::from(p.lo))),
            (true, Some(p)) => Some(Ports::List(vec![PortItem::Text(format!(
                "{}-{}",
                p.lo, p.hi
            ))])),
            _ => None,
        };
        let flow = Flow {
            name: ace.name.clone(),
            direction: ace.policy,
            protocol: Located::new(protocol),
            peers: peers.into_iter().map(Located::new).collect(),
            ports: ports.map(Located::new),
            idle_timeout_s: None,
            app: None,
        };
        let same = |f: &Flow| {
            f.direction == flow.direction
                && f.protocol == flow.protocol
                && f.peers == flow.peers
                && f.ports == flow.ports
        };
        if flows.iter().any(same) {
            notes.push(format!("{label}: same as an earlier ACE; merged"));
        } else {
            flows.push(flow);
        }
    }
    let base = name.map(str::to_string).unwrap_or_else(|| {
        let from = mud
            .model_name
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(&mud.systeminfo);
        format!("mud-{}", slug(from))
    });
    let profile = Profile {
        name: Located::new(base),
        description: format!("Imported from MUD {} ({})", mud.url, mud.systeminfo.trim()),
        vendors: mud.mfg_name.iter().map(|m| m.trim().to_string()).collect(),
        models: mud.model_name.iter().cloned().collect(),
        default_mode: Mode::Learn,
        fail_mode: FailMode::Open,
        baseline_sensitivity: Sensitivity::Medium,
        detection: Default::default(),
        conntrack: Conntrack::default(),
        dns_resolvers: None,
        flows,
    };
    Ok(Imported {
        profile,
        notes,
        groups,
    })
}

/// The profile as YAML, with the import notes as comments on top.
pub fn to_yaml(imported: &Imported) -> String {
    let mut out = String::from("# Imported from a MUD file by `wardctl profile import-mud`.\n");
    for n in &imported.notes {
        out.push_str(&format!("# note: {n}\n"));
    }
    if !imported.groups.is_empty() {
        out.push_str(&format!(
            "# define these groups in the site file: {}\n",
            imported.groups.join(", ")
        ));
    }
    out.push_str(&serde_saphyr::to_string(&imported.profile).expect("profile serializes"));
    out
}
