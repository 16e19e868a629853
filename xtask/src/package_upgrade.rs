//! The package tier's upgrade check (issue 23 point 3): the previous release's .debs installed
//! and its agent enforcing a policy in a gateway namespace, real traffic through it (a
//! long-lived TCP stream echoed byte for byte, DICOM C-STORE associations with dcmtk, and a
//! denied flow probed continuously), then `dpkg -i` of this release's .debs and the agent
//! restarted the way the package's postinst has systemd do it; then the same back down to the
//! previous release. Each way: the stream never lost a byte or its connection, every DICOM
//! association completed, the denied flow never got through, the pinned links were adopted
//! (same link ids) and now run the new programs (new program ids).
//!
//! systemd is not PID 1 here, so the postinst's `deb-systemd-invoke try-restart` does nothing
//! (its `[ -d /run/systemd/system ]` guard is false); this check asserts the scripts say that
//! (restart on upgrade, no stop before it) and does what systemd would: the unit is active, so
//! SIGTERM the running agent, wait for it to exit, start the unit's ExecStart again.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{cmd, package, package_check::Started, previous};

const AGENT_UNIT: &str = "wardgate-agent.service";
const DEV_IF: &str = "wg-dev0";
const PIN_ROOT: &str = "/sys/fs/bpf/wardgate";
/// The allowed peer (the "PACS": the stream on 7000, storescp on 104) and the denied one.
const PACS: &str = "198.51.100.10";
const DENIED: &str = "198.51.100.30:7000";
const STREAM_PORT: u16 = 7000;
const DICOM_PORT: u16 = 104;
const CALLING_AE: &str = "UPG_SCU";
const CALLED_AE: &str = "UPG_PACS";
/// Every traffic loop ends by then, whatever happens.
const TRAFFIC_LIMIT: Duration = Duration::from_secs(90);

const PROFILE: &str = "\
name: upgrade-lab
description: The package tier's upgrade lab device; a stream and DICOM to the PACS, nothing else.
default_mode: enforce
fail_mode: closed
flows:
  - name: stream to pacs
    direction: from-device
    protocol: tcp
    peers: [group:pacs]
    ports: 7000
  - name: images to pacs (c-store)
    direction: from-device
    protocol: tcp
    peers: [group:pacs]
    ports: 104
    app: {dicom: {calling_ae: UPG_SCU, called_ae: UPG_PACS}}
";

const SITE: &str = "\
site: upgrade-lab
groups:
  pacs: [198.51.100.10/32]
gateways:
  - name: gw-upgrade
    interfaces: [wg-dev0]
devices:
  - id: 1
    name: modality-1
    mac: 02:00:00:00:00:0a
    addresses: [192.0.2.10]
    profile: upgrade-lab
    mode: enforce
    gateway: gw-upgrade
";

/// The agent's config in the lab: no controller (the desired state file is the policy), the
/// lab's device interface, the package's pin root.
const AGENT_CONFIG: &str = "\
interfaces: [wg-dev0]
pin_root: /sys/fs/bpf/wardgate
desired_state: /var/lib/wardgate/desired.json
fail_mode: closed
";

