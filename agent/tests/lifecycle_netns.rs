//! Attach tier: a device goes learn -> propose -> simulate -> monitor -> enforce, end to end,
//! as an engineer would take it there (issue 11). The real agent runs in the gateway namespace
//! against a real controller (in-process, loopback, mTLS, the demo ward's site); every engineer
//! step is the real `wardctl` binary. The infusion pump `pump-3a-bed12` is put in learn mode and
//! talks to real peers in the server namespace: DNS (dig -> dnsmasq), NTP (chronyd -Q ->
//! chronyd), DICOM (dcmtk echoscu and storescu -> storescp) and HL7 (python-hl7 mllp_send -> its
//! MLLP server). The agent is stopped, which hands every record to the controller. Then:
//! `wardctl profile propose` writes a profile that validates and names those four services;
//! `wardctl simulate` lists nothing blocked; one extra flow (TCP to a port the pump never used)
//! is recorded and `simulate` lists exactly that flow; the proposal is uploaded, assigned, the
//! pump moved to monitor (the extra flow still passes), then to enforce, which the controller
//! refuses until the engineer accepts the availability warning naming the extra flow: the same
//! real DICOM, HL7, DNS and NTP traffic succeeds and the extra flow is dropped. Needs root; fails (never
//! skips) without it.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use support::{
    lab::{Lab, wait_generation},
    *,
};
use wardgate_policy::{
    Proto,
    profile::{App, Flow, PortItem, Ports, Profile, Values},
    span::Located,
};
use wardgate_testkit::{
    agent::AgentProcess,
    peers::{self, Peer, in_netns, run_within},
    ward::{Ward, ip, tcp_echo, tcp_roundtrip},
};

const DEVICE: &str = "pump-3a-bed12";
const CALLING: &str = "PUMP_3A_12";
const CALLED: &str = "PACS_MAIN";
const MSH: &str = "MSH|^~\\&|PUMP_APP|WARD_3A|EMR_ENGINE|GENERAL_HOSP|20261203120000||ORU^R01^ORU_R01|MSG-1|P|2.6";
/// The site's DNS, NTP, PACS and HL7 engine (demo-ward.yaml groups).
const DNS: &str = "198.51.100.53";
const NTP: &str = "198.51.100.123";
const PACS: &str = "198.51.100.10";
const HL7: &str = "198.51.100.20";
/// The change reason of the engineer's writes.
const REASON: &str = "CHG-7 pump 3A-12 learn to enforce";
/// A service the pump never used while learning.
const EXTRA: &str = "198.51.100.30:8443";

/// What one round of the pump's traffic achieved, each from its client's own verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Round {
    /// dig got the PACS's address from dnsmasq.
    dns: bool,
    /// chronyd -Q got an answer from chronyd.
    ntp: bool,
    /// echoscu: the C-ECHO succeeded.
    echo: bool,
    /// storescu: the C-STORE succeeded.
    store: bool,
    /// mllp_send got the engine's AA acknowledgement.
    hl7: bool,
}

const ALL: Round = Round {
    dns: true,
    ntp: true,
    echo: true,
    store: true,
    hl7: true,
};

struct Device<'a> {
    ward: &'a Ward,
    dir: PathBuf,
    image: PathBuf,
    message: PathBuf,
}

