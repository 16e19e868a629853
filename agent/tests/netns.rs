//! Attach tier: the real agent binary and the datapath on veth pairs in network namespaces
//! (device <-> gateway <-> server), real TCP and UDP. Needs root; fails (never skips) without it.
//! Run with --test-threads=1: the tests share nothing but are heavy on 2 cores.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, MapData},
    programs::{LinkOrder, SchedClassifier, TcAttach, TcAttachType},
};
use support::*;
use wardgate_agent::{
    config::AgentConfig,
    datapath::{AttachOutcome, Datapath},
    netns,
};
use wardgate_common::{Reason, map_names, program_names};
use wardgate_testkit::ward::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(ward: &Ward, dir: &Path, pin: &Path) -> Agent {
        let agent = Agent::spawn(ward, dir, pin, &[DEV_IF]);
        agent.wait_for("active policy generation");
        agent
    }

    /// Starts the agent on `interfaces` without waiting for it.
    fn spawn(ward: &Ward, dir: &Path, pin: &Path, interfaces: &[&str]) -> Agent {
        Agent::spawn_with(ward, dir, pin, interfaces, "")
    }

    /// Starts the agent on `interfaces` with `extra` config lines, without waiting for it.
    fn spawn_with(ward: &Ward, dir: &Path, pin: &Path, interfaces: &[&str], extra: &str) -> Agent {
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "interfaces: [{}]\npin_root: {}\ndesired_state: {}\n\
                 management:\n  - {{cidr: 203.0.113.1/32, proto: tcp, port: 22}}\n{extra}",
                interfaces.join(", "),
                pin.display(),
                dir.join("desired.json").display()
            ),
        )
        .unwrap();
        AgentConfig::load(&config).expect("test config is valid");
        let log = dir.join(format!("agent-{}.log", Instant::now().elapsed().as_nanos()));
        let child = Command::new(env!("CARGO_BIN_EXE_wardgate-agent"))
            .args(["--netns", &ward.gw, "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start agent");
        Agent { child, log }
    }

    /// Waits (bounded) for the agent to exit; its exit status.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent still running after {limit:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent never logged `{needle}`:\n{}", self.log_text());
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_desired(dir: &Path, generation: u32) {
    write_state(dir, &reference_state(generation));
}

fn write_state(dir: &Path, state: &wardgate_policy::DesiredState) {
    let tmp = dir.join("desired.json.tmp");
    std::fs::write(&tmp, state.to_json()).unwrap();
    std::fs::rename(tmp, dir.join("desired.json")).unwrap();
}

fn ward(tag: &str) -> Ward {
    require_privileges();
    Ward::new(tag)
}

fn servers(ward: &Ward, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let tcp = tcp_echo(
        &ward.srv,
        vec![
            sa("198.51.100.10:104"),
            sa("198.51.100.10:445"),
            sa("[2001:db8:100::10]:104"),
            sa("[2001:db8:100::10]:105"),
        ],
        stop.clone(),
    );
    let (_, udp) = udp_echo(
        &ward.srv,
        vec![sa("198.51.100.10:53"), sa("198.51.100.10:5001")],
        stop.clone(),
    );
    let hl7 = tcp_echo(&ward.dev, vec![sa("192.0.2.10:2575")], stop.clone());
    vec![tcp, udp, hl7]
}

#[test]
fn allowed_flows_work_both_ways_and_denied_ones_fail() {
    let ward = ward("flows");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("flows");
    write_desired(dir.path(), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = servers(&ward, &stop);
    std::thread::sleep(Duration::from_millis(100));

    // Before the agent: the ward is open (no datapath).
    assert_eq!(tcp_roundtrip(&ward.dev, sa("198.51.100.10:445")), Ok(()));
    assert_eq!(
        tcp_roundtrip(&ward.dev, sa("[2001:db8:100::10]:105")),
        Ok(())
    );

    assert_eq!(
        udp_exchange(&ward.dev, sa("198.51.100.10:53"), 4000),
        Ok(()),
        "open ward: a 4,000-byte datagram (fragmented both ways) echoes whole"
    );

    let agent = Agent::start(&ward, dir.path(), &pin.0);
    agent.wait_for("policy generation switched");
    let dev = ward.dev.clone();
    let srv = ward.srv.clone();
    let from_server = |to: &str| -> Result<(), String> {
        let to = sa(to);
        run_in(&srv, move || {
            // The HL7 engine (198.51.100.20) may open MLLP to the pump; 198.51.100.10 may not.
            use std::io::{Read, Write};
            let sock = socket2_bind_connect(to)?;
            let mut s = sock;
            s.write_all(b"MSH|").map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).map_err(|e| e.to_string())
        })
    };
    assert_eq!(
        tcp_roundtrip(&dev, sa("198.51.100.10:104")),
        Ok(()),
        "DICOM to PACS is allowed"
    );
    assert_eq!(
        udp_roundtrip(&dev, sa("198.51.100.10:53")),
        Ok(()),
        "DNS is allowed"
    );
    assert_eq!(
        tcp_roundtrip(&dev, sa("[2001:db8:100::10]:104")),
        Ok(()),
        "DICOM over IPv6"
    );
    assert!(
        tcp_roundtrip(&dev, sa("198.51.100.10:445")).is_err(),
        "SMB must be blocked"
    );
    assert!(
        udp_roundtrip(&dev, sa("198.51.100.10:5001")).is_err(),
        "UDP 5001 must be blocked"
    );
    assert_eq!(
        udp_exchange(&dev, sa("198.51.100.10:53"), 4000),
        Ok(()),
        "an allowed datagram larger than the MTU: its fragments pass both ways"
    );
    assert!(
        udp_exchange(&dev, sa("198.51.100.10:5001"), 4000).is_err(),
        "a denied datagram's fragments are dropped"
    );
    assert!(
        tcp_roundtrip(&dev, sa("[2001:db8:100::10]:105")).is_err(),
        "IPv6 105 must be blocked"
    );
    assert_eq!(
        from_server("192.0.2.10:2575"),
        Ok(()),
        "HL7 from the engine to the pump"
    );
    // The same port from a host the profile does not name is blocked.
    let blocked = run_in(&ward.srv, || {
        std::net::TcpStream::connect_timeout(&sa("192.0.2.10:2575"), Duration::from_millis(700))
            .map(|_| ())
    });
    // (connect_timeout picks the first source address: 198.51.100.10)
    assert!(blocked.is_err(), "MLLP from 198.51.100.10 must be blocked");

    let mut dp = Datapath::load(&pin.0).unwrap();
    let stats = dp.stats().unwrap();
    assert!(stats[&Reason::DropPolicy] >= 4, "{stats:?}");
    assert!(
        stats[&Reason::PassReply] > 0 && stats[&Reason::PassEstablished] > 0,
        "{stats:?}"
    );
    assert!(stats[&Reason::PassFragment] >= 4, "{stats:?}");
    assert!(
        agent.log_text().contains("kind=\"deny\""),
        "deny events are logged:\n{}",
        agent.log_text()
    );
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}