pub fn run(previous: &[PathBuf], current: &[PathBuf]) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("wardgate-upgrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let mut guard = Guard {
        scratch: scratch.clone(),
        namespaces: Vec::new(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let lab = Lab::new(&mut guard, &scratch)?;

    install(previous, previous::VERSION)?;
    std::fs::write("/etc/wardgate/agent.yaml", AGENT_CONFIG)?;
    std::fs::create_dir_all(scratch.join("profiles"))?;
    std::fs::write(scratch.join("profiles/upgrade-lab.yaml"), PROFILE)?;
    std::fs::write(scratch.join("site.yaml"), SITE)?;
    std::fs::create_dir_all("/var/lib/wardgate")?;
    cmd::run(
        Command::new("/usr/bin/wardctl")
            .args(["site", "compile", "--site"])
            .arg(scratch.join("site.yaml"))
            .arg("--profiles")
            .arg(scratch.join("profiles"))
            .args([
                "--gateway",
                "gw-upgrade",
                "--out",
                "/var/lib/wardgate/desired.json",
            ]),
    )?;
    let agent = Started::start(AGENT_UNIT, Some(&lab.gw))?;
    lab.wait_enforcing()?;

    let agent = across(
        "upgrade",
        &lab,
        agent,
        previous,
        current,
        env!("CARGO_PKG_VERSION"),
    )?;
    let agent = across(
        "downgrade",
        &lab,
        agent,
        current,
        previous,
        previous::VERSION,
    )?;
    agent.stop()?;
    drop(lab);
    drop(guard);
    println!("upgrade check: packages purged, lab removed");
    Ok(())
}

/// `dpkg -i` of `debs`, then the installed agent must say `version`.
fn install(debs: &[PathBuf], version: &str) -> anyhow::Result<()> {
    // --force-confold: the lab's agent.yaml replaces the example; keep it without a prompt
    // (the example is the same in both releases, so dpkg would not ask anyway).
    cmd::run(
        Command::new("dpkg")
            .args(["-i", "--force-confold"])
            .args(debs)
            .stdin(Stdio::null()),
    )?;
    let out = cmd::output(Command::new("/usr/bin/wardgate-agent").arg("--version"))?;
    ensure!(
        out.trim() == format!("wardgate-agent {version}"),
        "after dpkg -i the agent says `{}`, expected {version}",
        out.trim()
    );
    maintainer_scripts_restart_on_upgrade()
}

/// The installed agent package's scripts restart the unit after an upgrade (`try-restart` when
/// postinst configure is given the old version) and do not stop it before (prerm stops on
/// `remove` only), so the running agent is replaced by one restart.
fn maintainer_scripts_restart_on_upgrade() -> anyhow::Result<()> {
    let info = Path::new("/var/lib/dpkg/info");
    let postinst = std::fs::read_to_string(info.join("wardgate-agent.postinst"))?;
    let prerm = std::fs::read_to_string(info.join("wardgate-agent.prerm"))?;
    ensure!(
        postinst.contains("if [ -n \"$2\" ]; then")
            && postinst.contains("deb-systemd-invoke try-restart wardgate-agent.service"),
        "wardgate-agent.postinst does not try-restart the unit on upgrade:\n{postinst}"
    );
    ensure!(
        prerm.contains("[ \"$1\" = remove ]") && prerm.contains("deb-systemd-invoke stop"),
        "wardgate-agent.prerm must stop the unit on remove only:\n{prerm}"
    );
    ensure!(
        !Path::new("/run/systemd/system").exists(),
        "systemd runs here: this check would race its restart"
    );
    println!(
        "maintainer scripts: postinst try-restarts {AGENT_UNIT} on upgrade, prerm stops it on \
         remove only; systemd is not PID 1 here, so this check restarts it as systemd would"
    );
    Ok(())
}

/// One package change (`from` -> `to`) under traffic; returns the agent now running.
fn across(
    what: &str,
    lab: &Lab,
    agent: Started,
    from: &[PathBuf],
    to: &[PathBuf],
    version: &str,
) -> anyhow::Result<Started> {
    ensure!(from.len() == package::PACKAGES.len() && to.len() == from.len());
    let before = links()?;
    let traffic = Traffic::start(lab)?;
    std::thread::sleep(Duration::from_millis(1500));
    install(to, version)?;
    // What `deb-systemd-invoke try-restart` has systemd do for an active unit.
    let stopping = Instant::now();
    agent.stop()?;
    let stopped = Instant::now();
    let agent = Started::start(AGENT_UNIT, Some(&lab.gw))?;
    let ready = Instant::now();
    std::thread::sleep(Duration::from_millis(2000));
    let seen = traffic.finish()?;
    let after = links()?;

    println!(
        "{what} to {version}: agent stopped in {:?}, the new one ready {:?} later",
        stopped - stopping,
        ready - stopped
    );
    println!(
        "{what}: stream {} bytes echoed in {} round trips, one connection, longest wait {:?}",
        seen.stream.bytes, seen.stream.round_trips, seen.stream.longest_wait
    );
    let spanning = seen
        .dicom
        .iter()
        .filter(|a| a.start < stopping && a.end > ready)
        .count();
    println!(
        "{what}: {} DICOM C-STORE associations, all completed ({spanning} open across the whole \
         restart)",
        seen.dicom.len()
    );
    println!(
        "{what}: denied flow to {DENIED}: {} connection attempts, {} connected, {} accepted by \
         its server",
        seen.probes, seen.probe_connected, seen.denied_accepted
    );
    for ((hook, b), (_, a)) in before.iter().zip(&after) {
        println!(
            "{what}: {hook}: link {} kept, program {} -> {}",
            b.link, b.prog, a.prog
        );
    }

    ensure!(
        seen.stream.round_trips > 20,
        "{what}: the stream barely ran ({} round trips)",
        seen.stream.round_trips
    );
    // Associations run back to back: one began before the old agent was stopped and one
    // ended after the new one was ready (usually the same one).
    ensure!(
        seen.dicom.iter().any(|a| a.start < stopping) && seen.dicom.iter().any(|a| a.end > ready),
        "{what}: DICOM did not run across the restart ({} associations)",
        seen.dicom.len()
    );
    ensure!(
        seen.probes > 20,
        "{what}: the denied flow was barely probed ({} attempts)",
        seen.probes
    );
    ensure!(
        seen.probe_connected == 0 && seen.denied_accepted == 0,
        "{what}: the denied flow got through ({} connected, {} accepted): an unfiltered moment",
        seen.probe_connected,
        seen.denied_accepted
    );
    for ((hook, b), (_, a)) in before.iter().zip(&after) {
        ensure!(
            a.link == b.link,
            "{what}: {hook}: link {} replaced by {} (not adopted)",
            b.link,
            a.link
        );
        ensure!(
            a.prog != b.prog,
            "{what}: {hook}: still program {} after the restart",
            a.prog
        );
    }
    let log = agent.log_text();
    ensure!(
        !log.contains("pinned link unusable"),
        "{what}: the new agent did not adopt the pinned links:\n{log}"
    );
    Ok(agent)
}

/// A pinned TCX link: its id and the program inside.
struct Link {
    link: u64,
    prog: u64,
}

fn links() -> anyhow::Result<Vec<(&'static str, Link)>> {
    let mut out = Vec::new();
    for hook in ["ingress", "egress"] {
        let pin = format!("{PIN_ROOT}/links/{DEV_IF}-{hook}");
        let json =
            cmd::output(Command::new("bpftool").args(["-j", "link", "show", "pinned", &pin]))?;
        let v: serde_json::Value =
            serde_json::from_str(&json).with_context(|| format!("bpftool link show: {json}"))?;
        let field = |k: &str| {
            v[k].as_u64()
                .with_context(|| format!("bpftool link show {pin}: no {k} in {json}"))
        };
        out.push((
            hook,
            Link {
                link: field("id")?,
                prog: field("prog_id")?,
            },
        ));
    }
    Ok(out)
}

/// Namespaces, scratch files, the packages and the peers, removed however the check ends.
struct Guard {
    scratch: PathBuf,
    namespaces: Vec<String>,
    stop: Arc<AtomicBool>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("dpkg")
            .arg("--purge")
            .args(package::PACKAGES)
            .status();
        for p in [
            Path::new(PIN_ROOT),
            Path::new("/var/lib/wardgate"),
            Path::new("/etc/wardgate"),
            &self.scratch,
        ] {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// device (192.0.2.10, eth0) <-> gateway (wg-dev0 | wg-srv0) <-> server (198.51.100.10 and .30),
/// documentation addresses only; the server runs the stream's echo, a listener on the denied
/// address counting what it accepts, and storescp.
struct Lab {
    dev: String,
    gw: String,
    image: PathBuf,
    denied_accepted: Arc<AtomicU64>,
    _pacs: Pacs,
}

impl Lab {
    fn new(guard: &mut Guard, scratch: &Path) -> anyhow::Result<Lab> {
        let n = std::process::id();
        let (dev, gw, srv) = (
            format!("wgu-dev-{n}"),
            format!("wgu-gw-{n}"),
            format!("wgu-srv-{n}"),
        );
        for ns in [&dev, &gw, &srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns])?;
            guard.namespaces.push(ns.clone());
        }
        ip(&[
            "-n", &gw, "link", "add", DEV_IF, "type", "veth", "peer", "name", "eth0", "netns", &dev,
        ])?;
        ip(&[
            "-n", &gw, "link", "add", "wg-srv0", "type", "veth", "peer", "name", "eth0", "netns",
            &srv,
        ])?;
        ip(&[
            "-n",
            &dev,
            "link",
            "set",
            "eth0",
            "address",
            "02:00:00:00:00:0a",
        ])?;
        for (ns, i) in [
            (&dev, "lo"),
            (&dev, "eth0"),
            (&gw, "lo"),
            (&gw, DEV_IF),
            (&gw, "wg-srv0"),
            (&srv, "lo"),
            (&srv, "eth0"),
        ] {
            ip(&["-n", ns, "link", "set", i, "up"])?;
        }
        for (ns, i, addr) in [
            (&dev, "eth0", "192.0.2.10/24"),
            (&gw, DEV_IF, "192.0.2.1/24"),
            (&gw, "wg-srv0", "198.51.100.1/24"),
            (&srv, "eth0", "198.51.100.10/24"),
            (&srv, "eth0", "198.51.100.30/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", i])?;
        }
        ip(&["-n", &dev, "route", "add", "default", "via", "192.0.2.1"])?;
        ip(&["-n", &srv, "route", "add", "default", "via", "198.51.100.1"])?;
        cmd::run(Command::new("ip").args([
            "netns",
            "exec",
            &gw,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]))?;
        // The device's uplink at 24 Mbit/s: a C-STORE of the 1.2 MB image takes a second or
        // more, so associations are open while the agent restarts.
        cmd::run(Command::new("ip").args([
            "netns", "exec", &dev, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate",
            "24mbit", "burst", "64kb", "latency", "400ms",
        ]))?;

        let stop = guard.stop.clone();
        let echo = listener(&srv, &format!("{PACS}:{STREAM_PORT}"))?;
        let s = stop.clone();
        std::thread::spawn(move || {
            serve(echo, &s, |c| {
                std::thread::spawn(move || echo_stream(c));
            })
        });
        let denied = listener(&srv, DENIED)?;
        let denied_accepted = Arc::new(AtomicU64::new(0));
        let (s, count) = (stop.clone(), denied_accepted.clone());
        std::thread::spawn(move || {
            serve(denied, &s, |_| {
                count.fetch_add(1, Ordering::Relaxed);
            })
        });
        let store = scratch.join("pacs");
        std::fs::create_dir_all(&store)?;
        let scp = Command::new("ip")
            .args(["netns", "exec", &srv, "storescp", "-aet", CALLED_AE, "-od"])
            .arg(&store)
            .arg(DICOM_PORT.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("storescp (dcmtk, installed by `cargo xtask setup`)")?;
        let pacs = Pacs(scp);
        let image = dicom_image(scratch)?;
        cmd::run(Command::new("ip").args(["netns", "exec", &dev, "ping", "-c1", "-W2", PACS]))
            .context("the lab's server is unreachable before any agent runs")?;
        Ok(Lab {
            dev,
            gw,
            image,
            denied_accepted,
            _pacs: pacs,
        })
    }

    /// Waits (bounded) until the agent enforces: the stream's port answers, the denied one
    /// does not, a C-STORE completes.
    fn wait_enforcing(&self) -> anyhow::Result<()> {
        let stream: SocketAddr = format!("{PACS}:{STREAM_PORT}").parse()?;
        let denied: SocketAddr = DENIED.parse()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = in_netns(&self.dev, move || {
                Ok(
                    TcpStream::connect_timeout(&stream, Duration::from_millis(500)).is_ok()
                        && TcpStream::connect_timeout(&denied, Duration::from_millis(500)).is_err(),
                )
            })
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
            if ok && self.store().status.success() {
                println!("lab: the agent enforces (stream and DICOM pass, {DENIED} does not)");
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the agent does not enforce the lab's policy within 20 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn store(&self) -> std::process::Output {
        store(&self.dev, &self.image)
    }
}

/// One C-STORE of `image` from namespace `dev` (one association), bounded to 30 s.
fn store(dev: &str, image: &Path) -> std::process::Output {
    let mut c = Command::new("timeout");
    c.args([
        "30", "ip", "netns", "exec", dev, "storescu", "-aet", CALLING_AE, "-aec", CALLED_AE, PACS,
    ])
    .arg(DICOM_PORT.to_string())
    .arg(image);
    c.output().unwrap_or_else(|e| std::process::Output {
        status: std::process::ExitStatus::default(),
        stdout: Vec::new(),
        stderr: e.to_string().into_bytes(),
    })
}

/// storescp, killed when the lab goes (the server threads end with the guard's stop flag).
struct Pacs(std::process::Child);

impl Drop for Pacs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    cmd::run(Command::new("ip").args(args))
}

/// Runs `f` on a thread inside network namespace `ns` (its sockets stay there).
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> JoinHandle<anyhow::Result<T>> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        // Safety: setns on a namespace file we hold open; it changes only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        f()
    })
}

