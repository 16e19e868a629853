//! Attach tier: enforcement never waits for a disk write (issue 23 point 5). The agent binary
//! starts on a first boot (empty bpffs, `fail_mode: hold`) against a real controller (in the
//! gateway namespace, the demo ward's site), with its state directory unusable: the outbox
//! cannot be opened and the last-known-good copy cannot be written. The controller's first
//! generation still releases the held traffic, the failed write is logged and counted in
//! `wardgate_agent_disk_writes_refused_total{file="state"}`, and alerts are kept in memory.
//! Needs root; fails (never skips) without it.

mod support;

use std::path::Path;

use support::{lab::Lab, *};
use wardgate_agent::config::AgentConfig;
use wardgate_testkit::{
    agent::AgentProcess,
    prometheus::{promtool_check, samples, scrape_in, value},
    ward::Ward,
};

const LISTEN: &str = "127.0.0.1:9466";

#[test]
fn a_state_file_that_cannot_be_written_never_keeps_the_first_generation_from_enforcing() {
    require_privileges();
    let ward = Ward::new("lim");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("limits");
    let lab = Lab::start(&ward, dir.path());
    // The state directory is a regular file: nothing can be created in it.
    let blocked = dir.path().join("state");
    std::fs::write(&blocked, "not a directory").unwrap();
    let config = lab.agent_config(dir.path(), &pin);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!(
            "desired_state: {}",
            dir.path().join("desired.json").display()
        ),
        &format!("desired_state: {}", blocked.join("desired.json").display()),
    ) + &format!("fail_mode: hold\nmetrics: {{listen: \"{LISTEN}\"}}\n");
    std::fs::write(&config, &text).unwrap();
    let cfg = AgentConfig::load(&config).expect("test config is valid");
    assert_eq!(cfg.desired_state, blocked.join("desired.json"));

    let agent = AgentProcess::start(
        Path::new(env!("CARGO_BIN_EXE_wardgate-agent")),
        &ward.gw,
        &config,
        dir.path().join("agent.log"),
    );
    agent.wait_for("policy generation switched");
    agent.wait_for("device traffic no longer held");
    agent.wait_for("the last-known-good copy was not written");
    let log = agent.log_text();
    assert!(
        log.contains("alert outbox unusable; alerts are kept in memory only"),
        "{log}"
    );
    assert!(!blocked.with_file_name("desired.json").exists());

    // Counted, once per generation the controller sent.
    let scraped = scrape_in(&ward.gw, LISTEN);
    let s = samples(&scraped);
    let refused = value(
        &s,
        r#"wardgate_agent_disk_writes_refused_total{file="state"}"#,
    );
    assert!(refused >= 1.0, "{scraped}");
    assert!(value(&s, "wardgate_agent_policy_generation") >= 1.0);
    promtool_check(&scraped);
    println!("state writes refused: {refused}");
    drop(agent);
    lab.stop();
}
