//! Attach tier: application rules live (issue 21, points 3 and 4). The agent binary runs in the
//! gateway namespace and enforces an enforced modality's profile: DICOM to the PACS on 11112
//! only as calling AE MODALITY1 to PACS1, HL7 to the engine on 2575 only from MONITOR_APP with
//! ORU^R01. Real peers through it: dcmtk's echoscu and storescu to storescp, python-hl7's
//! mllp_send to its MLLP server. An unlisted AE title fails at once (a reset, not a hang) and
//! the PACS never sees the association; a listed one echoes and stores 3 MiB; an unlisted HL7
//! sender gets no ACK and the engine never receives its message, the listed one gets MSA|AA.
//! The refusals are logged with both AE titles / the MSH fields. Needs root; fails (never
//! skips) without it.

mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use support::*;
use wardgate_policy::{
    Direction, Mode, Proto,
    desired::{AppRule, DeviceEntry, MacAddr, PolicyEntry, PortRange, Rule},
    lower::lower,
};
use wardgate_testkit::{
    agent::AgentProcess,
    peers::{self, in_netns, run_within, until_ok},
    ward::{DEV_IF, Ward},
};

const CALLED: &str = "PACS1";

fn rule(rule_id: u32, peer: &str, port: u16, app: AppRule) -> Rule {
    Rule {
        rule_id,
        name: format!("rule-{rule_id}"),
        direction: Direction::FromDevice,
        proto: Proto::Tcp,
        peers: vec![peer.parse().unwrap()],
        ports: Some(PortRange::single(port)),
        idle_timeout_s: 600,
        inspect: true,
        app: Some(app),
    }
}

fn write_desired(path: &Path) {
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
    let policy = PolicyEntry {
        policy_id: 1,
        profile: "ct".into(),
        profile_version: 1,
        rules: vec![
            rule(
                1,
                "198.51.100.10/32",
                11112,
                AppRule::Dicom {
                    calling_ae: vec!["MODALITY1".into()],
                    called_ae: vec![CALLED.into()],
                },
            ),
            rule(
                2,
                "198.51.100.20/32",
                2575,
                AppRule::Hl7 {
                    sending_application: vec!["MONITOR_APP".into()],
                    sending_facility: Vec::new(),
                    receiving_application: Vec::new(),
                    message_type: vec!["ORU^R01".into()],
                },
            ),
        ],
        sensitivity: Default::default(),
        detection: Default::default(),
    };
    let state = lower("gw-app", 1, vec![dev], vec![policy]).unwrap();
    std::fs::write(path, state.to_json()).unwrap();
}

