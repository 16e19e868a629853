//! `cargo xtask bench controller`: the controller on loopback with real mTLS and the SQLite
//! store, 500 gateways each watched by its own agent connection, with 500 and then 20,000
//! devices (one site push each). Prints a table: assign -> received latency (one at a time,
//! both hospitals up and the sizes interleaved; and 500 at once, one hospital up), next to a unary read round trip over the same connection (interleaved
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
/// One-at-a-time assignments per size: 1,000, so the p99 rests on ten samples above it (with
/// 200 it was the second-highest value, and one scheduler hiccup moved the ratio past 2x).
const SEQUENTIAL: usize = 1_000;
/// Rounds of 500 assignments in flight per size.
const BURST_ROUNDS: usize = 5;
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
            mode_enum: pb::DeviceMode::Enforce.into(),
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

/// A deny alert about `device` (one behind the reporting gateway: another gateway's device
/// is refused), observed now.
fn alert(id: String, device: String) -> pb::Alert {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    pb::Alert {
        id,
        device,
        observed_unix_ms: now_ms,
        profile: "infusion-pump".into(),
        kind: "deny".into(),
        severity: "high".into(),
        severity_enum: pb::Severity::High.into(),
        mode: "enforce".into(),
        mode_enum: pb::DeviceMode::Enforce.into(),
        src: "2001:db8:1::10".into(),
        src_port: 40000,
        dst: "2001:db8:2::10".into(),
        dst_port: 445,
        protocol: 6,
        ..Default::default()
    }
}

/// A controller with `devices` devices on `AGENTS` gateways, each watched by its agent: both
/// hospitals are up for the one-at-a-time series, so their figures are taken side by side.
struct Hospital {
    devices: usize,
    seed: Duration,
    lab: LabController,
    agents: tokio::task::JoinSet<()>,
    seen: mpsc::UnboundedReceiver<(usize, u32, Instant)>,
    early: HashMap<(usize, u32), Instant>,
    admin: pb::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
    _dir: tempfile::TempDir,
}

impl Hospital {
    async fn start(root: &std::path::Path, devices: usize) -> anyhow::Result<Hospital> {
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
        let seed = seed(&lab, root, devices).await?;
        eprintln!("bench: seeded {AGENTS} gateways and {devices} devices in {seed:.1?}");
        let (tx, seen) = mpsc::unbounded_channel();
        let t = Instant::now();
        let agents = watchers(&lab, tx).await?;
        eprintln!(
            "bench: {AGENTS} agents connected (mTLS) and watching in {:.1?}",
            t.elapsed()
        );
        let admin = lab.admin("eve").await?;
        Ok(Hospital {
            devices,
            seed,
            lab,
            agents,
            seen,
            early: HashMap::new(),
            admin,
            _dir: dir,
        })
    }

    /// Assignment `k` of the one-at-a-time series (gateways spread by 7, coprime to 500),
    /// after a unary read over the same connection (the baseline): (read, assign -> received).
    async fn one(&mut self, k: usize) -> anyhow::Result<(Duration, Duration)> {
        let gw = (k * 7) % AGENTS;
        let t = Instant::now();
        self.admin
            .get_device(pb::GetDeviceRequest { name: device(gw) })
            .await?;
        let read = t.elapsed();
        let current = self
            .admin
            .get_device(pb::GetDeviceRequest { name: device(gw) })
            .await?
            .into_inner()
            .profile;
        let t = Instant::now();
        let w = self
            .admin
            .assign_profile(pb::AssignProfileRequest {
                accept_impact: false,
                device: device(gw),
                profile: other_profile(&current).into(),
                reason: REASON.into(),
                dry_run: false,
            })
            .await?
            .into_inner();
        let Some(&generation) = w.generations.get(&gateway(gw)) else {
            bail!("assignment on {} compiled no generation", gateway(gw));
        };
        if w.generations.len() != 1 {
            bail!("one assignment recompiled {} gateways", w.generations.len());
        }
        let got = wait_for(&mut self.seen, &mut self.early, gw, generation).await?;
        Ok((read, got - t))
    }

