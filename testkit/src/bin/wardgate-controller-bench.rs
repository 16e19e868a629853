//! `cargo xtask bench controller [--store sqlite|postgres|both] [--replicas 1|2]`: the
//! controller on loopback with real mTLS, on the SQLite store and on PostgreSQL (a server the
//! bench starts; with one controller, and with two replicas on the one database, agents spread
//! over both and writes alternating between them), 500 gateways each watched by its own agent
//! connection, with 500 and then 20,000 devices (one site push each). Prints a table: assign -> received latency (one at a time,
//! both hospitals up and the sizes interleaved; and 500 at once, one hospital up), next to a unary read round trip over the same connection (interleaved
//! with the one-at-a-time assignments); alert ingest through the agent stream, next to the
//! store's own insert rate; and the goals, met or not. A benchmark, not a test: it asserts
//! nothing but that every generation arrives.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::sync::mpsc;
use wardgate_controller::{
    server::Settings,
    store::{PgStore, SqliteStore, Store},
};
use wardgate_proto::v1::{self as pb};
use wardgate_testkit::{controller::LabController, postgres::Server};

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

/// `WG_BENCH_QUICK=1`: 50 assignments one at a time, 3 rounds in flight and no alert ingest,
/// to try a change in a few minutes; its tables say so and are not runs of record.
fn quick() -> bool {
    std::env::var("WG_BENCH_QUICK").is_ok_and(|v| v == "1")
}

fn sequential() -> usize {
    if quick() { 50 } else { SEQUENTIAL }
}

fn burst_rounds() -> usize {
    if quick() { 3 } else { BURST_ROUNDS }
}
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
    lab: &LabController<dyn Store>,
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

/// One watching agent per gateway, gateway `i` on controller `i % labs.len()`; every bundle
/// received goes to `seen` as (gateway, generation).
async fn watchers(
    labs: &[LabController<dyn Store>],
    seen: mpsc::UnboundedSender<(usize, u32, Instant)>,
) -> anyhow::Result<tokio::task::JoinSet<()>> {
    let mut tasks = tokio::task::JoinSet::new();
    let lab = &labs[0];
    for i in 0..AGENTS {
        let mut agent = labs[i % labs.len()].agent(&gateway(i)).await?;
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

/// The store a hospital keeps its state in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "SQLite",
            Kind::Postgres => "PostgreSQL",
        }
    }
}

type Admin = pb::admin_service_client::AdminServiceClient<tonic::transport::Channel>;

/// A controller with `devices` devices on `AGENTS` gateways, each watched by its agent, and
/// its replicas (more controllers on the same database): both hospitals are up for the
/// one-at-a-time series, so their figures are taken side by side.
struct Hospital {
    devices: usize,
    seed: Duration,
    /// The first controller, then its replicas.
    labs: Vec<LabController<dyn Store>>,
    /// The PostgreSQL database's URL (replicas connect to it).
    url: Option<String>,
    agents: Option<tokio::task::JoinSet<()>>,
    seen: mpsc::UnboundedReceiver<(usize, u32, Instant)>,
    early: HashMap<(usize, u32), Instant>,
    /// One admin connection per controller.
    admins: Vec<Admin>,
    _dir: tempfile::TempDir,
}

/// A PostgreSQL store on `url`, connected off the async workers (connecting blocks).
fn pg_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let store = tokio::task::block_in_place(|| PgStore::connect(url))
        .context("connecting to the bench's PostgreSQL database")?;
    Ok(Arc::new(store))
}

