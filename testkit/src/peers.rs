//! Real peers for the attach tier, run in the ward's namespaces: dcmtk's storescp (a PACS),
//! python-hl7's MLLP server (an HL7 engine), dnsmasq (DNS) and chronyd (NTP), each ended when
//! its handle drops; and bounded runs of their clients (echoscu, storescu, mllp_send, dig,
//! chronyd -Q). The Debian and Python packages come from `cargo xtask setup`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// `program` run inside namespace `ns`.
pub fn in_netns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// A process a test started, ended on drop.
pub struct Peer(pub Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Peer {
    /// Sends SIGHUP (dnsmasq re-reads its hosts files). `ip netns exec` execs the program, so
    /// the child's pid is the peer's.
    pub fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.0.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -HUP {}", self.0.id());
    }
}

fn spawn(mut c: Command, what: &str) -> Peer {
    Peer(
        c.spawn()
            .unwrap_or_else(|e| panic!("{what}: {e} (installed by `cargo xtask setup`)")),
    )
}

/// Runs a client to completion within `limit` (killed then); whether it succeeded, its output
/// (stdout and stderr).
pub fn run_within(mut cmd: Command, limit: Duration) -> (bool, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (installed by `cargo xtask setup`)"));
    let deadline = Instant::now() + limit;
    let ok = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (ok, std::fs::read_to_string(out.path()).unwrap_or_default())
}

/// Retries a client (each try bounded to 10 s) until it succeeds, as while its server starts;
/// panics with its output past `limit`. Its output.
pub fn until_ok(what: &str, limit: Duration, mut make: impl FnMut() -> Command) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (ok, out) = run_within(make(), Duration::from_secs(10));
        if ok {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never succeeded:\n{out}\n{cmd:?}",
            cmd = make()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// dcmtk's storescp in `ns` on `port` as AE `aet`, storing into `dir` (created).
pub fn storescp(ns: &str, aet: &str, port: u16, dir: &Path) -> Peer {
    std::fs::create_dir_all(dir).unwrap();
    let mut c = in_netns(ns, "storescp");
    // -dhl: no reverse DNS lookups of callers (the namespaces have no resolver).
    c.args(["-dhl", "-aet", aet, "-od"])
        .arg(dir)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    spawn(c, "storescp")
}

/// python-hl7's MLLP server in `ns` on `addr`:`port`, acknowledging every message (AA) and
/// appending each, one per line, to `received`.
pub fn mllp_server(ns: &str, addr: &str, port: u16, received: &Path) -> Peer {
    let mut c = in_netns(ns, "python3");
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agent/tests/python/mllp_server.py"
    ))
    .args([addr, &port.to_string()])
    .arg(received)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    spawn(c, "python3 (python-hl7)")
}

/// dnsmasq in `ns` answering on `addr`:53 for `names` (name, address) only: no upstream, no
/// hosts file. Its pid file and log go in `dir`.
pub fn dns_server(ns: &str, addr: &str, names: &[(&str, &str)], dir: &Path) -> Peer {
    let mut c = in_netns(ns, "dnsmasq");
    c.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--user=root",
        "--log-queries",
        "--log-facility=-",
    ])
    .arg(format!("--listen-address={addr}"))
    .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
    for (name, a) in names {
        c.arg(format!("--address=/{name}/{a}"));
    }
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("dnsmasq.log")).unwrap());
    spawn(c, "dnsmasq (dnsmasq-base)")
}