/// A 24-bit BMP of `w` x `h` with a gradient, for img2dcm.
fn bmp(w: u32, h: u32) -> Vec<u8> {
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut b = Vec::with_capacity(size as usize);
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    for y in 0..h {
        for x in 0..w {
            b.extend_from_slice(&[(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]);
        }
        b.resize(b.len() + (row - w * 3) as usize, 0);
    }
    b
}

fn echoscu(ns: &str, aet: &str) -> std::process::Command {
    let mut c = in_netns(ns, "echoscu");
    c.args([
        "-to",
        "3",
        "-aet",
        aet,
        "-aec",
        CALLED,
        "198.51.100.10",
        "11112",
    ]);
    c
}

fn mllp_send(ns: &str, msg: &Path) -> std::process::Command {
    let mut c = in_netns(ns, "python3");
    c.args(["-m", "hl7.client", "-p", "2575", "-f"])
        .arg(msg)
        .arg("198.51.100.20");
    c
}

#[test]
fn unlisted_ae_titles_and_hl7_senders_are_reset_and_listed_ones_pass_at_full_speed() {
    require_privileges();
    let ward = Ward::new("appr");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pin = PinRoot::new("app-rules");

    let pacs_dir = d.join("pacs");
    let _pacs = peers::storescp(&ward.srv, CALLED, 11112, &pacs_dir);
    let received = d.join("received.txt");
    let _engine = peers::mllp_server(&ward.srv, "198.51.100.20", 2575, &received);

    let desired = d.join("desired.json");
    write_desired(&desired);
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

    // The listed calling AE echoes (retried while storescp starts).
    until_ok("echoscu -aet MODALITY1", Duration::from_secs(20), || {
        echoscu(&ward.dev, "MODALITY1")
    });
    // An unlisted one fails, at once: the gateway answers its A-ASSOCIATE-RQ with a reset.
    let started = Instant::now();
    let (ok, out) = run_within(echoscu(&ward.dev, "WRONG"), Duration::from_secs(20));
    let took = started.elapsed();
    assert!(!ok, "echoscu -aet WRONG must fail:\n{out}");
    assert!(
        took < Duration::from_secs(3),
        "refused by a reset, not a timeout: took {took:?}\n{out}"
    );
    // So does a wrong called AE.
    let mut c = in_netns(&ward.dev, "echoscu");
    c.args([
        "-to",
        "3",
        "-aet",
        "MODALITY1",
        "-aec",
        "ARCHIVE",
        "198.51.100.10",
        "11112",
    ]);
    let started = Instant::now();
    let (ok, out) = run_within(c, Duration::from_secs(20));
    assert!(!ok && started.elapsed() < Duration::from_secs(3), "{out}");

    // C-STORE of a 3 MiB image as the listed AE: the PACS stores it whole. storescp serves one
    // association at a time: this also shows the refused ones were reset on its side too (it
    // would otherwise wait its 30 s ACSE timeout for each request that never came).
    let image = d.join("image.bmp");
    std::fs::write(&image, bmp(1024, 1024)).unwrap();
    let dcm = d.join("image.dcm");
    let mut c = std::process::Command::new("img2dcm");
    c.args(["-i", "BMP"]).arg(&image).arg(&dcm);
    let (ok, out) = run_within(c, Duration::from_secs(30));
    assert!(ok, "img2dcm:\n{out}");
    let mut c = in_netns(&ward.dev, "storescu");
    c.args([
        "-v",
        "-to",
        "3",
        "-aet",
        "MODALITY1",
        "-aec",
        CALLED,
        "198.51.100.10",
        "11112",
    ])
    .arg(&dcm);
    let started = Instant::now();
    let (ok, out) = run_within(c, Duration::from_secs(15));
    assert!(
        ok,
        "C-STORE as MODALITY1:\n{out}\nagent log:\n{}\ndatapath: {:?}",
        agent.log_text(),
        wardgate_agent::datapath::pinned::status(&pin.0)
    );
    let stored: Vec<u64> = std::fs::read_dir(&pacs_dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert_eq!(
        stored.len(),
        1,
        "one image stored (none from the refused AEs)"
    );
    assert!(stored[0] > 3 * 1024 * 1024, "stored {} bytes", stored[0]);
    eprintln!("3 MiB C-STORE through the gateway: {:?}", started.elapsed());

    // HL7: an unlisted sending application gets no ACK and its message never arrives.
    let msg = |sender: &str, id: &str| {
        let p = d.join(format!("{id}.hl7"));
        std::fs::write(
            &p,
            format!(
                "\x0bMSH|^~\\&|{sender}|ICU_7B|LAB_ENGINE|CITY_HOSP|20261206101500||ORU^R01^ORU_R01|{id}|P|2.5\r\
                 PID|1||98765\rOBX|1|NM|8867-4^Heart rate^LN||64|/min\r\x1c\r"
            ),
        )
        .unwrap();
        p
    };
    let rogue = msg("ROGUE_APP", "MSG-ROGUE");
    let started = Instant::now();
    let (ok, out) = run_within(mllp_send(&ward.dev, &rogue), Duration::from_secs(20));
    assert!(
        !ok && !out.contains("MSA|AA"),
        "no ACK for ROGUE_APP:\n{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused by a reset: {:?}",
        started.elapsed()
    );
    let good = msg("MONITOR_APP", "MSG-GOOD");
    let ack = until_ok("mllp_send MONITOR_APP", Duration::from_secs(20), || {
        mllp_send(&ward.dev, &good)
    });
    assert!(ack.contains("MSA|AA|MSG-GOOD"), "acknowledged: {ack:?}");
    let got = std::fs::read_to_string(&received).unwrap_or_default();
    assert!(got.contains("MSG-GOOD"), "{got}");
    assert!(!got.contains("MSG-ROGUE"), "the engine never saw it: {got}");

    // The refusals, logged with what was read: both AE titles, the MSH fields.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = agent.log_text();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("kind=\"app_refused\"") || l.contains("kind=app_refused"))
            .collect();
        let dicom = refusals
            .iter()
            .any(|l| l.contains("WRONG") && l.contains(CALLED));
        let called = refusals.iter().any(|l| l.contains("ARCHIVE"));
        let hl7 = refusals.iter().any(|l| l.contains("ROGUE_APP"));
        if dicom && called && hl7 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refusals not logged (dicom {dicom}, called {called}, hl7 {hl7}):\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