    /// Every gateway at once: 500 assignments in flight on one admin connection. Returns each
    /// assign -> received latency and the wall time until all arrived.
    async fn burst(&mut self) -> anyhow::Result<(Vec<Duration>, Duration)> {
        let mut currents = Vec::with_capacity(AGENTS);
        for gw in 0..AGENTS {
            currents.push(
                self.admin
                    .get_device(pb::GetDeviceRequest { name: device(gw) })
                    .await?
                    .into_inner()
                    .profile,
            );
        }
        let t = Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for (gw, current) in currents.into_iter().enumerate() {
            let mut admin = self.admin.clone();
            calls.spawn(async move {
                let start = Instant::now();
                let w = admin
                    .assign_profile(pb::AssignProfileRequest {
                        accept_impact: false,
                        device: device(gw),
                        profile: other_profile(&current).into(),
                        reason: REASON.into(),
                        dry_run: false,
                    })
                    .await?
                    .into_inner();
                anyhow::Ok((gw, w.generations[&gateway(gw)], start))
            });
        }
        let mut burst = Vec::new();
        while let Some(r) = calls.join_next().await {
            let (gw, generation, start) = r??;
            let got = wait_for(&mut self.seen, &mut self.early, gw, generation).await?;
            burst.push(got - start);
        }
        Ok((burst, t.elapsed()))
    }

    async fn shutdown(mut self) -> anyhow::Result<()> {
        // The agents hang up first, so the server can stop gracefully.
        self.agents.shutdown().await;
        drop(self.admin);
        self.lab.shutdown().await
    }
}

fn other_profile(current: &str) -> &'static str {
    if current == "infusion-pump" {
        "patient-monitor"
    } else {
        "infusion-pump"
    }
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
                        .map(|a| alert(format!("s{s}-b{b}-a{a}"), device(s)))
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

/// Both hospitals keep 500 agent connections each (two sockets per connection, plus the
/// controllers' files): raise the soft open-files limit to the hard one.
fn raise_nofile() -> anyhow::Result<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    l.rlim_cur = l.rlim_max;
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    let need = (4 * AGENTS * SIZES.len() + 256) as u64;
    if l.rlim_cur < need {
        bail!(
            "open-files limit {} is under the {need} the bench needs",
            l.rlim_cur
        );
    }
    Ok(l.rlim_cur)
}

