//! Alerts for the SOC: which datapath events become alerts (with what severity), and the
//! outbox that holds them until the controller acknowledges their ids (at-least-once; the
//! controller stores each id once). The outbox is kept in a SQLite file beside the desired
//! state, so alerts raised while the controller is unreachable survive an agent restart.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use anyhow::Context as _;
use prost::Message as _;

use wardgate_analysis::{
    FlowDirection, Mac,
    detect::{Finding, FlowRef, Matrix, Severity, Technique},
    flow::DeviceRef,
};
use wardgate_policy::DesiredState;
use wardgate_proto::v1 as pb;

use crate::datapath::convert::{DatapathEvent, EventKind};

/// Alerts kept while the controller is unreachable, by default (`limits.outbox_alerts`); past
/// the cap the lowest-severity ones are dropped first (oldest first within a severity) and
/// counted per kind and severity, so a long outage cannot exhaust the gateway's memory or disk
/// and a flood of low alerts cannot push out a spoof.
pub const OUTBOX_CAP: usize = 10_000;

/// The outbox's bounds: alerts, and their encoded bytes (`limits.outbox_alerts`,
/// `limits.outbox_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxLimits {
    pub alerts: usize,
    pub bytes: u64,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            alerts: OUTBOX_CAP,
            bytes: 64 << 20,
        }
    }
}

impl OutboxLimits {
    pub fn of(limits: &crate::config::LimitsConfig) -> Self {
        OutboxLimits {
            alerts: limits.outbox_alerts,
            bytes: limits.outbox_bytes.0,
        }
    }

    /// Most bytes the outbox database may grow to: twice the alerts' budget (SQLite's rows,
    /// indexes and free pages) and 1 MiB.
    fn db_bytes(&self) -> u64 {
        2 * self.bytes + (1 << 20)
    }

    /// Most bytes the outbox file and its write-ahead log take together: the database, and a
    /// log checkpointed every `bytes` (and truncated back to that after).
    pub fn file_bytes(&self) -> u64 {
        self.db_bytes() + self.bytes + (1 << 20)
    }

    fn max_pages(&self, page_size: u64) -> u64 {
        self.db_bytes() / page_size.max(512)
    }

    fn checkpoint_pages(&self, page_size: u64) -> u64 {
        (self.bytes / page_size.max(512)).max(16)
    }
}

/// Largest batch sent in one message.
pub const BATCH: usize = 100;

