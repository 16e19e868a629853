//! The package tier: builds the .deb packages, installs them with dpkg, runs the installed
//! binaries, checks what dpkg says they hold, verifies the installed units, and starts each
//! service the way systemd would (systemd is not PID 1 here): the unit's ExecStart and
//! Environment, its capability bounding set, no new privileges, its user, and a NOTIFY_SOCKET
//! this check owns, which must hear READY=1, then STOPPING=1 on SIGTERM, and exit 0. Purges the
//! packages and everything the start left behind, pass or fail. Then the upgrade check
//! (`package_upgrade`): the previous release's .debs (`previous`) upgraded to these under
//! traffic, and back; then the skew check (`package_skew`): each release's agent against the
//! other's controller.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{cmd, package, package_skew, package_upgrade, previous};

pub const UNITS: &str = "/usr/lib/systemd/system";

/// What each package must install.
const FILES: [(&str, &[&str]); 2] = [
    (
        "wardgate-agent",
        &[
            "/usr/bin/wardgate-agent",
            "/usr/lib/systemd/system/wardgate-agent.service",
            "/etc/wardgate/agent.yaml",
            "/usr/share/wardgate/profiles/infusion-pump.yaml",
            "/usr/share/wardgate/profiles/schema/profile.schema.json",
            "/usr/share/wardgate/profiles/sites/demo-ward.yaml",
        ],
    ),
    (
        "wardgate-controller",
        &[
            "/usr/bin/wardgate-controller",
            "/usr/bin/wardctl",
            "/usr/lib/systemd/system/wardgate-controller.service",
            "/etc/wardgate/controller.yaml",
            "/usr/lib/sysusers.d/wardgate-controller.conf",
        ],
    ),
];

/// Removes the packages (and what the service starts created) however the check ends.
struct Installed {
    cleanup: Vec<PathBuf>,
    netns: Option<String>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(ns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for p in &self.cleanup {
            let _ = std::fs::remove_dir_all(p);
        }
        let _ = Command::new("dpkg")
            .arg("--purge")
            .args(package::PACKAGES)
            .status();
    }
}