/// Connects from 198.51.100.20 (the HL7 engine's address) to `to`.
fn socket2_bind_connect(to: SocketAddr) -> Result<std::net::TcpStream, String> {
    use std::os::fd::FromRawFd as _;
    // Safety: plain socket calls on a fresh fd that we own and hand to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err("socket".into());
        }
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let mut local: libc::sockaddr_in = std::mem::zeroed();
        local.sin_family = libc::AF_INET as u16;
        local.sin_addr.s_addr = u32::from_ne_bytes([198, 51, 100, 20]);
        if libc::bind(
            fd,
            (&local as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            return Err("bind 198.51.100.20".into());
        }
        let SocketAddr::V4(v4) = to else {
            return Err("v4 only".into());
        };
        let mut remote: libc::sockaddr_in = std::mem::zeroed();
        remote.sin_family = libc::AF_INET as u16;
        remote.sin_port = v4.port().to_be();
        remote.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        );
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        );
        if libc::connect(
            fd,
            (&remote as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            return Err(format!("connect: {}", std::io::Error::last_os_error()));
        }
        Ok(stream)
    }
}

#[test]
fn kill_9_keeps_enforcing_and_a_restart_adopts_without_a_gap() {
    let ward = ward("kill");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("kill");
    write_desired(dir.path(), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = servers(&ward, &stop);
    let mut agent = Agent::start(&ward, dir.path(), &pin.0);
    agent.wait_for("policy generation switched");

    let dev = ward.dev.clone();
    let traffic = std::thread::spawn(move || {
        udp_stream(
            &dev,
            vec![sa("198.51.100.10:53"), sa("198.51.100.10:5001")],
            1500,
            Duration::from_millis(2),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    agent.kill9();
    std::thread::sleep(Duration::from_millis(700));
    let agent2 = Agent::start(&ward, dir.path(), &pin.0);
    let (sent, echoed) = traffic.join().unwrap();

    let log = agent2.log_text();
    assert!(
        log.contains("Adopted"),
        "restart adopts the pinned links:\n{log}"
    );
    assert!(
        log.contains("desired state already active"),
        "restart rewrites nothing:\n{log}"
    );
    assert_eq!(
        echoed[0], sent[0],
        "every allowed datagram and its reply passed through kill and restart"
    );
    assert_eq!(
        echoed[1], 0,
        "no denied datagram passed while the agent was down or restarting"
    );
    let mut dp = Datapath::load(&pin.0).unwrap();
    let drops = dp.stats().unwrap()[&Reason::DropPolicy];
    assert_eq!(
        drops, sent[1],
        "each denied datagram was dropped by policy, none lost elsewhere"
    );
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn generation_swaps_under_traffic_drop_nothing_allowed_and_pass_nothing_denied() {
    let ward = ward("swap");
    let pin = PinRoot::new("swap");
    let stop = Arc::new(AtomicBool::new(false));
    let handles = servers(&ward, &stop);

    // This test is the map writer itself: load and attach inside the gateway namespace.
    let gw = ward.gw.clone();
    let pin_path = pin.0.clone();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let done = Arc::new(AtomicBool::new(false));
    let writer_done = done.clone();
    let writer = std::thread::spawn(move || {
        netns::enter(&gw).unwrap();
        let mut dp = Datapath::load(&pin_path).unwrap();
        dp.set_gateway_config(&gateway_config(false, false))
            .unwrap();
        assert_eq!(dp.attach(DEV_IF).unwrap(), AttachOutcome::Attached);
        dp.apply(&reference_state(1)).unwrap();
        tx.send(()).unwrap();
        // Alternate two different generations (rule ids, peer sets and their numbering all
        // change) as fast as the writer can, for as long as the traffic runs.
        let mut generation = 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !writer_done.load(Ordering::Relaxed) && Instant::now() < deadline {
            generation += 1;
            let state = if generation % 2 == 0 {
                shifted_state(generation)
            } else {
                reference_state(generation)
            };
            dp.apply(&state).unwrap();
        }
        (generation, dp.stats().unwrap())
    });
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let (sent, echoed) = udp_stream(
        &ward.dev,
        vec![sa("198.51.100.10:53"), sa("198.51.100.10:5001")],
        2000,
        Duration::from_millis(1),
    );
    done.store(true, Ordering::Relaxed);
    let (generations, stats) = writer.join().unwrap();

    assert!(
        generations > 20,
        "only {generations} generations were swapped in"
    );
    assert_eq!(
        echoed[0], sent[0],
        "allowed datagrams lost across {generations} swaps: {stats:?}"
    );
    assert_eq!(echoed[1], 0, "a denied datagram passed during a swap");
    assert_eq!(stats[&Reason::DropPolicy], sent[1], "{stats:?}");
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}

/// Same verdicts as the reference policy, different layout: extra rules first shift every
/// rule id and peer-set number, so a packet that mixed two generations would miss.
fn shifted_state(generation: u32) -> wardgate_policy::DesiredState {
    use wardgate_policy::{
        Direction, Proto,
        desired::{PortRange, Rule},
    };
    let mut rules: Vec<Rule> = (0..40)
        .map(|i| Rule {
            rule_id: 500 + i,
            name: format!("filler-{i}"),
            direction: Direction::FromDevice,
            proto: Proto::Tcp,
            peers: vec![format!("203.0.113.{}/32", 100 + i).parse().unwrap()],
            ports: Some(PortRange {
                lo: 7000 + i as u16,
                hi: 7000 + i as u16,
            }),
            idle_timeout_s: 60,
            inspect: false,
            app: None,
        })
        .collect();
    rules.extend(reference_rules().into_iter().map(|mut r| {
        r.rule_id += 5000;
        r
    }));
    state_with(generation, reference_devices(), rules)
}

/// A peer program in a namespace, killed when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_netns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Waits for a peer client at most `limit` (killing it then); whether it succeeded.
fn finish_within(mut child: Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a dcmtk client to completion, bounded in time; its exit status and output.
fn dcmtk(mut cmd: Command, limit: Duration) -> (bool, String) {
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(out_file.reopen().unwrap())
        .spawn()
        .expect("dcmtk is installed by `cargo xtask setup`");
    let ok = finish_within(child, limit);
    (
        ok,
        std::fs::read_to_string(out_file.path()).unwrap_or_default(),
    )
}

fn echoscu(ns: &str, port: u16) -> (bool, String) {
    let mut c = in_netns(ns, "echoscu");
    c.args(["-to", "2", "-ta", "2", "-aec", "PACS", "198.51.100.10"])
        .arg(port.to_string());
    dcmtk(c, Duration::from_secs(10))
}

/// A 24-bit BMP of `w` x `h` pixels with a gradient (so the DICOM pixel data is not all zero).
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

#[test]
fn dcmtk_dicom_passes_where_the_profile_allows_it_and_nowhere_else() {
    // Real DICOM on both ends (Debian's dcmtk): the pump's profile allows DICOM to the PACS on
    // port 104; the same PACS software on 11113 is not in it.
    let ward = ward("dicom");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("dicom");
    write_desired(dir.path(), 1);
    let (allowed_dir, other_dir) = (dir.path().join("pacs-104"), dir.path().join("pacs-11113"));
    let mut peers = Vec::new();
    for (port, out) in [("104", &allowed_dir), ("11113", &other_dir)] {
        std::fs::create_dir_all(out).unwrap();
        let mut c = in_netns(&ward.srv, "storescp");
        c.args(["-dhl", "-aet", "PACS", "-od"])
            .arg(out)
            .arg(port)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        peers.push(Peer(c.spawn().expect("dcmtk is installed")));
    }
    // Before the agent the ward is open: both answer a C-ECHO (retried while they start).
    for port in [104, 11113] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (ok, out) = echoscu(&ward.dev, port);
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PACS on {port} never answered:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let agent = Agent::start(&ward, dir.path(), &pin.0);
    agent.wait_for("policy generation switched");
    let (ok, out) = echoscu(&ward.dev, 104);
    assert!(ok, "C-ECHO to the PACS on 104 is allowed:\n{out}");
    let started = Instant::now();
    let (ok, _) = echoscu(&ward.dev, 11113);
    assert!(!ok, "C-ECHO to port 11113 must be blocked");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "blocked by a dropped SYN (connection timeout), not refused"
    );

    // C-STORE of a 3 MiB secondary capture image: the PACS receives it whole.
    let image = dir.path().join("image.bmp");
    std::fs::write(&image, bmp(1024, 1024)).unwrap();
    let dcm = dir.path().join("image.dcm");
    let mut c = Command::new("img2dcm");
    c.args(["-i", "BMP"]).arg(&image).arg(&dcm);
    let (ok, out) = dcmtk(c, Duration::from_secs(30));
    assert!(ok, "img2dcm:\n{out}");
    let mut c = in_netns(&ward.dev, "storescu");
    c.args(["-to", "2", "-aec", "PACS", "198.51.100.10", "104"])
        .arg(&dcm);
    let (ok, out) = dcmtk(c, Duration::from_secs(30));
    assert!(ok, "C-STORE to the PACS on 104:\n{out}");
    let received: Vec<_> = std::fs::read_dir(&allowed_dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert_eq!(received.len(), 1, "one image stored");
    assert!(
        received[0] > 3 * 1024 * 1024,
        "stored {} bytes",
        received[0]
    );
    assert_eq!(
        std::fs::read_dir(&other_dir).unwrap().count(),
        0,
        "nothing reached the PACS on the blocked port"
    );

    let mut dp = Datapath::load(&pin.0).unwrap();
    let stats = dp.stats().unwrap();
    assert!(stats[&Reason::DropPolicy] >= 1, "{stats:?}");
    assert!(
        agent.log_text().contains("198.51.100.10:11113"),
        "the blocked association is logged:\n{}",
        agent.log_text()
    );
    drop(peers);
}

/// An HL7 ADT^A01 in MLLP framing, as `mllp_send --file` reads it.
fn adt(control_id: &str) -> Vec<u8> {
    format!(
        "\x0bMSH|^~\\&|HIS|HOSP|PUMP|WARD3A|20261124120000||ADT^A01|{control_id}|P|2.5\r\
         PID|1||12345^^^HOSP^MR||DOE^JANE\rPV1|1|I|3A^12^1\r\x1c\r"
    )
    .into_bytes()
}

/// python-hl7's `mllp_send` (as `python3 -m hl7.client`) from the server namespace to the
/// pump's HL7 port; its exit status and output (the acknowledgement on success).
fn mllp_send(ns: &str, dir: &Path, control_id: &str, limit: Duration) -> (bool, String) {
    let file = dir.join(format!("{control_id}.hl7"));
    std::fs::write(&file, adt(control_id)).unwrap();
    let out = dir.join(format!("{control_id}.out"));
    let child = in_netns(ns, "python3")
        .args(["-m", "hl7.client", "-p", "2575", "-f"])
        .arg(&file)
        .arg("192.0.2.10")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is installed");
    let ok = finish_within(child, limit);
    (ok, std::fs::read_to_string(out).unwrap_or_default())
}

#[test]
fn python_hl7_mllp_reaches_the_pump_only_from_the_hl7_engine() {
    // Real HL7 v2 over MLLP (python-hl7 on both ends): the pump's profile accepts MLLP on 2575
    // from the HL7 engine (198.51.100.20) and from no other host.
    let ward = ward("hl7");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("hl7");
    write_desired(dir.path(), 1);
    let received = dir.path().join("received.txt");
    let _pump = Peer(
        in_netns(&ward.dev, "python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/python/mllp_server.py"
            ))
            .args(["192.0.2.10", "2575"])
            .arg(&received)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is installed"),
    );
    // Connections from the server namespace to the ward leave from the HL7 engine's address.
    let src = |addr: &str| {
        ip(&[
            "-n",
            &ward.srv,
            "route",
            "replace",
            "192.0.2.0/24",
            "via",
            "198.51.100.1",
            "src",
            addr,
        ])
    };
    src("198.51.100.20");
    // Before the agent the ward is open (retried while the receiver starts).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, _) = mllp_send(&ward.srv, dir.path(), "CTRL-0", Duration::from_secs(3));
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the HL7 receiver never answered");
        std::thread::sleep(Duration::from_millis(200));
    }

    let agent = Agent::start(&ward, dir.path(), &pin.0);
    agent.wait_for("policy generation switched");
    let (ok, ack) = mllp_send(&ward.srv, dir.path(), "CTRL-1", Duration::from_secs(10));
    assert!(ok, "ADT from the HL7 engine is allowed");
    assert!(ack.contains("MSA|AA|CTRL-1"), "acknowledged: {ack:?}");

    // The same message from the PACS's address: the SYN is dropped, nothing is delivered.
    src("198.51.100.10");
    let (ok, _) = mllp_send(&ward.srv, dir.path(), "CTRL-2", Duration::from_secs(4));
    assert!(!ok, "MLLP from 198.51.100.10 must be blocked");
    let got = std::fs::read_to_string(&received).unwrap();
    assert!(got.contains("|CTRL-1|"), "{got}");
    assert!(!got.contains("|CTRL-2|"), "{got}");
    assert!(
        agent.log_text().lines().any(|l| l.contains("kind=\"deny\"")
            && l.contains("198.51.100.10:")
            && l.contains("-> 192.0.2.10:2575")),
        "the blocked connection is logged as a deny:\n{}",
        agent.log_text()
    );
}

/// The names of the TCX programs on `iface`'s ingress and egress in namespace `ns`, in order
/// (empty lists if the interface does not exist).
fn tcx_programs(ns: &str, iface: &'static str) -> (Vec<String>, Vec<String>) {
    run_in(ns, move || {
        let names = |kind| {
            let name = std::ffi::CString::new(iface).unwrap();
            SchedClassifier::query_tcx(name.as_c_str(), kind)
                .map(|(_, progs)| {
                    progs
                        .iter()
                        .map(|p| p.name_as_str().unwrap_or("?").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        (names(TcAttachType::Ingress), names(TcAttachType::Egress))
    })
}

/// Whether wardgate's programs run first on both hooks of `iface`.
fn wardgate_first(ns: &str, iface: &'static str) -> bool {
    let (ingress, egress) = tcx_programs(ns, iface);
    ingress.first().map(String::as_str) == Some(program_names::INGRESS)
        && egress.first().map(String::as_str) == Some(program_names::EGRESS)
}

/// Waits (bounded by `limit`) until wardgate runs first on both hooks of `iface`; how long.
fn wait_wardgate_first(ns: &str, iface: &'static str, limit: Duration) -> Duration {
    let started = Instant::now();
    while !wardgate_first(ns, iface) {
        assert!(
            started.elapsed() < limit,
            "wardgate not first on {iface} after {limit:?}: {:?}",
            tcx_programs(ns, iface)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// The active generation in the maps pinned under `pin`, read straight from the pins.
fn pinned_generation(pin: &Path) -> u32 {
    let open = |name: &str| {
        let data = MapData::from_pin(pin.join("maps").join(name)).unwrap();
        aya::maps::Map::from_map_data(data).unwrap()
    };
    let active: Array<_, u32> = Array::try_from(open(map_names::ACTIVE)).unwrap();
    // `generation << 1 | slot`
    active.get(&0, 0).unwrap() >> 1
}

#[test]
fn after_a_reboot_the_links_appear_only_once_the_last_desired_state_is_in_the_maps() {
    // A fresh pin root is a reboot: no pinned maps, no links. The desired-state file is there
    // (the last policy the controller sent). The moment a wardgate program first shows on the
    // interface's hooks, the maps must already enforce that generation: no packet passes
    // unfiltered, or filtered by an empty policy.
    let ward = ward("boot");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("boot");
    write_desired(dir.path(), 7);
    let gw = ward.gw.clone();
    let pin_path = pin.0.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || {
        netns::enter(&gw).unwrap();
        ready_tx.send(()).unwrap();
        let ifname = std::ffi::CString::new(DEV_IF).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut polls = 0u64;
        // As tight as the kernel answers, bounded in time.
        while Instant::now() < deadline {
            polls += 1;
            for kind in [TcAttachType::Ingress, TcAttachType::Egress] {
                let (_, progs) = SchedClassifier::query_tcx(ifname.as_c_str(), kind).unwrap();
                if !progs.is_empty() {
                    let generation = pinned_generation(&pin_path);
                    let names: Vec<String> = progs
                        .iter()
                        .map(|p| p.name_as_str().unwrap_or("?").to_string())
                        .collect();
                    return Some((generation, names, polls));
                }
            }
        }
        None
    });
    ready_rx.recv().unwrap();
    let agent = Agent::spawn(&ward, dir.path(), &pin.0, &[DEV_IF]);
    let seen = watcher.join().unwrap();
    agent.wait_for("active policy generation");
    let (generation, names, polls) = seen.expect("no program ever appeared on the hooks");
    assert!(names[0].starts_with("wg_"), "a wardgate program: {names:?}");
    assert!(polls > 1, "the hooks were empty when the agent started");
    assert_eq!(
        generation,
        7,
        "when the first link appeared the maps held generation {generation}, not the file's 7:\n{}",
        agent.log_text()
    );
    // And the policy is what runs: a denied flow is dropped, an allowed one passes.
    let stop = Arc::new(AtomicBool::new(false));
    let handles = servers(&ward, &stop);
    std::thread::sleep(Duration::from_millis(100));
    assert!(tcp_roundtrip(&ward.dev, sa("198.51.100.10:445")).is_err());
    assert_eq!(tcp_roundtrip(&ward.dev, sa("198.51.100.10:104")), Ok(()));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn a_missing_interface_is_retried_while_the_others_are_enforced_and_attached_when_it_appears() {
    let ward = ward("late");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("late");
    write_desired(dir.path(), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = servers(&ward, &stop);
    const LATE: &str = "wg-late0";
    let agent = Agent::spawn(&ward, dir.path(), &pin.0, &[LATE, DEV_IF]);
    agent.wait_for("active policy generation");
    agent.wait_for("interface does not exist");
    assert!(agent.log_text().contains(LATE), "{}", agent.log_text());
    // The interface that exists is enforced meanwhile.
    assert!(wardgate_first(&ward.gw, DEV_IF));
    assert!(
        tcp_roundtrip(&ward.dev, sa("198.51.100.10:445")).is_err(),
        "SMB is blocked on the interface that exists"
    );
    assert_eq!(tcp_roundtrip(&ward.dev, sa("198.51.100.10:104")), Ok(()));
    // Still running (and still retrying) after a few polls.
    std::thread::sleep(Duration::from_millis(2500));
    let mut agent = agent;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "{}",
        agent.log_text()
    );
    assert!(tcx_programs(&ward.gw, LATE).0.is_empty());

    // The interface appears: attached within a bounded time (poll 1 s, or netlink at once).
    ip(&[
        "-n", &ward.gw, "link", "add", LATE, "type", "veth", "peer", "name", "wg-late1",
    ]);
    let took = wait_wardgate_first(&ward.gw, LATE, Duration::from_secs(5));
    eprintln!("attached {took:?} after the interface appeared");
    assert!(took < Duration::from_secs(3), "attached after {took:?}");
    agent.wait_for("interface appeared; datapath attached");
    assert!(wardgate_first(&ward.gw, DEV_IF));
    assert!(tcp_roundtrip(&ward.dev, sa("198.51.100.10:445")).is_err());
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn a_device_interface_deleted_and_re_created_under_traffic_is_enforced_again() {
    let ward = ward("recr");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("recr");
    write_desired(dir.path(), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = servers(&ward, &stop);
    let agent = Agent::start(&ward, dir.path(), &pin.0);
    agent.wait_for("policy generation switched");
    assert!(tcp_roundtrip(&ward.dev, sa("198.51.100.10:445")).is_err());

    // Traffic (allowed and denied) runs across the deletion and the re-creation.
    let dev = ward.dev.clone();
    let traffic = std::thread::spawn(move || {
        udp_stream(
            &dev,
            vec![sa("198.51.100.10:53"), sa("198.51.100.10:5001")],
            1500,
            Duration::from_millis(2),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    ward.delete_device_link();
    // Long enough for a poll to see the interface gone.
    std::thread::sleep(Duration::from_millis(1200));
    ward.recreate_device_link();
    let took = wait_wardgate_first(&ward.gw, DEV_IF, Duration::from_secs(5));
    eprintln!("re-attached {took:?} after the re-creation");
    assert!(took < Duration::from_secs(3), "re-attached after {took:?}");
    let (sent, echoed) = traffic.join().unwrap();
    eprintln!("across the re-creation: sent {sent:?}, echoed {echoed:?}");
    assert!(echoed[0] > 0, "allowed traffic flowed");

    // Enforced again on the new interface: allowed passes (after ARP), denied is dropped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tcp_roundtrip(&ward.dev, sa("198.51.100.10:104")).is_err() {
        assert!(
            Instant::now() < deadline,
            "DICOM never passed on the re-created interface"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        tcp_roundtrip(&ward.dev, sa("198.51.100.10:445")).is_err(),
        "SMB must be blocked on the re-created interface"
    );
    assert!(
        udp_roundtrip(&ward.dev, sa("198.51.100.10:5001")).is_err(),
        "UDP 5001 must be blocked on the re-created interface"
    );
    assert_eq!(udp_roundtrip(&ward.dev, sa("198.51.100.10:53")), Ok(()));
    let log = agent.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("interface re-created; datapath re-attached") && l.contains(DEV_IF)),
        "the re-attach is logged with the old and new index:\n{log}"
    );
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn another_program_first_on_a_hook_is_an_error_and_refuses_a_start() {
    let ward = ward("order");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("order");
    write_desired(dir.path(), 1);
    let mut agent = Agent::start(&ward, dir.path(), &pin.0);
    agent.wait_for("policy generation switched");
    assert!(wardgate_first(&ward.gw, DEV_IF), "wardgate attaches first");

    // Another tool puts its classifier first on the device interface's ingress (the object's
    // own pass-everything program, from its own maps).
    let gw = ward.gw.clone();
    let other_pin = PinRoot::new("order-other");
    let other_path = other_pin.0.clone();
    let (attached_tx, attached_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        netns::enter(&gw).unwrap();
        let mut dp = Datapath::load(&other_path).unwrap();
        let prog = dp.classifier(program_names::PASS).unwrap();
        prog.attach(
            c"wg-dev0",
            TcAttach::Tcx {
                attach_type: TcAttachType::Ingress,
                order: LinkOrder::first(),
            },
        )
        .unwrap();
        attached_tx.send(()).unwrap();
        // Detached when dp drops.
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
    });
    attached_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(
        tcx_programs(&ward.gw, DEV_IF).0,
        [program_names::PASS, program_names::INGRESS]
    );

    // The running agent says so loudly, naming the interface, the hook and the program.
    agent.wait_for("runs before wardgate");
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("runs before wardgate"))
        .unwrap();
    assert!(
        line.contains("ERROR") && line.contains("wg-dev0 ingress") && line.contains("wg_pass"),
        "{line}"
    );

    // A new agent refuses to start while it is there.
    agent.kill9();
    let mut refused = Agent::spawn(&ward, dir.path(), &pin.0, &[DEV_IF]);
    let status = refused.wait_exit(Duration::from_secs(30));
    let log = refused.log_text();
    assert!(!status.success(), "the agent started anyway:\n{log}");
    assert!(
        log.contains("Refusing to start")
            && log.contains("wg-dev0 ingress")
            && log.contains("`wg_pass`"),
        "the refusal names the interface and the program:\n{log}"
    );
    // The datapath stays pinned and enforcing (behind the other program) meanwhile.
    assert_eq!(
        tcx_programs(&ward.gw, DEV_IF).0,
        [program_names::PASS, program_names::INGRESS]
    );

    // Once it is gone, the agent starts.
    release_tx.send(()).unwrap();
    other.join().unwrap();
    let agent = Agent::start(&ward, dir.path(), &pin.0);
    assert!(!agent.log_text().contains("runs before wardgate"));
    assert!(wardgate_first(&ward.gw, DEV_IF));
}

/// The pinned gateway config's `unknown_action` (0 pass, 1 drop).
fn pinned_unknown_action(pin: &Path) -> u32 {
    let map =
        MapData::from_pin(pin.join("maps").join(map_names::CONFIG)).expect("pinned gateway config");
    let cfg: Array<_, wardgate_common::GatewayConfig> =
        Array::try_from(aya::maps::Map::from_map_data(map).unwrap()).unwrap();
    cfg.get(&0, 0).unwrap().unknown_action
}

fn reason_count(pin: &Path, reason: Reason) -> u64 {
    wardgate_agent::datapath::pinned::status(pin)
        .unwrap()
        .reasons[&reason]
}

#[test]
fn first_boot_without_a_policy_holds_device_traffic_until_the_first_generation() {
    // Empty bpffs, no desired state: every device is unknown. With the default fail_mode
    // (hold) its traffic is dropped until a policy arrives, except what the gateway must let
    // through: the management allowlist and DHCP (ARP and ND pass in the datapath).
    let ward = ward("hold");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("hold");
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = servers(&ward, &stop);
    let (_, dhcp) = udp_echo(&ward.srv, vec![sa("198.51.100.10:67")], stop.clone());
    handles.push(dhcp);
    let agent = Agent::spawn_with(
        &ward,
        dir.path(),
        &pin.0,
        &[DEV_IF],
        "  - {cidr: 198.51.100.10/32, proto: tcp, port: 445}\nunknown_devices: pass\n",
    );
    agent.wait_for("active policy generation");
    assert!(
        udp_roundtrip(&ward.dev, sa("198.51.100.10:53")).is_err(),
        "no policy yet: a device's DNS is held"
    );
    assert!(
        tcp_roundtrip(&ward.dev, sa("198.51.100.10:104")).is_err(),
        "no policy yet: a device's DICOM is held"
    );
    assert!(reason_count(&pin.0, Reason::DropUnknownDevice) > 0);
    assert_eq!(pinned_unknown_action(&pin.0), 1, "unknown devices dropped");
    assert_eq!(
        tcp_roundtrip(&ward.dev, sa("198.51.100.10:445")),
        Ok(()),
        "the management allowlist still passes"
    );
    assert_eq!(
        udp_roundtrip(&ward.dev, sa("198.51.100.10:67")),
        Ok(()),
        "DHCP (a renewal to the server) still passes"
    );

    let log = agent.log_text();
    assert!(
        log.contains("no last-known-good policy: holding device traffic until")
            && log.contains("(fail_mode: hold)"),
        "{log}"
    );
    // The first generation: the policy decides, and the configured default is back.
    write_desired(dir.path(), 1);
    agent.wait_for("device traffic no longer held");
    assert_eq!(
        pinned_unknown_action(&pin.0),
        0,
        "unknown_devices: pass again"
    );
    assert_eq!(udp_roundtrip(&ward.dev, sa("198.51.100.10:53")), Ok(()));
    assert_eq!(tcp_roundtrip(&ward.dev, sa("198.51.100.10:104")), Ok(()));
    assert!(
        udp_roundtrip(&ward.dev, sa("198.51.100.10:5001")).is_err(),
        "what the policy denies stays denied"
    );
    drop(agent);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn fail_mode_open_keeps_the_unknown_device_default_before_the_first_policy() {
    let ward = ward("open");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("open");
    let stop = Arc::new(AtomicBool::new(false));
    let handles = servers(&ward, &stop);
    let agent = Agent::spawn_with(
        &ward,
        dir.path(),
        &pin.0,
        &[DEV_IF],
        "fail_mode: open\nunknown_devices: pass\n",
    );
    agent.wait_for("active policy generation");
    assert!(!agent.log_text().contains("holding device traffic"));
    assert_eq!(pinned_unknown_action(&pin.0), 0);
    assert_eq!(udp_roundtrip(&ward.dev, sa("198.51.100.10:5001")), Ok(()));
    drop(agent);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn a_restart_keeps_the_heartbeat_so_fail_open_devices_stay_enforced() {
    // The pump is enforced and its profile fails open. A restarted agent spends time verifying
    // and loading its programs before its map-writer loop beats: the heartbeat must not go
    // stale meanwhile, or the watchdog monitors the pump and its denied flows pass.
    let ward = ward("beat");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("beat");
    let mut devices = reference_devices();
    devices[0].fail_open = true;
    write_state(dir.path(), &state_with(1, devices, reference_rules()));
    let stop = Arc::new(AtomicBool::new(false));
    let handles = servers(&ward, &stop);
    // Shorter than loading the programs takes (about a second on the 2-core test machine).
    let limit = "watchdog: {heartbeat_limit_ms: 300}\n";
    let mut agent = Agent::spawn_with(&ward, dir.path(), &pin.0, &[DEV_IF], limit);
    // Attached only at `active policy generation` (the generation switches before the attach:
    // on a loaded machine a datagram sent in between meets no program at all).
    agent.wait_for("active policy generation");
    assert!(
        udp_roundtrip(&ward.dev, sa("198.51.100.10:5001")).is_err(),
        "a denied datagram passed after the first start: {:?}\n{}",
        wardgate_agent::datapath::pinned::status(&pin.0),
        agent.log_text()
    );

    // Denied datagrams every 2 ms through the whole restart (each one asks the watchdog).
    let dev = ward.dev.clone();
    let traffic = std::thread::spawn(move || {
        udp_stream(
            &dev,
            vec![sa("198.51.100.10:53"), sa("198.51.100.10:5001")],
            2000,
            Duration::from_millis(2),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    // A restart as systemd does it: SIGTERM, then the new process at once.
    // Safety: kill on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) },
        0
    );
    let status = agent.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let restarted = Instant::now();
    let agent2 = Agent::spawn_with(&ward, dir.path(), &pin.0, &[DEV_IF], limit);
    agent2.wait_for("active policy generation");
    let took = restarted.elapsed();
    let (sent, echoed) = traffic.join().unwrap();

    let st = wardgate_agent::datapath::pinned::status(&pin.0).unwrap();
    let log = agent2.log_text();
    eprintln!("restart to `active policy generation` took {took:?}; {st:?}");
    assert_eq!(
        (
            st.watchdog.went_stale,
            st.reasons[&Reason::PassMonitorWouldDeny]
        ),
        (0, 0),
        "the watchdog fired during the restart ({took:?}):\n{}\n{log}",
        agent.log_text()
    );
    assert_eq!(echoed[1], 0, "no denied datagram passed during the restart");
    assert_eq!(echoed[0], sent[0], "every allowed datagram passed");
    assert!(!log.contains("kind=\"watchdog\""), "{log}");
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn an_edited_desired_state_keeping_its_generation_is_applied_whole() {
    // File mode: the operator edits the file but keeps generation 1. The agent must not keep
    // the old rules in the maps while naming events from the new file (half-published): the
    // new content is applied as a replacement, and said so.
    let ward = ward("edit");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("edit");
    write_desired(dir.path(), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = servers(&ward, &stop);
    let agent = Agent::start(&ward, dir.path(), &pin.0);
    agent.wait_for("policy generation switched");
    assert_eq!(udp_roundtrip(&ward.dev, sa("198.51.100.10:53")), Ok(()));
    assert!(udp_roundtrip(&ward.dev, sa("198.51.100.10:5001")).is_err());

    // Same generation; DNS (rule 1002) now goes to port 5001 instead of 53.
    let rules = reference_rules()
        .into_iter()
        .map(|mut r| {
            if r.rule_id == 1002 {
                r.ports = Some(wardgate_policy::desired::PortRange::single(5001));
            }
            r
        })
        .collect();
    let seen = |log: &str| {
        log.matches("desired state already active").count()
            + log.matches("kept the active generation number").count()
    };
    let before = seen(&agent.log_text());
    // A different mtime for the poll (it compares modification times).
    std::thread::sleep(Duration::from_millis(20));
    write_state(dir.path(), &state_with(1, reference_devices(), rules));
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen(&agent.log_text()) == before {
        assert!(
            Instant::now() < deadline,
            "the edit was never looked at:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = agent.log_text();
    assert_eq!(
        udp_roundtrip(&ward.dev, sa("198.51.100.10:5001")),
        Ok(()),
        "the edited rule is enforced:\n{log}"
    );
    // Gone for every new flow. A datagram that happens to reuse the first exchange's source
    // port is that flow again, whose flow-cache slot may answer for its one-second sync period
    // (`Datapath::replace`): one pass is tried again past it, with a new socket; never two.
    if udp_roundtrip(&ward.dev, sa("198.51.100.10:53")).is_ok() {
        eprintln!("an exchange to the replaced rule passed; again past the flow-cache sync period");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(
            udp_roundtrip(&ward.dev, sa("198.51.100.10:53")).is_err(),
            "the rule it replaced is gone:\n{}",
            agent.log_text()
        );
    }
    assert!(
        log.contains("kept the active generation number") && log.contains("desired.json"),
        "the log names the file and why:\n{log}"
    );
    assert_eq!(pinned_generation(&pin.0), 1);
    drop(agent);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn an_edit_made_while_the_agent_was_stopped_keeping_its_generation_is_applied_at_start() {
    // The maps hold generation 1; the file is edited (same number) while no agent runs. The
    // restarted agent reads the active slot back, finds other content, and applies the file.
    let ward = ward("edit2");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("edit2");
    write_desired(dir.path(), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = servers(&ward, &stop);
    let mut agent = Agent::start(&ward, dir.path(), &pin.0);
    agent.wait_for("policy generation switched");
    assert_eq!(udp_roundtrip(&ward.dev, sa("198.51.100.10:53")), Ok(()));
    // Safety: kill on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) },
        0
    );
    let status = agent.wait_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "the agent's exit on SIGTERM: {status}\n{}",
        agent.log_text()
    );

    let rules = reference_rules()
        .into_iter()
        .map(|mut r| {
            if r.rule_id == 1002 {
                r.ports = Some(wardgate_policy::desired::PortRange::single(5001));
            }
            r
        })
        .collect();
    write_state(dir.path(), &state_with(1, reference_devices(), rules));
    let agent = Agent::start(&ward, dir.path(), &pin.0);
    let log = agent.log_text();
    assert_eq!(
        udp_roundtrip(&ward.dev, sa("198.51.100.10:5001")),
        Ok(()),
        "the edited rule is enforced after the restart:\n{log}"
    );
    assert!(
        udp_roundtrip(&ward.dev, sa("198.51.100.10:53")).is_err(),
        "the rule it replaced is gone:\n{log}"
    );
    assert!(
        log.contains("with other content than the desired state file")
            && log.contains("desired.json"),
        "{log}"
    );
    assert_eq!(pinned_generation(&pin.0), 1);
    drop(agent);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}
