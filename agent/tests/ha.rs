//! High availability end to end: two `wardgate-controller` processes (the release binary) on
//! one PostgreSQL that has a synchronous streaming standby, three agents' sync tasks spread
//! over them (each given both addresses, the map writer played by the test), one SOC sink (an
//! OCSF file) configured on both, engineers writing through both all along.
//!
//! 1. The replica holding the sink's lease is killed with SIGKILL under the stream of writes:
//!    every acknowledged generation reaches its gateway's agent within 5 s of its
//!    acknowledgement, the sink delivers every alert the agents raised exactly once (taken
//!    over by the survivor, which first reads what the killed holder wrote to the file
//!    without recording it), and the audit chain verifies.
//! 2. The killed replica is started again, the standby promoted and the old primary stopped
//!    (immediately, as a crash): writes resume through both controllers within 10 s, without a
//!    restart, and every acknowledged write is in the new primary with the mode it set.
//!
//! No root needed beyond what the PostgreSQL test server wants (it runs as `postgres` when the
//! test is root). Runs in the unit tier.

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use support::{lab::release_bin, sync_agent::Agent};
use tonic::transport::Channel;
use wardgate_agent::{
    config::{Addresses, ControllerConfig},
    datapath::convert::{DatapathEvent, EventKind},
    sync::Holding,
};
use wardgate_controller::{
    cli::remote::Remote,
    store::{PgStore, Store},
};
use wardgate_policy::DesiredState;
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};
use wardgate_testkit::postgres::{Server, Standby};

const GATEWAYS: [&str; 3] = ["gw-ha-1", "gw-ha-2", "gw-ha-3"];
/// A bound on each write call: one waiting on a database that is going away is not
/// acknowledged.
const CALL_LIMIT: Duration = Duration::from_secs(15);

fn device(gw: usize) -> String {
    format!("pump-ha-{}", gw + 1)
}

/// The demo ward's groups and three gateways, one infusion pump behind each.
fn write_site(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let demo = std::fs::read_to_string(root.join("device-profiles/sites/demo-ward.yaml")).unwrap();
    let mut site = demo[..demo.find("gateways:").unwrap()].to_string();
    site.push_str("gateways:\n");
    for (i, gw) in GATEWAYS.iter().enumerate() {
        site.push_str(&format!(
            "  - name: {gw}\n    interfaces: [wg-dev{i}]\n    location: Building A, IDF {i}\n"
        ));
    }
    site.push_str("devices:\n");
    for (i, gw) in GATEWAYS.iter().enumerate() {
        site.push_str(&format!(
            "  - id: {}\n    name: {}\n    mac: 02:00:00:00:01:0{}\n    addresses: [192.0.2.{}]\n    \
             profile: infusion-pump\n    mode: monitor\n    gateway: {gw}\n",
            i + 1,
            device(i),
            i + 1,
            20 + i
        ));
    }
    let path = dir.join("site.yaml");
    std::fs::write(&path, site).unwrap();
    path
}