impl Hospital {
    async fn start(
        root: &std::path::Path,
        devices: usize,
        pg: Option<&Server>,
    ) -> anyhow::Result<Hospital> {
        let dir = tempfile::tempdir()?;
        let gateways: Vec<String> = (0..AGENTS).map(gateway).collect();
        let (store, url) = match pg {
            None => {
                let data = dir.path().join("data");
                let head = Settings::default().audit_head_path(&data);
                let store: Arc<dyn Store> = Arc::new(
                    SqliteStore::open_with_head(&data, &head).context("opening the store")?,
                );
                (store, None)
            }
            Some(server) => {
                let url = server.fresh_database();
                (pg_store(&url)?, Some(url))
            }
        };
        eprintln!(
            "bench: {devices} devices: certificates for {AGENTS} gateways, controller on loopback"
        );
        let lab = LabController::start_on_store(
            dir.path(),
            &gateways,
            &[("eve", "engineer"), ("sam", "soc")],
            store,
        )
        .await?;
        let seed = seed(&lab, root, devices).await?;
        eprintln!("bench: seeded {AGENTS} gateways and {devices} devices in {seed:.1?}");
        let admins = vec![lab.admin("eve").await?];
        Ok(Hospital {
            devices,
            seed,
            labs: vec![lab],
            url,
            agents: None,
            seen: mpsc::unbounded_channel().1,
            early: HashMap::new(),
            admins,
            _dir: dir,
        })
    }

    /// Adds replicas up to `n` controllers, each on a connection of its own to the database.
    async fn replicas(&mut self, n: usize) -> anyhow::Result<()> {
        while self.labs.len() < n {
            let url = self
                .url
                .as_deref()
                .context("replicas need a shared database (PostgreSQL)")?;
            let replica = self.labs[0].replica_on(pg_store(url)?).await?;
            self.admins.push(replica.admin("eve").await?);
            self.labs.push(replica);
        }
        Ok(())
    }

    /// The controller a write for gateway `i` goes through: pairs alternate, so with two
    /// replicas half the writes reach an agent watching the other one.
    fn via(&self, i: usize) -> usize {
        (i / 2) % self.admins.len()
    }

    /// Connects the watching agents, spread over the controllers (gateway `i` on controller
    /// `i % n`).
    async fn connect(&mut self) -> anyhow::Result<()> {
        let (tx, seen) = mpsc::unbounded_channel();
        let t = Instant::now();
        self.agents = Some(watchers(&self.labs, tx).await?);
        self.seen = seen;
        self.early.clear();
        eprintln!(
            "bench: {AGENTS} agents connected (mTLS) to {} controller(s) and watching in {:.1?}",
            self.labs.len(),
            t.elapsed()
        );
        Ok(())
    }

    /// The agents hang up (their connections would share the cores while another hospital is
    /// measured).
    async fn disconnect(&mut self) {
        if let Some(mut agents) = self.agents.take() {
            agents.shutdown().await;
        }
    }

    /// Assignment `k` of the one-at-a-time series (gateways spread by 7, coprime to 500),
    /// after a unary read over the same connection (the baseline): (read, assign -> received).
    async fn one(&mut self, k: usize) -> anyhow::Result<(Duration, Duration)> {
        let gw = (k * 7) % AGENTS;
        let via = self.via(k);
        let admin = &mut self.admins[via];
        let t = Instant::now();
        admin
            .get_device(pb::GetDeviceRequest { name: device(gw) })
            .await?;
        let read = t.elapsed();
        let current = admin
            .get_device(pb::GetDeviceRequest { name: device(gw) })
            .await?
            .into_inner()
            .profile;
        let t = Instant::now();
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
        let Some(&generation) = w.generations.get(&gateway(gw)) else {
            bail!("assignment on {} compiled no generation", gateway(gw));
        };
        if w.generations.len() != 1 {
            bail!("one assignment recompiled {} gateways", w.generations.len());
        }
        let got = wait_for(&mut self.seen, &mut self.early, gw, generation).await?;
        Ok((read, got - t))
    }