impl Device<'_> {
    /// One round: a DNS query, an NTP query, a C-ECHO, a C-STORE and an HL7 ORU; each client
    /// bounded in time.
    fn talk(&self) -> Round {
        let dev = self.ward.dev.as_str();
        let (ok, out) = run_within(
            peers::dns_query(dev, DNS, "pacs.ward.example"),
            Duration::from_secs(5),
        );
        let dns = ok && out.trim() == PACS;
        let (ntp, _) = run_within(
            peers::ntp_query(dev, NTP, &self.dir),
            Duration::from_secs(6),
        );
        let dicom = |scu: &str, file: Option<&Path>| {
            let mut c = in_netns(dev, scu);
            c.args(["-to", "3", "-aet", CALLING, "-aec", CALLED, PACS, "11112"]);
            if let Some(f) = file {
                c.arg(f);
            }
            run_within(c, Duration::from_secs(10)).0
        };
        let echo = dicom("echoscu", None);
        let store = dicom("storescu", Some(&self.image));
        let mut c = in_netns(dev, "python3");
        c.args(["-m", "hl7.client", "-p", "2575", "-f"])
            .arg(&self.message)
            .arg(HL7);
        let (ok, out) = run_within(c, Duration::from_secs(10));
        let hl7 = ok && out.contains("MSA|AA|MSG-1");
        Round {
            dns,
            ntp,
            echo,
            store,
            hl7,
        }
    }

    /// Rounds until one fully succeeds (the servers starting), bounded.
    fn talk_until_all(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.talk();
            if r == ALL {
                return;
            }
            assert!(Instant::now() < deadline, "never all answered: {r:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// The real peers in the server namespace.
fn servers(ward: &Ward, dir: &Path) -> Vec<Peer> {
    // The site's NTP server address (the ward has the others).
    ip(&[
        "-n",
        &ward.srv,
        "addr",
        "add",
        "198.51.100.123/24",
        "dev",
        "eth0",
    ]);
    vec![
        peers::storescp(&ward.srv, CALLED, 11112, &dir.join("pacs")),
        peers::mllp_server(&ward.srv, HL7, 2575, &dir.join("received.txt")),
        peers::dns_server(&ward.srv, DNS, &[("pacs.ward.example", PACS)], dir),
        peers::ntp_server(&ward.srv, NTP, dir),
    ]
}

/// `wardctl simulate` of `profile` over the pump's records: (recorded flows, blocked rows).
fn simulate(lab: &Lab, ward: &Ward, profile: &Path) -> (u64, Vec<serde_json::Value>) {
    let out = lab.wardctl_ok(
        ward,
        &[
            "--output",
            "json",
            "simulate",
            "--profile",
            profile.to_str().unwrap(),
            "--device",
            DEVICE,
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (
        v["flows"].as_u64().unwrap(),
        v["blocked"].as_array().unwrap().clone(),
    )
}

fn port_is(ports: &Option<wardgate_policy::span::Located<Ports>>, port: i64) -> bool {
    match ports.as_ref().map(|p| &p.value) {
        Some(Ports::One(p)) => *p == port,
        Some(Ports::Text(t)) => t == &port.to_string(),
        Some(Ports::List(l)) => l.iter().any(|i| match i {
            PortItem::One(p) => *p == port,
            PortItem::Text(t) => t == &port.to_string(),
        }),
        None => false,
    }
}

/// The proposal's flow from the pump to `group` with `proto` on `port`.
fn flow<'a>(p: &'a Profile, proto: Proto, port: i64, group: &str) -> &'a Flow {
    let peer = format!("group:{group}");
    p.flows
        .iter()
        .find(|f| {
            f.direction == wardgate_policy::Direction::FromDevice
                && f.protocol.value == proto
                && f.peers.iter().any(|x| x.value == peer)
                && port_is(&f.ports, port)
        })
        .unwrap_or_else(|| panic!("no {proto:?} {port} to {peer} in the proposal: {p:#?}"))
}

#[test]
fn a_pump_goes_from_learn_to_enforce_on_its_proposed_profile_and_keeps_its_real_traffic() {
    require_privileges();
    let started = Instant::now();
    let ward = Ward::new("life");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let pin = PinRoot::new("lifecycle");
    let _servers = servers(&ward, d);
    let stop = Arc::new(AtomicBool::new(false));
    let extra: SocketAddr = EXTRA.parse().unwrap();
    let echo = tcp_echo(&ward.srv, vec![extra], stop.clone());
    let message = d.join("oru.hl7");
    std::fs::write(
        &message,
        format!("\x0b{MSH}\rPID|1||4711\rOBX|1|NM|3141-9^Weight^LN||70|kg\r\x1c\r"),
    )
    .unwrap();
    let device = Device {
        ward: &ward,
        dir: d.to_path_buf(),
        image: peers::dicom_image(d),
        message,
    };

    let lab = Lab::start(&ward, d);
    let config = lab.agent_config(d, &pin);
    let bin = Path::new(env!("CARGO_BIN_EXE_wardgate-agent"));
    let mut agent = AgentProcess::start(bin, &ward.gw, &config, d.join("agent-learn.log"));
    agent.wait_for("policy generation switched");

    // 1. Learn: the engineer puts the pump in learn mode; it talks for a while.
    let g = lab.write(&ward, &["mode", DEVICE, "learn"], REASON);
    wait_generation(&agent, g);
    device.talk_until_all(Duration::from_secs(30));
    assert_eq!(device.talk(), ALL, "learning passes everything");
    // Stopping the agent hands every flow it holds (DNS and NTP for minutes) to the controller.
    let status = agent.stop(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM is a clean stop: {status}");

    // 2. Propose: a profile that validates and names the four services by site group.
    let (_, profile) = lab.propose(&ward, DEVICE, d);
    let proposal = d.join("proposed.yaml");
    flow(&profile, Proto::Udp, 53, "dns");
    flow(&profile, Proto::Udp, 123, "ntp");
    let dicom = flow(&profile, Proto::Tcp, 11112, "pacs");
    assert_eq!(
        dicom.app,
        Some(App::Dicom {
            calling_ae: Some(Located::new(Values::One(CALLING.into()))),
            called_ae: Some(Located::new(Values::One(CALLED.into()))),
        }),
        "the AE titles the pump used"
    );
    let hl7 = flow(&profile, Proto::Tcp, 2575, "hl7-engine");
    assert!(
        matches!(&hl7.app, Some(App::Hl7 { sending_application: Some(s), .. }) if s.value == Values::One("PUMP_APP".into())),
        "the HL7 application the pump sent as: {:?}",
        hl7.app
    );

    // 3. Simulate: the proposal blocks none of the pump's recorded flows.
    let (flows, blocked) = simulate(&lab, &ward, &proposal);
    assert!(flows >= 10, "two rounds of five flows at least: {flows}");
    assert!(blocked.is_empty(), "nothing blocked: {blocked:#?}");

    // 4. An extra flow, still learning: TCP to a port the pump never used. Simulate lists it,
    //    and it alone.
    let mut agent = AgentProcess::start(bin, &ward.gw, &config, d.join("agent-extra.log"));
    agent.wait_for("active policy generation");
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = tcp_roundtrip(&ward.dev, extra) {
        assert!(Instant::now() < deadline, "extra flow while learning: {e}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = agent.stop(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    let (_, blocked) = simulate(&lab, &ward, &proposal);
    assert_eq!(blocked.len(), 1, "only the extra flow: {blocked:#?}");
    let b = &blocked[0];
    assert_eq!(
        (
            b["peer"].as_str(),
            b["proto"].as_u64(),
            b["port"].as_u64(),
            b["flows"].as_u64()
        ),
        (Some("198.51.100.30"), Some(6), Some(8443), Some(1)),
        "{b:#}"
    );

    // 5. Monitor on the proposed profile: uploaded, assigned, the pump moved to monitor (a
    //    restarted agent applies the generation). Its traffic runs; the extra flow too.
    let mut agent = AgentProcess::start(bin, &ward.gw, &config, d.join("agent-enforce.log"));
    agent.wait_for("active policy generation");
    let name = profile.name.value.clone();
    lab.wardctl_ok(
        &ward,
        &[
            "profiles",
            "upsert",
            proposal.to_str().unwrap(),
            "--reason",
            "CHG-7 proposal for pump 3A-12",
        ],
    );
    lab.write(&ward, &["assign", DEVICE, &name], REASON);
    let g = lab.write(&ward, &["mode", DEVICE, "monitor"], REASON);
    wait_generation(&agent, g);
    assert_eq!(device.talk(), ALL, "monitor passes the learned traffic");
    assert!(
        tcp_roundtrip(&ward.dev, extra).is_ok(),
        "monitor reports the extra flow, passes it"
    );

    // 6. Enforce: the controller first warns that it cuts the extra flow off (the pump is the
    // whole of its class on its ward); accepted, the learned traffic still works and the extra
    // flow is dropped.
    let refused = lab
        .wardctl(
            &ward,
            &[
                "mode",
                DEVICE,
                "enforce",
                "--reason",
                "CHG-7 pump 3A-12 learn to enforce",
            ],
        )
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run wardctl");
    let warning = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && warning.contains("availability warning")
            && warning.contains(&format!("port {}", extra.port())),
        "enforcing without accepting the impact is refused, naming the extra flow: {warning}"
    );
    let g = lab.write(
        &ward,
        &["mode", DEVICE, "enforce", "--accept-impact"],
        REASON,
    );
    wait_generation(&agent, g);
    assert_eq!(
        device.talk(),
        ALL,
        "the proposed profile holds the pump's real traffic:\n{}",
        agent.log_text()
    );
    let denied = tcp_roundtrip(&ward.dev, extra);
    assert!(denied.is_err(), "enforce drops the extra flow: {denied:?}");

    let status = agent.stop(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    lab.stop();
    println!("lifecycle took {:?}", started.elapsed());
}
