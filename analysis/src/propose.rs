//! A candidate profile from a device's flow records: one flow rule per (direction, protocol,
//! ports, app) with the peers that used it, peers named by site group where one matches, runs of
//! ports as ranges, app constraints where every flow of a rule showed the same DICOM or HL7
//! identity, each rule commented with the flows and bytes it covers and when. Written as YAML text
//! by hand because serde cannot write comments; every string goes through JSON quoting (a JSON
//! string is a YAML double-quoted scalar).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::IpAddr,
};

use crate::{
    app::AppIdentity,
    baseline::Groups,
    decode::proto,
    flow::{FlowDirection, FlowRecord},
};

/// More distinct ports than this in one rule become one range (a scanner, a passive FTP).
const MAX_PORTS: usize = 32;
/// More IPv4 peers than this in one /24 become the /24.
const MAX_PEERS_PER_24: usize = 8;

#[derive(Default)]
struct Acc {
    ports: BTreeSet<u16>,
    flows: u64,
    bytes: u64,
    first: u64,
    last: u64,
    /// The app identities seen; `None` in the set when some flow had none.
    apps: BTreeSet<Option<AppKey>>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum AppKey {
    Dicom { calling: String, called: String },
    Hl7 { sending: String, receiving: String },
}

fn app_key(a: &AppIdentity) -> AppKey {
    match a {
        AppIdentity::Dicom(d) => AppKey::Dicom {
            calling: d.calling_ae.clone(),
            called: d.called_ae.clone(),
        },
        AppIdentity::Hl7(h) => AppKey::Hl7 {
            sending: h.sending_application.clone(),
            receiving: h.receiving_application.clone(),
        },
    }
}

/// A profile name from a device name: lowercase letters, digits and dashes.
pub fn profile_name(device: &str) -> String {
    let mut s: String = device
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    format!("proposed-{}", s.trim_matches('-'))
}

fn protocol(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP => "icmp",
        proto::ICMPV6 => "icmpv6",
        // Profiles name four protocols; anything else needs `any` (no ports).
        _ => "any",
    }
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn when(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The proposed profile for `device` from its records (records of other devices are ignored).
pub fn propose(device: &str, records: &[FlowRecord], groups: &Groups) -> String {
    propose_weighted(device, records.iter().map(|r| (r, 1)), groups)
}

/// As [`propose`], over records that each stand for a number of flows (the controller's
/// aggregates, see [`crate::aggregate::FlowAggregate::records`]).
pub fn propose_weighted<'a>(
    device: &str,
    records: impl IntoIterator<Item = (&'a FlowRecord, u64)>,
    groups: &Groups,
) -> String {
    // (direction, protocol, peer) -> what used it.
    let mut by_peer: BTreeMap<(FlowDirection, &'static str, String), Acc> = BTreeMap::new();
    let mut total = (0u64, u64::MAX, 0u64);
    for (r, n) in records.into_iter().filter(|(r, _)| r.device.name == device) {
        let proto = protocol(r.proto);
        let peer = match groups.name(r.peer) {
            Some(g) => format!("group:{g}"),
            None => r.peer.to_string(),
        };
        let a = by_peer.entry((r.direction, proto, peer)).or_insert(Acc {
            first: u64::MAX,
            ..Acc::default()
        });
        if matches!(proto, "tcp" | "udp") && r.port != 0 {
            a.ports.insert(r.port);
        }
        a.flows += n;
        a.bytes += r.bytes();
        a.first = a.first.min(r.first_seen_ns);
        a.last = a.last.max(r.last_seen_ns);
        a.apps.insert(r.app.as_ref().map(app_key));
        total = (
            total.0 + n,
            total.1.min(r.first_seen_ns),
            total.2.max(r.last_seen_ns),
        );
    }
    // Peers sharing (direction, protocol, ports, app) become one rule.
    type RuleKey = (FlowDirection, &'static str, Vec<u16>, Option<AppKey>);
    let mut rules: BTreeMap<RuleKey, (Vec<String>, Acc)> = BTreeMap::new();
    for ((dir, proto, peer), a) in by_peer {
        let app = match a.apps.len() {
            1 => a.apps.iter().next().cloned().flatten(),
            _ => None,
        };
        let key = (dir, proto, a.ports.iter().copied().collect(), app);
        let (peers, acc) = rules.entry(key).or_insert_with(|| {
            (
                Vec::new(),
                Acc {
                    first: u64::MAX,
                    ..Acc::default()
                },
            )
        });
        peers.push(peer);
        acc.flows += a.flows;
        acc.bytes += a.bytes;
        acc.first = acc.first.min(a.first);
        acc.last = acc.last.max(a.last);
    }
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Proposed from {} flow records of {device} ({} .. {}).\n\
         # Review every rule before enforcing: it allows what the device did, not what it should do.",
        total.0,
        when(total.1.min(total.2)),
        when(total.2)
    );
    let _ = writeln!(y, "name: {}", profile_name(device));
    let _ = writeln!(y, "description: {}", q(&format!("learned from {device}")));
    let _ = writeln!(y, "default_mode: monitor");
    let _ = writeln!(y, "flows:");
    for ((dir, proto, ports, app), (peers, acc)) in rules {
        let peers = collapse_peers(peers);
        let _ = writeln!(
            y,
            "  # {} flows, {} bytes, first seen {}, last seen {}",
            acc.flows,
            acc.bytes,
            when(acc.first),
            when(acc.last)
        );
        let direction = match dir {
            FlowDirection::Opened => "from-device",
            FlowDirection::Received => "to-device",
        };
        let name = format!("{direction} {proto} {}", peers.join(" "));
        let _ = writeln!(
            y,
            "  - name: {}",
            q(&name.chars().take(120).collect::<String>())
        );
        let _ = writeln!(y, "    direction: {direction}");
        let _ = writeln!(y, "    protocol: {proto}");
        let quoted: Vec<String> = peers.iter().map(|p| q(p)).collect();
        let _ = writeln!(y, "    peers: [{}]", quoted.join(", "));
        if !ports.is_empty() {
            let _ = writeln!(y, "    ports: [{}]", port_list(&ports).join(", "));
        }
        match app {
            Some(AppKey::Dicom { calling, called }) => {
                let _ = writeln!(
                    y,
                    "    app: {{dicom: {{calling_ae: {}, called_ae: {}}}}}",
                    q(&calling),
                    q(&called)
                );
            }
            Some(AppKey::Hl7 { sending, receiving }) => {
                let _ = writeln!(
                    y,
                    "    app: {{hl7: {{sending_application: {}, receiving_application: {}}}}}",
                    q(&sending),
                    q(&receiving)
                );
            }
            None => {}
        }
    }
    y
}

/// Runs of consecutive ports as `"a-b"`; past MAX_PORTS, one range from the lowest to the highest.
fn port_list(ports: &[u16]) -> Vec<String> {
    if ports.len() > MAX_PORTS {
        return vec![q(&format!("{}-{}", ports[0], ports[ports.len() - 1]))];
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let mut j = i;
        while j + 1 < ports.len() && ports[j + 1] == ports[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            ports[i].to_string()
        } else {
            q(&format!("{}-{}", ports[i], ports[j]))
        });
        i = j + 1;
    }
    out
}

/// More than MAX_PEERS_PER_24 IPv4 addresses of one /24 become the /24.
fn collapse_peers(peers: Vec<String>) -> Vec<String> {
    let mut per24: BTreeMap<[u8; 3], Vec<String>> = BTreeMap::new();
    let mut out = Vec::new();
    for p in peers {
        match p.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => {
                let o = v4.octets();
                per24.entry([o[0], o[1], o[2]]).or_default().push(p);
            }
            _ => out.push(p),
        }
    }
    for (net, addrs) in per24 {
        if addrs.len() > MAX_PEERS_PER_24 {
            out.push(format!("{}.{}.{}.0/24", net[0], net[1], net[2]));
        } else {
            out.extend(addrs);
        }
    }
    out
}

#[cfg(test)]
mod tests;