/// Median, min and max.
fn spread(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let nofile = raise_nofile()?;
    let mut hospitals = Vec::new();
    for devices in SIZES {
        hospitals.push(Hospital::start(&root, devices).await?);
    }
    let n = hospitals.len();

    // One at a time, alternating hospitals (A B A B ...): both series see the same machine.
    eprintln!("bench: {SEQUENTIAL} assignments one at a time per size, interleaved");
    let mut read = vec![Vec::new(); n];
    let mut one = vec![Vec::new(); n];
    for k in 0..SEQUENTIAL {
        for (h, hospital) in hospitals.iter_mut().enumerate() {
            let (r, o) = hospital.one(k).await?;
            read[h].push(r);
            one[h].push(o);
        }
    }
    let sizes: Vec<usize> = hospitals.iter().map(|h| h.devices).collect();
    let seeds: Vec<Duration> = hospitals.iter().map(|h| h.seed).collect();
    // 500 in flight: one hospital up at a time (500 watching agents, as the goal states); the
    // others' 500 idle connections would otherwise share the two cores. Hospitals after the
    // first are started again, from a fresh store.
    eprintln!(
        "bench: {BURST_ROUNDS} rounds of {AGENTS} assignments in flight per size, one hospital up"
    );
    let mut burst_p99 = vec![Vec::new(); n];
    let mut burst_all = vec![Vec::new(); n];
    let mut burst_wall = vec![Vec::new(); n];
    let mut first = Some(hospitals.remove(0));
    for h in hospitals {
        h.shutdown().await?;
    }
    let mut ingested = None;
    for (h, &devices) in sizes.iter().enumerate() {
        let mut hospital = match first.take() {
            Some(x) => x,
            None => Hospital::start(&root, devices).await?,
        };
        for _ in 0..BURST_ROUNDS {
            let (lat, wall) = hospital.burst().await?;
            let p99 = stats(lat.clone()).p99;
            eprintln!(
                "bench: {devices} devices: round p99 {} ms, all received in {} ms",
                ms(p99),
                ms(wall)
            );
            burst_p99[h].push(p99);
            burst_all[h].extend(lat);
            burst_wall[h].push(wall);
        }
        if h == 0 {
            ingested = Some(ingest(&hospital.lab).await?);
        }
        hospital.shutdown().await?;
    }
    let ingest = ingested.context("no hospital measured alert ingest")?;

    println!(
        "\nwardgate controller bench: {AGENTS} gateways per hospital, each watched by its own mTLS agent connection, SQLite store (WAL); both hospitals up for the one-at-a-time series (sizes interleaved A B A B), one up for the 500 in flight (open-files limit {nofile})\n"
    );
    println!("| devices | measurement | n | p50 ms | p99 ms | max ms | p50 vs baseline |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let read: Vec<Stats> = read.into_iter().map(stats).collect();
    let one: Vec<Stats> = one.into_iter().map(stats).collect();
    let all: Vec<Stats> = burst_all.into_iter().map(stats).collect();
    for h in 0..n {
        println!(
            "| {} | baseline: GetDevice round trip (same connection, interleaved) | {} | {} | {} | {} | 1.0x |",
            sizes[h],
            read[h].n,
            ms(read[h].p50),
            ms(read[h].p99),
            ms(read[h].max)
        );
        for (name, s) in [
            (
                "assign -> received, one at a time (sizes interleaved)",
                &one[h],
            ),
            ("assign -> received, 500 in flight (all rounds)", &all[h]),
        ] {
            println!(
                "| {} | {name} | {} | {} | {} | {} | {:.1}x |",
                sizes[h],
                s.n,
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                s.p50.as_secs_f64() / read[h].p50.as_secs_f64()
            );
        }
    }
    println!(
        "\n| devices | 500 in flight: per-round p99 ms, median (min-max) | all received in ms, median (min-max) | rounds |"
    );
    println!("|---:|---:|---:|---:|");
    let mut p99_median = Vec::new();
    for h in 0..n {
        let (med, lo, hi) = spread(burst_p99[h].clone());
        let (wmed, wlo, whi) = spread(burst_wall[h].clone());
        p99_median.push((med, hi));
        println!(
            "| {} | {} ({}-{}) | {} ({}-{}) | {BURST_ROUNDS} |",
            sizes[h],
            ms(med),
            ms(lo),
            ms(hi),
            ms(wmed),
            ms(wlo),
            ms(whi)
        );
    }
    println!();
    for h in 0..n {
        println!(
            "{} devices: site pushed in {:.0} ms",
            sizes[h],
            seeds[h].as_secs_f64() * 1e3,
        );
    }
    let (total, through, direct) = ingest;
    let grpc_rate = total as f64 / through.as_secs_f64();
    let direct_rate = total as f64 / direct.as_secs_f64();
    println!(
        "\n| alert ingest ({} devices) | alerts | seconds | alerts/s | vs store alone |",
        sizes[0]
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
    let (small, large) = (0, n - 1);
    println!("\n| goal | figure | limit | |");
    println!("|---|---:|---:|---|");
    let mut met_all = true;
    for h in 0..n {
        let (med, worst) = p99_median[h];
        let met = worst < Duration::from_secs(1);
        met_all &= met;
        println!(
            "| 500 in flight, p99 ({} devices), every round | worst {} ms (median {} ms) | 1000 ms | {} |",
            sizes[h],
            ms(worst),
            ms(med),
            verdict(met)
        );
    }
    let ratio = one[large].p99.as_secs_f64() / one[small].p99.as_secs_f64();
    let ratio50 = one[large].p50.as_secs_f64() / one[small].p50.as_secs_f64();
    let met = ratio <= 2.0;
    met_all &= met;
    println!(
        "| one at a time p99, {} vs {} devices (interleaved) | {ratio:.2}x ({} vs {} ms; p50 {ratio50:.2}x) | 2.00x | {} |",
        sizes[large],
        sizes[small],
        ms(one[large].p99),
        ms(one[small].p99),
        verdict(met)
    );
    println!(
        "\ngoals: {}",
        if met_all { "all met" } else { "NOT all met" }
    );
    Ok(())
}
