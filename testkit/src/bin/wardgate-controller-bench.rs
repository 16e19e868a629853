//! `cargo xtask bench controller`: the controller on loopback with real mTLS and the SQLite
//! store, 500 gateways each watched by its own agent connection, with 500 and then 20,000
//! devices (one site push each). Prints a table: assign -> received latency (one at a time,
//! and 500 at once), next to a unary read round trip over the same connection (interleaved
//! with the one-at-a-time assignments); alert ingest through the agent stream, next to the
//! store's own insert rate; and the goals, met or not. A benchmark, not a test: it asserts
//! nothing but that every generation arrives.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::sync::mpsc;
use wardgate_controller::store::Store;
use wardgate_proto::v1::{self as pb};
use wardgate_testkit::controller::LabController;

const AGENTS: usize = 500;
/// Hospital sizes measured: devices spread evenly over the gateways.
const SIZES: [usize; 2] = [500, 20_000];
/// Devices per site push (one message each: under `MAX_SITE_BYTES`).
const PUSH_CHUNK: usize = 20_000;
const SEQUENTIAL: usize = 200;
const ALERT_STREAMS: usize = 20;
const ALERT_BATCHES: usize = 50;
const ALERT_BATCH: usize = 100;
const REASON: &str = "BENCH-1";

fn gateway(i: usize) -> String {
    format!("gw-bench-{i:03}")
}

fn device(i: usize) -> String {
    format!("pump-{i:05}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
    n: usize,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    Stats {
        p50: percentile(&v, 0.50),
        p99: percentile(&v, 0.99),
        max: *v.last().expect("samples"),
        n: v.len(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Gateways, the demo site's groups, the profile library, and `devices` pumps, device `i` on
/// gateway `i % AGENTS`: pushed as a site (one transaction per chunk).
async fn seed(
    lab: &LabController,
    root: &std::path::Path,
    devices: usize,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let (site, set) = wardgate_controller::cli::push::read(
        &root.join("device-profiles/sites/demo-ward.yaml"),
        &root.join("device-profiles"),
    )?;
    let mut admin = lab.admin("eve").await?;
    let mut profiles = Vec::new();
    for (file, _) in set.profiles.values() {
        profiles.push(std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?);
    }
    let pumps: Vec<pb::Device> = (0..devices)
        .map(|i| pb::Device {
            name: device(i),
            id: i as u32 + 1,
            mac: format!(
                "02:00:00:{:02x}:{:02x}:{:02x}",
                i >> 16,
                (i >> 8) & 0xff,
                i & 0xff
            ),
            addresses: vec![format!("2001:db8:1::{:x}", i + 16)],
            profile: "infusion-pump".into(),
            mode: "enforce".into(),
            gateway: gateway(i % AGENTS),
            ..Default::default()
        })
        .collect();
    let mut first = true;
    for chunk in pumps.chunks(PUSH_CHUNK) {
        let mut req = pb::ApplySiteRequest {
            devices: chunk.to_vec(),
            reason: REASON.into(),
            ..Default::default()
        };
        if first {
            req.gateways = (0..AGENTS)
                .map(|i| pb::Gateway {
                    name: gateway(i),
                    interfaces: vec!["wg-dev0".into()],
                    ..Default::default()
                })
                .collect();
            req.groups = site
                .groups
                .iter()
                .map(|(name, cidrs)| pb::Group {
                    name: name.clone(),
                    cidrs: cidrs.iter().map(|c| c.value.clone()).collect(),
                })
                .collect();
            req.profiles = std::mem::take(&mut profiles);
            first = false;
        }
        admin.apply_site(req).await?;
    }
    Ok(t.elapsed())
}

/// One watching agent per gateway; every bundle received goes to `seen` as (gateway, generation).
async fn watchers(
    lab: &LabController,
    seen: mpsc::UnboundedSender<(usize, u32, Instant)>,
) -> anyhow::Result<tokio::task::JoinSet<()>> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..AGENTS {
        let mut agent = lab.agent(&gateway(i)).await?;
        // As an agent holding the latest generation: only new ones arrive.
        let latest = lab.store.latest(&gateway(i))?;
        let mut stream = agent
            .watch_policy(pb::WatchPolicyRequest {
                gateway: gateway(i),
                last_applied_generation: latest.as_ref().map_or(0, |r| r.generation),
                epoch: lab.store.epoch()?,
                content_hash: latest.map(|r| r.content_hash()).unwrap_or_default(),
            })
            .await?
            .into_inner();
        let seen = seen.clone();
        tasks.spawn(async move {
            let _keep = agent;
            while let Ok(Some(b)) = stream.message().await {
                let _ = seen.send((i, b.generation, Instant::now()));
            }
        });
    }
    Ok(tasks)
}

async fn wait_for(
    seen: &mut mpsc::UnboundedReceiver<(usize, u32, Instant)>,
    early: &mut HashMap<(usize, u32), Instant>,
    gw: usize,
    generation: u32,
) -> anyhow::Result<Instant> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(t) = early.remove(&(gw, generation)) {
            return Ok(t);
        }
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some((g, n, t))) => {
                early.insert((g, n), t);
            }
            _ => bail!("generation {generation} of {} never arrived", gateway(gw)),
        }
    }
}

