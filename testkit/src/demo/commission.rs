//! Act 1, commissioning: lab certificates (engineers eve and ana, soc sam), the SOC's
//! collector (a real rsyslogd in the hospital-side namespace) and OCSF file, the controller
//! with its console on the hospital side, the demo site pushed, the agent on the gateway.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{Bins, CONTROLLER_ADDR, CONTROLLER_URL, GATEWAY, PIN_ROOT, Proc, Wardctl, wait_for};
use crate::{
    switched::SwitchedWard,
    ward::{self as lab, run_in},
};

/// The console's HTTPS listener, on the hospital side.
pub const CONSOLE_ADDR: &str = "198.51.100.20:9443";
/// rsyslogd's TCP input, on the hospital-side namespace's loopback.
const SYSLOG_ADDR: &str = "127.0.0.1:10514";

pub struct Commissioned {
    pub wardctl: Wardctl,
    /// What rsyslogd received, one line a message.
    pub syslog_file: PathBuf,
    pub ocsf_file: PathBuf,
    pub admin_password: String,
    pub agent_log: PathBuf,
    // Stopped in reverse order of start when dropped.
    _agent: Proc,
    _controller: Proc,
    _rsyslog: Proc,
}

/// A fresh password for the console's break-glass account: 12 random bytes, hex.
fn password() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut b = [0u8; 12];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// rsyslogd in `ns`: imtcp on [`SYSLOG_ADDR`], every message to `dir/syslog.log`.
fn rsyslog(ns: &str, dir: &Path) -> anyhow::Result<(Proc, PathBuf)> {
    std::fs::create_dir_all(dir.join("work"))?;
    let out = dir.join("syslog.log");
    let (addr, port) = SYSLOG_ADDR.split_once(':').context("syslog address")?;
    let conf = format!(
        "global(workDirectory=\"{work}\")\nmodule(load=\"imtcp\")\n\
         template(name=\"t\" type=\"string\" string=\"%timereported:::date-rfc3339% %hostname% %app-name% %msgid% %msg%\\n\")\n\
         input(type=\"imtcp\" address=\"{addr}\" port=\"{port}\")\n\
         action(type=\"omfile\" file=\"{out}\" template=\"t\")\n",
        work = dir.join("work").display(),
        out = out.display(),
    );
    let path = dir.join("rsyslog.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "rsyslogd", "-n", "-f"])
        .arg(&path)
        .arg("-i")
        .arg(dir.join("rsyslog.pid"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("rsyslog.err"))?)
        .spawn()
        .context("rsyslogd (Debian rsyslog, installed by `cargo xtask setup`)")?;
    let proc = Proc(child);
    let target: SocketAddr = SYSLOG_ADDR.parse()?;
    let listening = run_in(ns, move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(target).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    if !listening {
        bail!(
            "rsyslogd did not listen on {SYSLOG_ADDR}: {}",
            std::fs::read_to_string(dir.join("rsyslog.err")).unwrap_or_default()
        );
    }
    Ok((proc, out))
}

pub fn run(bins: &Bins, ward: &SwitchedWard, work: &Path) -> anyhow::Result<Commissioned> {
    let srv = ward.ward.srv.clone();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let certs = work.join("certs");
    let wardctl = Wardctl {
        bin: bins.wardctl.clone(),
        netns: srv.clone(),
        certs: certs.clone(),
    };
    println!(
        "== wardctl certs init: a lab CA, the controller, gateway {GATEWAY}, engineers eve and ana, soc sam"
    );
    wardctl.run(&[
        "certs",
        "init",
        "--dir",
        &certs.display().to_string(),
        "--gateway",
        GATEWAY,
        "--user",
        "eve:engineer",
        "--user",
        "ana:engineer",
        "--user",
        "sam:soc",
    ])?;

    let soc = work.join("soc");
    let (rsyslog, syslog_file) = rsyslog(&srv, &soc)?;
    let ocsf_file = soc.join("ocsf.jsonl");
    println!(
        "== the SOC's collectors: rsyslogd on {SYSLOG_ADDR} (hospital side) writing {}, OCSF file {}",
        syslog_file.display(),
        ocsf_file.display()
    );

    let admin_password = password()?;
    let hash = wardgate_controller::console::hash_password(&admin_password)?;
    let data = work.join("controller-data");
    let config = work.join("controller.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {CONTROLLER_ADDR}\ndata: {}\ncerts: {}\nsinks:\n  - kind: syslog\n    address: {SYSLOG_ADDR}\n  - kind: ocsf\n    path: {}\nconsole:\n  listen: {CONSOLE_ADDR}\n  admin:\n    password_hash: '{hash}'\n",
            data.display(),
            certs.display(),
            ocsf_file.display(),
        ),
    )?;
    let controller_log = work.join("controller.log");
    println!(
        "== starting wardgate-controller on {CONTROLLER_ADDR} (hospital side), console on https://{CONSOLE_ADDR}, store in {}",
        data.display()
    );
    let controller = Proc(
        Command::new("ip")
            .args(["netns", "exec", &srv])
            .arg(&bins.controller)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&controller_log)?)
            .spawn()
            .context("starting the controller")?,
    );
    wait_for(&controller_log, "controller serving")?;
    println!("== wardctl push: device-profiles/sites/demo-ward.yaml and the profile library");
    let pushed = wardctl.run(&[
        "push",
        "--site",
        &root
            .join("device-profiles/sites/demo-ward.yaml")
            .display()
            .to_string(),
        "--profiles",
        &root.join("device-profiles").display().to_string(),
        "--reason",
        "CHG-1 commissioning ward 3",
    ])?;
    println!("   {}", pushed.trim());

    let agent_config = work.join("agent.yaml");
    std::fs::write(
        &agent_config,
        format!(
            "interfaces: [{}]\npin_root: {PIN_ROOT}\ndesired_state: {}\ncontroller:\n  address: {CONTROLLER_URL}\n  certs: {}\n  gateway: {GATEWAY}\n  flow_report_every_ms: 300\n",
            lab::DEV_IF,
            work.join("desired.json").display(),
            certs.display(),
        ),
    )?;
    let agent_log = work.join("agent.log");
    println!(
        "== starting wardgate-agent in the gateway namespace; it syncs policy from the controller (log: {})",
        agent_log.display()
    );
    let agent = Proc(
        Command::new(&bins.agent)
            .args(["--netns", &ward.ward.gw, "run", "--config"])
            .arg(&agent_config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log)?)
            .spawn()
            .context("starting the agent")?,
    );
    wait_for(&agent_log, "policy generation switched")?;
    let first: serde_json::Value =
        serde_json::from_str(&wardctl.run(&["--output", "json", "gateways"])?)?;
    wardctl.wait_applied(first[0]["latest_generation"].as_u64().unwrap_or(0))?;
    println!("   wardctl devices:");
    for line in wardctl.run(&["devices", "list"])?.lines() {
        println!("   {line}");
    }
    Ok(Commissioned {
        wardctl,
        syslog_file,
        ocsf_file,
        admin_password,
        agent_log,
        _agent: agent,
        _controller: controller,
        _rsyslog: rsyslog,
    })
}