fn listener(ns: &str, addr: &str) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = addr.parse()?;
    let l = in_netns(ns, move || {
        TcpListener::bind(addr).with_context(|| format!("bind {addr}"))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("bind thread panicked"))??;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Accepts on `l` until `stop` (bounded), handing each connection to `each`.
fn serve(l: TcpListener, stop: &AtomicBool, mut each: impl FnMut(TcpStream)) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if let Ok((c, _)) = l.accept() {
            each(c);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn echo_stream(mut s: TcpStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(TRAFFIC_LIMIT));
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// A 1.2 MB DICOM image (a gradient made into a BMP, converted by dcmtk's img2dcm).
fn dicom_image(dir: &Path) -> anyhow::Result<PathBuf> {
    let (w, h) = (640u32, 640u32);
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut bmp = Vec::with_capacity(size as usize);
    bmp.extend_from_slice(b"BM");
    for v in [size, 0, 54, 40] {
        bmp.extend_from_slice(&v.to_le_bytes());
    }
    bmp.extend_from_slice(&w.to_le_bytes());
    bmp.extend_from_slice(&h.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    for v in [0u32, row * h, 2835, 2835, 0, 0] {
        bmp.extend_from_slice(&v.to_le_bytes());
    }
    for y in 0..h {
        for x in 0..row {
            bmp.push(((x * 7 + y * 13) % 251) as u8);
        }
    }
    let (bmp_path, dcm) = (dir.join("image.bmp"), dir.join("image.dcm"));
    std::fs::write(&bmp_path, bmp)?;
    cmd::run(
        Command::new("img2dcm")
            .args(["-i", "BMP"])
            .arg(&bmp_path)
            .arg(&dcm),
    )
    .context("img2dcm (dcmtk)")?;
    Ok(dcm)
}

/// The stream's client side.
struct StreamSeen {
    bytes: u64,
    round_trips: u64,
    longest_wait: Duration,
}

struct Association {
    start: Instant,
    end: Instant,
}

struct Seen {
    stream: StreamSeen,
    dicom: Vec<Association>,
    probes: u64,
    probe_connected: u64,
    denied_accepted: u64,
}

/// The traffic of one package change, running until `finish`.
struct Traffic {
    stop: Arc<AtomicBool>,
    stream: JoinHandle<anyhow::Result<StreamSeen>>,
    dicom: JoinHandle<anyhow::Result<Vec<Association>>>,
    probe: JoinHandle<anyhow::Result<(u64, u64)>>,
    denied_accepted: Arc<AtomicU64>,
    accepted_before: u64,
}

impl Traffic {
    fn start(lab: &Lab) -> anyhow::Result<Traffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let to: SocketAddr = format!("{PACS}:{STREAM_PORT}").parse()?;
        let s = stop.clone();
        // One connection for the whole change: 1 KiB written, the same 1 KiB read back, over
        // and over; any error or difference ends it with an error.
        let stream = in_netns(&lab.dev, move || {
            let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(2))
                .context("stream: connect")?;
            c.set_read_timeout(Some(Duration::from_secs(20)))?;
            let deadline = Instant::now() + TRAFFIC_LIMIT;
            let mut seen = StreamSeen {
                bytes: 0,
                round_trips: 0,
                longest_wait: Duration::ZERO,
            };
            let mut back = [0u8; 1024];
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let sent: Vec<u8> = (0..1024u64)
                    .map(|i| ((seen.round_trips * 31 + i) % 253) as u8)
                    .collect();
                let t = Instant::now();
                c.write_all(&sent)
                    .with_context(|| format!("stream: write after {} bytes", seen.bytes))?;
                c.read_exact(&mut back)
                    .with_context(|| format!("stream: read after {} bytes", seen.bytes))?;
                ensure!(
                    back[..] == sent[..],
                    "stream: echo differs after {} bytes",
                    seen.bytes
                );
                seen.longest_wait = seen.longest_wait.max(t.elapsed());
                seen.bytes += 1024;
                seen.round_trips += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(seen)
        });

        let s = stop.clone();
        let (dev, image) = (lab.dev.clone(), lab.image.clone());
        let dicom = std::thread::spawn(move || {
            let deadline = Instant::now() + TRAFFIC_LIMIT;
            let mut done = Vec::new();
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let start = Instant::now();
                let out = store(&dev, &image);
                ensure!(
                    out.status.success(),
                    "DICOM association {} failed ({}): {}{}",
                    done.len() + 1,
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                done.push(Association {
                    start,
                    end: Instant::now(),
                });
            }
            Ok(done)
        });

        let s = stop.clone();
        let denied: SocketAddr = DENIED.parse()?;
        let probe = in_netns(&lab.dev, move || {
            let deadline = Instant::now() + TRAFFIC_LIMIT;
            let (mut tries, mut connected) = (0u64, 0u64);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                tries += 1;
                if TcpStream::connect_timeout(&denied, Duration::from_millis(200)).is_ok() {
                    connected += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok((tries, connected))
        });
        Ok(Traffic {
            stop,
            stream,
            dicom,
            probe,
            accepted_before: lab.denied_accepted.load(Ordering::Relaxed),
            denied_accepted: lab.denied_accepted.clone(),
        })
    }

    fn finish(self) -> anyhow::Result<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        let join = |what: &str| anyhow::anyhow!("{what} thread panicked");
        let stream = self.stream.join().map_err(|_| join("stream"))??;
        let dicom = self.dicom.join().map_err(|_| join("DICOM"))??;
        let (probes, probe_connected) = self.probe.join().map_err(|_| join("probe"))??;
        Ok(Seen {
            stream,
            dicom,
            probes,
            probe_connected,
            denied_accepted: self.denied_accepted.load(Ordering::Relaxed) - self.accepted_before,
        })
    }
}