pub fn run() -> anyhow::Result<()> {
    for p in package::PACKAGES {
        ensure!(
            !crate::setup::dpkg_installed(p),
            "{p} is already installed on this machine; the package tier installs and purges it \
             (dpkg --purge {p} first)"
        );
    }
    for p in [
        "/sys/fs/bpf/wardgate",
        "/etc/wardgate",
        "/var/lib/wardgate-controller",
    ] {
        ensure!(
            !Path::new(p).exists(),
            "{p} exists: a wardgate installation is on this machine; the package tier would \
             start services over it"
        );
    }
    // The previous release first: its build shares target/release with this one's.
    let t = Instant::now();
    let previous = previous::debs()?;
    let t_previous = t.elapsed();
    let t = Instant::now();
    let debs = package::run()?;
    let mut installed = Installed {
        cleanup: vec![
            PathBuf::from("/sys/fs/bpf/wardgate"),
            PathBuf::from("/var/lib/wardgate"),
            PathBuf::from("/var/lib/wardgate-controller"),
            PathBuf::from("/etc/wardgate/certs"),
            // `wardctl certs init` keeps the CA key apart, beside the certificate directory.
            PathBuf::from("/etc/wardgate/certs-ca"),
        ],
        netns: None,
    };
    cmd::run(Command::new("dpkg").arg("-i").args(&debs))?;

    let version = env!("CARGO_PKG_VERSION");
    for exe in ["wardgate-agent", "wardgate-controller", "wardctl"] {
        let out = cmd::output(Command::new(format!("/usr/bin/{exe}")).arg("--version"))?;
        println!("{}", out.trim());
        ensure!(
            out.trim() == format!("{exe} {version}"),
            "/usr/bin/{exe} --version: {out}"
        );
    }
    for (pkg, files) in FILES {
        let listed = cmd::output(Command::new("dpkg").args(["-L", pkg]))?;
        for f in files {
            ensure!(
                listed.lines().any(|l| l == *f),
                "dpkg -L {pkg} does not list {f}:\n{listed}"
            );
        }
        println!("dpkg -L {pkg}: {} files checked", files.len());
    }
    for unit in ["wardgate-agent.service", "wardgate-controller.service"] {
        let path = Path::new(UNITS).join(unit);
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .context("systemd-analyze (apt install systemd)")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {}: {}\n{stderr}",
            path.display(),
            out.status
        );
        println!("systemd-analyze verify {}: ok", path.display());
    }

    // The agent, in a namespace of its own holding the interfaces the installed config names.
    let ns = format!("wgpkg-{}", std::process::id());
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    cmd::run(Command::new("ip").args(["netns", "add", &ns]))?;
    installed.netns = Some(ns.clone());
    let config = std::fs::read_to_string("/etc/wardgate/agent.yaml")?;
    let interfaces = config_interfaces(&config)
        .context("/etc/wardgate/agent.yaml: no `interfaces: [..]` line")?;
    for (i, iface) in interfaces.iter().enumerate() {
        let peer = format!("wgpkg-peer{i}");
        cmd::run(Command::new("ip").args([
            "-n", &ns, "link", "add", iface, "type", "veth", "peer", "name", &peer,
        ]))?;
        cmd::run(Command::new("ip").args(["-n", &ns, "link", "set", iface, "up"]))?;
    }
    start_like_systemd("wardgate-agent.service", Some(&ns))?;

    // The controller, with certificates made by the installed wardctl, readable by its user as
    // the unit's header says.
    cmd::run(Command::new("/usr/bin/wardctl").args([
        "certs",
        "init",
        "--dir",
        "/etc/wardgate/certs",
        "--gateway",
        "gw-1",
    ]))?;
    // The controller's user reads its server key and the issuing CA's key (it signs gateway
    // certificates at enrollment and renewal).
    for key in ["server.key", "issuing-ca.key"] {
        let path = format!("/etc/wardgate/certs/{key}");
        cmd::run(Command::new("chgrp").args(["wardgate-controller", &path]))?;
        cmd::run(Command::new("chmod").args(["640", &path]))?;
    }
    start_like_systemd("wardgate-controller.service", None)?;

    drop(installed);
    ensure!(
        !Path::new("/usr/bin/wardgate-agent").exists()
            && !Path::new(UNITS)
                .join("wardgate-controller.service")
                .exists(),
        "dpkg --purge left files behind"
    );
    println!("packages purged");
    let t_check = t.elapsed();
    let t = Instant::now();
    package_upgrade::run(&previous, &debs)?;
    let t_upgrade = t.elapsed();
    let t = Instant::now();
    package_skew::run(&previous)?;
    println!(
        "package tier: previous release {t_previous:.0?}, build and check {t_check:.0?}, \
         upgrade and downgrade {t_upgrade:.0?}, skew {:.0?}",
        t.elapsed()
    );
    Ok(())
}

/// The names in the config's `interfaces: [a, b]` line (the examples' flow style).
fn config_interfaces(config: &str) -> Option<Vec<String>> {
    let list = config
        .lines()
        .find_map(|l| l.strip_prefix("interfaces:"))?
        .trim()
        .strip_prefix('[')?
        .strip_suffix(']')?;
    Some(list.split(',').map(|s| s.trim().to_string()).collect())
}

/// The unit's `Key=` values, in order.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// Runs the installed unit's ExecStart as systemd would for `Type=notify` and checks the
/// notifications and the clean stop. `netns`: start inside this network namespace.
fn start_like_systemd(unit_name: &str, netns: Option<&str>) -> anyhow::Result<()> {
    Started::start(unit_name, netns)?.stop()
}

/// A service started as systemd would start it, READY=1 heard.
pub struct Started {
    unit_name: String,
    child: Service,
    sock: UnixDatagram,
    log: PathBuf,
    _dir: RemoveDir,
}

