//! Attach tier: do-not-disrupt (issue 21 point 5) with real peers. The agent binary runs in the
//! gateway namespace; an enforced modality stores a large study (4 images of 3 MiB, dcmtk's
//! storescu, its uplink held to 16 Mbit/s with `tc` so the transfer spans the switch) to the
//! PACS (storescp). Mid-transfer the operator's desired state becomes a generation that
//! removes the PACS: the association keeps going on grace (`wardgate-agent status` lists it)
//! and completes, every image stored; a new association afterwards is refused. Needs root;
//! fails (never skips) without it.

mod support;

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use support::*;
use wardgate_common::Reason;
use wardgate_policy::{
    Direction, Mode, Proto,
    desired::{DeviceEntry, MacAddr, PolicyEntry, PortRange, Rule},
    lower::lower,
};
use wardgate_testkit::{
    agent::AgentProcess,
    peers::{self, in_netns, run_within, until_ok},
    ward::{DEV_IF, Ward},
};

const AET: &str = "PACS1";
const IMAGES: usize = 4;

/// Generation `generation`: the modality may reach the PACS on 11112 when `pacs`.
fn write_desired(path: &Path, generation: u32, pacs: bool) {
    let dev = DeviceEntry {
        device_id: 1,
        name: "modality-1".into(),
        addrs: vec!["192.0.2.10".parse().unwrap()],
        mac: MacAddr([2, 0, 0, 0, 0, 0x0a]),
        policy_id: 1,
        mode: Mode::Enforce,
        max_flows: 0,
        fail_open: false,
        grace_s: wardgate_common::DEFAULT_GRACE_S,
    };
    let rules = if pacs {
        vec![Rule {
            rule_id: 1,
            name: "dicom to pacs".into(),
            direction: Direction::FromDevice,
            proto: Proto::Tcp,
            peers: vec!["198.51.100.10/32".parse().unwrap()],
            ports: Some(PortRange::single(11112)),
            idle_timeout_s: 600,
            inspect: false,
            app: None,
        }]
    } else {
        Vec::new()
    };
    let policy = PolicyEntry {
        policy_id: 1,
        profile: "ct".into(),
        profile_version: generation,
        rules,
        sensitivity: Default::default(),
        detection: Default::default(),
    };
    let state = lower("gw-grace", generation, vec![dev], vec![policy]).unwrap();
    std::fs::write(path, state.to_json()).unwrap();
}

fn echoscu(ns: &str) -> std::process::Command {
    let mut c = in_netns(ns, "echoscu");
    c.args([
        "-to",
        "3",
        "-aet",
        "MODALITY1",
        "-aec",
        AET,
        "198.51.100.10",
        "11112",
    ]);
    c
}

fn stored(dir: &Path) -> Vec<u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect()
}

#[test]
fn a_store_in_progress_keeps_going_across_a_generation_that_removes_its_pacs() {
    require_privileges();
    let ward = Ward::new("grace");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pin = PinRoot::new("grace-netns");

    let pacs_dir = d.join("pacs");
    let _pacs = peers::storescp(&ward.srv, AET, 11112, &pacs_dir);
    let desired = d.join("desired.json");
    write_desired(&desired, 1, true);
    let config = d.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "interfaces: [{DEV_IF}]\npin_root: {}\ndesired_state: {}\n",
            pin.0.display(),
            desired.display()
        ),
    )
    .unwrap();
    let agent = AgentProcess::start(
        Path::new(env!("CARGO_BIN_EXE_wardgate-agent")),
        &ward.gw,
        &config,
        d.join("agent.log"),
    );
    agent.wait_for("active policy generation");
    until_ok("echoscu before the switch", Duration::from_secs(20), || {
        echoscu(&ward.dev)
    });

    // The study: distinct images (img2dcm gives each its own UIDs), 3 MiB each.
    let images: Vec<_> = (0..IMAGES)
        .map(|i| {
            let sub = d.join(format!("study-{i}"));
            std::fs::create_dir_all(&sub).unwrap();
            peers::dicom_image_sized(&sub, 1024, 1024)
        })
        .collect();
    // The modality's uplink at 16 Mbit/s: 12 MiB take about 6 s.
    let mut tc = in_netns(&ward.dev, "tc");
    tc.args([
        "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "16mbit", "burst", "32kb", "latency",
        "400ms",
    ]);
    let (ok, out) = run_within(tc, Duration::from_secs(10));
    assert!(ok, "tc:\n{out}");

    let mut c = in_netns(&ward.dev, "storescu");
    c.args([
        "-to",
        "3",
        "-aet",
        "MODALITY1",
        "-aec",
        AET,
        "198.51.100.10",
        "11112",
    ])
    .args(&images)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let store = c.spawn().expect("storescu");

    // Mid-transfer (the first image is in, three to go): generation 2 removes the PACS.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(&pacs_dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no image stored before the switch"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    write_desired(&desired, 2, false);
    // Safety: signalling the agent process this test started.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent
        .log_text()
        .lines()
        .any(|l| l.contains("policy generation switched") && l.contains("to=2"))
    {
        assert!(
            Instant::now() < deadline,
            "generation 2 never applied:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let switched = started.elapsed();
    let images_at_switch = stored(&pacs_dir).len();
    // The association is on grace, listed by `status`.
    let deadline = Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate-agent"))
            .arg("status")
            .arg("--pin-root")
            .arg(&pin.0)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("flows on grace: 1") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no flow on grace listed:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        listed.contains("device 1 (192.0.2.10) -> 198.51.100.10 tcp/11112 ends in"),
        "{listed}"
    );

    // It completes, every image stored whole.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut store = store;
    let status = loop {
        if let Some(status) = store.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = store.kill();
            panic!("storescu still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = store.wait_with_output().unwrap();
    let took = started.elapsed();
    let st = wardgate_agent::datapath::pinned::status(&pin.0).unwrap();
    assert!(
        status.success(),
        "storescu across the switch: {status}\n{}{}\nagent log:\n{}\ndatapath: {st:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        agent.log_text()
    );
    let sizes = stored(&pacs_dir);
    assert_eq!(sizes.len(), IMAGES, "every image stored: {sizes:?}");
    assert!(sizes.iter().all(|s| *s > 3 * 1024 * 1024), "{sizes:?}");
    assert!(
        images_at_switch < IMAGES,
        "the switch came mid-study ({images_at_switch} of {IMAGES} stored)"
    );
    let on_grace = st.reasons[&Reason::PassGrace];
    assert!(on_grace > 100, "packets passed on grace: {on_grace}");
    eprintln!(
        "study of {IMAGES} x 3 MiB: switch at {switched:?} ({images_at_switch} stored), done at \
         {took:?}; {on_grace} packets on grace\n{listed}"
    );

    // A new association to the removed PACS is refused.
    let (ok, out) = run_within(echoscu(&ward.dev), Duration::from_secs(20));
    assert!(!ok, "echoscu after the switch must fail:\n{out}");
    let mut c = in_netns(&ward.dev, "storescu");
    c.args([
        "-to",
        "3",
        "-aet",
        "MODALITY1",
        "-aec",
        AET,
        "198.51.100.10",
        "11112",
    ])
    .arg(&images[0]);
    let (ok, out) = run_within(c, Duration::from_secs(20));
    assert!(!ok, "storescu after the switch must fail:\n{out}");
    let after = wardgate_agent::datapath::pinned::status(&pin.0).unwrap();
    assert!(
        after.reasons[&Reason::DropPolicy] > st.reasons[&Reason::DropPolicy],
        "the new associations' SYNs were dropped by the policy"
    );
}
