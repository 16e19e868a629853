//! What the detectors consult of each device's baseline, in a compact in-memory form. The agent
//! holds one per device for its whole life, so only what `new_activity`, `volume` and `beacon`
//! read is kept, in sorted boxed slices searched by bisection; [`Baseline`] stays the file and
//! wire format. Site group names are shared between devices.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use foldhash::{HashMap, HashMapExt as _};
use serde::{
    Deserialize, Deserializer,
    de::{SeqAccess, Visitor},
};

use crate::{
    baseline::{Baseline, Window, proto_number},
    flow::FlowDirection,
};

/// One device's baseline as the detectors consult it.
#[derive(Clone, Debug, PartialEq)]
pub struct Learned {
    window: Window,
    /// Peer addresses by family (an IPv4 address in 4 bytes, not an `IpAddr`'s 17).
    peers_v4: Box<[Ipv4Addr]>,
    peers_v6: Box<[Ipv6Addr]>,
    /// The site groups the peers are in (distinct): all `new_activity` asks of them.
    peer_groups: Box<[Arc<str>]>,
    /// (direction, protocol, port) packed by [`service_key`].
    services: Box<[u32]>,
    /// IP protocol numbers.
    protocols: Box<[u8]>,
    apps: Box<[Box<str>]>,
    /// In the file's order (at most 24; the first entry of an hour is the one consulted).
    hourly: Box<[LearnedHour]>,
    peers_overflow: bool,
    services_overflow: bool,
    apps_overflow: bool,
}

/// One hour of day's byte volume. f32 holds byte counts exactly up to 16 MiB and to 7
/// significant digits past that: plenty for a median and MAD compared against a limit of
/// `k` MADs and `min_ratio` times the median.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearnedHour {
    pub hour: u8,
    /// Days of the window holding this hour.
    pub days: u32,
    pub bytes_median: f32,
    pub bytes_mad: f32,
}

/// Shares equal group names between devices' baselines.
#[derive(Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }
}

fn service_key(direction: FlowDirection, proto: u8, port: u16) -> u32 {
    let d = match direction {
        FlowDirection::Opened => 0,
        FlowDirection::Received => 1,
    };
    (d << 24) | (u32::from(proto) << 16) | u32::from(port)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Box<[T]> {
    v.sort_unstable();
    v.dedup();
    v.into_boxed_slice()
}

impl Learned {
    fn new(b: &Baseline, groups: &mut Interner) -> Learned {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for p in &b.peers {
            match p.addr {
                IpAddr::V4(a) => v4.push(a),
                IpAddr::V6(a) => v6.push(a),
            }
        }
        Learned {
            window: b.window,
            peers_v4: sorted(v4),
            peers_v6: sorted(v6),
            peer_groups: sorted(
                b.peers
                    .iter()
                    .filter_map(|p| p.group.as_deref())
                    .map(|g| groups.get(g))
                    .collect(),
            ),
            services: sorted(
                b.services
                    .iter()
                    .map(|s| service_key(s.direction, s.proto, s.port))
                    .collect(),
            ),
            // A name `proto_name` never writes can never match a flow's protocol: dropped.
            protocols: sorted(b.protocols.keys().filter_map(|n| proto_number(n)).collect()),
            apps: sorted(b.apps.iter().map(|a| a.identity.as_str().into()).collect()),
            hourly: b
                .hourly
                .iter()
                .map(|h| LearnedHour {
                    hour: h.hour,
                    days: h.days,
                    bytes_median: h.bytes_median as f32,
                    bytes_mad: h.bytes_mad as f32,
                })
                .collect(),
            peers_overflow: b.peers_overflow > 0,
            services_overflow: b.services_overflow > 0,
            apps_overflow: b.apps_overflow > 0,
        }
    }

    pub fn window(&self) -> Window {
        self.window
    }

    /// Whether the device talked to `addr` while learning.
    pub fn knows_peer(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.peers_v4.binary_search(&a).is_ok(),
            IpAddr::V6(a) => self.peers_v6.binary_search(&a).is_ok(),
        }
    }

    /// Whether one of its peers while learning was in the site group `group`.
    pub fn knows_peer_group(&self, group: &str) -> bool {
        self.peer_groups
            .binary_search_by(|g| (**g).cmp(group))
            .is_ok()
    }

    /// Whether it had more peers than its baseline lists.
    pub fn peers_overflowed(&self) -> bool {
        self.peers_overflow
    }

    pub fn knows_service(&self, direction: FlowDirection, proto: u8, port: u16) -> bool {
        self.services
            .binary_search(&service_key(direction, proto, port))
            .is_ok()
    }

    pub fn services_overflowed(&self) -> bool {
        self.services_overflow
    }

    pub fn knows_protocol(&self, proto: u8) -> bool {
        self.protocols.binary_search(&proto).is_ok()
    }

    /// Whether it used the application identity `identity` (an `AppIdentity::summary`).
    pub fn knows_app(&self, identity: &str) -> bool {
        self.apps.binary_search_by(|a| (**a).cmp(identity)).is_ok()
    }

    pub fn apps_overflowed(&self) -> bool {
        self.apps_overflow
    }

    /// The volume of an hour of day (0-23), if the window held it.
    pub fn hour(&self, hour: u8) -> Option<&LearnedHour> {
        self.hourly.iter().find(|h| h.hour == hour)
    }
}

