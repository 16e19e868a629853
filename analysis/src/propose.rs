//! A candidate profile from a device's flow records: one flow rule per (direction, protocol,
//! ports, app) with the peers that used it, peers named by site group where one matches, else by
//! the DNS name the device resolved them from (`dns:NAME`, when every flow to the address had
//! that name: `dns::names`; the addresses in a comment), runs of
//! ports as ranges, app constraints where every flow of a rule showed the same DICOM or HL7
//! identity, each rule commented with the flows and bytes it covers and when. Written as YAML text
//! by hand because serde cannot write comments; every string goes through JSON quoting (a JSON
//! string is a YAML double-quoted scalar).
//!
//! Only completed flows (`FlowOutcome::Established`) become rules unless the caller asks for
//! the others: a device that scans, or whose SYNs are refused or unanswered, must not get those
//! attempts proposed as allowed. What was left out is listed (in the YAML header and in
//! [`Proposal::left_out`]), and so is every rule that allows more than was seen (ports past
//! MAX_PORTS as one range, peers past MAX_PEERS_PER_24 as their /24).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::IpAddr,
};

use crate::{
    app::AppIdentity,
    baseline::Groups,
    decode::proto,
    flow::{FlowDirection, FlowOutcome, FlowRecord},
};

/// What a proposal takes in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProposeOptions {
    /// Also make rules from flows that did not complete (refused, unanswered, denied, unknown).
    pub include_incomplete: bool,
}

/// Flows of one (direction, peer, protocol, outcome) a proposal did not use, with the
/// service ports they went to (a scan of one host is one entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftOut {
    pub direction: FlowDirection,
    pub peer: IpAddr,
    pub proto: u8,
    /// Distinct service ports, ascending (none for protocols without ports).
    pub ports: Vec<u16>,
    pub outcome: FlowOutcome,
    pub flows: u64,
    pub last_seen_ns: u64,
}

/// Port runs shown in one line at most.
const MAX_RUNS_SHOWN: usize = 8;

/// `ports` as runs (`22`, `2000-2059`), at most MAX_RUNS_SHOWN, then how many ports in all.
pub fn describe_ports(ports: &[u16]) -> String {
    let runs = port_runs(ports);
    let mut s = runs
        .iter()
        .take(MAX_RUNS_SHOWN)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    if runs.len() > MAX_RUNS_SHOWN {
        s.push_str(&format!(",... ({} ports)", ports.len()));
    }
    s
}

impl LeftOut {
    /// One line for humans: `from-device tcp 198.51.100.7 ports 22,2000-2059: 61 unanswered`.
    pub fn describe(&self) -> String {
        let ports = match self.ports.len() {
            0 => String::new(),
            1 => format!(" port {}", self.ports[0]),
            _ => format!(" ports {}", describe_ports(&self.ports)),
        };
        format!(
            "{} {} {}{ports}: {} {}",
            direction_name(self.direction),
            protocol(self.proto),
            self.peer,
            self.flows,
            self.outcome.as_str()
        )
    }
}

/// A proposed profile and what it says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proposal {
    /// The profile YAML.
    pub yaml: String,
    /// Flows the rules were made from.
    pub flows: u64,
    /// Flows not used (did not complete), per direction, peer, protocol and outcome, in that
    /// order.
    pub left_out: Vec<LeftOut>,
    /// Rules that allow more than was seen, one line each (rule name: what was widened).
    pub widened: Vec<String>,
}

impl Proposal {
    pub fn left_out_flows(&self) -> u64 {
        self.left_out.iter().map(|l| l.flows).sum()
    }
}

/// Left-out lines (one per peer, protocol and outcome) written into the YAML header at most
/// (the rest are counted there; the whole list is in [`Proposal::left_out`]).
const MAX_LEFT_OUT_LINES: usize = 50;

fn direction_name(d: FlowDirection) -> &'static str {
    match d {
        FlowDirection::Opened => "from-device",
        FlowDirection::Received => "to-device",
    }
}

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
    /// For a `dns:` peer, the addresses its flows went to.
    addrs: BTreeSet<IpAddr>,
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

/// The proposed profile for `device` from its records (records of other devices are ignored),
/// completed flows only.
pub fn propose(device: &str, records: &[FlowRecord], groups: &Groups) -> Proposal {
    propose_weighted(
        device,
        records.iter().map(|r| (r, 1)),
        groups,
        ProposeOptions::default(),
    )
}