impl Started {
    /// Starts the installed unit's ExecStart as systemd would for `Type=notify` (capability
    /// bounding set, no new privileges, its user, its Environment=, StateDirectory= created,
    /// NOTIFY_SOCKET this check owns) and waits (bounded) for READY=1. `netns`: start inside
    /// this network namespace.
    pub fn start(unit_name: &str, netns: Option<&str>) -> anyhow::Result<Started> {
        let unit = std::fs::read_to_string(Path::new(UNITS).join(unit_name))?;
        let exec = values(&unit, "ExecStart");
        ensure!(exec.len() == 1, "{unit_name}: one ExecStart expected");
        let caps = values(&unit, "CapabilityBoundingSet").join(" ");
        let mut bounding = String::from("-all");
        for cap in caps.split_whitespace() {
            bounding.push_str(",+");
            bounding.push_str(&cap.trim_start_matches("CAP_").to_lowercase());
        }
        // StateDirectory= is created by systemd before the start, owned by the unit's user.
        let user = values(&unit, "User").first().copied();
        for dir in values(&unit, "StateDirectory") {
            let path = Path::new("/var/lib").join(dir);
            std::fs::create_dir_all(&path)?;
            if let Some(user) = user {
                cmd::run(
                    Command::new("chown")
                        .arg(format!("{user}:{user}"))
                        .arg(&path),
                )?;
            }
        }
        // Two starts of one unit in one run (an upgrade) get their own scratch directories.
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wardgate-pkg-{}-{unit_name}-{}",
            std::process::id(),
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let remove = RemoveDir(dir.clone());
        let sock_path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path)?;
        if let Some(user) = user {
            // The service's user sends to the socket.
            cmd::run(Command::new("chown").arg(user).arg(&sock_path))?;
        }
        let mut c = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("setpriv");
                c
            }
            None => Command::new("setpriv"),
        };
        c.arg(format!("--bounding-set={bounding}"))
            .args(["--inh-caps=-all", "--no-new-privs"]);
        if let Some(user) = user {
            c.args(["--reuid", user, "--regid", user, "--clear-groups"]);
        }
        c.args(exec[0].split_whitespace());
        for env in values(&unit, "Environment") {
            let (k, v) = env.split_once('=').context("Environment= without =")?;
            c.env(k, v);
        }
        let log = dir.join("service.log");
        c.env("NOTIFY_SOCKET", &sock_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        eprintln!("$ {}", cmd::display(&c));
        let mut started = Started {
            unit_name: unit_name.to_string(),
            child: Service(c.spawn().context("starting the service")?),
            sock,
            log,
            _dir: remove,
        };
        let t = Instant::now();
        let ready = wait_for(
            &started.sock,
            &mut started.child.0,
            "READY=1",
            Duration::from_secs(30),
        )
        .with_context(|| format!("{unit_name}: {}", started.log_text()))?;
        println!(
            "{unit_name}: READY=1 after {:?} ({})",
            t.elapsed(),
            ready
                .lines()
                .find(|l| l.starts_with("STATUS="))
                .unwrap_or("")
        );
        Ok(started)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it as systemd does (SIGTERM, then waits, bounded, for STOPPING=1 and exit 0).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let unit_name = self.unit_name.clone();
        cmd::run(Command::new("kill").args(["-TERM", &self.child.0.id().to_string()]))?;
        wait_for(
            &self.sock,
            &mut self.child.0,
            "STOPPING=1",
            Duration::from_secs(30),
        )
        .with_context(|| format!("{unit_name}: {}", self.log_text()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.0.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                bail!(
                    "{unit_name} still running 20 s after SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        ensure!(
            status.success(),
            "{unit_name} exited {status}:\n{}",
            self.log_text()
        );
        println!("{unit_name}: STOPPING=1, exit 0");
        Ok(())
    }
}

/// The check's scratch directory (notify socket, service log), removed however it ends.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A started service, killed if the check fails half-way.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) for a notification with `line` from `child`; returns it. A `child` that
/// exited before sending READY=1 is an error at once.
fn wait_for(
    sock: &UnixDatagram,
    child: &mut Child,
    line: &str,
    limit: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !left.is_zero(),
            "no {line} within {limit:?}; heard {seen:?}"
        );
        if line == "READY=1"
            && let Some(status) = child.try_wait()?
        {
            bail!("exited ({status}) before {line}; heard {seen:?}");
        }
        sock.set_read_timeout(Some(left.min(Duration::from_millis(200))))?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == line) {
                    return Ok(msg);
                }
                seen.push(msg);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