/// Baselines by device name, compact ([`Learned`]). Deserializes from a JSON array of
/// [`Baseline`]s one element at a time, so a file of 10,000 never exists in memory as one
/// `Vec<Baseline>`. A device listed twice keeps its last baseline.
#[derive(Clone, Debug, Default)]
pub struct Baselines(HashMap<Box<str>, Learned>);

impl Baselines {
    pub fn new(list: Vec<Baseline>) -> Baselines {
        let mut groups = Interner::default();
        let mut map = HashMap::with_capacity(list.len());
        for b in &list {
            map.insert(b.device.name.as_str().into(), Learned::new(b, &mut groups));
        }
        Baselines(map)
    }
    pub fn get(&self, device: &str) -> Option<&Learned> {
        self.0.get(device)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Baselines {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Baselines;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of baselines")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Baselines, A::Error> {
                let mut groups = Interner::default();
                let mut map = HashMap::new();
                while let Some(b) = seq.next_element::<Baseline>()? {
                    let l = Learned::new(&b, &mut groups);
                    map.insert(b.device.name.into_boxed_str(), l);
                }
                // Held for the agent's life: no spare buckets.
                map.shrink_to_fit();
                Ok(Baselines(map))
            }
        }
        d.deserialize_seq(List)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        baseline::{App, Hour, Peer, Service, TcpCounts, proto_name},
        flow::DeviceRef,
    };

    fn peer(addr: &str, group: Option<&str>) -> Peer {
        Peer {
            addr: addr.parse().unwrap(),
            group: group.map(Into::into),
            flows: 1,
            bytes: 1,
            first_seen_ns: 0,
            last_seen_ns: 0,
            period: None,
        }
    }

    fn service(direction: FlowDirection, proto: u8, port: u16) -> Service {
        Service {
            direction,
            proto,
            port,
            flows: 1,
            bytes: 1,
            peers: 1,
            first_seen_ns: 0,
            last_seen_ns: 0,
        }
    }

    fn hour(hour: u8, days: u32, median: f64, mad: f64) -> Hour {
        Hour {
            hour,
            days,
            bytes_median: median,
            bytes_mad: mad,
            flows_median: 1.0,
            flows_mad: 0.0,
        }
    }

    /// Peers of both families and groups, both directions of a port, a protocol spelled as
    /// `proto_name` would not (`ip-6`, without `tcp`), an hour listed twice, unsorted lists.
    fn baseline(name: &str) -> Baseline {
        let app = |identity: &str| App {
            identity: identity.into(),
            direction: FlowDirection::Opened,
            port: 104,
            flows: 1,
            last_seen_ns: 0,
        };
        Baseline {
            device: DeviceRef {
                name: name.into(),
                id: None,
                mac: None,
            },
            window: Window {
                start_ns: 5,
                end_ns: 99,
            },
            flows: 10,
            bytes_out: 1,
            bytes_in: 1,
            peers: vec![
                peer("198.51.100.53", Some("dns")),
                peer("2001:db8::1", Some("pacs")),
                peer("192.0.2.7", None),
                peer("::ffff:203.0.113.9", None),
                peer("198.51.100.54", Some("dns")),
            ],
            peers_overflow: 0,
            services: vec![
                service(FlowDirection::Opened, 17, 53),
                service(FlowDirection::Received, 6, 104),
                service(FlowDirection::Opened, 6, 2575),
            ],
            services_overflow: 3,
            protocols: BTreeMap::from(
                [("udp", 9), ("ip-47", 1), ("ip-6", 1), ("icmpv6", 1)]
                    .map(|(n, c)| (n.to_string(), c)),
            ),
            apps: vec![
                app("hl7 PUMP/ICU -> EMR/HOSP ORU^R01"),
                app("dicom CT1 -> PACS"),
            ],
            apps_overflow: 0,
            hourly: vec![
                hour(9, 3, 123_456_789.0, 4321.5),
                hour(2, 1, 0.5, 0.0),
                hour(9, 7, 1.0, 1.0),
            ],
            tcp: TcpCounts::default(),
        }
    }

    #[test]
    fn answers_as_the_full_baseline_does() {
        let full = baseline("ct-1");
        let all = Baselines::new(vec![full.clone()]);
        let l = all.get("ct-1").unwrap();
        assert!(all.get("ct-2").is_none());
        assert_eq!(l.window(), full.window);
        assert_eq!(
            (
                l.peers_overflowed(),
                l.services_overflowed(),
                l.apps_overflowed()
            ),
            (false, true, false)
        );
        let addrs = [
            "198.51.100.53",
            "198.51.100.54",
            "198.51.100.55",
            "2001:db8::1",
            "2001:db8::2",
            "192.0.2.7",
            "::ffff:192.0.2.7",
            "203.0.113.9",
            "::ffff:203.0.113.9",
        ];
        for a in addrs {
            let a: IpAddr = a.parse().unwrap();
            assert_eq!(
                l.knows_peer(a),
                full.peers.iter().any(|p| p.addr == a),
                "{a}"
            );
        }
        for g in ["dns", "pacs", "ntp", "", "dn"] {
            let want = full.peers.iter().any(|p| p.group.as_deref() == Some(g));
            assert_eq!(l.knows_peer_group(g), want, "{g}");
        }
        for d in [FlowDirection::Opened, FlowDirection::Received] {
            for p in [6, 17, 47] {
                for port in [0, 53, 104, 2575, 65535] {
                    let want = full
                        .services
                        .iter()
                        .any(|s| s.direction == d && s.proto == p && s.port == port);
                    assert_eq!(l.knows_service(d, p, port), want, "{d:?} {p} {port}");
                }
            }
        }
        for p in 0..=255u8 {
            let want = full.protocols.contains_key(&proto_name(p));
            assert_eq!(l.knows_protocol(p), want, "{p}");
        }
        // `ip-6` is not how tcp is written: tcp is not known.
        assert!(l.knows_protocol(47) && !l.knows_protocol(6) && !l.knows_protocol(1));
        for id in [
            "dicom CT1 -> PACS",
            "hl7 PUMP/ICU -> EMR/HOSP ORU^R01",
            "dicom CT1 -> PACS2",
            "",
        ] {
            let want = full.apps.iter().any(|a| a.identity == id);
            assert_eq!(l.knows_app(id), want, "{id}");
        }
        for h in 0..24u8 {
            let want = full.hourly.iter().find(|x| x.hour == h);
            let got = l.hour(h);
            assert_eq!(got.is_some(), want.is_some(), "{h}");
            if let (Some(got), Some(want)) = (got, want) {
                assert_eq!(got.days, want.days);
                let close = |a: f32, b: f64| (f64::from(a) - b).abs() <= b * 1e-7;
                assert!(
                    close(got.bytes_median, want.bytes_median),
                    "{got:?} {want:?}"
                );
                assert!(close(got.bytes_mad, want.bytes_mad), "{got:?} {want:?}");
            }
        }
        assert_eq!(l.hour(9).unwrap().days, 3);
    }

    #[test]
    fn protocol_names_read_back_only_as_written() {
        for p in 0..=255u8 {
            assert_eq!(proto_number(&proto_name(p)), Some(p));
        }
        for bad in ["ip-6", "ip-017", "ip-256", "ip-", "TCP", "gre", ""] {
            assert_eq!(proto_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn read_from_json_one_element_at_a_time_as_from_a_list() {
        let mut other = baseline("pump-2");
        other.peers.truncate(1);
        other.peers_overflow = 4;
        let list = vec![baseline("ct-1"), other];
        let text = serde_json::to_string(&list).unwrap();
        let read: Baselines = serde_json::from_str(&text).unwrap();
        let made = Baselines::new(list);
        assert_eq!(read.len(), 2);
        for name in ["ct-1", "pump-2"] {
            assert_eq!(read.get(name), made.get(name), "{name}");
        }
        assert!(read.get("pump-2").unwrap().peers_overflowed());
        // Both devices' `dns` is one string.
        let g = |n: &str| read.get(n).unwrap().peer_groups[0].clone();
        assert!(Arc::ptr_eq(&g("ct-1"), &g("pump-2")));
        assert!(serde_json::from_str::<Baselines>("[]").unwrap().is_empty());
        // What does not parse is refused with where and what.
        let cut = &text[..text.len() / 2];
        let e = serde_json::from_str::<Baselines>(cut)
            .unwrap_err()
            .to_string();
        assert!(e.contains("EOF"), "{e}");
        let e = serde_json::from_str::<Baselines>(r#"[{"device": {"name": "x"}}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field") && e.contains("column"), "{e}");
        let e = serde_json::from_str::<Baselines>("{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a list of baselines"), "{e}");
    }
}