/// The finding for a datapath event, or `None` for events that are learning data (new flows),
/// named from `state`, the generation that produced the event (`None`: not known any more).
/// `id` must be unique for this gateway (the agent uses its start time and a sequence number).
/// It travels as a `pb::Alert` (`From<&Finding>`, proto/src/finding.rs).
pub fn from_event(
    ev: &DatapathEvent,
    state: Option<&DesiredState>,
    id: String,
    observed_unix_ms: i64,
) -> Option<Finding> {
    use wardgate_analysis::detect::finding::datapath;
    // Spoofing is how an attacker gets a device's allowlist (ATT&CK for ICS T0830,
    // Adversary-in-the-Middle); a denied flow from an enforced device is the allowlist working
    // against something real; would-deny is the same seen in monitor mode.
    let (detector, severity) = match ev.kind {
        EventKind::Spoof => (datapath::SPOOF, Severity::Critical),
        EventKind::Deny => (datapath::DENY, Severity::High),
        EventKind::WouldDeny => (datapath::WOULD_DENY, Severity::Medium),
        EventKind::UnknownDevice => (datapath::UNKNOWN_DEVICE, Severity::Low),
        // A device at an address its inventory entry does not list (learn/monitor; enforced
        // devices doing this are spoofing).
        EventKind::NewAddress => (datapath::NEW_ADDRESS, Severity::Medium),
        // A device opening flows faster than its class ever should (scan, flood).
        EventKind::FlowCap => (datapath::FLOW_CAP, Severity::High),
        // The gateway's agent stopped beating: fail-open devices are only monitored now
        // (reason pass_monitor_would_deny); or it came back (pass_policy).
        EventKind::Watchdog if ev.reason == Some(wardgate_common::Reason::PassPolicy) => {
            (datapath::WATCHDOG, Severity::Low)
        }
        EventKind::Watchdog => (datapath::WATCHDOG, Severity::High),
        // A client that reached an allowed port but named an AE title or HL7 sender its
        // device's profile does not list: a misconfigured or impersonating application.
        EventKind::AppRefused if ev.reason == Some(wardgate_common::Reason::DropAppRefused) => {
            (datapath::APP_REFUSED, Severity::High)
        }
        EventKind::AppRefused => (datapath::APP_REFUSED, Severity::Medium),
        EventKind::NewFlow | EventKind::Other(_) => return None,
    };
    let technique = if ev.kind == EventKind::Spoof {
        Technique::new("T0830", "Adversary-in-the-Middle", Matrix::Ics)
    } else {
        Technique::new("", "", Matrix::Ics)
    };
    // `state` is the generation that produced the event: ids are named as they were then.
    let device = state.and_then(|s| s.device(ev.device_id));
    // Application refusals come from `wg_payload`, which knows the device, not its policy.
    let policy_id = if ev.policy_id == 0 {
        device.map_or(0, |d| d.policy_id)
    } else {
        ev.policy_id
    };
    let policy = state.and_then(|s| {
        s.policies
            .iter()
            .find(|p| p.policy_id == policy_id && ev.device_id != 0)
    });
    let mode = device.map(|d| d.mode.as_str());
    let device_ref = DeviceRef {
        name: device.map(|d| d.name.clone()).unwrap_or_default(),
        id: device.map(|_| ev.device_id),
        mac: (ev.from_device && ev.src_mac != [0; 6]).then_some(Mac(ev.src_mac)),
    };
    let time_ns = u64::try_from(observed_unix_ms).unwrap_or(0) * 1_000_000;
    let mut f = Finding::new(detector, &device_ref, time_ns, severity, 1.0, technique);
    f.id = id;
    f.class = policy.map(|p| p.profile.clone());
    f.profile_version = policy.map(|p| p.profile_version);
    f.rule = (ev.rule_id != 0).then_some(ev.rule_id);
    f.rule_name = state
        .and_then(|s| s.rule(ev.rule_id))
        .map(|(_, r)| r.name.clone());
    f.generation = (ev.generation != 0).then_some(ev.generation);
    f.mode = mode.map(str::to_string);
    // The datapath reports the packet that opened the flow: from a device, the device opened it.
    let ((device_addr, device_port), (peer, peer_port), direction) = if ev.from_device {
        (
            (ev.src, ev.sport),
            (ev.dst, ev.dport),
            FlowDirection::Opened,
        )
    } else {
        (
            (ev.dst, ev.dport),
            (ev.src, ev.sport),
            FlowDirection::Received,
        )
    };
    f.peer = Some(peer);
    f.flows.push(FlowRef {
        direction,
        device_addr,
        device_port,
        peer,
        peer_port,
        proto: ev.proto,
        first_seen_ns: time_ns,
        last_seen_ns: time_ns,
        packets: 1,
        bytes: 0,
    });
    if let Some(a) = &ev.app {
        // Both AE titles (calling -> called), or the MSH fields, as the datapath read them.
        let names = if a.app == "dicom" {
            format!(
                "dicom {} -> {}",
                a.fields.first().map_or("", String::as_str),
                a.fields.get(1).map_or("", String::as_str)
            )
        } else {
            format!("hl7 MSH-3..5,9 {}", a.fields.join(" | "))
        };
        f.evidence.names.push(names);
        f.evidence.names.push(format!("refused: {}", a.why));
    }
    f.summary = format!(
        "{} {} {}:{} -> {}:{}",
        wardgate_analysis::detect::format::title(detector),
        if f.device.name.is_empty() {
            "-"
        } else {
            f.device.name.as_str()
        },
        ev.src,
        ev.sport,
        ev.dst,
        ev.dport
    );
    if !f.evidence.names.is_empty() {
        f.summary = format!("{} ({})", f.summary, f.evidence.names.join(", "));
    }
    Some(f)
}

/// The alert for a detector finding: the one conversion (`wardgate_proto::finding`) with the
/// outbox's id (`id` must be unique for this gateway).
pub fn from_finding(f: &wardgate_analysis::detect::Finding, id: String) -> pb::Alert {
    let mut a = pb::Alert::from(f);
    a.id = id;
    a
}

/// Severities from the lowest to the highest, as `from_event` names them. An alert with any
/// other severity string ranks with `low`.
pub const SEVERITIES: [&str; 4] = [
    Severity::Low.as_str(),
    Severity::Medium.as_str(),
    Severity::High.as_str(),
    Severity::Critical.as_str(),
];

/// Rank of a severity (`Severity::rank`, the index in `SEVERITIES`; 0 = lowest).
fn severity_rank(severity: &str) -> usize {
    severity
        .parse::<Severity>()
        .map_or(0, |s| usize::from(s.rank()))
}

/// Rank of an alert's severity (the enum, or the name an older sender gave; 0 when neither
/// reads).
fn alert_rank(alert: &pb::Alert) -> usize {
    alert
        .severity_value()
        .ok()
        .flatten()
        .map_or(0, |s| usize::from(s.rank()))
}

/// Alerts dropped past the cap since the agent started: per severity (index as in
/// `SEVERITIES`), and per kind and severity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub by_severity: [u64; 4],
    /// (kind, severity rank) -> alerts dropped. Kinds are the agent's own detector names, a
    /// bounded set.
    pub by_kind: std::collections::BTreeMap<(String, usize), u64>,
}

impl Dropped {
    pub fn total(&self) -> u64 {
        self.by_severity.iter().sum()
    }

    /// How many of `severity` were dropped.
    pub fn of(&self, severity: &str) -> u64 {
        self.by_severity[severity_rank(severity)]
    }

