//! Policy in words for people: what a flow or a compiled rule allows (`tcp/443 to
//! infusion-server`), what a mode means, a time on the reader's clock. Pure: wardctl's human
//! views and the write previews (which the console reuses) say things the same way.

use std::net::IpAddr;

use ipnet::IpNet;
use wardgate_policy::desired::{Direction, Mode, Proto, Rule};

/// `from device` / `to device`: who opens the flow.
pub fn direction(d: Direction) -> &'static str {
    match d {
        Direction::FromDevice => "from device",
        Direction::ToDevice => "to device",
    }
}

/// What a mode does, in one line.
pub fn mode_meaning(m: Mode) -> &'static str {
    match m {
        Mode::Learn => "everything passes; its flows are recorded to learn from",
        Mode::Monitor => "everything passes; what its profile would block is reported",
        Mode::Enforce => "only what its profile allows passes; the rest is dropped",
        Mode::Quarantine => "nothing passes but the gateway's management traffic",
    }
}

fn proto(p: Proto) -> &'static str {
    match p {
        Proto::Any => "any protocol",
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Icmp => "icmp",
        Proto::Icmpv6 => "icmpv6",
    }
}

/// `tcp/443`, `udp/53,123`, `tcp/2575-2580`, `tcp (any port)`, `icmp`, `any protocol`.
pub fn service(p: Proto, ports: Option<&[(u16, u16)]>) -> String {
    match (p, ports) {
        (Proto::Tcp | Proto::Udp, Some(r)) if !r.is_empty() => {
            let list: Vec<String> = r
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            format!("{}/{}", proto(p), list.join(","))
        }
        (Proto::Tcp | Proto::Udp, _) => format!("{} (any port)", proto(p)),
        _ => proto(p).to_string(),
    }
}

/// A peer as a profile names it, for people: `group:pacs` -> `pacs`, `any` -> `anyone`.
pub fn peer(p: &str) -> String {
    if let Some(g) = p.strip_prefix("group:") {
        g.to_string()
    } else if let Some(n) = p.strip_prefix("dns:") {
        format!("{n} (by name, as its resolvers answer)")
    } else if p == "any" {
        "anyone".to_string()
    } else if p == "same-profile" {
        "devices of the same profile".to_string()
    } else {
        p.to_string()
    }
}

/// One allowed flow: `tcp/443 to infusion-server`, `tcp/104 from pacs, ris`.
pub fn flow(d: Direction, p: Proto, ports: Option<&[(u16, u16)]>, peers: &[String]) -> String {
    let peers = if peers.is_empty() {
        "nobody".to_string()
    } else {
        peers.join(", ")
    };
    let towards = match d {
        Direction::FromDevice => "to",
        Direction::ToDevice => "from",
    };
    format!("{} {towards} {peers}", service(p, ports))
}

/// A profile's flow in words, its peers as named in the profile.
pub fn profile_flow(f: &wardgate_policy::profile::Flow) -> String {
    let ranges = f.ports.as_ref().and_then(|p| p.value.ranges().ok());
    let peers: Vec<String> = f.peers.iter().map(|x| peer(&x.value)).collect();
    flow(f.direction, f.protocol.value, ranges.as_deref(), &peers)
}

/// A compiled rule in words, its peer addresses named by the site's groups where a group's
/// networks are all among them (`groups`: name and networks).
pub fn rule(r: &Rule, groups: &[(String, Vec<IpNet>)]) -> String {
    let ports = r.ports.map(|p| [(p.lo, p.hi)]);
    flow(
        r.direction,
        r.proto,
        ports.as_ref().map(|p| &p[..]),
        &peer_names(&r.peers, groups),
    )
}

/// `peers` named: each group whose networks are all in `peers` (and not empty) by its name,
/// the networks no such group covers as written (`0.0.0.0/0` and `::/0` as `anyone`).
pub fn peer_names(peers: &[IpNet], groups: &[(String, Vec<IpNet>)]) -> Vec<String> {
    let mut names = Vec::new();
    let mut covered = vec![false; peers.len()];
    for (name, nets) in groups {
        if !nets.is_empty() && nets.iter().all(|n| peers.contains(n)) {
            names.push(name.clone());
            for (i, p) in peers.iter().enumerate() {
                if nets.contains(p) {
                    covered[i] = true;
                }
            }
        }
    }
    let everyone = peers.iter().any(|p| p.prefix_len() == 0);
    if everyone {
        return vec!["anyone".to_string()];
    }
    for (p, c) in peers.iter().zip(covered) {
        if !c {
            names.push(host(p));
        }
    }
    names
}

