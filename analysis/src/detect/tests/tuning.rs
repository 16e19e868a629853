//! A class's `detection:` tuning: a count replaces the default for the class's devices, `off`
//! silences what the detector says about them, and the names a profile may use are the
//! engine's.

use super::*;
use wardgate_policy::detection::{ClassDetection, DETECTORS, Tuning};

/// `device` opens TCP to `ports` of 198.51.100.10, 20 s apart (no burst), refused.
fn slow_ports(d: &DeviceRef, ports: u16) -> Vec<FlowRecord> {
    (0..ports)
        .map(|i| {
            opened(
                d,
                u64::from(i) * 20 * NS,
                proto::TCP,
                "198.51.100.10",
                20 + i,
                Some(TcpOutcome::Refused),
            )
        })
        .collect()
}

fn pacs() -> DeviceRef {
    dev("pacs-1", "02:00:00:00:00:0b")
}

fn tuned(class: &str, t: &[(&str, Tuning)]) -> SiteFacts {
    let mut d = ClassDetection::default();
    for (name, tuning) in t {
        d.insert(name, *tuning).unwrap();
    }
    let mut s = site();
    s.set_detection(class, &d);
    s
}

#[test]
fn a_class_count_replaces_the_default_for_its_devices_only() {
    // 14 ports in 5 min: over a device's default (8), under the PACS class's 40.
    let flows = slow_ports(&pacs(), 14);
    assert_eq!(by(&run(site(), &flows, &[]), "scan_vertical").len(), 1);
    let site40 = tuned("pacs", &[("scan_vertical", Tuning::Count(40))]);
    let f = run(site40.clone(), &flows, &[]);
    assert!(by(&f, "scan_vertical").is_empty(), "{f:#?}");
    // Not scaled by sensitivity, and the longer window keeps its proportion (16/8 x 40 = 80):
    // 60 ports over 20 min stay quiet, 45 within 5 min do not.
    let long = slow_ports(&pacs(), 60);
    assert!(by(&run(site40.clone(), &long, &[]), "scan_vertical").is_empty());
    let fast: Vec<_> = (0..45u16)
        .map(|i| {
            opened(
                &pacs(),
                u64::from(i) * 5 * NS,
                proto::TCP,
                "198.51.100.10",
                20 + i,
                Some(TcpOutcome::Refused),
            )
        })
        .collect();
    let v = by(&run(site40.clone(), &fast, &[]), "scan_vertical");
    assert_eq!(v.len(), 1);
    let m = &v[0].evidence.metrics[0];
    assert_eq!(m.threshold, Some(40.0), "{m:?}");
    // Another class keeps the default: the pump is found at 14 ports.
    let pump_flows = slow_ports(&pump(), 14);
    assert_eq!(by(&run(site40, &pump_flows, &[]), "scan_vertical").len(), 1);
}

#[test]
fn off_silences_the_class_but_not_who_scans_it() {
    let site_off = tuned("infusion-pump", &[("scan_vertical", Tuning::Off)]);
    let flows = slow_ports(&pump(), 30);
    let f = run(site_off.clone(), &flows, &[]);
    assert!(by(&f, "scan_vertical").is_empty(), "{f:#?}");
    // The other detectors still speak for the class (an infusion pump has no business
    // with those ports).
    assert!(!by(&f, "class_protocol").is_empty(), "{f:#?}");
    // A workstation scanning the pump is the subject: still reported.
    let inbound: Vec<_> = (1..60u16)
        .map(|port| {
            let mut r = opened(
                &pump(),
                u64::from(port) * 5 * MS,
                proto::TCP,
                "198.51.100.7",
                port,
                Some(TcpOutcome::Refused),
            );
            r.direction = FlowDirection::Received;
            (r.device_port, r.peer_port) = (port, 50_000);
            (r.packets_in, r.bytes_in, r.packets_out, r.bytes_out) = (1, 44, 1, 40);
            r.outcome = crate::flow::FlowOutcome::of_record(
                proto::TCP,
                FlowDirection::Received,
                Some(TcpOutcome::Refused),
                1,
                1,
                false,
            );
            r
        })
        .collect();
    let v = by(&run(site_off, &inbound, &[]), "scan_vertical");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].device.name, "198.51.100.7");
}

#[test]
fn the_names_a_profile_may_tune_are_the_engines() {
    let engine: Vec<&str> = detectors(&DetectConfig::default(), true)
        .iter()
        .map(|d| d.name())
        .collect();
    // Two detectors raise findings under several names.
    let covers = |e: &str, n: &str| {
        e == n
            || (e == "flood" && n.starts_with("flood_"))
            || (e == "new_activity" && n.starts_with("new_"))
    };
    for n in DETECTORS {
        assert!(engine.iter().any(|e| covers(e, n)), "{n} is no detector");
    }
    for e in &engine {
        assert!(
            DETECTORS.iter().any(|n| covers(e, n)),
            "{e} cannot be tuned"
        );
    }
}