/// A `wardgate-controller` process on the PostgreSQL store; killed (SIGKILL) when dropped.
struct Replica {
    name: &'static str,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Replica {
    fn start(dir: &Path, name: &'static str, store_url: &str, sink: &Path) -> Replica {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\ndata: {}\ncerts: {}\nstore:\n  postgres: '{store_url}'\n\
                 sinks:\n  - kind: ocsf\n    name: soc\n    path: {}\n",
                dir.join(format!("{name}-data")).display(),
                dir.join("certs").display(),
                sink.display(),
            ),
        )
        .unwrap();
        let mut r = Replica {
            name,
            config,
            log: dir.join(format!("{name}.log")),
            port,
            child: None,
        };
        r.spawn();
        r
    }

    /// Starts the process (again), appending to its log; waits until it serves.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let before = self.log_text().matches("controller serving").count();
        let child = Command::new(release_bin("wardgate-controller"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        while self.log_text().matches("controller serving").count() == before {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "replica {} did not serve within 30 s:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether its last word on the sink's lease is that it holds it.
    fn holds_lease(&self) -> bool {
        let text = self.log_text();
        let held = text.rfind("holding the SOC sink's lease");
        let lost = text.rfind("lease is held by another controller");
        held.is_some() && held > lost
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    async fn admin(&self, certs: &Path) -> anyhow::Result<AdminServiceClient<Channel>> {
        let remote = Remote::to(self.url(), certs.to_path_buf(), "user-eve", "localhost");
        Ok(AdminServiceClient::new(remote.channel().await?))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A write an engineer saw acknowledged.
#[derive(Clone, Debug)]
struct Ack {
    gw: usize,
    mode: &'static str,
    generation: u32,
    replica: usize,
    at: Instant,
}

/// Engineers setting the pumps' modes through both replicas in turn, a write every 40 ms,
/// until stopped; what was acknowledged.
struct Writes {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writes {
    fn start(urls: [String; 2], certs: PathBuf, first: usize, enforced: [bool; 3]) -> Writes {
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let acked = acks.clone();
        let task = tokio::spawn(async move {
            let mut admins: [Option<AdminServiceClient<Channel>>; 2] = [None, None];
            // Each pump's mode as last written.
            let mut enforced = enforced;
            for i in first.. {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                let (gw, replica) = (i % GATEWAYS.len(), i % 2);
                // Each write flips its pump's mode, so each makes a generation.
                let mode = if enforced[gw] { "monitor" } else { "enforce" };
                if admins[replica].is_none() {
                    let remote = Remote::to(
                        urls[replica].clone(),
                        certs.clone(),
                        "user-eve",
                        "localhost",
                    );
                    admins[replica] = remote.channel().await.ok().map(AdminServiceClient::new);
                }
                if let Some(admin) = admins[replica].as_mut() {
                    let call = admin.set_mode(pb::SetModeRequest {
                        accept_impact: true,
                        device: device(gw),
                        mode: mode.into(),
                        reason: format!("HA-{i}"),
                        dry_run: false,
                        for_minutes: 0,
                        ..Default::default()
                    });
                    match tokio::time::timeout(CALL_LIMIT, call).await {
                        Ok(Ok(r)) => {
                            // Acknowledged, or already so (a write whose answer was lost
                            // went through): the pump is in `mode` now.
                            enforced[gw] = mode == "enforce";
                            if let Some(&generation) = r.into_inner().generations.get(GATEWAYS[gw])
                            {
                                acked.lock().unwrap().push(Ack {
                                    gw,
                                    mode,
                                    generation,
                                    replica,
                                    at: Instant::now(),
                                });
                            }
                        }
                        // Refused or cut: not acknowledged. A new connection next time.
                        Ok(Err(e)) => {
                            eprintln!("write {i} through replica {replica}: {}", e.message());
                            // A replica or its database going away is UNAVAILABLE (try again),
                            // never an internal error.
                            assert_ne!(
                                e.code(),
                                tonic::Code::Internal,
                                "write {i}: {}",
                                e.message()
                            );
                            admins[replica] = None;
                        }
                        Err(_) => {
                            eprintln!(
                                "write {i} through replica {replica}: no answer in {CALL_LIMIT:?}"
                            );
                            admins[replica] = None;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
        Writes { stop, acks, task }
    }

    /// What was acknowledged so far.
    fn acked(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(CALL_LIMIT * 2, self.task)
            .await
            .expect("the writers stopped")
            .unwrap();
        std::mem::take(&mut *self.acks.lock().unwrap())
    }
}

/// When each agent's map writer moved to which generation (polled every 10 ms).
type Timeline = Arc<Mutex<Vec<(Instant, u32)>>>;

fn watch(agent: &Agent) -> (Timeline, tokio::task::JoinHandle<()>) {
    let holding = agent.holding.clone();
    let timeline: Timeline = Arc::default();
    let tl = timeline.clone();
    let task = tokio::spawn(async move {
        let mut last = 0;
        loop {
            let g = holding.lock().unwrap().generation;
            if g != last {
                tl.lock().unwrap().push((Instant::now(), g));
                last = g;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (timeline, task)
}

/// How long after its acknowledgement each write reached its gateway's agent (the first time
/// the agent held it or a later generation); the longest, and the write it was.
fn slowest(acks: &[Ack], timelines: &[Timeline], within: Duration) -> (Duration, Ack) {
    let mut worst = (Duration::ZERO, acks[0].clone());
    for ack in acks {
        let tl = timelines[ack.gw].lock().unwrap();
        let reached = tl
            .iter()
            .find(|(_, g)| *g >= ack.generation)
            .map(|(t, _)| t.saturating_duration_since(ack.at));
        let lag = reached.unwrap_or_else(|| {
            panic!(
                "generation {} of {} (acknowledged through replica {}) never reached its agent \
                 (it holds {:?})",
                ack.generation,
                GATEWAYS[ack.gw],
                ack.replica,
                tl.last()
            )
        });
        if lag > worst.0 {
            worst = (lag, ack.clone());
        }
    }
    assert!(
        worst.0 < within,
        "a write took {:?} to reach its agent: {:?}",
        worst.0,
        worst.1
    );
    worst
}

/// Waits (bounded) until every agent holds its gateway's last acknowledged generation.
async fn converged(agents: &[Agent], acks: &[Ack], within: Duration) {
    let started = Instant::now();
    for (gw, agent) in agents.iter().enumerate() {
        let Some(want) = acks
            .iter()
            .filter(|a| a.gw == gw)
            .map(|a| a.generation)
            .max()
        else {
            continue;
        };
        while agent.held_generation() < want {
            assert!(
                started.elapsed() < within,
                "{} holds {} where {want} was acknowledged",
                GATEWAYS[gw],
                agent.held_generation()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A denied SMB connection of the pump behind `state`'s gateway, as the agent's event reader
/// makes it into an alert.
fn deny_alert(state: &DesiredState, id: String) -> pb::Alert {
    let pump = &state.devices[0];
    let event = DatapathEvent {
        kind: EventKind::Deny,
        reason: None,
        device_id: pump.device_id,
        policy_id: pump.policy_id,
        rule_id: 0,
        generation: state.generation,
        proto: 6,
        from_device: true,
        src: "192.0.2.20".parse().unwrap(),
        sport: 40000,
        dst: "198.51.100.99".parse().unwrap(),
        dport: 445,
        src_mac: [2, 0, 0, 0, 1, 1],
        app: None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    pb::Alert::from(&wardgate_agent::alerts::from_event(&event, Some(state), id, now).unwrap())
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The alert ids in the OCSF sink's file, in the order they were written. A deny is a Network
/// Activity event (4001) whose `metadata.uid` is `GATEWAY/ID`; audit checkpoints (1008) are
/// left out.
fn delivered(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a line of the sink's file does not read ({e}): {line}"));
        if v["class_uid"] != 4001 {
            continue;
        }
        let uid = v["metadata"]["uid"].as_str().unwrap();
        out.push(uid.rsplit(['/', ':']).next().unwrap().to_string());
    }
    out
}

/// How often each id is in `ids`.
fn counts(ids: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for id in ids {
        *out.entry(id.clone()).or_default() += 1;
    }
    out
}

async fn verify_audit(admin: &mut AdminServiceClient<Channel>) -> u64 {
    let v = admin
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(v.intact, "the audit chain is broken: {}", v.problem);
    v.entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_survive_a_killed_controller_and_a_promoted_database() {
    let t0 = Instant::now();
    let phase = |what: &str| println!("{:>8.2?} {what}", t0.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let gateways: Vec<String> = GATEWAYS.iter().map(|g| g.to_string()).collect();
    let users = [
        ("eve".to_string(), "engineer".to_string()),
        ("sam".to_string(), "soc".to_string()),
    ];
    wardgate_controller::certs::init(&certs, &gateways, &users, &Default::default()).unwrap();

    // The database: a primary whose commits wait for its streaming standby (synchronous
    // replication, as an HA pair that loses nothing acknowledged is run).
    let primary = Server::start_with(&[("synchronous_commit", "on")]);
    primary.psql("postgres", "CREATE DATABASE ha");
    let standby = Standby::of(&primary);
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    let started = Instant::now();
    while primary.psql("postgres", "SELECT sync_state FROM pg_stat_replication") != "sync" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the standby never became synchronous"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let store_url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/ha?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    phase("primary and synchronous standby up");

    let sink = dir.path().join("soc.jsonl");
    let mut replicas = [
        Replica::start(dir.path(), "a", &store_url, &sink),
        Replica::start(dir.path(), "b", &store_url, &sink),
    ];
    let urls = [replicas[0].url(), replicas[1].url()];
    phase("two controller processes serving");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (site, set) = wardgate_controller::cli::push::read(
        &write_site(dir.path()),
        &root.join("device-profiles"),
    )
    .unwrap();
    let mut admin_a = replicas[0].admin(&certs).await.unwrap();
    wardgate_controller::cli::push::load(&mut admin_a, &site, &set, "CHG-1 commissioning")
        .await
        .unwrap();

    // Agents 1 and 3 start on A, agent 2 on B; each can fail over to the other.
    let mut agents: Vec<Agent> = GATEWAYS
        .iter()
        .enumerate()
        .map(|(i, gw)| {
            let mut list = urls.to_vec();
            if i % 2 == 1 {
                list.reverse();
            }
            Agent::start(
                ControllerConfig {
                    address: Addresses::new(list).unwrap(),
                    certs: certs.clone(),
                    gateway: gw.to_string(),
                    server_name: "localhost".into(),
                    outbox: None,
                    flow_report_every_ms: 30_000,
                    health_report_every_ms: 60_000,
                    connect_timeout_ms: 1_000,
                    renewal: Default::default(),
                },
                Holding::default(),
            )
        })
        .collect();
    let mut states = Vec::new();
    for agent in &mut agents {
        states.push(support::sync_agent::handed(&mut agent.seen).await);
    }
    let (timelines, watchers): (Vec<Timeline>, Vec<_>) = agents.iter().map(watch).unzip();
    phase("three agents synced");

    // Alerts: each agent raises one every 100 ms, from now until the writes stop.
    let raising = Arc::new(AtomicBool::new(true));
    let raised: Arc<Mutex<Vec<String>>> = Arc::default();
    let raisers: Vec<_> = agents
        .iter()
        .zip(states)
        .enumerate()
        .map(|(i, (agent, state))| {
            let (queue, on, raised) = (agent.alerts.clone(), raising.clone(), raised.clone());
            tokio::spawn(async move {
                for k in 0.. {
                    if !on.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("ha-{}-{k}", i + 1);
                    queue.push_all(vec![deny_alert(&state, id.clone())]);
                    raised.lock().unwrap().push(id);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();

    // Phase 1: writes through both replicas; the sink's holder is killed in the middle.
    // The site starts every pump in monitor.
    let writes = Writes::start(urls.clone(), certs.clone(), 0, [false; 3]);
    let started = Instant::now();
    let holder = loop {
        if let Some(i) = (0..2).find(|&i| replicas[i].holds_lease()) {
            break i;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no replica took the sink's lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    replicas[holder].kill();
    let killed = Instant::now();
    phase(&format!(
        "replica {} (the sink's holder) killed",
        replicas[holder].name
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let acks = writes.finish().await;
    raising.store(false, Ordering::Relaxed);
    for r in raisers {
        r.await.unwrap();
    }
    phase(&format!("{} writes acknowledged", acks.len()));
    let after_kill: Vec<Ack> = acks.iter().filter(|a| a.at > killed).cloned().collect();
    assert!(
        after_kill.len() >= 10,
        "writes went on through the survivor: {} after the kill",
        after_kill.len()
    );
    assert!(acks.iter().any(|a| a.replica != holder && a.at < killed));
    assert!(
        acks.iter().any(|a| a.replica == holder),
        "writes went through the killed one too"
    );
    converged(&agents, &acks, Duration::from_secs(5)).await;
    let (worst, which) = slowest(&acks, &timelines, Duration::from_secs(5));
    println!("slowest write to its agent: {worst:?} ({which:?})");

    // Every alert raised, delivered once: the survivor took the sink over.
    let raised = raised.lock().unwrap().clone();
    let started = Instant::now();
    let mut got = counts(&delivered(&sink));
    while raised.iter().any(|id| !got.contains_key(id))
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = counts(&delivered(&sink));
    }
    let missing: Vec<&String> = raised.iter().filter(|id| !got.contains_key(*id)).collect();
    if !missing.is_empty() {
        let text = std::fs::read_to_string(&sink).unwrap_or_default();
        let head: Vec<&str> = text.lines().take(3).collect();
        let logs: Vec<String> = replicas.iter().map(|r| tail(&r.log_text(), 30)).collect();
        panic!(
            "{} of {} alerts never reached the sink: {:?}...\nthe sink's first lines: {head:#?}\n\
             replica logs:\n{}",
            missing.len(),
            raised.len(),
            &missing[..missing.len().min(10)],
            logs.join("\n---\n")
        );
    }
    // The killed holder's last batch may be in the file without its cursor: the survivor reads
    // the file's last line before it delivers, so nothing is written twice.
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "delivered more than once: {twice:?}\nreplica logs:\n{}",
        replicas
            .iter()
            .map(|r| tail(&r.log_text(), 30))
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    assert_eq!(got.len(), raised.len(), "nothing else delivered");
    let survivor = 1 - holder;
    assert!(
        replicas[survivor].holds_lease(),
        "the survivor took the sink's lease"
    );
    let resumed = replicas[survivor]
        .log_text()
        .contains("already holds alerts its cursor did not record");
    phase(&format!(
        "{} alerts delivered once each{}",
        raised.len(),
        if resumed {
            " (the survivor moved past a batch the killed holder wrote without recording it)"
        } else {
            ""
        }
    ));
    let mut admin = replicas[survivor].admin(&certs).await.unwrap();
    let entries = verify_audit(&mut admin).await;
    assert!(
        entries as usize > acks.len(),
        "every write's audit entries: {entries}"
    );

    // Phase 2: the killed replica back; the database fails over under writes.
    replicas[holder].spawn();
    phase("killed replica started again");
    let enforced = std::array::from_fn(|gw| {
        acks.iter()
            .rev()
            .find(|a| a.gw == gw)
            .is_some_and(|a| a.mode == "enforce")
    });
    let writes = Writes::start(urls.clone(), certs.clone(), 1_000, enforced);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Timed from the failover's start: the promotion (pg_ctl waits for it) and the stop.
    let failed_over = Instant::now();
    standby.promote();
    primary.stop();
    phase("standby promoted, old primary stopped");
    // Until each replica has written through the new primary (bounded).
    while (0..2).any(|r| {
        !writes
            .acked()
            .iter()
            .any(|a| a.replica == r && a.at > failed_over)
    }) {
        if failed_over.elapsed() > Duration::from_secs(15) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And a little more, so that the agents follow writes made after the failover.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acks2 = writes.finish().await;
    for (r, replica) in replicas.iter().enumerate() {
        let first = acks2
            .iter()
            .filter(|a| a.replica == r && a.at > failed_over)
            .map(|a| a.at - failed_over)
            .min()
            .unwrap_or_else(|| panic!("no write through replica {r} after the failover"));
        println!(
            "replica {}: writes resumed {first:?} after the failover began",
            replica.name
        );
        assert!(
            first < Duration::from_secs(10),
            "replica {r} wrote again only after {first:?}"
        );
    }
    converged(&agents, &acks2, Duration::from_secs(5)).await;

    // Nothing acknowledged is lost: each acknowledged generation is in the new primary, with
    // the mode its write set.
    let db = PgStore::connect(&store_url).unwrap();
    let epoch = db.epoch().unwrap();
    for (gw, name) in GATEWAYS.iter().enumerate() {
        let stored: BTreeMap<u32, DesiredState> = db
            .generations_after(name, 0)
            .unwrap()
            .into_iter()
            .map(|g| (g.generation, g.state(&epoch).unwrap()))
            .collect();
        for ack in acks.iter().chain(&acks2).filter(|a| a.gw == gw) {
            let state = stored.get(&ack.generation).unwrap_or_else(|| {
                panic!("acknowledged generation {} of {name} lost", ack.generation)
            });
            let pump = state.devices.iter().find(|d| d.name == device(gw)).unwrap();
            assert_eq!(
                pump.mode.to_string(),
                ack.mode,
                "generation {} of {name}",
                ack.generation
            );
        }
    }
    let mut admin = replicas[0].admin(&certs).await.unwrap();
    verify_audit(&mut admin).await;
    phase("every acknowledged write found on the new primary; audit intact");
    for w in watchers {
        w.abort();
    }
}