    /// Every gateway at once: 500 assignments in flight, on one admin connection per
    /// controller. Returns each assign -> received latency and the wall time until all
    /// arrived.
    async fn burst(&mut self) -> anyhow::Result<(Vec<Duration>, Duration)> {
        let mut currents = Vec::with_capacity(AGENTS);
        for gw in 0..AGENTS {
            currents.push(
                self.admins[0]
                    .get_device(pb::GetDeviceRequest { name: device(gw) })
                    .await?
                    .into_inner()
                    .profile,
            );
        }
        let t = Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for (gw, current) in currents.into_iter().enumerate() {
            let mut admin = self.admins[self.via(gw)].clone();
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
        // The agents hang up first, so the servers can stop gracefully.
        self.disconnect().await;
        self.admins.clear();
        while let Some(lab) = self.labs.pop() {
            lab.shutdown().await?;
        }
        Ok(())
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
async fn ingest(lab: &LabController<dyn Store>) -> anyhow::Result<(usize, Duration, Duration)> {
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

/// What to measure: `--store sqlite|postgres|both` (default both) and `--replicas 1|2`
/// (default 1 on SQLite, 1 and 2 on PostgreSQL: SQLite replicas do not hear each other's
/// writes, `Store::changes` is PostgreSQL's).
struct Args {
    stores: Vec<Kind>,
    replicas: Option<usize>,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut out = Args {
            stores: vec![Kind::Sqlite, Kind::Postgres],
            replicas: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let value = args.next().with_context(|| format!("{a} needs a value"))?;
            match (a.as_str(), value.as_str()) {
                ("--store", "sqlite") => out.stores = vec![Kind::Sqlite],
                ("--store", "postgres") => out.stores = vec![Kind::Postgres],
                ("--store", "both") => {}
                ("--replicas", "1") => out.replicas = Some(1),
                ("--replicas", "2") => out.replicas = Some(2),
                _ => bail!(
                    "unknown argument {a} {value} (--store sqlite|postgres|both, --replicas 1|2)"
                ),
            }
        }
        if out.replicas == Some(2) && out.stores == [Kind::Sqlite] {
            bail!("--replicas 2 needs PostgreSQL: SQLite replicas do not hear each other's writes");
        }
        Ok(out)
    }

    fn replicas(&self, kind: Kind) -> Vec<usize> {
        match (kind, self.replicas) {
            (Kind::Sqlite, _) => vec![1],
            (Kind::Postgres, Some(n)) => vec![n],
            (Kind::Postgres, None) => vec![1, 2],
        }
    }
}

/// The bench's PostgreSQL server: as durable as the SQLite store (WAL, a commit synced), so the
/// test settings' `fsync=off` are turned back on.
const PG_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
];

/// Statements slower than this many ms are logged by the bench's PostgreSQL
/// (`WG_BENCH_PG_LOG_MS`, default 100; 0 logs every statement with its time, to see where a
/// write's time goes).
fn pg_log_ms() -> String {
    std::env::var("WG_BENCH_PG_LOG_MS").unwrap_or_else(|_| "100".into())
}

/// One measured configuration: a store and a replica count, each size.
struct Run {
    kind: Kind,
    replicas: usize,
    sizes: Vec<usize>,
    read: Vec<Stats>,
    one: Vec<Stats>,
    burst: Vec<Stats>,
    /// Per size: the rounds' p99 and wall times.
    burst_p99: Vec<Vec<Duration>>,
    burst_wall: Vec<Vec<Duration>>,
}

/// The one-at-a-time series (both hospitals up, interleaved), then the bursts (one hospital's
/// agents connected at a time), with `replicas` controllers per hospital.
async fn measure(hospitals: &mut [Hospital], kind: Kind, replicas: usize) -> anyhow::Result<Run> {
    let label = format!("{} x{replicas}", kind.name());
    for h in hospitals.iter_mut() {
        h.replicas(replicas).await?;
        h.connect().await?;
    }
    let n = hospitals.len();
    // One at a time, alternating hospitals (A B A B ...): both series see the same machine.
    eprintln!(
        "bench: {label}: {} assignments one at a time per size, interleaved",
        sequential()
    );
    let mut read = vec![Vec::new(); n];
    let mut one = vec![Vec::new(); n];
    for k in 0..sequential() {
        for (h, hospital) in hospitals.iter_mut().enumerate() {
            let (r, o) = hospital.one(k).await?;
            read[h].push(r);
            one[h].push(o);
        }
    }
    // 500 in flight: one hospital's agents connected at a time (500 watching agents, as the
    // goal states); the others' 500 idle connections would otherwise share the two cores.
    for h in hospitals.iter_mut() {
        h.disconnect().await;
    }
    eprintln!(
        "bench: {label}: {} rounds of {AGENTS} assignments in flight per size, one hospital's agents up",
        burst_rounds()
    );
    let mut burst_p99 = vec![Vec::new(); n];
    let mut burst_all = vec![Vec::new(); n];
    let mut burst_wall = vec![Vec::new(); n];
    for (h, hospital) in hospitals.iter_mut().enumerate() {
        hospital.connect().await?;
        for _ in 0..burst_rounds() {
            let (lat, wall) = hospital.burst().await?;
            let p99 = stats(lat.clone()).p99;
            eprintln!(
                "bench: {label}: {} devices: round p99 {} ms, all received in {} ms",
                hospital.devices,
                ms(p99),
                ms(wall)
            );
            burst_p99[h].push(p99);
            burst_all[h].extend(lat);
            burst_wall[h].push(wall);
        }
        hospital.disconnect().await;
    }
    Ok(Run {
        kind,
        replicas,
        sizes: hospitals.iter().map(|h| h.devices).collect(),
        read: read.into_iter().map(stats).collect(),
        one: one.into_iter().map(stats).collect(),
        burst: burst_all.into_iter().map(stats).collect(),
        burst_p99,
        burst_wall,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let nofile = raise_nofile()?;
    let mut runs = Vec::new();
    let mut seeds = Vec::new();
    let mut ingests = Vec::new();
    for &kind in &args.stores {
        let server = (kind == Kind::Postgres).then(|| {
            eprintln!("bench: starting PostgreSQL");
            let log = pg_log_ms();
            let mut settings = PG_SETTINGS.to_vec();
            settings.push(("log_min_duration_statement", log.as_str()));
            let server = tokio::task::block_in_place(|| Server::start_with(&settings));
            eprintln!(
                "bench: PostgreSQL data (its log beside): {}",
                server.data_dir().display()
            );
            server
        });
        let mut hospitals = Vec::new();
        for devices in SIZES {
            let h = Hospital::start(&root, devices, server.as_ref()).await?;
            seeds.push((kind, devices, h.seed));
            hospitals.push(h);
        }
        for replicas in args.replicas(kind) {
            runs.push(measure(&mut hospitals, kind, replicas).await?);
            if replicas == 1 && !quick() {
                ingests.push((kind, ingest(&hospitals[0].labs[0]).await?));
            }
        }
        for h in hospitals {
            h.shutdown().await?;
        }
        if let Some(server) = &server {
            let slow = server
                .log()
                .lines()
                .filter(|l| l.contains("duration:"))
                .count();
            eprintln!(
                "bench: PostgreSQL logged {slow} statements over {} ms",
                pg_log_ms()
            );
        }
    }
    report(&runs, &seeds, &ingests, nofile);
    Ok(())
}

fn report(
    runs: &[Run],
    seeds: &[(Kind, usize, Duration)],
    ingests: &[(Kind, (usize, Duration, Duration))],
    nofile: u64,
) {
    if quick() {
        println!(
            "\nQUICK RUN (WG_BENCH_QUICK=1): fewer rounds, no alert ingest; not a run of record"
        );
    }
    println!(
        "\nwardgate controller bench: {AGENTS} gateways per hospital, each watched by its own mTLS agent connection (spread over the replicas); SQLite (WAL) and PostgreSQL (fsync on, synchronous_commit on, its own server on loopback); replicas are controllers on one database, writes alternating between them; both hospitals up for the one-at-a-time series (sizes interleaved A B A B), one hospital's agents up for the 500 in flight (open-files limit {nofile})\n"
    );
    println!(
        "| store | replicas | devices | measurement | n | p50 ms | p99 ms | max ms | p50 vs baseline |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|");
    for r in runs {
        for h in 0..r.sizes.len() {
            let base = r.read[h].p50.as_secs_f64();
            for (name, s) in [
                (
                    "baseline: GetDevice round trip (same connection, interleaved)",
                    &r.read[h],
                ),
                (
                    "assign -> received, one at a time (sizes interleaved)",
                    &r.one[h],
                ),
                (
                    "assign -> received, 500 in flight (all rounds)",
                    &r.burst[h],
                ),
            ] {
                println!(
                    "| {} | {} | {} | {name} | {} | {} | {} | {} | {:.1}x |",
                    r.kind.name(),
                    r.replicas,
                    r.sizes[h],
                    s.n,
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.max),
                    s.p50.as_secs_f64() / base
                );
            }
        }
    }
    println!(
        "\n| store | replicas | devices | 500 in flight: per-round p99 ms, median (min-max) | all received in ms, median (min-max) | rounds |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in runs {
        for h in 0..r.sizes.len() {
            let (med, lo, hi) = spread(r.burst_p99[h].clone());
            let (wmed, wlo, whi) = spread(r.burst_wall[h].clone());
            println!(
                "| {} | {} | {} | {} ({}-{}) | {} ({}-{}) | {} |",
                r.kind.name(),
                r.replicas,
                r.sizes[h],
                ms(med),
                ms(lo),
                ms(hi),
                ms(wmed),
                ms(wlo),
                ms(whi),
                r.burst_p99[h].len()
            );
        }
    }
    println!("\n| store | devices | site pushed in ms |");
    println!("|---|---:|---:|");
    for (kind, devices, t) in seeds {
        println!(
            "| {} | {devices} | {:.0} |",
            kind.name(),
            t.as_secs_f64() * 1e3
        );
    }
    println!(
        "\n| store | alert ingest ({} devices) | alerts | seconds | alerts/s | vs store alone |",
        SIZES[0]
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (kind, (total, through, direct)) in ingests {
        let grpc_rate = *total as f64 / through.as_secs_f64();
        let direct_rate = *total as f64 / direct.as_secs_f64();
        println!(
            "| {} | store alone: insert_alerts, batches of {ALERT_BATCH} | {total} | {:.2} | {direct_rate:.0} | 1.00x |",
            kind.name(),
            direct.as_secs_f64()
        );
        println!(
            "| {} | {ALERT_STREAMS} agents streaming batches of {ALERT_BATCH}, acknowledged | {total} | {:.2} | {grpc_rate:.0} | {:.2}x |",
            kind.name(),
            through.as_secs_f64(),
            grpc_rate / direct_rate
        );
    }
    println!("\n| store | replicas | goal | figure | limit | |");
    println!("|---|---:|---|---:|---:|---|");
    let mut met_all = true;
    for r in runs {
        let who = format!("| {} | {} |", r.kind.name(), r.replicas);
        for h in 0..r.sizes.len() {
            let (med, _, worst) = spread(r.burst_p99[h].clone());
            let met = worst < Duration::from_secs(1);
            met_all &= met;
            println!(
                "{who} 500 in flight, p99 ({} devices), every round | worst {} ms (median {} ms) | 1000 ms | {} |",
                r.sizes[h],
                ms(worst),
                ms(med),
                verdict(met)
            );
        }
        let (small, large) = (0, r.sizes.len() - 1);
        let ratio = r.one[large].p99.as_secs_f64() / r.one[small].p99.as_secs_f64();
        let ratio50 = r.one[large].p50.as_secs_f64() / r.one[small].p50.as_secs_f64();
        let met = ratio <= 2.0;
        met_all &= met;
        println!(
            "{who} one at a time p99, {} vs {} devices (interleaved) | {ratio:.2}x ({} vs {} ms; p50 {ratio50:.2}x) | 2.00x | {} |",
            r.sizes[large],
            r.sizes[small],
            ms(r.one[large].p99),
            ms(r.one[small].p99),
            verdict(met)
        );
    }
    println!(
        "\ngoals: {}",
        if met_all { "all met" } else { "NOT all met" }
    );
}
