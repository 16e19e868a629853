//! The detectors over whatever a capture holds: frames decoded (IP into the flow table, ARP into
//! address claims, DNS on port 53 into DNS events, as replay does), the records, DNS events and claims through every detector (with a site, so class and
//! spoofing checks run, and a baseline learned from the same records), findings formatted as
//! CEF and OCSF. Never a panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate_analysis::{
    Decoded, Devices, FlowTable, FlowTableConfig, LinkType,
    baseline::{Groups, Limits, Window, baselines},
    decode,
    detect::{self, Baselines, DetectConfig, SiteFacts, format},
    dns,
};

const SITE: &str = "site: fuzz\ngroups:\n  pacs: [198.51.100.10/32]\ndevices:\n  - name: pump\n    mac: 02:00:00:00:00:0a\n    addresses: [192.0.2.10]\n    profile: infusion-pump\n    gateway: gw\n";

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frames)) = data.split_first() else {
        return;
    };
    let link = if sel & 1 == 0 {
        LinkType::Ethernet
    } else {
        LinkType::RawIp
    };
    let site = wardgate_policy::parse_site("site.yaml", SITE).expect("the fuzz site parses");
    let with_site = sel & 2 != 0;
    let devices = if with_site {
        Devices::from_site(&site).expect("site devices")
    } else {
        Devices::discover()
    };
    let mut table = FlowTable::new(FlowTableConfig::default(), devices);
    let mut claims = Vec::new();
    let mut dns_events = Vec::new();
    // Frames split on a marker; the time step from the selector byte (bursts and spreads).
    let step = 1u64 << (sel >> 2).min(40);
    for (i, frame) in frames.split(|&b| b == 0xa5).take(256).enumerate() {
        let ts = 1_700_000_000_000_000_000 + i as u64 * step;
        match decode(link, frame, ts) {
            Ok(Decoded::Ip(p)) => {
                table.add(&p);
                if let Some(Ok(e)) = dns::event(&p, table.devices()) {
                    dns_events.push(e);
                }
            }
            Ok(Decoded::NotIp { .. }) => claims.extend(detect::arp::claim(link, frame, ts)),
            Err(_) => {}
        }
    }
    let (flows, _, _) = table.finish_all();
    let facts = if with_site {
        SiteFacts::from_site(&site)
    } else {
        SiteFacts::default()
    };
    let half = flows.len() / 2;
    let window = Window {
        start_ns: flows.first().map_or(0, |r| r.first_seen_ns),
        end_ns: flows.get(half).map_or(0, |r| r.first_seen_ns),
    };
    let b = baselines(
        &flows[..half],
        &Groups::default(),
        &Limits::default(),
        window,
    );
    let cfg = DetectConfig::default();
    let findings = detect::run_observed(
        detect::detectors(&cfg, true),
        facts,
        Baselines::new(b),
        cfg.aggregate,
        &flows,
        &claims,
        &dns_events,
    );
    for f in &findings {
        let _ = format::cef::syslog_line(f, format::cef::FACILITY_SECURITY, "fuzz");
        let _ = format::ocsf::detection_finding(f, format::ocsf::ACTIVITY_CREATE);
    }
});
