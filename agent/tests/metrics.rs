//! Attach tier: the real agent binary with `metrics.listen` set, in the gateway namespace of a
//! ward, scraped twice with curl while allowed and denied traffic flows; the counters move
//! between the scrapes and `promtool check metrics` (Debian prometheus) accepts both. Needs
//! root; fails (never skips) without it.

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use support::*;
use wardgate_agent::config::AgentConfig;
use wardgate_testkit::{
    agent::AgentProcess,
    prometheus::{promtool_check, samples, scrape_in, value},
    ward::*,
};

const LISTEN: &str = "127.0.0.1:9464";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
#[test]
fn metrics_move_while_traffic_flows_and_promtool_accepts_them() {
    require_privileges();
    let ward = Ward::new("metrics");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("metrics");
    let desired = dir.path().join("desired.json");
    std::fs::write(&desired, reference_state(1).to_json()).unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "interfaces: [{DEV_IF}]\npin_root: {}\ndesired_state: {}\n\
             metrics: {{listen: \"{LISTEN}\", map_fill_every_s: 1}}\n",
            pin.0.display(),
            desired.display()
        ),
    )
    .unwrap();
    AgentConfig::load(&config).expect("test config is valid");
    let stop = Arc::new(AtomicBool::new(false));
    let echo = tcp_echo(
        &ward.srv,
        vec![sa("198.51.100.10:104"), sa("198.51.100.10:445")],
        stop.clone(),
    );
    let agent = AgentProcess::start(
        Path::new(env!("CARGO_BIN_EXE_wardgate-agent")),
        &ward.gw,
        &config,
        dir.path().join("agent.log"),
    );
    agent.wait_for("policy generation switched");
    agent.wait_for("metrics served on /metrics");

    // Traffic for the whole test: DICOM to PACS (allowed, a new flow each time) and SMB
    // (denied: a drop and a deny event each time), bounded in count and time.
    let running = Arc::new(AtomicBool::new(true));
    let traffic = {
        let (dev, running) = (ward.dev.clone(), running.clone());
        std::thread::spawn(move || {
            let (mut allowed, mut denied) = (0u32, 0u32);
            let end = Instant::now() + Duration::from_secs(30);
            while running.load(Ordering::Relaxed) && Instant::now() < end && allowed < 500 {
                if tcp_roundtrip(&dev, sa("198.51.100.10:104")).is_ok() {
                    allowed += 1;
                }
                if tcp_roundtrip(&dev, sa("198.51.100.10:445")).is_ok() {
                    denied += 1; // counted to fail the test below: it must not get through
                }
            }
            (allowed, denied)
        })
    };

    std::thread::sleep(Duration::from_secs(2));
    let first_text = scrape_in(&ward.gw, LISTEN);
    std::thread::sleep(Duration::from_secs(3));
    let second_text = scrape_in(&ward.gw, LISTEN);
    running.store(false, Ordering::Relaxed);
    let (allowed, leaked) = traffic.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    assert!(allowed > 0, "no allowed flow got through");
    assert_eq!(leaked, 0, "a denied flow got through");

    let (first, second) = (samples(&first_text), samples(&second_text));
    let moved = |series: &str| value(&second, series) - value(&first, series);
    let policy = r#"wardgate_agent_packets_total{verdict="pass",reason="pass_policy"}"#;
    let denied = r#"wardgate_agent_packets_total{verdict="drop",reason="drop_policy"}"#;
    let deny_events = r#"wardgate_agent_events_total{kind="deny"}"#;
    assert!(
        moved(policy) > 0.0,
        "allowed new flows counted:\n{second_text}"
    );
    assert!(
        moved(denied) > 0.0,
        "denied packets counted:\n{second_text}"
    );
    assert!(moved(deny_events) > 0.0, "deny events read:\n{second_text}");
    assert_eq!(value(&second, "wardgate_agent_policy_generation"), 1.0);
    assert_eq!(value(&second, "wardgate_agent_watchdog_fired"), 0.0);
    assert!(value(&second, "wardgate_agent_heartbeat_age_seconds") < 5.0);
    // The fill sample (every second here) sees the tracked flows and the devices.
    let conntrack = value(&second, r#"wardgate_agent_map_entries{map="conntrack"}"#);
    assert!(conntrack > 0.0, "tracked flows:\n{second_text}");
    assert_eq!(
        value(
            &second,
            r#"wardgate_agent_map_capacity_entries{map="conntrack"}"#
        ),
        f64::from(wardgate_common::capacity::CONNTRACK)
    );
    assert!(value(&second, r#"wardgate_agent_map_entries{map="devices"}"#) > 0.0);
    // The agent's own resources against its limits (the config's defaults): resident memory
    // and descriptors from /proc/self, the open-file limit the agent set itself.
    let rss = value(
        &second,
        r#"wardgate_agent_resource_usage_bytes{resource="memory"}"#,
    );
    let rss_limit = value(
        &second,
        r#"wardgate_agent_resource_limit_bytes{resource="memory"}"#,
    );
    assert!(rss > 1e6 && rss < rss_limit, "{rss} of {rss_limit}");
    let fds = value(
        &second,
        r#"wardgate_agent_resource_usage_entries{resource="open_files"}"#,
    );
    let fd_limit = value(
        &second,
        r#"wardgate_agent_resource_limit_entries{resource="open_files"}"#,
    );
    assert_eq!(
        fd_limit, 1024.0,
        "limits.open_files set as the soft RLIMIT_NOFILE"
    );
    assert!(fds > 10.0 && fds < fd_limit, "{fds} of {fd_limit}");
    assert!(value(&second, "wardgate_agent_log_bytes_total") > 0.0);
    assert_eq!(
        value(
            &second,
            r#"wardgate_agent_log_lines_suppressed_total{level="info"}"#
        ),
        0.0
    );
    println!("agent resident memory {rss} bytes, {fds} descriptors open");
    let took = value(&second, "wardgate_agent_map_fill_sample_duration_seconds");
    println!(
        "allowed flows {allowed}; pass_policy +{}, drop_policy +{}, deny events +{}; \
         conntrack entries {conntrack}; fill sample took {took:.4} s",
        moved(policy),
        moved(denied),
        moved(deny_events)
    );

    promtool_check(&first_text);
    promtool_check(&second_text);
}

/// Runs the calling thread on `cpu` only.
fn pin_to_cpu(cpu: usize) {
    // Safety: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity get valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity"
        );
    }
}