fn host(n: &IpNet) -> String {
    let full = match n.addr() {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if n.prefix_len() == full {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// A time for people: `2026-12-06 09:04:45 +01:00` on this machine's clock (its time zone,
/// `TZ` if set), or `2026-12-06 08:04:45 UTC`.
pub fn when(unix_ms: i64, utc: bool) -> String {
    let offset = (!utc).then(|| local_offset_s(unix_ms.div_euclid(1000)));
    when_at(unix_ms, offset)
}

/// [`when`] at a given offset from UTC in seconds (`None`: UTC).
pub fn when_at(unix_ms: i64, offset_s: Option<i64>) -> String {
    let offset = offset_s.unwrap_or(0);
    let t = time::OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000) + offset)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let date = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    match offset_s {
        None => format!("{date} UTC"),
        Some(o) => {
            let sign = if o < 0 { '-' } else { '+' };
            let a = o.unsigned_abs();
            format!("{date} {sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
        }
    }
}

/// The local time zone's offset from UTC at `unix_s`, in seconds (0 if it cannot be read).
fn local_offset_s(unix_s: i64) -> i64 {
    let t: libc::time_t = unix_s;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // Safety: `t` is a valid time_t and `tm` a writable tm; localtime_r is the reentrant form
    // (glibc reads the zone once, under its own lock) and writes only into `tm`.
    let r = unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) };
    if r.is_null() {
        return 0;
    }
    // Safety: localtime_r returned non-null, so it filled `tm` (and zeroed was valid anyway).
    let tm = unsafe { tm.assume_init() };
    tm.tm_gmtoff
}

#[cfg(test)]
mod tests {
    use wardgate_policy::desired::PortRange;

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn flows_in_words() {
        assert_eq!(
            flow(
                Direction::FromDevice,
                Proto::Tcp,
                Some(&[(443, 443)]),
                &["infusion-server".into()]
            ),
            "tcp/443 to infusion-server"
        );
        assert_eq!(
            flow(
                Direction::ToDevice,
                Proto::Udp,
                Some(&[(53, 53), (2575, 2580)]),
                &["a".into(), "b".into()]
            ),
            "udp/53,2575-2580 from a, b"
        );
        assert_eq!(
            flow(Direction::FromDevice, Proto::Tcp, None, &["x".into()]),
            "tcp (any port) to x"
        );
        assert_eq!(
            flow(Direction::FromDevice, Proto::Icmp, None, &[]),
            "icmp to nobody"
        );
        assert_eq!(peer("group:pacs"), "pacs");
        assert_eq!(peer("any"), "anyone");
        assert_eq!(direction(Direction::ToDevice), "to device");
    }

    #[test]
    fn compiled_peers_are_named_by_their_groups() {
        let groups = vec![
            (
                "pacs".to_string(),
                vec![net("198.51.100.10/32"), net("2001:db8::10/128")],
            ),
            ("dns".to_string(), vec![net("198.51.100.53/32")]),
        ];
        let r = Rule {
            rule_id: 1,
            name: "pump#1 (x)".into(),
            direction: Direction::FromDevice,
            proto: Proto::Tcp,
            peers: vec![
                net("198.51.100.10/32"),
                net("2001:db8::10/128"),
                net("203.0.113.0/24"),
            ],
            ports: Some(PortRange::single(8443)),
            idle_timeout_s: 60,
            inspect: false,
            app: None,
        };
        assert_eq!(rule(&r, &groups), "tcp/8443 to pacs, 203.0.113.0/24");
        // Half a group is not the group.
        assert_eq!(
            peer_names(&[net("198.51.100.10/32")], &groups),
            ["198.51.100.10"]
        );
        assert_eq!(peer_names(&[net("0.0.0.0/0")], &groups), ["anyone"]);
    }

    #[test]
    fn times_in_utc_and_local() {
        assert_eq!(when(1_765_008_285_000, true), "2025-12-06 08:04:45 UTC");
        assert_eq!(
            when_at(1_765_008_285_000, Some(3600)),
            "2025-12-06 09:04:45 +01:00"
        );
        assert_eq!(
            when_at(1_765_008_285_000, Some(-16_200)),
            "2025-12-06 03:34:45 -04:30"
        );
    }
}
