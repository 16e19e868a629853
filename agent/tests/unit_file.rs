//! The agent's systemd unit (packaging/systemd/wardgate-agent.service) passes
//! `systemd-analyze verify` against the built binary and its sandbox scores as OK. No root
//! needed; the attach tier's service test runs the binary with the unit's capabilities.

use std::path::Path;

#[test]
fn the_unit_passes_systemd_analyze_verify_and_security() {
    let unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/wardgate-agent.service");
    let exe = Path::new(env!("CARGO_BIN_EXE_wardgate-agent"));
    let score = wardgate_daemon::unit_file::check(&unit, exe).unwrap();
    println!("wardgate-agent.service exposure {score}");
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