    /// How many of `kind` and `severity` were dropped.
    pub fn of_kind(&self, kind: &str, severity: &str) -> u64 {
        self.by_kind
            .get(&(kind.to_string(), severity_rank(severity)))
            .copied()
            .unwrap_or(0)
    }

    fn count(&mut self, alert: &pb::Alert) {
        let rank = alert_rank(alert);
        self.by_severity[rank] += 1;
        *self.by_kind.entry((alert.kind.clone(), rank)).or_default() += 1;
    }

    fn add(&mut self, other: &Dropped) {
        for (t, n) in self.by_severity.iter_mut().zip(other.by_severity) {
            *t += n;
        }
        for (k, n) in &other.by_kind {
            *self.by_kind.entry(k.clone()).or_default() += n;
        }
    }
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, n)) in SEVERITIES.iter().zip(self.by_severity).enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{name}={n}")?;
        }
        Ok(())
    }
}

/// Alerts not yet acknowledged, oldest first. `sent` of them went out on the current
/// connection; a new connection sends them all again. With a store, every pending alert is
/// also a row in it until acknowledged (or dropped past the cap).
///
/// An alert pushed with the id of a pending one (a finding's update: a higher count) replaces
/// it and goes to the back, to be sent (again). Acknowledgements come back in the order the
/// copies were sent, one per copy, so an alert is removed only by the acknowledgement of its
/// latest copy: the ack of an older copy never removes an update still in flight.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: VecDeque<Pending>,
    /// The ids in `pending` (an update looks for its older copy only when there is one).
    ids: std::collections::HashSet<String>,
    sent: usize,
    /// Encoded bytes of the pending alerts.
    bytes: u64,
    limits: OutboxLimits,
    dropped: Dropped,
    /// Writes of the outbox file that failed (its page limit reached, a full disk, ...): the
    /// alerts stay in memory.
    write_failures: u64,
    /// When drops were last logged (at most every `DROP_LOG_EVERY`; counted always).
    drop_logged: Option<std::time::Instant>,
    store: Option<Store>,
}

/// A pending alert and how many copies of its id are in flight on this connection.
#[derive(Debug)]
struct Pending {
    alert: pb::Alert,
    in_flight: u32,
}

/// Drops past the cap are logged at most this often (a long outage drops on every event).
const DROP_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The outbox file: one row per pending alert, in arrival order. WAL with `synchronous =
/// NORMAL`: a commit survives the agent being killed; a power cut may lose the last few.
#[derive(Debug)]
struct Store {
    conn: rusqlite::Connection,
    path: PathBuf,
}

/// The file's bound: past it a write fails (SQLITE_FULL) and is counted. The WAL is
/// checkpointed once it holds the alerts' budget and truncated back to it after.
fn bound(conn: &rusqlite::Connection, limits: OutboxLimits) -> rusqlite::Result<()> {
    let page_size = conn
        .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))?
        .unsigned_abs();
    let pages = limits.max_pages(page_size);
    conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
    conn.query_row(
        &format!(
            "PRAGMA wal_autocheckpoint = {}",
            limits.checkpoint_pages(page_size)
        ),
        [],
        |_| Ok(()),
    )?;
    conn.query_row(
        &format!("PRAGMA journal_size_limit = {}", limits.bytes),
        [],
        |_| Ok(()),
    )
}

impl Store {
    fn open(path: &Path, limits: OutboxLimits) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening alert outbox {}", path.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS outbox (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 id TEXT NOT NULL UNIQUE,
                 alert BLOB NOT NULL
             );",
        )
        .with_context(|| format!("preparing alert outbox {}", path.display()))?;
        bound(&conn, limits)
            .with_context(|| format!("bounding alert outbox {}", path.display()))?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Pending alerts in arrival order; rows that do not decode are deleted and counted.
    fn load(&mut self) -> anyhow::Result<(Vec<pb::Alert>, u64)> {
        let rows: Vec<(i64, Vec<u8>)> = self
            .conn
            .prepare("SELECT seq, alert FROM outbox ORDER BY seq")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let (mut alerts, mut bad) = (Vec::with_capacity(rows.len()), Vec::new());
        for (seq, bytes) in rows {
            match pb::Alert::decode(bytes.as_slice()) {
                Ok(a) => alerts.push(a),
                Err(_) => bad.push(seq),
            }
        }
        for seq in &bad {
            self.conn
                .execute("DELETE FROM outbox WHERE seq = ?1", [seq])?;
        }
        Ok((alerts, bad.len() as u64))
    }

    /// Rewrites the file without its free pages (a file grown under a larger budget), then
    /// bounds it again (SQLite cannot set a page limit under the pages in use).
    fn compact(&mut self, limits: OutboxLimits) -> rusqlite::Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        self.conn.execute_batch("VACUUM;")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        bound(&self.conn, limits)
    }

    fn write(&mut self, added: &[pb::Alert], removed: &[String]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert =
                // An update replaces its older copy and moves to the back, as in memory.
                tx.prepare_cached("INSERT OR REPLACE INTO outbox (id, alert) VALUES (?1, ?2)")?;
            for a in added {
                insert.execute(rusqlite::params![a.id, a.encode_to_vec()])?;
            }
            let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            for id in removed {
                delete.execute([id])?;
            }
        }
        tx.commit()
    }
}

