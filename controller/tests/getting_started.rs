//! docs/getting-started.md, run as written: every ```sh block of the page in order, through a
//! shell, with the real `wardctl` and `wardgate-controller` binaries on PATH, in a fresh HOME
//! (so the page's `~/.config/wardgate/wardctl.yaml` is the one wardctl reads) and a fresh data
//! directory. Three things differ from a person's run, each said here: the install block
//! (`sudo dpkg ...`) is skipped, the controller listens on a free port instead of 7443 and the
//! profile library is the source tree's `device-profiles/` instead of the packaged path; and
//! where the page says to let the pump run for a week, the test reports its flows as the
//! gateway's agent would.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use wardgate_analysis::{FlowDirection, FlowRecord, TcpOutcome, flow::DeviceRef};
use wardgate_controller::cli::remote::Remote;
use wardgate_proto::v1::{self as pb, agent_service_client::AgentServiceClient};

const PAGE: &str = include_str!("../../docs/getting-started.md");
const NS: u64 = 1_000_000_000;

/// The page's ```sh blocks, in order.
fn sh_blocks(page: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in page.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```sh block");
    blocks
}

/// A process stopped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Env {
    home: PathBuf,
    work: PathBuf,
    path: String,
}

impl Env {
    fn sh(&self, script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-ec")
            .arg(script)
            .current_dir(&self.work)
            .env("HOME", &self.home)
            .env("PATH", &self.path)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("WARDCTL_CONFIG");
        for k in [
            "WARDGATE_CONTROLLER",
            "WARDGATE_CERTS",
            "WARDGATE_CA",
            "WARDGATE_AS",
            "WARDGATE_SERVER_NAME",
        ] {
            c.env_remove(k);
        }
        c
    }

    fn run(&self, script: &str) -> (bool, String, String) {
        let out = self.sh(script).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }
}

fn opened(peer: &str, proto: u8, port: u16, t: u64) -> FlowRecord {
    FlowRecord {
        device: DeviceRef {
            name: "pump-3a-bed12".into(),
            id: None,
            mac: None,
        },
        direction: FlowDirection::Opened,
        device_addr: "192.0.2.10".parse().unwrap(),
        device_port: 40_000,
        peer: peer.parse().unwrap(),
        peer_port: port,
        proto,
        port,
        icmp_type: None,
        vlan: None,
        packets_out: 10,
        bytes_out: 1000,
        packets_in: 5,
        bytes_in: 300,
        first_seen_ns: t,
        last_seen_ns: t + 2 * NS,
        tcp: (proto == 6).then_some(TcpOutcome::Established),
        outcome: wardgate_analysis::FlowOutcome::Established,
        rule: None,
        app: None,
        tcp_flags: None,
        peer_name: None,
        continuation: false,
    }
}

/// What the gateway's agent would report over a week of the pump's use.
fn report_a_week(url: &str, certs: &Path) {
    let remote = Remote::to(
        url.to_string(),
        certs.to_path_buf(),
        "gateway-gw-ward-3",
        "localhost",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut records = Vec::new();
    for day in 1..7u64 {
        let t = now - day * 86_400 * NS;
        records.push(opened("198.51.100.30", 6, 443, t));
        records.push(opened("198.51.100.53", 17, 53, t + NS));
        records.push(opened("198.51.100.123", 17, 123, t + 2 * NS));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ack = rt.block_on(async {
        let mut agent = AgentServiceClient::new(remote.channel().await.unwrap());
        agent
            .report_flows(pb::FlowBatch {
                gateway: String::new(),
                records: records.iter().map(pb::FlowRecord::from).collect(),
            })
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!((ack.stored, ack.unknown_device), (18, 0), "{ack:?}");
}

#[test]
fn the_getting_started_page_runs_as_written() {
    let blocks = sh_blocks(PAGE);
    let home = tempfile::tempdir().unwrap();
    let work = home.path().join("wardgate");
    std::fs::create_dir_all(&work).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_wardctl")).parent().unwrap();
    assert!(
        bin_dir.join("wardgate-controller").exists(),
        "{bin_dir:?} lacks wardgate-controller"
    );
    let env = Env {
        home: home.path().to_path_buf(),
        work: work.clone(),
        path: format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://localhost:{port}");
    let library = concat!(env!("CARGO_MANIFEST_DIR"), "/../device-profiles");

    let mut skipped = 0;
    let mut controller: Option<Running> = None;
    let mut outputs: Vec<(String, String)> = Vec::new();
    for block in &blocks {
        let block = block
            .replace("7443", &port.to_string())
            .replace("/usr/share/wardgate/profiles", library);
        if block.starts_with("sudo ") {
            skipped += 1;
            continue;
        }
        if block.starts_with("wardgate-controller ") {
            let child = env
                .sh(&format!("exec {block}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            controller = Some(Running(child));
            // Ready when wardctl gets an answer.
            let start = Instant::now();
            loop {
                let (ok, _, err) = env.run("wardctl gateways");
                if ok {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "the controller did not come up: {err}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            continue;
        }
        if block.contains("cat > ~/.config/wardgate/wardctl.yaml") {
            // Before the config file: wardctl cannot know the certificates, and says which
            // flag chooses them.
            let (ok, _, err) = env.run("wardctl gateways");
            assert!(!ok);
            assert!(
                err.starts_with("error: ") && err.contains("--certs"),
                "{err}"
            );
        }
        let (ok, out, err) = env.run(&block);
        assert!(ok, "the block\n{block}\nfailed:\n{out}\n{err}");
        if block.contains("wardctl push ") {
            report_a_week(&url, &work.join("certs"));
        }
        outputs.push((block, out + &err));
    }
    if std::env::var_os("SHOW_PAGE").is_some() {
        for (b, o) in &outputs {
            eprintln!("$ {b}{o}");
        }
    }
    assert_eq!(skipped, 1, "only the install block is skipped");
    assert!(controller.is_some(), "the page starts the controller");
    let said = |needle: &str| -> String {
        outputs
            .iter()
            .find(|(b, _)| b.contains(needle))
            .unwrap_or_else(|| panic!("no block runs `{needle}`"))
            .1
            .clone()
    };
    // What a person sees at each step.
    let certs = said("wardctl certs init");
    assert!(
        certs.contains("1 gateway and 1 user certificates"),
        "{certs}"
    );
    let push = said("wardctl push");
    assert!(push.contains("pushed 1 gateways"), "{push}");
    assert!(push.contains("pump-3a-bed12"), "devices list: {push}");
    let sim = said("wardctl simulate");
    assert!(
        sim.contains("0 of 18 recorded flows would be blocked"),
        "{sim}"
    );
    let proposed = std::fs::read_to_string(work.join("proposed-pump-3a-bed12.yaml")).unwrap();
    assert!(
        proposed.contains("name: proposed-pump-3a-bed12"),
        "{proposed}"
    );
    let dry = said("--dry-run");
    assert!(
        dry.contains(
            "dry run: nothing was changed\n\
             pump-3a-bed12 on gw-ward-3: profile infusion-pump -> proposed-pump-3a-bed12\n  \
             - udp/514 to syslog\n"
        ),
        "{dry}"
    );
    let end = said("wardctl audit list");
    for want in [
        "mode       enforce: only what its profile allows passes",
        "profile    proposed-pump-3a-bed12",
        "tcp/443 to infusion-server",
        "udp/53 to dns",
        "udp/123 to ntp",
        "gw-ward-3: never connected",
    ] {
        assert!(end.contains(want), "`{want}` missing from:\n{end}");
    }
    assert!(end.contains("CHG-1004 enforce after a quiet week"), "{end}");
    assert!(end.contains("user:alice"), "the audit names alice: {end}");
}

#[test]
fn every_sh_block_is_found() {
    // The runner above sees every block a person would copy; a block with another language
    // tag would silently not be run.
    let fences = PAGE.lines().filter(|l| l.starts_with("```")).count();
    assert_eq!(
        fences,
        2 * sh_blocks(PAGE).len(),
        "every fenced block is ```sh"
    );
}
