//! `cargo xtask bench console`: the console's inventory and device pages at 20,000 devices and
//! 7 days of flow rows, over real HTTPS with a logged-in session, next to the same data read
//! with `wardctl --output json` against the same controller (mTLS gRPC). Interleaved A B, B A
//! over the rounds; prints median, p95 and the spread (min-max) per row, and whether the pages
//! meet p95 < 150 ms. A benchmark, not a test.
//!
//! The store: 20,000 devices (pumps and monitors, 20 gateways), each with flow records every
//! `WG_BENCH_RECORDS_PER_DAY` hours-apart slots (default 4: every 6 hours) for each of 4 peer
//! keys (infusion server tcp/443, DNS, NTP, and tcp/8443 that the pump profile denies) on each
//! of the last 7 UTC days: 560,000 flow rows (the store folds records per device, peer key and
//! day), 2,240,000 records. `WG_BENCH_ROUNDS` (default 40) rounds.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use wardgate_analysis::{FlowDirection, FlowOutcome, FlowRecord, TcpOutcome, flow::DeviceRef};
use wardgate_controller::{
    auth::Role,
    config::ConsoleConfig,
    console::{
        self,
        session::{self, LoginSource, Principal},
    },
    server::{self, Settings, TlsFiles},
    store::{FlowLimits, Store},
};
use wardgate_proto::v1 as pb;
use wardgate_testkit::controller::LabController;

const DEVICES: usize = 20_000;
const GATEWAYS: usize = 20;
const DAYS: u64 = 7;
const GOAL: Duration = Duration::from_millis(150);
const DAY_NS: u64 = 86_400 * 1_000_000_000;

fn gateway(i: usize) -> String {
    format!("gw-bench-{i:02}")
}