impl Outbox {
    /// An outbox in memory only, with `limits`.
    pub fn with_limits(limits: OutboxLimits) -> Self {
        Outbox {
            limits,
            ..Outbox::default()
        }
    }

    /// An outbox kept in `path` (created if missing), with whatever it already holds pending,
    /// with the default limits.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Self::open_with(path, OutboxLimits::default())
    }

    /// An outbox kept in `path`, bounded by `limits` (what the file holds past them is
    /// dropped as any excess, lowest severity first).
    pub fn open_with(path: &Path, limits: OutboxLimits) -> anyhow::Result<Self> {
        let mut store = Store::open(path, limits)?;
        let (alerts, undecodable) = store
            .load()
            .with_context(|| format!("reading alert outbox {}", path.display()))?;
        if undecodable > 0 {
            tracing::warn!(
                undecodable,
                path = %path.display(),
                "dropped alert outbox rows that do not decode"
            );
        }
        let mut outbox = Outbox {
            store: Some(store),
            ..Outbox::with_limits(limits)
        };
        // The loaded alerts are already rows: only what the cap drops is written.
        let removed = outbox.admit(alerts);
        outbox.persist(&[], &removed);
        // A file over its bound (grown under a larger `outbox_bytes`) is compacted; on a disk
        // too full for the copy it stays as it is, and says so.
        let before = outbox.file_bytes();
        if before > limits.file_bytes()
            && let Some(store) = &mut outbox.store
        {
            match store.compact(limits) {
                Ok(()) => tracing::info!(
                    path = %path.display(),
                    before,
                    after = outbox.file_bytes(),
                    "alert outbox compacted to its limit"
                ),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    bytes = before,
                    "alert outbox over its limit and not compacted"
                ),
            }
        }
        Ok(outbox)
    }

    pub fn push(&mut self, alert: pb::Alert) {
        self.push_all(vec![alert]);
    }

    /// Adds alerts (one transaction when stored); one with the id of a pending alert replaces
    /// it. Past the limits the lowest severity goes first (oldest first within it), counted
    /// per severity and logged. A store that cannot be written keeps them in memory, and says
    /// so.
    pub fn push_all(&mut self, alerts: Vec<pb::Alert>) {
        let removed = self.admit(alerts.clone());
        // An alert dropped in the same step it came in never becomes a row.
        let gone: std::collections::HashSet<&str> = removed.iter().map(String::as_str).collect();
        let added: Vec<_> = alerts
            .into_iter()
            .filter(|a| !gone.contains(a.id.as_str()))
            .collect();
        self.persist(&added, &removed);
    }

    /// Appends in memory, then, past a limit (alerts or bytes), drops the excess: the lowest
    /// severity present before any of the next one, oldest first within a severity. Returns
    /// the ids dropped.
    fn admit(&mut self, alerts: Vec<pb::Alert>) -> Vec<String> {
        for alert in alerts {
            let mut in_flight = 0;
            self.bytes += alert.encoded_len() as u64;
            if !self.ids.insert(alert.id.clone())
                && let Some(i) = self.pending.iter().position(|p| p.alert.id == alert.id)
            {
                self.bytes -= self.pending[i].alert.encoded_len() as u64;
                if i >= self.sent {
                    // Not sent yet: the newer copy takes the old one's place, so alerts still
                    // leave in the order they were raised.
                    self.pending[i].alert = alert;
                    continue;
                }
                // Sent, unacknowledged: the newer copy goes out again, after what waits.
                let old = self.pending.remove(i).expect("found above");
                in_flight = old.in_flight;
                self.sent -= 1;
            }
            self.pending.push_back(Pending { alert, in_flight });
        }
        let over = |len: usize, bytes: u64| len > self.limits.alerts || bytes > self.limits.bytes;
        if !over(self.pending.len(), self.bytes) {
            return Vec::new();
        }
        // Mark, lowest severity first and oldest first within it, until both limits hold.
        let (mut len, mut bytes) = (self.pending.len(), self.bytes);
        let mut doomed = vec![false; self.pending.len()];
        'ranks: for rank in 0..SEVERITIES.len() {
            for (i, p) in self.pending.iter().enumerate() {
                if !over(len, bytes) {
                    break 'ranks;
                }
                if alert_rank(&p.alert) == rank {
                    doomed[i] = true;
                    len -= 1;
                    bytes -= p.alert.encoded_len() as u64;
                }
            }
        }
        let mut removed = Vec::new();
        let mut dropped = Dropped::default();
        let dropped_sent = doomed[..self.sent].iter().filter(|d| **d).count();
        let mut i = 0;
        self.pending.retain(|p| {
            let drop = doomed[i];
            i += 1;
            if drop {
                dropped.count(&p.alert);
                removed.push(p.alert.id.clone());
            }
            !drop
        });
        self.sent -= dropped_sent;
        self.bytes = bytes;
        for id in &removed {
            self.ids.remove(id);
        }
        self.dropped.add(&dropped);
        let now = std::time::Instant::now();
        if self
            .drop_logged
            .is_none_or(|t| now.duration_since(t) >= DROP_LOG_EVERY)
        {
            self.drop_logged = Some(now);
            tracing::warn!(
                dropped = %dropped,
                dropped_since_start = %self.dropped,
                cap_alerts = self.limits.alerts,
                cap_bytes = self.limits.bytes,
                "alert outbox full: dropped the lowest-severity alerts first"
            );
        }
        removed
    }

    /// Alerts dropped past the limits since the agent started, per kind and severity.
    pub fn dropped(&self) -> &Dropped {
        &self.dropped
    }

    /// Encoded bytes of the pending alerts.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn limits(&self) -> OutboxLimits {
        self.limits
    }

    /// Writes of the outbox file that failed since the start (the alerts stayed in memory).
    pub fn write_failures(&self) -> u64 {
        self.write_failures
    }

    /// The outbox file and its write-ahead log, in bytes (0 without a file).
    pub fn file_bytes(&self) -> u64 {
        let Some(store) = &self.store else { return 0 };
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = store.path.clone().into_os_string();
        wal.push("-wal");
        size(&store.path) + size(Path::new(&wal))
    }

    fn persist(&mut self, added: &[pb::Alert], removed: &[String]) {
        if let Some(store) = &mut self.store
            && let Err(e) = store.write(added, removed)
        {
            self.write_failures += 1;
            tracing::error!(
                error = %e,
                path = %store.path.display(),
                "alert outbox not written; these alerts are only in memory"
            );
        }
    }

    /// The next batch to send on this connection (empty when all were sent).
    pub fn next_batch(&mut self) -> Vec<pb::Alert> {
        let end = (self.sent + BATCH).min(self.pending.len());
        let batch = self
            .pending
            .range_mut(self.sent..end)
            .map(|p| {
                p.in_flight += 1;
                p.alert.clone()
            })
            .collect();
        self.sent = end;
        batch
    }

    /// Takes acknowledgements (one per copy sent, in the order sent): an alert goes once its
    /// latest copy is acknowledged.
    pub fn ack(&mut self, ids: &[String]) {
        let acked: std::collections::HashMap<&str, u32> =
            ids.iter().fold(Default::default(), |mut m, id| {
                *m.entry(id.as_str()).or_default() += 1;
                m
            });
        let mut removed = Vec::new();
        let mut acked_sent = 0;
        let mut i = 0;
        self.pending.retain_mut(|p| {
            let was_sent = i < self.sent;
            i += 1;
            let Some(&n) = acked.get(p.alert.id.as_str()) else {
                return true;
            };
            p.in_flight = p.in_flight.saturating_sub(n);
            // An update not sent yet, or whose copy is still in flight, stays.
            if !was_sent || p.in_flight > 0 {
                return true;
            }
            acked_sent += 1;
            self.bytes -= p.alert.encoded_len() as u64;
            removed.push(p.alert.id.clone());
            false
        });
        self.sent -= acked_sent;
        for id in &removed {
            self.ids.remove(id);
        }
        self.persist(&[], &removed);
    }

    /// A new connection: everything pending goes out again (nothing is in flight).
    pub fn reconnected(&mut self) {
        self.sent = 0;
        for p in &mut self.pending {
            p.in_flight = 0;
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The outbox shared by the event reader (which adds) and the controller link (which sends and
/// removes), with a wake-up for the link. Adding never waits for the network, so alerts keep
/// being kept while the controller is unreachable.
#[derive(Debug, Default)]
pub struct AlertQueue {
    outbox: Mutex<Outbox>,
    ready: tokio::sync::Notify,
    /// Alerts were acknowledged (wakes `drain`).
    acked: tokio::sync::Notify,
    /// `drain` wants a link now (cuts a reconnect backoff short).
    hurry: tokio::sync::Notify,
}

impl AlertQueue {
    pub fn new(outbox: Outbox) -> Arc<Self> {
        Arc::new(AlertQueue {
            outbox: Mutex::new(outbox),
            ..AlertQueue::default()
        })
    }

    /// Removes acknowledged alerts (from the outbox file too).
    pub fn ack(&self, ids: &[String]) {
        self.lock().ack(ids);
        self.acked.notify_waiters();
    }

    /// Resolves when `drain` asks the link to reconnect at once.
    pub async fn hurried(&self) {
        self.hurry.notified().await;
    }

    /// At stop: asks the link to deliver everything pending now (reconnecting at once if it
    /// is waiting to retry) and waits until the controller acknowledged it all or `limit`
    /// passed. Returns how many are left; they stay in the outbox file for the next start.
    pub async fn drain(&self, limit: std::time::Duration) -> usize {
        // A stored permit: a link that is connected keeps it for its next backoff, harmlessly.
        self.hurry.notify_one();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let acked = self.acked.notified();
            tokio::pin!(acked);
            // Registered before looking, so an ack in between still wakes us.
            acked.as_mut().enable();
            let left = self.lock().len();
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, acked).await.is_err() {
                return self.lock().len();
            }
        }
    }

    pub fn push_all(&self, alerts: Vec<pb::Alert>) {
        if alerts.is_empty() {
            return;
        }
        self.lock().push_all(alerts);
        self.ready.notify_one();
    }

    /// The outbox itself; hold the guard only for in-memory work, never across an await.
    pub fn lock(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding the lock leaves a consistent outbox (every method finishes its
        // in-memory change before persisting); keep going with it.
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once alerts were added since the last call.
    pub async fn added(&self) {
        self.ready.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str) -> pb::Alert {
        pb::Alert {
            id: id.into(),
            ..Default::default()
        }
    }

    fn ids(v: &[pb::Alert]) -> Vec<&str> {
        v.iter().map(|a| a.id.as_str()).collect()
    }

    #[test]
    fn unacknowledged_alerts_are_sent_again_after_a_reconnect() {
        let mut o = Outbox::default();
        for id in ["a", "b", "c"] {
            o.push(alert(id));
        }
        assert_eq!(ids(&o.next_batch()), ["a", "b", "c"]);
        assert!(
            o.next_batch().is_empty(),
            "nothing is sent twice on one connection"
        );
        o.ack(&["b".to_string()]);
        o.push(alert("d"));
        assert_eq!(ids(&o.next_batch()), ["d"]);
        o.reconnected();
        assert_eq!(ids(&o.next_batch()), ["a", "c", "d"]);
        o.ack(&["a".into(), "c".into(), "d".into()]);
        assert!(o.is_empty());
    }

    fn with_severity(id: &str, severity: &str) -> pb::Alert {
        pb::Alert {
            id: id.into(),
            severity: severity.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts() {
        let mut o = Outbox::default();
        for i in 0..OUTBOX_CAP + 5 {
            o.push(alert(&i.to_string()));
        }
        assert_eq!((o.len(), o.dropped().total()), (OUTBOX_CAP, 5));
        assert_eq!(o.next_batch()[0].id, "5");
    }

    #[test]
    fn a_full_outbox_drops_the_lowest_severity_first_and_counts_each() {
        // Mixed severities, interleaved (per ten: 1 critical, 2 high, 3 medium, 4 low), 3,000
        // more than the cap.
        let severity = |i: usize| match i % 10 {
            0 => "critical",
            1 | 2 => "high",
            3..=5 => "medium",
            _ => "low",
        };
        let mut o = Outbox::default();
        // Some of it already went out on this connection (sent, not yet acknowledged).
        o.push_all(
            (0..2_000)
                .map(|i| with_severity(&i.to_string(), severity(i)))
                .collect(),
        );
        assert_eq!(o.next_batch().len(), BATCH);
        for i in 2_000..OUTBOX_CAP + 3_000 {
            o.push(with_severity(&i.to_string(), severity(i)));
        }
        // The 40 low ones among the 100 sent were dropped; sending goes on after the rest.
        assert_eq!(o.next_batch()[0].id, "100");
        // 13,000 in: 1,300 critical, 2,600 high, 3,900 medium, 5,200 low; 3,000 must go, all low.
        assert_eq!(o.len(), OUTBOX_CAP);
        let d = o.dropped();
        assert_eq!(
            (d.of("low"), d.of("medium"), d.of("high"), d.of("critical")),
            (3_000, 0, 0, 0)
        );
        o.reconnected();
        let mut kept = Vec::new();
        loop {
            let b = o.next_batch();
            if b.is_empty() {
                break;
            }
            kept.extend(b);
        }
        let of = |s: &str| kept.iter().filter(|a| a.severity == s).count();
        assert_eq!(
            (of("critical"), of("high"), of("medium"), of("low")),
            (1_300, 2_600, 3_900, 2_200),
            "every critical, high and medium alert survives"
        );
        // Within low, the oldest went first: the surviving low alerts are the newest ones.
        let first_low: usize = kept
            .iter()
            .find(|a| a.severity == "low")
            .map(|a| a.id.parse().unwrap())
            .unwrap();
        assert_eq!(first_low, 7_506, "the 3,001st low alert is the oldest kept");
        // Order is kept for the survivors.
        let ids: Vec<usize> = kept.iter().map(|a| a.id.parse().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));

        // More past the cap once low is used up: medium goes next, never high or critical.
        o.push_all(
            (0..2_300)
                .map(|i| with_severity(&format!("m{i}"), "high"))
                .collect(),
        );
        let d = o.dropped();
        assert_eq!(
            (d.of("low"), d.of("medium"), d.of("high"), d.of("critical")),
            (5_200, 100, 0, 0)
        );
        assert_eq!(d.total(), 5_300);
        assert_eq!(o.len(), OUTBOX_CAP);
    }

    fn sized(id: &str, kind: &str, severity: &str, bytes: usize) -> pb::Alert {
        pb::Alert {
            id: id.into(),
            kind: kind.into(),
            severity: severity.into(),
            summary: "x".repeat(bytes),
            ..Default::default()
        }
    }

    #[test]
    fn the_byte_limit_drops_lowest_severity_first_and_counts_per_kind() {
        let size = |a: pb::Alert| a.encoded_len() as u64;
        let low = size(sized("l000", "unknown_device", "low", 1_000));
        // Room for the critical, the high and 3 low alerts by bytes, 100 by count.
        let room = size(sized("crit", "spoof", "critical", 1_000))
            + size(sized("high", "deny", "high", 1_000))
            + 3 * low;
        let mut o = Outbox::with_limits(OutboxLimits {
            alerts: 100,
            bytes: room,
        });
        o.push(sized("crit", "spoof", "critical", 1_000));
        for i in 0..6 {
            o.push(sized(&format!("l{i:03}"), "unknown_device", "low", 1_000));
        }
        o.push(sized("high", "deny", "high", 1_000));
        // 8 in, room for 5: the 3 oldest low ones went, never the critical or high one.
        assert_eq!(o.len(), 5);
        assert_eq!(o.bytes(), room);
        let d = o.dropped();
        assert_eq!((d.of("low"), d.of_kind("unknown_device", "low")), (3, 3));
        assert_eq!(
            d.of_kind("spoof", "critical") + d.of_kind("deny", "high"),
            0
        );
        assert_eq!(
            ids(&o.next_batch()),
            ["crit", "l003", "l004", "l005", "high"]
        );
        // One large high alert: it takes the room of the three low ones left; the critical
        // and the high one stay.
        o.push(sized("big", "flow_cap", "high", 3_000));
        assert_eq!(o.dropped().of_kind("unknown_device", "low"), 6);
        assert!(o.bytes() <= room, "{} > {room}", o.bytes());
        o.reconnected();
        assert_eq!(ids(&o.next_batch()), ["crit", "high", "big"]);
        // Acknowledged alerts give their bytes back.
        o.ack(&["crit".into(), "high".into(), "big".into()]);
        assert_eq!((o.len(), o.bytes()), (0, 0));
    }

    #[test]
    fn an_update_is_counted_once_in_bytes() {
        let mut o = Outbox::default();
        o.push(sized("scan", "scan", "high", 10));
        o.push(sized("scan", "scan", "high", 20));
        assert_eq!(
            o.bytes(),
            sized("scan", "scan", "high", 20).encoded_len() as u64
        );
        o.next_batch();
        o.push(sized("scan", "scan", "high", 30));
        assert_eq!(
            o.bytes(),
            sized("scan", "scan", "high", 30).encoded_len() as u64
        );
    }

    #[test]
    fn the_outbox_file_is_bounded_and_a_refused_write_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let limits = OutboxLimits {
            alerts: 1_000_000,
            bytes: 64 << 10,
        };
        let mut o = Outbox::open_with(&path, limits).unwrap();
        // Alerts of 2 KB each, 200 of them one at a time (a transaction each): memory keeps
        // 64 KiB of them; the file and its log stay under their bound.
        for i in 0..200 {
            let mut a = sized(&format!("a{i}"), "deny", "low", 0);
            a.summary = (0..2_000)
                .map(|j| char::from(b'a' + ((i * 7 + j * 13) % 26) as u8))
                .collect();
            o.push(a);
        }
        assert!(o.bytes() <= limits.bytes);
        assert!(o.dropped().of("low") > 150, "{}", o.dropped());
        assert!(
            o.file_bytes() <= limits.file_bytes(),
            "{} > {}",
            o.file_bytes(),
            limits.file_bytes()
        );
        assert_eq!(o.write_failures(), 0);
        drop(o);
        // A file at its page limit (filled from outside, which the limit does not bind): the
        // write fails, is counted, and the alert is kept in memory.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let mut o = Outbox::open_with(&path, limits).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        // Fill the file to its page limit from outside.
        conn.execute_batch("CREATE TABLE filler (b BLOB);").unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let max = (limits.file_bytes() / 4096) as i64;
        let _ = conn.execute(
            "INSERT INTO filler VALUES (randomblob(?1))",
            [(max - pages) * 4096],
        );
        drop(conn);
        o.push(sized("late", "spoof", "critical", 60_000));
        assert_eq!(o.write_failures(), 1);
        assert_eq!(ids(&o.next_batch()), ["late"]);
    }

    #[test]
    fn a_file_grown_under_a_larger_budget_is_compacted_to_a_lowered_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let mut o = Outbox::open(&path).unwrap();
        // 3 MB of alerts under the default 64M budget.
        o.push_all(
            (0..1_500)
                .map(|i| sized(&format!("a{i}"), "deny", "low", 2_000))
                .collect(),
        );
        let grown = o.file_bytes();
        drop(o);
        let small = OutboxLimits {
            alerts: 10_000,
            bytes: 64 << 10,
        };
        assert!(grown > small.file_bytes(), "{grown}");
        let o = Outbox::open_with(&path, small).unwrap();
        assert!(o.bytes() <= small.bytes);
        assert!(
            o.file_bytes() <= small.file_bytes(),
            "{} of {} after compaction",
            o.file_bytes(),
            small.file_bytes()
        );
        // The newest alerts are what is left, and still there after a restart.
        let kept = o.len();
        assert!(kept > 10, "{kept}");
        assert_eq!(o.pending.back().unwrap().alert.id, "a1499");
        drop(o);
        assert_eq!(Outbox::open_with(&path, small).unwrap().len(), kept);
    }

    #[test]
    fn the_outbox_file_drops_the_same_alerts_as_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let mut o = Outbox::open(&path).unwrap();
        o.push(with_severity("spoof", "critical"));
        o.push_all(
            (0..OUTBOX_CAP + 10)
                .map(|i| with_severity(&i.to_string(), "low"))
                .collect(),
        );
        assert_eq!(o.dropped().of("low"), 11);
        drop(o);
        let mut o = Outbox::open(&path).unwrap();
        assert_eq!(o.len(), OUTBOX_CAP);
        let first = o.next_batch();
        assert_eq!(first[0].id, "spoof", "the critical alert survived the cap");
        assert_eq!(first[1].id, "11");
    }

    #[test]
    fn the_outbox_file_keeps_what_was_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/outbox.sqlite");
        let mut o = Outbox::open(&path).unwrap();
        o.push_all(vec![alert("a"), alert("b"), alert("c")]);
        o.next_batch();
        o.ack(&["b".to_string()]);
        drop(o);
        // A restart (or kill -9 after the commit) finds a and c, in order, to send again.
        let mut o = Outbox::open(&path).unwrap();
        assert_eq!(ids(&o.next_batch()), ["a", "c"]);
        o.ack(&["a".into(), "c".into()]);
        drop(o);
        assert!(Outbox::open(&path).unwrap().is_empty());
    }

    #[test]
    fn the_outbox_file_is_capped_like_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let mut o = Outbox::open(&path).unwrap();
        o.push_all((0..OUTBOX_CAP + 3).map(|i| alert(&i.to_string())).collect());
        assert_eq!((o.len(), o.dropped().total()), (OUTBOX_CAP, 3));
        drop(o);
        let mut o = Outbox::open(&path).unwrap();
        assert_eq!(o.len(), OUTBOX_CAP);
        assert_eq!(o.next_batch()[0].id, "3");
    }

    #[test]
    fn undecodable_rows_are_dropped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let mut o = Outbox::open(&path).unwrap();
        o.push(alert("good"));
        drop(o);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO outbox (id, alert) VALUES ('bad', x'ffffffff')",
            [],
        )
        .unwrap();
        drop(conn);
        let mut o = Outbox::open(&path).unwrap();
        assert_eq!(ids(&o.next_batch()), ["good"]);
        drop(o);
        assert_eq!(Outbox::open(&path).unwrap().len(), 1, "the bad row is gone");
    }

    #[test]
    fn a_file_that_is_not_an_outbox_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        std::fs::write(
            &path,
            "not a database, and long enough to be read as a header....",
        )
        .unwrap();
        let e = format!("{:#}", Outbox::open(&path).unwrap_err());
        assert!(e.contains("outbox.sqlite"), "{e}");
    }

    fn with_count(id: &str, count: u64) -> pb::Alert {
        pb::Alert {
            id: id.into(),
            count,
            ..Default::default()
        }
    }

    #[test]
    fn an_update_replaces_its_pending_copy_and_only_its_own_ack_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let mut o = Outbox::open(&path).unwrap();
        o.push_all(vec![with_count("scan", 1), alert("deny")]);
        assert_eq!(ids(&o.next_batch()), ["scan", "deny"]);
        // The finding grew while its first copy was in flight: the update is sent again.
        o.push(with_count("scan", 5));
        assert_eq!(o.len(), 2, "one alert per id");
        let b = o.next_batch();
        assert_eq!((ids(&b), b[0].count), (vec!["scan"], 5));
        // The first batch's ack (count 1) must not remove the update in flight.
        o.ack(&["scan".into(), "deny".into()]);
        assert_eq!(o.len(), 1);
        drop(o);
        // Kept in the file as count 5, and sent again after a restart.
        let mut o = Outbox::open(&path).unwrap();
        let b = o.next_batch();
        assert_eq!((ids(&b), b[0].count), (vec!["scan"], 5));
        o.ack(&["scan".into()]);
        assert!(o.is_empty());
        // An update pushed before the first copy went out replaces it: sent once, as count 7.
        o.push(with_count("x", 1));
        o.push(with_count("x", 7));
        let b = o.next_batch();
        assert_eq!((b.len(), b[0].count), (1, 7));
        o.ack(&["x".into()]);
        assert!(o.is_empty());
        drop(o);
        assert!(Outbox::open(&path).unwrap().is_empty());
    }

    #[test]
    fn batches_are_bounded() {
        let mut o = Outbox::default();
        for i in 0..BATCH + 1 {
            o.push(alert(&i.to_string()));
        }
        assert_eq!(o.next_batch().len(), BATCH);
        assert_eq!(o.next_batch().len(), 1);
    }
}