fn alert(id: String) -> pb::Alert {
    pb::Alert {
        id,
        device: device(0),
        profile: "infusion-pump".into(),
        kind: "deny".into(),
        severity: "high".into(),
        mode: "enforce".into(),
        src: "2001:db8:1::10".into(),
        src_port: 40000,
        dst: "2001:db8:2::10".into(),
        dst_port: 445,
        protocol: 6,
        ..Default::default()
    }
}

/// What one hospital size measured.
struct Figures {
    devices: usize,
    seed: Duration,
    read: Stats,
    one: Stats,
    burst: Stats,
    burst_wall: Duration,
    /// Alert ingest: (alerts, through the agent stream, the store alone).
    ingest: Option<(usize, Duration, Duration)>,
}

/// A controller with `devices` devices on `AGENTS` gateways, each watched by its agent.
async fn scenario(root: &std::path::Path, devices: usize, alerts: bool) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let gateways: Vec<String> = (0..AGENTS).map(gateway).collect();
    eprintln!(
        "bench: {devices} devices: certificates for {AGENTS} gateways, controller on loopback"
    );
    let lab = LabController::start(
        dir.path(),
        &gateways,
        &[("eve", "engineer"), ("sam", "soc")],
    )
    .await?;
    let seed_time = seed(&lab, root, devices).await?;
    eprintln!("bench: seeded {AGENTS} gateways and {devices} devices in {seed_time:.1?}");

    let (tx, mut seen) = mpsc::unbounded_channel();
    let t = Instant::now();
    let mut agents = watchers(&lab, tx).await?;
    eprintln!(
        "bench: {AGENTS} agents connected (mTLS) and watching in {:.1?}",
        t.elapsed()
    );
    let mut early = HashMap::new();
    let mut admin = lab.admin("eve").await?;

    // One assignment at a time, spread over the gateways (7 is coprime to 500: all distinct),
    // each after a unary read over the same connection (the baseline, interleaved).
    let mut read = Vec::new();
    let mut one = Vec::new();
    for k in 0..SEQUENTIAL {
        let gw = (k * 7) % AGENTS;
        let t = Instant::now();
        admin
            .get_device(pb::GetDeviceRequest { name: device(gw) })
            .await?;
        read.push(t.elapsed());
        let t = Instant::now();
        let w = admin
            .assign_profile(pb::AssignProfileRequest {
                device: device(gw),
                profile: "patient-monitor".into(),
                reason: REASON.into(),
            })
            .await?
            .into_inner();
        let Some(&generation) = w.generations.get(&gateway(gw)) else {
            bail!("assignment on {} compiled no generation", gateway(gw));
        };
        if w.generations.len() != 1 {
            bail!("one assignment recompiled {} gateways", w.generations.len());
        }
        let got = wait_for(&mut seen, &mut early, gw, generation).await?;
        one.push(got - t);
    }

    // Every gateway at once: 500 assignments in flight on one admin connection.
    let t = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for gw in 0..AGENTS {
        let mut admin = admin.clone();
        calls.spawn(async move {
            let current = admin
                .get_device(pb::GetDeviceRequest { name: device(gw) })
                .await?
                .into_inner()
                .profile;
            let other = if current == "infusion-pump" {
                "patient-monitor"
            } else {
                "infusion-pump"
            };
            let start = Instant::now();
            let w = admin
                .assign_profile(pb::AssignProfileRequest {
                    device: device(gw),
                    profile: other.into(),
                    reason: REASON.into(),
                })
                .await?
                .into_inner();
            anyhow::Ok((gw, w.generations[&gateway(gw)], start))
        });
    }
    let mut burst = Vec::new();
    while let Some(r) = calls.join_next().await {
        let (gw, generation, start) = r??;
        let got = wait_for(&mut seen, &mut early, gw, generation).await?;
        burst.push(got - start);
    }
    let burst_wall = t.elapsed();

    let ingest = if alerts {
        Some(ingest(&lab).await?)
    } else {
        None
    };
    // The agents hang up first, so the server can stop gracefully.
    agents.shutdown().await;
    drop(admin);
    lab.shutdown().await?;
    Ok(Figures {
        devices,
        seed: seed_time,
        read: stats(read),
        one: stats(one),
        burst: stats(burst),
        burst_wall,
        ingest,
    })
}