fn device(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("pump-{i:05}")
    } else {
        format!("monitor-{i:05}")
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

async fn seed(lab: &LabController, root: &Path) -> anyhow::Result<()> {
    let (site, _) = wardgate_controller::cli::push::read(
        &root.join("device-profiles/sites/demo-ward.yaml"),
        &root.join("device-profiles"),
    )?;
    let mut admin = lab.admin("eve").await?;
    let mut profiles = Vec::new();
    for p in ["infusion-pump", "patient-monitor"] {
        let path = root.join(format!("device-profiles/{p}.yaml"));
        profiles.push(std::fs::read_to_string(&path).with_context(|| format!("{path:?}"))?);
    }
    let devices = (0..DEVICES)
        .map(|i| {
            let mut d = pb::Device {
                name: device(i),
                id: i as u32 + 1,
                mac: format!(
                    "02:00:00:{:02x}:{:02x}:{:02x}",
                    i >> 16,
                    (i >> 8) & 0xff,
                    i & 0xff
                ),
                addresses: vec![format!("2001:db8:1::{:x}", i + 16)],
                profile: if i.is_multiple_of(2) {
                    "infusion-pump"
                } else {
                    "patient-monitor"
                }
                .into(),
                gateway: gateway(i % GATEWAYS),
                location: format!("ward {} bed {}", i % 40, i % 30),
                asset_id: format!("BIO-{i:05}"),
                ..Default::default()
            };
            d.set_mode(Some(if i % 10 == 0 {
                wardgate_policy::Mode::Enforce
            } else {
                wardgate_policy::Mode::Learn
            }));
            d
        })
        .collect();
    admin
        .apply_site(pb::ApplySiteRequest {
            gateways: (0..GATEWAYS)
                .map(|i| pb::Gateway {
                    name: gateway(i),
                    interfaces: vec!["wg-dev0".into()],
                    ..Default::default()
                })
                .collect(),
            groups: site
                .groups
                .iter()
                .map(|(name, cidrs)| pb::Group {
                    name: name.clone(),
                    cidrs: cidrs.iter().map(|c| c.value.clone()).collect(),
                })
                .collect(),
            profiles,
            devices,
            reason: "BENCH-1".into(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Flow records of the last `DAYS` days for every device, stored through the store's own
/// insert (its row cap and retention apply). Returns (records, seconds).
fn flows(store: &dyn Store, per_day: u64) -> anyhow::Result<(u64, f64)> {
    let t = Instant::now();
    let now = now_ns();
    let today = now - now % DAY_NS;
    let peers: [(&str, u8, u16); 4] = [
        ("198.51.100.30", 6, 443),
        ("198.51.100.53", 17, 53),
        ("198.51.100.123", 17, 123),
        ("198.51.100.30", 6, 8443),
    ];
    let mut total = 0u64;
    for g in 0..GATEWAYS {
        let mut batch = Vec::new();
        for i in (g..DEVICES).step_by(GATEWAYS) {
            for day in 0..DAYS {
                for slot in 0..per_day {
                    let start = today - day * DAY_NS + slot * (DAY_NS / per_day);
                    if start > now {
                        continue;
                    }
                    for (peer, proto, port) in peers {
                        batch.push(FlowRecord {
                            device: DeviceRef {
                                name: device(i),
                                id: None,
                                mac: None,
                            },
                            direction: FlowDirection::Opened,
                            device_addr: format!("2001:db8:1::{:x}", i + 16).parse()?,
                            device_port: 40_000,
                            peer: peer.parse()?,
                            peer_port: port,
                            proto,
                            port,
                            icmp_type: None,
                            vlan: None,
                            packets_out: 10,
                            bytes_out: 1_000,
                            packets_in: 10,
                            bytes_in: 4_000,
                            first_seen_ns: start,
                            last_seen_ns: start + 1_000_000_000,
                            tcp: (proto == 6).then_some(TcpOutcome::Established),
                            outcome: FlowOutcome::Established,
                            rule: None,
                            app: None,
                            tcp_flags: None,
                            peer_name: None,
                            continuation: false,
                        });
                    }
                }
            }
            if batch.len() >= 20_000 {
                total += batch.len() as u64;
                store.insert_flows(&gateway(g), &batch, now, FlowLimits::default())?;
                batch.clear();
            }
        }
        total += batch.len() as u64;
        store.insert_flows(&gateway(g), &batch, now, FlowLimits::default())?;
    }
    Ok((total, t.elapsed().as_secs_f64()))
}

struct Row {
    name: String,
    samples: Vec<Duration>,
    page: bool,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let wardctl = PathBuf::from(
        std::env::var("WG_WARDCTL").context("WG_WARDCTL: the wardctl binary to compare with")?,
    );
    let rounds = env_or("WG_BENCH_ROUNDS", 40);
    let per_day = env_or("WG_BENCH_RECORDS_PER_DAY", 4) as u64;
    let dir = tempfile::tempdir()?;
    let gateways: Vec<String> = (0..GATEWAYS).map(gateway).collect();
    let lab = LabController::start(dir.path(), &gateways, &[("eve", "engineer")]).await?;
    let t = Instant::now();
    seed(&lab, &root).await?;
    println!(
        "seeded {DEVICES} devices on {GATEWAYS} gateways in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let store = lab.store.clone();
    let (records, secs) = tokio::task::block_in_place(|| flows(store.as_ref(), per_day))?;
    println!(
        "stored {records} flow records ({per_day} a day per peer key, 4 peer keys, {DAYS} days) in {secs:.1} s"
    );

    // The console on the same store, HTTPS with the lab's server certificate.
    let ctx = server::context(store.clone(), lab.metrics.clone(), &Settings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cfg = ConsoleConfig::new(addr);
    let tls = TlsFiles::in_dir(lab.certs());
    let served = ctx.clone();
    let task = tokio::spawn(async move { console::serve(served, &cfg, &tls, listener).await });
    let (cookie, _) = session::start(
        store.as_ref(),
        Principal {
            name: "vera".into(),
            role: Role::Viewer,
            source: LoginSource::Local,
        },
    )?;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
            lab.certs().join("ca.pem"),
        )?)?)
        .resolve("localhost", addr)
        .build()?;
    let base = format!("https://localhost:{}", addr.port());
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{base}{path}");
        let cookie = format!("{}={cookie}", session::COOKIE);
        async move {
            let t = Instant::now();
            let r = client
                .get(&url)
                .header("cookie", cookie)
                .header("accept-language", "en")
                .send()
                .await?;
            let status = r.status();
            let body = r.text().await?;
            let took = t.elapsed();
            if !status.is_success() {
                bail!("GET {url}: {status}: {}", &body[..body.len().min(300)]);
            }
            anyhow::Ok((took, body))
        }
    };
    let run_wardctl = |args: Vec<String>| {
        let mut cmd = std::process::Command::new(&wardctl);
        cmd.args(["--output", "json"])
            .args(&args)
            .env("WARDGATE_CONTROLLER", lab.url())
            .env("WARDGATE_CERTS", lab.certs())
            .env("WARDGATE_AS", "user-eve");
        async move {
            let t = Instant::now();
            let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
            let took = t.elapsed();
            if !out.status.success() {
                bail!("wardctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            anyhow::Ok((took, out.stdout.len()))
        }
    };
    let gw = gateway(7);
    let dev = device(4242);
    // Sanity: the pages hold what they should.
    let (_, first) = get("/".into()).await?;
    if !first.contains(&format!("{DEVICES}</span>")) {
        bail!("the inventory does not count {DEVICES} devices");
    }
    let (_, page) = get(format!("/devices/{dev}")).await?;
    if !page.contains(&dev) {
        bail!("the device page does not name {dev}");
    }
    let mut rows = vec![
        Row {
            name: "page: inventory, first page (50 of 20,000)".into(),
            samples: Vec::new(),
            page: true,
        },
        Row {
            name: format!("page: inventory, search `bed 12` + gateway {gw}"),
            samples: Vec::new(),
            page: true,
        },
        Row {
            name: format!("page: device {dev}"),
            samples: Vec::new(),
            page: true,
        },
        Row {
            name: format!("wardctl --output json devices list --gateway {gw} (1,000)"),
            samples: Vec::new(),
            page: false,
        },
        Row {
            name: "wardctl --output json devices list (20,000)".into(),
            samples: Vec::new(),
            page: false,
        },
        Row {
            name: format!("wardctl --output json devices show {dev}"),
            samples: Vec::new(),
            page: false,
        },
    ];
    for round in 0..rounds {
        // A B in even rounds, B A in odd ones: neither side always goes first.
        let mut order: Vec<usize> = vec![0, 3, 1, 4, 2, 5];
        if round % 2 == 1 {
            order = vec![3, 0, 4, 1, 5, 2];
        }
        for i in order {
            let took = match i {
                0 => get("/".into()).await?.0,
                1 => get(format!("/?q=bed+12&gateway={gw}")).await?.0,
                2 => get(format!("/devices/{dev}")).await?.0,
                3 => {
                    run_wardctl(vec![
                        "devices".into(),
                        "list".into(),
                        "--gateway".into(),
                        gw.clone(),
                    ])
                    .await?
                    .0
                }
                4 => run_wardctl(vec!["devices".into(), "list".into()]).await?.0,
                _ => {
                    run_wardctl(vec!["devices".into(), "show".into(), dev.clone()])
                        .await?
                        .0
                }
            };
            rows[i].samples.push(took);
        }
    }
    println!();
    println!(
        "{:<62} {:>9} {:>9} {:>17}  goal",
        "what (ms)", "median", "p95", "spread (min-max)"
    );
    let mut all_met = true;
    for r in &mut rows {
        r.samples.sort();
        let p95 = pct(&r.samples, 0.95);
        let goal = if r.page {
            let met = p95 < GOAL;
            all_met &= met;
            if met {
                "p95 < 150: met"
            } else {
                "p95 < 150: MISSED"
            }
        } else {
            ""
        };
        println!(
            "{:<62} {:>9} {:>9} {:>17}  {goal}",
            r.name,
            ms(pct(&r.samples, 0.5)),
            ms(p95),
            format!(
                "{}-{}",
                ms(r.samples[0]),
                ms(*r.samples.last().expect("samples"))
            ),
        );
    }
    println!(
        "\n{rounds} rounds; pages over HTTPS (keep-alive, logged-in session); wardctl each time a new process (start, mTLS handshake, JSON)."
    );
    println!(
        "pages: {}",
        if all_met {
            "every p95 under 150 ms"
        } else {
            "a p95 missed 150 ms"
        }
    );
    task.abort();
    lab.shutdown().await?;
    Ok(())
}