/// As [`propose`], over records that each stand for a number of flows (the controller's
/// aggregates, see [`crate::aggregate::FlowAggregate::records`]).
pub fn propose_weighted<'a>(
    device: &str,
    records: impl IntoIterator<Item = (&'a FlowRecord, u64)>,
    groups: &Groups,
    opts: ProposeOptions,
) -> Proposal {
    let records: Vec<(&FlowRecord, u64)> = records
        .into_iter()
        .filter(|(r, _)| r.device.name == device)
        .collect();
    let names = peer_names(&records, opts);
    // (direction, protocol, peer) -> what used it.
    let mut by_peer: BTreeMap<(FlowDirection, &'static str, String), Acc> = BTreeMap::new();
    let mut total = (0u64, u64::MAX, 0u64);
    type LeftKey = (FlowDirection, IpAddr, u8, FlowOutcome);
    let mut left: BTreeMap<LeftKey, (u64, u64, BTreeSet<u16>)> = BTreeMap::new();
    let mut incomplete_used = 0u64;
    for &(r, n) in &records {
        if !r.outcome.is_completed() {
            if !opts.include_incomplete {
                let e = left
                    .entry((r.direction, r.peer, r.proto, r.outcome))
                    .or_default();
                e.0 += n;
                e.1 = e.1.max(r.last_seen_ns);
                if r.port != 0 {
                    e.2.insert(r.port);
                }
                continue;
            }
            incomplete_used += n;
        }
        let proto = protocol(r.proto);
        // A site group wins; then the name every flow to the address was resolved from.
        let named = names.get(&(r.direction, r.peer)).and_then(|n| n.as_deref());
        let peer = match (groups.name(r.peer), named) {
            (Some(g), _) => format!("group:{g}"),
            (None, Some(name)) => format!("dns:{name}"),
            (None, None) => r.peer.to_string(),
        };
        let by_name = peer.starts_with("dns:");
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
        if by_name {
            a.addrs.insert(r.peer);
        }
        total = (
            total.0 + n,
            total.1.min(r.first_seen_ns),
            total.2.max(r.last_seen_ns),
        );
    }
    // Peers sharing (direction, protocol, ports, app) become one rule.
    type RuleKey = (FlowDirection, &'static str, Vec<u16>, Option<AppKey>);
    let mut rules: BTreeMap<RuleKey, (Vec<String>, Acc, Vec<String>)> = BTreeMap::new();
    for ((dir, proto, peer), a) in by_peer {
        let app = match a.apps.len() {
            1 => a.apps.iter().next().cloned().flatten(),
            _ => None,
        };
        let key = (dir, proto, a.ports.iter().copied().collect(), app);
        let (peers, acc, seen_at) = rules.entry(key).or_insert_with(|| {
            (
                Vec::new(),
                Acc {
                    first: u64::MAX,
                    ..Acc::default()
                },
                Vec::new(),
            )
        });
        if !a.addrs.is_empty() {
            seen_at.push(format!("{peer} seen at {}", addr_list(&a.addrs)));
        }
        peers.push(peer);
        acc.flows += a.flows;
        acc.bytes += a.bytes;
        acc.first = acc.first.min(a.first);
        acc.last = acc.last.max(a.last);
    }
    let left_out: Vec<LeftOut> = left
        .into_iter()
        .map(
            |((direction, peer, proto, outcome), (flows, last, ports))| LeftOut {
                direction,
                peer,
                proto,
                ports: ports.into_iter().collect(),
                outcome,
                flows,
                last_seen_ns: last,
            },
        )
        .collect();
    // Rules first (their widenings go into the header too), then the header.
    let mut body = String::new();
    let mut widened = Vec::new();
    for ((dir, proto, ports, app), (peers, acc, seen_at)) in rules {
        let (peers, peer_note) = collapse_peers(peers);
        let (port_items, port_note) = port_list(&ports);
        let direction = direction_name(dir);
        let name: String = format!("{direction} {proto} {}", peers.join(" "))
            .chars()
            .take(120)
            .collect();
        let y = &mut body;
        let _ = writeln!(
            y,
            "  # {} flows, {} bytes, first seen {}, last seen {}",
            acc.flows,
            acc.bytes,
            when(acc.first),
            when(acc.last)
        );
        for s in &seen_at {
            let _ = writeln!(y, "  # {s}");
        }
        for note in peer_note.iter().chain(&port_note) {
            let _ = writeln!(y, "  # WIDENED: {note}");
            widened.push(format!("{name}: {note}"));
        }
        let _ = writeln!(y, "  - name: {}", q(&name));
        let _ = writeln!(y, "    direction: {direction}");
        let _ = writeln!(y, "    protocol: {proto}");
        let quoted: Vec<String> = peers.iter().map(|p| q(p)).collect();
        let _ = writeln!(y, "    peers: [{}]", quoted.join(", "));
        if !ports.is_empty() {
            let _ = writeln!(y, "    ports: [{}]", port_items.join(", "));
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
    let mut y = String::new();
    let kind = if opts.include_incomplete {
        "flow records"
    } else {
        "completed flow records"
    };
    let _ = writeln!(
        y,
        "# Proposed from {} {kind} of {device} ({} .. {}).\n\
         # Review every rule before enforcing: it allows what the device did, not what it should do.",
        total.0,
        when(total.1.min(total.2)),
        when(total.2)
    );
    if incomplete_used > 0 {
        let _ = writeln!(
            y,
            "# Includes {incomplete_used} flows that did not complete (refused, unanswered, denied or unknown)."
        );
    }
    let left_flows: u64 = left_out.iter().map(|l| l.flows).sum();
    if !left_out.is_empty() {
        let _ = writeln!(
            y,
            "# Left out: {left_flows} flows that did not complete (refused, unanswered, denied or unknown):"
        );
        for l in left_out.iter().take(MAX_LEFT_OUT_LINES) {
            let _ = writeln!(y, "#   {}", l.describe());
        }
        if left_out.len() > MAX_LEFT_OUT_LINES {
            let _ = writeln!(
                y,
                "#   ... and {} more",
                left_out.len() - MAX_LEFT_OUT_LINES
            );
        }
    }
    if !widened.is_empty() {
        let _ = writeln!(y, "# Widened (these rules allow more than was seen):");
        for w in &widened {
            let _ = writeln!(y, "#   {w}");
        }
    }
    let _ = writeln!(y, "name: {}", profile_name(device));
    let _ = writeln!(y, "description: {}", q(&format!("learned from {device}")));
    let _ = writeln!(y, "default_mode: monitor");
    if body.is_empty() {
        let _ = writeln!(y, "flows: []");
    } else {
        let _ = writeln!(y, "flows:");
        y.push_str(&body);
    }
    Proposal {
        yaml: y,
        flows: total.0,
        left_out,
        widened,
    }
}

/// Per (direction, peer address) of the flows a proposal uses: the name the device resolved
/// the address from, if every one of those flows had one (the latest name when it changed);
/// `None` when any went to the address without a name.
fn peer_names(
    records: &[(&FlowRecord, u64)],
    opts: ProposeOptions,
) -> BTreeMap<(FlowDirection, IpAddr), Option<String>> {
    let mut out: BTreeMap<(FlowDirection, IpAddr), Option<(String, u64)>> = BTreeMap::new();
    for (r, _) in records {
        if !(r.outcome.is_completed() || opts.include_incomplete) {
            continue;
        }
        // A name a profile cannot hold (an escaped byte in a label) is no name here.
        let this = r
            .peer_name
            .as_ref()
            .filter(|n| wardgate_policy::dns::name_problem(n).is_none())
            .map(|n| (n.clone(), r.last_seen_ns));
        match out.entry((r.direction, r.peer)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(this);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let keep = match (o.get(), this) {
                    (Some(old), Some(new)) if new.1 >= old.1 => Some(new),
                    (Some(old), Some(_)) => Some(old.clone()),
                    _ => None,
                };
                o.insert(keep);
            }
        }
    }
    out.into_iter()
        .map(|(k, v)| (k, v.map(|(n, _)| n)))
        .collect()
}

/// Addresses shown in a `dns:` peer's comment at most.
const MAX_ADDRS_SHOWN: usize = 16;

fn addr_list(addrs: &BTreeSet<IpAddr>) -> String {
    let mut s = addrs
        .iter()
        .take(MAX_ADDRS_SHOWN)
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if addrs.len() > MAX_ADDRS_SHOWN {
        s.push_str(&format!(", ... ({} addresses)", addrs.len()));
    }
    s
}

/// Runs of consecutive ports as `"a-b"` (exactly the ports seen); past MAX_PORTS, one range
/// from the lowest to the highest, with a note saying how much wider that is.
fn port_list(ports: &[u16]) -> (Vec<String>, Option<String>) {
    if ports.len() > MAX_PORTS {
        let (lo, hi) = (ports[0], ports[ports.len() - 1]);
        let note = format!(
            "{} distinct ports seen, written as the range {lo}-{hi} ({} ports)",
            ports.len(),
            u32::from(hi) - u32::from(lo) + 1
        );
        return (vec![q(&format!("{lo}-{hi}"))], Some(note));
    }
    let out = port_runs(ports)
        .into_iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                q(&format!("{a}-{b}"))
            }
        })
        .collect();
    (out, None)
}

/// Runs of consecutive ports (ascending input) as (first, last).
fn port_runs(ports: &[u16]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let mut j = i;
        while j + 1 < ports.len() && ports[j + 1] == ports[j] + 1 {
            j += 1;
        }
        out.push((ports[i], ports[j]));
        i = j + 1;
    }
    out
}

/// More than MAX_PEERS_PER_24 IPv4 addresses of one /24 become the /24, with a note per /24.
fn collapse_peers(peers: Vec<String>) -> (Vec<String>, Option<String>) {
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
    let mut notes = Vec::new();
    for (net, addrs) in per24 {
        if addrs.len() > MAX_PEERS_PER_24 {
            let cidr = format!("{}.{}.{}.0/24", net[0], net[1], net[2]);
            notes.push(format!(
                "{} addresses seen in {cidr}, written as the whole /24 (256 addresses)",
                addrs.len()
            ));
            out.push(cidr);
        } else {
            out.extend(addrs);
        }
    }
    (out, (!notes.is_empty()).then(|| notes.join("; ")))
}

#[cfg(test)]
mod tests;