/// Alert ingest: ALERT_STREAMS agents stream batches, counted on acknowledgements; then the
/// store's own batched insert of as many alerts, no gRPC.
async fn ingest(lab: &LabController) -> anyhow::Result<(usize, Duration, Duration)> {
    let total = ALERT_STREAMS * ALERT_BATCHES * ALERT_BATCH;
    let t = Instant::now();
    let mut streams = tokio::task::JoinSet::new();
    for s in 0..ALERT_STREAMS {
        let mut agent = lab.agent(&gateway(s)).await?;
        streams.spawn(async move {
            let batches: Vec<pb::AlertBatch> = (0..ALERT_BATCHES)
                .map(|b| pb::AlertBatch {
                    alerts: (0..ALERT_BATCH)
                        .map(|a| alert(format!("s{s}-b{b}-a{a}")))
                        .collect(),
                })
                .collect();
            let mut acks = agent
                .report_alerts(tokio_stream::iter(batches))
                .await?
                .into_inner();
            let mut acked = 0;
            while let Some(a) = acks.message().await? {
                acked += a.ids.len();
            }
            anyhow::Ok(acked)
        });
    }
    let mut acked = 0;
    while let Some(r) = streams.join_next().await {
        acked += r??;
    }
    let through = t.elapsed();
    if acked != total {
        bail!("{acked} of {total} alerts acknowledged");
    }
    let t = Instant::now();
    for b in 0..total / ALERT_BATCH {
        let rows: Vec<wardgate_controller::store::NewAlert> = (0..ALERT_BATCH)
            .map(|a| wardgate_controller::store::NewAlert {
                id: format!("direct-b{b}-a{a}"),
                device: String::new(),
                severity: 3,
                body: "{}".to_string(),
                detector: String::new(),
                peer: String::new(),
                count: 1,
                last_seen_ns: 0,
            })
            .collect();
        lab.store.insert_alerts(&gateway(0), &rows)?;
    }
    Ok((total, through, t.elapsed()))
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut runs = Vec::new();
    for (i, devices) in SIZES.into_iter().enumerate() {
        runs.push(scenario(&root, devices, i == 0).await?);
    }

    println!(
        "\nwardgate controller bench: {AGENTS} gateways, each watched by its own mTLS agent connection, SQLite store (WAL)\n"
    );
    println!("| devices | measurement | n | p50 ms | p99 ms | max ms | p50 vs baseline |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for f in &runs {
        println!(
            "| {} | baseline: GetDevice round trip (same connection, interleaved) | {} | {} | {} | {} | 1.0x |",
            f.devices,
            f.read.n,
            ms(f.read.p50),
            ms(f.read.p99),
            ms(f.read.max)
        );
        for (name, s) in [
            ("assign -> received, one at a time", &f.one),
            ("assign -> received, 500 in flight", &f.burst),
        ] {
            println!(
                "| {} | {name} | {} | {} | {} | {} | {:.1}x |",
                f.devices,
                s.n,
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                s.p50.as_secs_f64() / f.read.p50.as_secs_f64()
            );
        }
    }
    println!();
    for f in &runs {
        println!(
            "{} devices: site pushed in {:.0} ms; 500 assignments in flight all received in {:.0} ms ({:.0} assignments/s)",
            f.devices,
            f.seed.as_secs_f64() * 1e3,
            f.burst_wall.as_secs_f64() * 1e3,
            AGENTS as f64 / f.burst_wall.as_secs_f64()
        );
    }
    if let Some((total, through, direct)) = runs.iter().find_map(|f| f.ingest) {
        let grpc_rate = total as f64 / through.as_secs_f64();
        let direct_rate = total as f64 / direct.as_secs_f64();
        println!(
            "\n| alert ingest ({} devices) | alerts | seconds | alerts/s | vs store alone |",
            runs[0].devices
        );
        println!("|---|---:|---:|---:|---:|");
        println!(
            "| store alone: insert_alerts, batches of {ALERT_BATCH} | {total} | {:.2} | {direct_rate:.0} | 1.00x |",
            direct.as_secs_f64()
        );
        println!(
            "| {ALERT_STREAMS} agents streaming batches of {ALERT_BATCH}, acknowledged | {total} | {:.2} | {grpc_rate:.0} | {:.2}x |",
            through.as_secs_f64(),
            grpc_rate / direct_rate
        );
    }
    let (small, large) = (&runs[0], &runs[runs.len() - 1]);
    println!("\n| goal | figure | limit | |");
    println!("|---|---:|---:|---|");
    let mut all = true;
    for f in &runs {
        let met = f.burst.p99 < Duration::from_secs(1);
        all &= met;
        println!(
            "| 500 in flight, p99 ({} devices) | {} ms | 1000 ms | {} |",
            f.devices,
            ms(f.burst.p99),
            verdict(met)
        );
    }
    let ratio = large.one.p99.as_secs_f64() / small.one.p99.as_secs_f64();
    let met = ratio <= 2.0;
    all &= met;
    println!(
        "| one at a time p99, {} vs {} devices | {ratio:.2}x ({} vs {} ms) | 2.00x | {} |",
        large.devices,
        small.devices,
        ms(large.one.p99),
        ms(small.one.p99),
        verdict(met)
    );
    println!("\ngoals: {}", if all { "all met" } else { "NOT all met" });
    Ok(())
}
