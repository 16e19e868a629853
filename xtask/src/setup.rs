//! `cargo xtask setup`: installs everything the build and the test tiers need, idempotently.
//! Each step checks first and prints one line: installed / already present.

use std::process::Command;

use anyhow::Context as _;

use crate::cmd;

/// Userspace toolchain (also pinned in rust-toolchain.toml).
pub const USER_TOOLCHAIN: &str = "1.98.0";
/// eBPF toolchain: the last nightly on LLVM 22 (bpf-linker is built against Debian's LLVM 22).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-07-15";

const APT: &[&str] = &[
    "llvm-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "protobuf-compiler",
    "iproute2",
    "iputils-ping",
    "tshark",
    "nftables",
    "iperf3",
    // New connections per second in `cargo xtask bench throughput`.
    "wrk",
    // ndpiReader: the DPI reference `cargo xtask bench learn` measures learn against.
    "libndpi-bin",
    "dcmtk",
    // The lifecycle and dns-rules tests' DNS and NTP peers (agent/tests/lifecycle_netns.rs,
    // dns_rules_netns.rs): dnsmasq answered by dig, chronyd serving and queried by chronyd -Q.
    "dnsmasq-base",
    "bind9-dnsutils",
    "chrony",
    // A real port scan from a device for the detectors (agent/tests/replay_netns.rs).
    "nmap",
    "python3-pip",
    // The SOC sink tests' syslog collector (controller/tests/soc_sinks.rs), TCP and TLS.
    "rsyslog",
    "rsyslog-gnutls",
    // A real PostgreSQL server per test process (testkit/src/postgres.rs): the store
    // conformance suite (controller/tests/store_conformance.rs) runs PgStore against it, and
    // PgStore's own tests (controller/src/store/postgres/tests.rs) use it too.
    "postgresql",
    // promtool checks both /metrics endpoints; curl scrapes the agent's inside its namespace.
    "prometheus",
    "curl",
    // systemd-analyze (the units are verified) and systemd-sysusers (the controller package).
    "systemd",
    // dpkg-shlibdeps: cargo-deb works out the packages' library dependencies with it.
    "dpkg-dev",
    // The mock Pro Santé Connect's RSA signing key (controller/tests/console_harness/psc.rs).
    "openssl",
    // The console in real headless Chromium (controller/tests/console_browser.rs):
    // playwright-core and axe-core from npm (controller/tests/browser/package-lock.json) drive
    // Debian's chromium; Playwright's own browser download is not used.
    "chromium",
];

/// Node and npm for the browser test: any node with its npm will do (a machine may carry
/// NodeSource's nodejs, which bundles npm and conflicts with Debian's npm package), else
/// Debian's.
fn node() -> anyhow::Result<()> {
    let have = |c: &str| cmd::succeeds(Command::new(c).arg("--version"));
    if have("node") && have("npm") {
        println!("setup: node and npm ........ already present");
        return Ok(());
    }
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends", "nodejs", "npm"]),
    )
    .context("setup step apt-get install nodejs npm")?;
    println!("setup: node and npm ........ installed");
    Ok(())
}

const PIP: &[(&str, &str)] = &[
    ("grpcio", "grpc"),
    ("grpcio-tools", "grpc_tools"),
    // python-hl7: its MLLP client (mllp_send) and server are the attach tier's HL7 peers.
    ("hl7", "hl7.mllp"),
    // The OCSF schema's pydantic models: replay's OCSF output is validated against them.
    ("py-ocsf-models==0.10.0", "py_ocsf_models"),
    // The OCSF project's schema compiler: OCSF output is checked against the official schema
    // of its version (testkit/ocsf/, testkit/tools/ocsf_check.py).
    ("ocsf-lib==0.10.4", "ocsf.compile"),
];

pub fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        println!("setup: apt packages ........ already present");
        return Ok(());
    }
    // tshark asks whether non-root users may capture; answer it up front.
    let mut preseed = Command::new("debconf-set-selections");
    preseed.stdin(std::process::Stdio::piped());
    if let Ok(mut child) = preseed.spawn() {
        use std::io::Write as _;
        if let Some(stdin) = child.stdin.as_mut() {
            let _ = stdin
                .write_all(b"wireshark-common wireshark-common/install-setuid boolean false\n");
        }
        let _ = child.wait();
    }
    cmd::run(Command::new("apt-get").arg("update")).context("setup step apt-get update")?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )
    .context("setup step apt-get install")?;
    println!(
        "setup: apt packages ........ installed {}",
        missing.join(" ")
    );
    Ok(())
}

fn toolchain(name: &str, components: &[&str]) -> anyhow::Result<()> {
    let have = cmd::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("setup step rustup (is rustup installed?)")?;
    let present = have.lines().any(|l| l.starts_with(name));
    let has_components = present
        && components.iter().all(|c| {
            cmd::output(Command::new("rustup").args([
                "component",
                "list",
                "--installed",
                "--toolchain",
                name,
            ]))
            .is_ok_and(|out| out.lines().any(|l| l.starts_with(c)))
        });
    if has_components {
        println!("setup: toolchain {name:<18} already present");
        return Ok(());
    }
    let mut c = Command::new("rustup");
    c.args(["toolchain", "install", name, "--profile", "minimal"]);
    for comp in components {
        c.args(["--component", comp]);
    }
    cmd::run(&mut c).with_context(|| format!("setup step toolchain {name}"))?;
    println!("setup: toolchain {name:<18} installed");
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    if cmd::succeeds(Command::new("bpf-linker").arg("--version")) {
        println!("setup: bpf-linker .......... already present");
        return Ok(());
    }
    // LLVM_PREFIX: /usr/bin/llvm-config on Debian 12 is LLVM 14; without it the link fails
    // with "unable to find library -lLLVM".
    cmd::run(
        Command::new("cargo")
            .arg(format!("+{USER_TOOLCHAIN}"))
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
    )
    .context("setup step bpf-linker")?;
    println!("setup: bpf-linker .......... installed");
    Ok(())
}

fn cargo_deb() -> anyhow::Result<()> {
    let version = crate::package::CARGO_DEB_VERSION;
    if cmd::output(Command::new("cargo").args(["deb", "--version"]))
        .is_ok_and(|out| out.contains(version))
    {
        println!("setup: cargo-deb ........... already present");
        return Ok(());
    }
    cmd::run(
        Command::new("cargo")
            .arg(format!("+{USER_TOOLCHAIN}"))
            .args(["install", "cargo-deb", "--locked", "--version", version]),
    )
    .context("setup step cargo-deb")?;
    println!("setup: cargo-deb ........... installed {version}");
    Ok(())
}

fn pip() -> anyhow::Result<()> {
    let missing: Vec<&str> = PIP
        .iter()
        .filter(|(_, module)| {
            !cmd::succeeds(Command::new("python3").args(["-c", &format!("import {module}")]))
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        println!("setup: python packages ..... already present");
        return Ok(());
    }
    cmd::run(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet"])
            .args(&missing),
    )
    .context("setup step pip install")?;
    println!(
        "setup: python packages ..... installed {}",
        missing.join(" ")
    );
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    apt()?;
    node()?;
    toolchain(USER_TOOLCHAIN, &["clippy", "rustfmt"])?;
    toolchain(EBPF_TOOLCHAIN, &["rust-src", "clippy"])?;
    bpf_linker()?;
    cargo_deb()?;
    pip()?;
    Ok(())
}