#[test]
fn a_full_conntrack_map_is_counted_within_its_capacity_in_bounded_time() {
    use aya::maps::{HashMap, Map, MapData};
    use wardgate_common::{CtKey, CtValue, capacity, map_names};

    let (pin, _dp) = datapath("fill");
    let path = wardgate_agent::paths::maps_dir(&pin.0).join(map_names::CONNTRACK);
    let mut ct: HashMap<MapData, CtKey, CtValue> =
        HashMap::try_from(Map::from_map_data(MapData::from_pin(&path).unwrap()).unwrap()).unwrap();
    // The conntrack LRU keeps a free list per CPU (BPF_F_NO_COMMON_LRU): fill it from every
    // CPU, a share each, as the datapath would.
    let cpus = std::thread::available_parallelism().unwrap().get();
    let share = capacity::CONNTRACK as usize / cpus;
    let fill_start = Instant::now();
    for cpu in 0..cpus {
        pin_to_cpu(cpu);
        for i in 0..share {
            let n = (cpu * share + i) as u32;
            let mut key = CtKey::default();
            key.a[..4].copy_from_slice(&n.to_be_bytes());
            ct.insert(&key, &CtValue::default(), 0).unwrap();
        }
    }
    let filled = fill_start.elapsed();
    let s = wardgate_agent::metrics::sample(&pin.0).unwrap();
    let conntrack = s.maps.iter().find(|m| m.map == "conntrack").unwrap();
    println!(
        "{cpus} CPUs: {} conntrack entries of {} (inserted in {filled:.2?}); \
         the whole fill sample took {:.3?}",
        conntrack.entries, conntrack.capacity, s.took
    );
    assert_eq!(conntrack.capacity, u64::from(capacity::CONNTRACK));
    assert!(
        conntrack.entries <= conntrack.capacity && conntrack.entries >= conntrack.capacity * 9 / 10,
        "a full map counts as (nearly) full and never beyond: {conntrack:?}"
    );
    assert!(
        s.took < Duration::from_secs(5),
        "a sample of full maps stays cheap: {:?}",
        s.took
    );
}