/// dnsmasq in `ns` answering on `addr`:53 from `hosts` (a hosts file: re-read on SIGHUP,
/// [`Peer::hup`]) and `cnames` (alias, target in `hosts`), every answer with TTL `ttl_s`; no
/// upstream, not the system's hosts file or resolv.conf. Its pid file and log go in `dir`.
pub fn dns_server_hosts(
    ns: &str,
    addr: &str,
    hosts: &Path,
    cnames: &[(&str, &str)],
    ttl_s: u32,
    dir: &Path,
) -> Peer {
    let mut c = in_netns(ns, "dnsmasq");
    c.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--user=root",
        "--log-queries",
        "--log-facility=-",
        "--conf-file=/dev/null",
    ])
    .arg(format!("--listen-address={addr}"))
    .arg(format!("--addn-hosts={}", hosts.display()))
    .arg(format!("--local-ttl={ttl_s}"))
    .arg(format!(
        "--pid-file={}",
        dir.join(format!("dnsmasq-{addr}.pid")).display()
    ));
    for (alias, target) in cnames {
        c.arg(format!("--cname={alias},{target},{ttl_s}"));
    }
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("dnsmasq-{addr}.log"))).unwrap());
    spawn(c, "dnsmasq (dnsmasq-base)")
}

/// chronyd in `ns` serving NTP on `addr`:123 from its own clock (local stratum 8), never
/// touching the system clock (-x). Its config, pid file and log go in `dir`.
pub fn ntp_server(ns: &str, addr: &str, dir: &Path) -> Peer {
    let conf = dir.join("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "allow all\nlocal stratum 8\nport 123\ncmdport 0\nbindaddress {addr}\n\
             pidfile {}\n",
            dir.join("chronyd.pid").display()
        ),
    )
    .unwrap();
    let mut c = in_netns(ns, "chronyd");
    c.args(["-d", "-x", "-u", "root", "-f"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("chronyd.log")).unwrap());
    spawn(c, "chronyd (chrony)")
}

/// One NTP query from `ns` to `server` (chronyd -Q: measures the offset, sets nothing); fails
/// when no answer comes within 3 s. `dir` holds its pid file.
pub fn ntp_query(ns: &str, server: &str, dir: &Path) -> Command {
    let mut c = in_netns(ns, "chronyd");
    c.args(["-Q", "-t", "3", "-u", "root"])
        .arg(format!("server {server} iburst maxsamples 1"))
        .arg(format!("pidfile {}", dir.join("chronyd-q.pid").display()))
        .arg("cmdport 0");
    c
}

/// One DNS query for `name` from `ns` to `server` (dig, one try of 1 s; the answer alone).
pub fn dns_query(ns: &str, server: &str, name: &str) -> Command {
    let mut c = in_netns(ns, "dig");
    c.arg(format!("@{server}"))
        .args([name, "A", "+short", "+time=1", "+tries=1"]);
    c
}

/// A DICOM file (a 64x64 gradient image made by dcmtk's img2dcm) at `dir/image.dcm`.
pub fn dicom_image(dir: &Path) -> PathBuf {
    dicom_image_sized(dir, 64, 64)
}

/// A DICOM file of a `w` x `h` gradient image (3 bytes a pixel: 1024 x 1024 is 3 MiB) at
/// `dir/image-WxH.dcm`.
pub fn dicom_image_sized(dir: &Path, w: u32, h: u32) -> PathBuf {
    let bmp = dir.join(format!("image-{w}x{h}.bmp"));
    let dcm = dir.join(format!("image-{w}x{h}.dcm"));
    std::fs::write(&bmp, bmp_gradient_sized(w, h)).unwrap();
    let mut c = Command::new("img2dcm");
    c.args(["-i", "BMP"]).arg(&bmp).arg(&dcm);
    let (ok, out) = run_within(c, Duration::from_secs(30));
    assert!(ok, "img2dcm:\n{out}");
    dcm
}

/// A 24-bit 64x64 BMP with a gradient, for img2dcm.
pub fn bmp_gradient() -> Vec<u8> {
    bmp_gradient_sized(64, 64)
}

/// A 24-bit `w` x `h` BMP with a gradient (`w` a multiple of 4: rows need no padding).
pub fn bmp_gradient_sized(w: u32, h: u32) -> Vec<u8> {
    assert!(w.is_multiple_of(4), "rows of {w} pixels would need padding");
    let size = 54 + w * h * 3;
    let mut b = b"BM".to_vec();
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
            b.extend_from_slice(&[x as u8, y as u8, (x + y) as u8]);
        }
    }
    b
}
