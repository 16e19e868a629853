//! The agent's systemd unit (packaging/systemd/wardgate-agent.service) passes
//! `systemd-analyze verify` against the built binary and its sandbox scores as OK. No root
//! needed; the attach tier's service test runs the binary with the unit's capabilities.

use std::path::Path;

fn unit_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/wardgate-agent.service")
}

/// The value of `key=` in the unit's [Service] section (the last one set, as systemd reads it).
fn service_value(key: &str) -> Option<String> {
    let text = std::fs::read_to_string(unit_path()).unwrap();
    let mut in_service = false;
    let mut value = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && let Some(v) = line.strip_prefix(&format!("{key}=")) {
            value = Some(v.trim().to_string());
        }
    }
    value
}

/// `256M`, `1G` ... in bytes.
fn bytes(v: &str) -> u64 {
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = num.parse().unwrap_or_else(|_| panic!("not a size: {v}"));
    n * match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => panic!("unexpected unit in {v}"),
    }
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_security() {
    let exe = Path::new(env!("CARGO_BIN_EXE_wardgate-agent"));
    let score = wardgate_daemon::unit_file::check(&unit_path(), exe).unwrap();
    println!("wardgate-agent.service exposure {score}");
}

#[test]
fn the_unit_bounds_memory_and_tasks_with_room_for_the_agent() {
    // A leak or a flood cannot take the gateway's memory or threads: the kernel stops the
    // agent (and systemd restarts it; the datapath keeps enforcing) before that.
    let memory = service_value("MemoryMax").expect("MemoryMax= in [Service]");
    let memory = bytes(&memory);
    // Measured (docs/architecture.md, Agent): 22 MiB RSS idle, 77 MiB of BPF maps charged to
    // the cgroup at the first start, 435 MiB for the live flow table at its cap. A cap below
    // that would let a flow flood get the agent killed.
    assert!(
        (768 << 20..=2 << 30).contains(&memory),
        "MemoryMax={memory} bytes: at least 768 MiB (maps + a full flow table), at most 2 GiB"
    );
    let tasks: u32 = service_value("TasksMax")
        .expect("TasksMax= in [Service]")
        .parse()
        .expect("TasksMax= a number");
    // Main thread, at most WORKER_THREADS workers, BLOCKING_THREADS blocking threads, the
    // heartbeat thread at start and stop.
    let needed =
        1 + wardgate_agent::run::WORKER_THREADS + wardgate_agent::run::BLOCKING_THREADS + 1;
    assert!(
        (2 * needed as u32..=256).contains(&tasks),
        "TasksMax={tasks}: at least twice the {needed} threads the agent can start, at most 256"
    );
}

#[test]
fn the_unit_sets_the_limits_the_agent_config_defaults_to() {
    // The agent warns at 80% of `limits.memory` and `limits.open_files` and serves them as
    // metrics; the kernel enforces the unit's numbers. They must be the same.
    let limits = wardgate_agent::config::LimitsConfig::default();
    let memory = bytes(&service_value("MemoryMax").expect("MemoryMax= in [Service]"));
    assert_eq!(memory, limits.memory.0, "MemoryMax= and limits.memory");
    let nofile: u64 = service_value("LimitNOFILE")
        .expect("LimitNOFILE= in [Service]")
        .parse()
        .expect("LimitNOFILE= one number (soft and hard)");
    assert_eq!(
        nofile, limits.open_files,
        "LimitNOFILE= and limits.open_files"
    );
    assert!(nofile >= wardgate_agent::config::MIN_OPEN_FILES);
    // The packaged example config spells out the same defaults.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples/agent.yaml");
    let cfg = wardgate_agent::config::AgentConfig::load(&path).unwrap();
    assert_eq!(
        cfg.limits, limits,
        "packaging/examples/agent.yaml `limits:`"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\nlimits:"), "the example shows the limits");
}

#[test]
fn the_packaged_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples/agent.yaml");
    let cfg = wardgate_agent::config::AgentConfig::load(&path).unwrap();
    assert_eq!(cfg.pin_root, Path::new(wardgate_common::PIN_ROOT));
    assert_eq!(
        cfg.desired_state,
        Path::new(wardgate_agent::paths::DESIRED_STATE)
    );
}
