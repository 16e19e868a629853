//! Embedded SQLite store (rusqlite, bundled SQLite): one file, WAL, migrations.

use std::{collections::BTreeMap, net::IpAddr, path::Path, sync::Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use super::{
    AgentHealth, AlertQuery, AlertRow, DeviceRow, GatewayRow, GenerationContent, GenerationRow,
    HealthRow, NewAlert, ProfileRow, Snapshot, Store, StoreError, StoreTx, StoredAlert,
    SuppressionRow,
    checkpoint::{self, Checkpointer},
    migrations::MIGRATIONS,
    reader::Readers,
    sqlite_tx::SqliteTx,
};
use crate::{
    audit::{
        self, AuditEntry,
        head::{self, HeadFile},
    },
    error::{Error, Result},
};

pub struct SqliteStore {
    conn: Mutex<Connection>,
    alert_quota: u32,
    /// Where every write's chain head goes (none for an in-memory or read-only store).
    head: Option<HeadFile>,
    /// WAL checkpoints of a store file (none in memory or read-only); dropped after `conn`.
    checkpointer: Option<Checkpointer>,
    /// Read connections for reads that can be long (flow rows, listings), so they never hold
    /// `conn`, which writes wait for (none in memory: those reads use `conn`).
    readers: Option<Readers>,
    /// The generation columns this store's schema has (see [`generations_where`]).
    generation_cols: &'static str,
}

/// Alerts kept per gateway. Past it the store drops that gateway's acknowledged alerts first,
/// then the lowest severity, oldest first, and counts what it dropped: one noisy gateway
/// cannot fill the store, and a flood of low alerts never pushes out a critical one.
pub const ALERT_QUOTA: u32 = 100_000;

use crate::audit::now_ms;

pub(super) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("rows serialize")
}

/// 128 random bits in hex: a store's epoch.
fn new_epoch() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| Error::Internal(format!("no randomness for the epoch: {e}")))?;
    Ok(hex::encode(b))
}

pub(super) fn epoch(c: &Connection) -> Result<String> {
    Ok(c.query_row(
        "SELECT value FROM store_meta WHERE key = 'epoch'",
        [],
        |r| r.get(0),
    )?)
}

/// A JSON list column of row `name` in `table`.
pub(super) fn list(table: &'static str, name: &str, s: &str) -> Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| {
        StoreError::corrupt(table, name, format!("not a JSON list of strings: {e}")).into()
    })
}

/// Rewrites every device's MAC and addresses in their canonical text and indexes the
/// addresses (migration 4): lookups by MAC or address compare text. A row that does not parse
/// is left as it is, and reported by name when it is read.
fn canonicalize_devices(tx: &Transaction<'_>) -> Result<()> {
    let raw: Vec<RawDevice> = tx
        .prepare(&format!("SELECT {DEVICE_COLS} FROM devices"))?
        .query_map([], raw_device)?
        .collect::<rusqlite::Result<_>>()?;
    for r in raw {
        let name = r.name.clone();
        let Ok(d) = device_from_raw(r) else {
            tracing::warn!(device = name, "corrupt device row left as it is");
            continue;
        };
        tx.execute(
            "UPDATE devices SET mac = ?2, addresses = ?3 WHERE name = ?1",
            params![d.name, d.mac.to_string(), json(&d.addresses)],
        )?;
        for a in &d.addresses {
            tx.execute(
                "INSERT OR IGNORE INTO device_addresses (address, device) VALUES (?1, ?2)",
                params![a.to_string(), d.name],
            )?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/wardgate.db`, applies pending migrations, and
    /// appends chain heads to `<data_dir>/audit-head.log`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with_head(data_dir, &data_dir.join(head::FILE_NAME))
    }

    /// As `open`, with the audit head file at `head_path`.
    pub fn open_with_head(data_dir: &Path, head_path: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| Error::Internal(format!("creating {}: {e}", data_dir.display())))?;
        let db = data_dir.join("wardgate.db");
        let conn = Connection::open(&db)?;
        let mut store = Self::init(conn)?;
        // Writes never checkpoint: the checkpointer's thread does (`checkpoint.rs`).
        store.conn().pragma_update(None, "wal_autocheckpoint", 0)?;
        store.checkpointer = Some(Checkpointer::start(&db, checkpoint::EVERY)?);
        store.readers = Some(Readers::new(&db));
        let (seq, hash) = store.chain_head()?;
        store.head = Some(HeadFile::open(head_path, (seq, &hash)).map_err(|e| {
            Error::Internal(format!(
                "opening the audit head file {}: {e}",
                head_path.display()
            ))
        })?);
        Ok(store)
    }

    /// Opens an existing store read-only, as it is (no migration, no head file written), for
    /// verification; a directory without a store is an error.
    pub fn open_read_only(data_dir: &Path) -> Result<Self> {
        let db = data_dir.join("wardgate.db");
        if !db.is_file() {
            return Err(Error::NotFound {
                what: "store",
                name: db.display().to_string(),
            });
        }
        let conn = Connection::open_with_flags(
            &db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let version = conn
            .query_row("SELECT version FROM schema_version", [], |r| {
                r.get::<_, u32>(0)
            })
            .map_err(|e| {
                Error::Internal(format!("{} is not a wardgate store: {e}", db.display()))
            })?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            alert_quota: ALERT_QUOTA,
            head: None,
            checkpointer: None,
            readers: None,
            // Not migrated: a store from before migration 9 is read as it is.
            generation_cols: if version < BUNDLE_SCHEMA {
                LEGACY_GENERATION_COLS
            } else {
                GENERATION_COLS
            },
        })
    }

    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    /// The last entry's sequence and hash (0 and the genesis hash for an empty trail).
    fn chain_head(&self) -> Result<(u64, String)> {
        Ok(self
            .conn()
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, audit::GENESIS.to_string())))
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            [],
        )?;
        let current: u32 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            if i + 1 == 4 {
                canonicalize_devices(&tx)?;
            }
            tx.execute("DELETE FROM schema_version", [])?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [i as u32 + 1],
            )?;
            tx.commit()?;
            tracing::info!(version = i + 1, "store migrated");
        }
        let epoch: Option<String> = conn
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'epoch'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if epoch.is_none() {
            let epoch = new_epoch()?;
            conn.execute(
                "INSERT INTO store_meta (key, value) VALUES ('epoch', ?1)",
                [&epoch],
            )?;
            tracing::info!(epoch, "new store epoch");
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            alert_quota: ALERT_QUOTA,
            head: None,
            checkpointer: None,
            readers: None,
            generation_cols: GENERATION_COLS,
        })
    }

    /// Runs a read on a read connection when the store has them, else on the store's one.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        match &self.readers {
            Some(r) => r.with(f),
            None => f(&self.conn()),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This store with another per-gateway alert quota (tests).
    pub fn with_alert_quota(mut self, quota: u32) -> Self {
        self.alert_quota = quota;
        self
    }

    /// Runs raw SQL (tests use it to tamper with the audit trail).
    pub fn execute_raw(&self, sql: &str) -> Result<usize> {
        Ok(self.conn().execute(sql, [])?)
    }
}

fn audit_rows(c: &Connection) -> Result<Vec<AuditEntry>> {
    let mut q = c.prepare("SELECT seq, unix_ms, actor, action, target, diff, reason, prev_hash, hash FROM audit ORDER BY seq")?;
    let rows = q
        .query_map([], |r| {
            Ok(AuditEntry {
                seq: r.get::<_, i64>(0)? as u64,
                unix_ms: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                diff: r.get(5)?,
                reason: r.get(6)?,
                prev_hash: r.get(7)?,
                hash: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// A device row as SQLite holds it: text, parsed by [`device_from_raw`].
pub(super) struct RawDevice {
    name: String,
    id: u32,
    mac: String,
    addresses: String,
    profile: String,
    mode: String,
    gateway: String,
    location: String,
    asset_id: String,
}

pub(super) fn raw_device(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDevice> {
    Ok(RawDevice {
        name: r.get(0)?,
        id: r.get(1)?,
        mac: r.get(2)?,
        addresses: r.get(3)?,
        profile: r.get(4)?,
        mode: r.get(5)?,
        gateway: r.get(6)?,
        location: r.get(7)?,
        asset_id: r.get(8)?,
    })
}

/// The store's edge for devices: a column that does not parse is a corrupt row, named.
pub(super) fn device_from_raw(r: RawDevice) -> Result<DeviceRow> {
    let bad = |p: String| StoreError::corrupt("devices", &r.name, p);
    let mac = r
        .mac
        .parse()
        .map_err(|e: String| bad(format!("mac: {e}")))?;
    let addresses = list("devices", &r.name, &r.addresses)?
        .iter()
        .map(|a| {
            a.trim()
                .parse::<IpAddr>()
                .map_err(|_| bad(format!("addresses: `{a}` is not an IP address")))
        })
        .collect::<std::result::Result<_, _>>()?;
    let mode = r
        .mode
        .parse()
        .map_err(|e: wardgate_policy::UnknownMode| bad(format!("mode: {e}")))?;
    Ok(DeviceRow {
        mac,
        addresses,
        mode,
        name: r.name,
        id: r.id,
        profile: r.profile,
        gateway: r.gateway,
        location: r.location,
        asset_id: r.asset_id,
    })
}

pub(super) const DEVICE_COLS: &str =
    "name, id, mac, addresses, profile, mode, gateway, location, asset_id";

pub(super) fn devices_where(
    c: &Connection,
    filter: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<DeviceRow>> {
    let mut q = c.prepare_cached(&format!(
        "SELECT {DEVICE_COLS} FROM devices {filter} ORDER BY id"
    ))?;
    let raw: Vec<RawDevice> = q
        .query_map(p, raw_device)?
        .collect::<rusqlite::Result<_>>()?;
    raw.into_iter().map(device_from_raw).collect()
}

pub(super) fn device_by_name(c: &Connection, name: &str) -> Result<Option<DeviceRow>> {
    Ok(devices_where(c, "WHERE name = ?1", [name])?.pop())
}

fn gateway_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(GatewayRow, String)> {
    Ok((
        GatewayRow {
            name: r.get(0)?,
            interfaces: Vec::new(),
            location: r.get(2)?,
            applied_generation: r.get(3)?,
            last_error: r.get(4)?,
            applied_epoch: r.get(5)?,
        },
        r.get(1)?,
    ))
}

pub(super) fn gateways_where(
    c: &Connection,
    filter: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<GatewayRow>> {
    let mut q = c.prepare_cached(&format!(
        "SELECT name, interfaces, location, applied_generation, last_error, applied_epoch          FROM gateways {filter} ORDER BY name"
    ))?;
    let raw: Vec<(GatewayRow, String)> = q
        .query_map(p, gateway_row)?
        .collect::<rusqlite::Result<_>>()?;
    raw.into_iter()
        .map(|(mut g, interfaces)| {
            g.interfaces = list("gateways", &g.name, &interfaces)?;
            Ok(g)
        })
        .collect()
}

fn snapshot(c: &Connection) -> Result<Snapshot> {
    let mut s = base(c)?;
    s.gateways = gateways_where(c, "", [])?;
    s.devices = devices_where(c, "", [])?;
    Ok(s)
}

/// The site without its gateways and devices (a write reads those it needs by name).
pub(super) fn base(c: &Connection) -> Result<Snapshot> {
    let mut s = Snapshot::default();
    let mut q = c.prepare_cached(
        "SELECT name, version, yaml FROM profiles p WHERE version = \
         (SELECT MAX(version) FROM profiles WHERE name = p.name) ORDER BY name",
    )?;
    s.profiles = q
        .query_map([], |r| {
            Ok(ProfileRow {
                name: r.get(0)?,
                version: r.get(1)?,
                yaml: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut q = c.prepare_cached("SELECT name, cidrs FROM groups ORDER BY name")?;
    let groups: Vec<(String, String)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    s.groups = groups
        .into_iter()
        .map(|(name, cidrs)| {
            let cidrs = list("groups", &name, &cidrs)?;
            Ok((name, cidrs))
        })
        .collect::<Result<_>>()?;
    let mut q = c.prepare_cached("SELECT profile, id FROM policy_ids")?;
    s.policy_ids = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut q = c.prepare_cached("SELECT profile, flow, id FROM rule_ids")?;
    s.rule_ids = q
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(s)
}

pub(super) fn not_found(what: &'static str, name: &str) -> Error {
    Error::NotFound {
        what,
        name: name.to_string(),
    }
}

/// The migration that stores generations as bundle bytes (`format`, `bundle`).
const BUNDLE_SCHEMA: u32 = 9;
pub(super) const GENERATION_COLS: &str = "gateway, generation, format, state_json, bundle, reason";
/// The same columns on a store opened read-only before migration 9 (every row JSON).
const LEGACY_GENERATION_COLS: &str = "gateway, generation, 'json', state_json, NULL, reason";

/// Generations matching `filter` (with its ORDER BY), reading `cols` (`GENERATION_COLS`, or
/// their legacy stand-ins); a row whose `format` is unknown or whose bundle is missing is a
/// corrupt row.
pub(super) fn generations_where(
    c: &Connection,
    cols: &str,
    filter: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<GenerationRow>> {
    type Raw = (String, u32, String, String, Option<Vec<u8>>, String);
    let mut q = c.prepare_cached(&format!("SELECT {cols} FROM generations {filter}"))?;
    let raw: Vec<Raw> = q
        .query_map(p, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    raw.into_iter()
        .map(|(gateway, generation, format, json, bundle, reason)| {
            let content = match (format.as_str(), bundle) {
                ("json", _) => GenerationContent::LegacyJson(json),
                (FORMAT_BUNDLE, Some(b)) => GenerationContent::Bundle(b),
                (f, _) => {
                    return Err(StoreError::corrupt(
                        "generations",
                        &format!("{gateway} {generation}"),
                        format!("format `{f}` without its content"),
                    )
                    .into());
                }
            };
            Ok(GenerationRow {
                gateway,
                generation,
                content,
                reason,
            })
        })
        .collect()
}

/// The `format` of a generation stored as bundle bytes (migration 9).
pub(super) const FORMAT_BUNDLE: &str = "bundle-v1";

/// A count or time for an SQLite integer (past i64::MAX is i64::MAX).
fn sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store for SqliteStore {
    fn audit_head(&self) -> Option<&HeadFile> {
        self.head.as_ref()
    }

    fn begin(&self) -> Result<Box<dyn StoreTx + '_>> {
        Ok(Box::new(SqliteTx::begin(self.conn())?))
    }

    fn snapshot(&self) -> Result<Snapshot> {
        self.read(snapshot)
    }

    fn groups(&self) -> Result<BTreeMap<String, Vec<String>>> {
        self.read(|c| Ok(base(c)?.groups))
    }

    fn device(&self, name: &str) -> Result<Option<DeviceRow>> {
        self.read(|c| device_by_name(c, name))
    }

    fn gateway(&self, name: &str) -> Result<Option<GatewayRow>> {
        Ok(gateways_where(&self.conn(), "WHERE name = ?1", [name])?.pop())
    }

    fn profile(&self, name: &str) -> Result<Option<ProfileRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, version, yaml FROM profiles WHERE name = ?1 ORDER BY version DESC LIMIT 1",
                [name],
                |r| Ok(ProfileRow { name: r.get(0)?, version: r.get(1)?, yaml: r.get(2)? }),
            )
            .optional()?)
    }

    fn epoch(&self) -> Result<String> {
        epoch(&self.conn())
    }

    fn latest(&self, gateway: &str) -> Result<Option<GenerationRow>> {
        Ok(generations_where(
            &self.conn(),
            self.generation_cols,
            "WHERE gateway = ?1 ORDER BY generation DESC LIMIT 1",
            [gateway],
        )?
        .pop())
    }

    fn generations_after(&self, gateway: &str, after: u32) -> Result<Vec<GenerationRow>> {
        generations_where(
            &self.conn(),
            self.generation_cols,
            "WHERE gateway = ?1 AND generation > ?2 ORDER BY generation",
            params![gateway, after],
        )
    }

    fn generation(&self, gateway: &str, generation: u32) -> Result<Option<GenerationRow>> {
        Ok(generations_where(
            &self.conn(),
            self.generation_cols,
            "WHERE gateway = ?1 AND generation = ?2",
            params![gateway, generation],
        )?
        .pop())
    }

    fn latest_generation(&self, gateway: &str) -> Result<u32> {
        Ok(self.conn().query_row(
            "SELECT COALESCE(MAX(generation), 0) FROM generations WHERE gateway = ?1",
            [gateway],
            |r| r.get(0),
        )?)
    }

    fn gateway_generations(&self) -> Result<Vec<super::GatewayGenerations>> {
        let c = self.conn();
        let mut q = c.prepare_cached(
            "SELECT g.name, COALESCE(MAX(n.generation), 0), g.applied_generation
             FROM gateways g LEFT JOIN generations n ON n.gateway = g.name
             GROUP BY g.name ORDER BY g.name",
        )?;
        let rows = q.query_map([], |r| {
            Ok(super::GatewayGenerations {
                gateway: r.get(0)?,
                latest: r.get(1)?,
                applied: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn report_status(
        &self,
        gateway: &str,
        applied: u32,
        epoch: &str,
        error: &str,
        health: Option<&AgentHealth>,
    ) -> Result<()> {
        let now = now_ms();
        let h = health.cloned().unwrap_or_default();
        // The firing's start is kept while reports say fired, and cleared by one that does not.
        let n = self.conn().execute(
            "UPDATE gateways SET applied_generation = ?2, last_error = ?3, last_seen_ms = ?4, \
             applied_epoch = ?5, health_received_ms = ?6, agent_version = ?7, \
             watchdog_fired = ?8, \
             watchdog_fired_since_ms = CASE WHEN ?8 THEN COALESCE(watchdog_fired_since_ms, ?4) END, \
             watchdog_fired_count = ?9, watchdog_recovered_count = ?10, \
             fail_open_reported = ?11, heartbeat_age_ms = ?12 WHERE name = ?1",
            params![
                gateway,
                applied,
                error,
                now,
                epoch,
                health.map(|_| now),
                h.agent_version,
                h.watchdog_fired,
                h.watchdog_fired_count,
                h.watchdog_recovered_count,
                h.fail_open_devices,
                h.heartbeat_age_ms.map(sql_u64),
            ],
        )?;
        if n == 0 {
            return Err(not_found("gateway", gateway));
        }
        Ok(())
    }

    fn gateway_health(&self) -> Result<BTreeMap<String, HealthRow>> {
        self.read(|c| {
            let mut q = c.prepare_cached(
                "SELECT name, health_received_ms, agent_version, watchdog_fired, \
                 watchdog_fired_since_ms, watchdog_fired_count, watchdog_recovered_count, \
                 fail_open_reported, heartbeat_age_ms FROM gateways \
                 WHERE health_received_ms IS NOT NULL",
            )?;
            let rows = q.query_map([], |r| {
                let age: Option<i64> = r.get(8)?;
                Ok((
                    r.get(0)?,
                    HealthRow {
                        received_ms: r.get(1)?,
                        health: AgentHealth {
                            agent_version: r.get(2)?,
                            watchdog_fired: r.get(3)?,
                            watchdog_fired_count: r.get(5)?,
                            watchdog_recovered_count: r.get(6)?,
                            fail_open_devices: r.get(7)?,
                            heartbeat_age_ms: age.map(|a| u64::try_from(a).unwrap_or(0)),
                        },
                        watchdog_fired_since_ms: r.get(4)?,
                    },
                ))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn insert_alerts(&self, gateway: &str, alerts: &[NewAlert]) -> Result<Vec<String>> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let now = now_ms();
        for a in alerts {
            // Sequence numbers are taken in commit order (one writer at a time), so a sink that
            // has read up to N never sees a smaller number commit later.
            let stored: Option<(i64, i64, i64, i64, i64, String, i64)> = tx
                .query_row(
                    "SELECT seq, count, last_seen_ns, first_seq, acknowledged, acknowledged_by, \
                     received_ms FROM alerts WHERE gateway = ?1 AND id = ?2 AND latest = 1",
                    params![gateway, a.id],
                    |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                        ))
                    },
                )
                .optional()?;
            let (count, last_seen) = (sql_u64(a.count.max(1)), sql_u64(a.last_seen_ns));
            let (first_seq, acknowledged, by, received) = match stored {
                None => (None, 0, String::new(), now),
                // An update: a higher count, or as many and seen later. It is stored as the
                // alert's latest row under the next sequence number; the creation row stays
                // (with its first body), a previous update row goes. What the SOC did with the
                // alert (acknowledged, by whom) and when it first came stay.
                Some((seq, old_count, old_last, first, ack, by, received))
                    if (count, last_seen) > (old_count, old_last) =>
                {
                    if seq == first {
                        tx.execute("UPDATE alerts SET latest = 0 WHERE seq = ?1", [seq])?;
                    } else {
                        tx.execute("DELETE FROM alerts WHERE seq = ?1", [seq])?;
                    }
                    (Some(first), ack, by, received)
                }
                // A retry or an older copy: already stored.
                Some(_) => continue,
            };
            tx.execute(
                "INSERT INTO alerts (id, gateway, device, body, severity, received_ms, \
                 acknowledged, acknowledged_by, count, last_seen_ns, first_seq, suppressed) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, EXISTS (SELECT 1 FROM \
                 suppressions WHERE device = ?3 AND detector = ?12 AND (peer = '' OR peer = ?13)))",
                params![
                    a.id,
                    gateway,
                    a.device,
                    a.body,
                    a.severity,
                    received,
                    acknowledged,
                    by,
                    count,
                    last_seen,
                    first_seq.unwrap_or(0),
                    a.detector,
                    a.peer
                ],
            )?;
            if first_seq.is_none() {
                tx.execute(
                    "UPDATE alerts SET first_seq = seq WHERE seq = last_insert_rowid()",
                    [],
                )?;
            }
        }
        let held: u32 = tx.query_row(
            "SELECT COUNT(*) FROM alerts WHERE gateway = ?1 AND latest = 1",
            [gateway],
            |r| r.get(0),
        )?;
        if held > self.alert_quota {
            let over = held - self.alert_quota;
            // An alert goes with its rows (creation and latest); it counts once, by the
            // latest's severity.
            let dropped: Vec<u8> = tx
                .prepare(
                    "DELETE FROM alerts WHERE gateway = ?1 AND id IN (SELECT id FROM alerts \
                     WHERE gateway = ?1 AND latest = 1 \
                     ORDER BY acknowledged DESC, severity, seq LIMIT ?2) RETURNING severity, latest",
                )?
                .query_map(params![gateway, over], |r| {
                    Ok((r.get::<_, u8>(0)?, r.get::<_, i64>(1)?))
                })?
                .filter_map(|r| match r {
                    Ok((sev, 1)) => Some(Ok(sev)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<rusqlite::Result<_>>()?;
            for sev in &dropped {
                tx.execute(
                    "INSERT INTO alert_drops (gateway, severity, dropped) VALUES (?1, ?2, 1) \
                     ON CONFLICT(gateway, severity) DO UPDATE SET dropped = dropped + 1",
                    params![gateway, sev],
                )?;
            }
            tracing::warn!(
                gateway,
                dropped = dropped.len(),
                quota = self.alert_quota,
                "alert quota reached: dropped the lowest-severity alerts"
            );
        }
        tx.commit()?;
        Ok(alerts.iter().map(|a| a.id.clone()).collect())
    }

    fn alerts_since(&self, q: &AlertQuery, after: i64) -> Result<Vec<StoredAlert>> {
        let c = self.conn();
        let mut stmt = c.prepare_cached(
            "SELECT seq, first_seq, gateway, id, body, acknowledged, acknowledged_by FROM alerts \
             WHERE seq > ?1 AND suppressed = 0 AND (?2 = '' OR gateway = ?2) \
             AND (?3 = '' OR device = ?3) AND severity >= ?4 AND (?5 OR acknowledged = 0) \
             ORDER BY seq LIMIT ?6",
        )?;
        let rows = stmt
            .query_map(
                params![
                    after,
                    q.gateway,
                    q.device,
                    q.min_severity,
                    q.include_acknowledged,
                    q.limit
                ],
                |r| {
                    Ok(StoredAlert {
                        seq: r.get(0)?,
                        first_seq: r.get(1)?,
                        gateway: r.get(2)?,
                        id: r.get(3)?,
                        body: r.get(4)?,
                        acknowledged: r.get::<_, i64>(5)? != 0,
                        acknowledged_by: r.get(6)?,
                    })
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn alerts_pending(&self, after: i64) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM alerts WHERE seq > ?1 AND suppressed = 0",
            [after],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    fn sink_cursor(&self, sink: &str) -> Result<i64> {
        Ok(self
            .conn()
            .query_row(
                "SELECT delivered FROM sink_cursors WHERE sink = ?1",
                [sink],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    fn advance_sink_cursor(&self, sink: &str, seq: i64) -> Result<()> {
        self.conn().execute(
            "INSERT INTO sink_cursors (sink, delivered, updated_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT(sink) DO UPDATE SET delivered = MAX(delivered, ?2), updated_ms = ?3",
            params![sink, seq, now_ms()],
        )?;
        Ok(())
    }

    fn alert_drops(&self, gateway: &str) -> Result<[u64; 4]> {
        let c = self.conn();
        let mut q = c.prepare("SELECT severity, dropped FROM alert_drops WHERE gateway = ?1")?;
        let mut out = [0u64; 4];
        for row in q.query_map([gateway], |r| Ok((r.get::<_, u8>(0)?, r.get::<_, i64>(1)?)))? {
            let (sev, n) = row?;
            if let Some(slot) = out.get_mut(usize::from(sev)) {
                *slot = n as u64;
            }
        }
        Ok(out)
    }

    fn alerts(&self, q: &AlertQuery) -> Result<Vec<AlertRow>> {
        let c = self.conn();
        let mut stmt = c.prepare_cached(
            "SELECT gateway, body, acknowledged, acknowledged_by, suppressed FROM alerts \
             WHERE latest = 1 AND (?1 = '' OR gateway = ?1) AND (?2 = '' OR device = ?2) AND severity >= ?3 \
             AND (?4 OR acknowledged = 0) AND (?6 OR suppressed = 0) \
             ORDER BY seq DESC LIMIT ?5",
        )?;
        let rows = stmt
            .query_map(
                params![
                    q.gateway,
                    q.device,
                    q.min_severity,
                    q.include_acknowledged,
                    q.limit,
                    q.include_suppressed
                ],
                |r| {
                    Ok(AlertRow {
                        gateway: r.get(0)?,
                        body: r.get(1)?,
                        acknowledged: r.get::<_, i64>(2)? != 0,
                        acknowledged_by: r.get(3)?,
                        suppressed: r.get::<_, i64>(4)? != 0,
                    })
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn suppressions(&self) -> Result<Vec<SuppressionRow>> {
        let c = self.conn();
        let mut stmt = c.prepare_cached(
            "SELECT device, detector, peer, made_by, made_ms, reason FROM suppressions \
             ORDER BY device, detector, peer",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SuppressionRow {
                    device: r.get(0)?,
                    detector: r.get(1)?,
                    peer: r.get(2)?,
                    made_by: r.get(3)?,
                    made_ms: r.get(4)?,
                    reason: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn audit(&self) -> Result<Vec<AuditEntry>> {
        audit_rows(&self.conn())
    }

    fn audit_chain_head(&self) -> Result<(u64, String)> {
        self.chain_head()
    }

    fn insert_flows(
        &self,
        gateway: &str,
        records: &[wardgate_analysis::FlowRecord],
        now_ns: u64,
        limits: super::FlowLimits,
    ) -> Result<super::FlowsStored> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let out = super::learning::insert_flows(&tx, gateway, records, now_ns, limits)?;
        tx.commit()?;
        Ok(out)
    }

    fn flow_overflow(&self, device: &str) -> Result<Vec<(u32, u64)>> {
        self.read(|c| super::learning::overflow(c, device))
    }

    fn prune_flows(&self, now_ns: u64, retention_days: u32) -> Result<usize> {
        super::learning::prune(
            &self.conn(),
            super::learning::oldest_day(now_ns, retention_days),
        )
    }

    fn flow_aggregates(
        &self,
        device: &str,
        from_ns: u64,
        to_ns: u64,
    ) -> Result<Vec<wardgate_analysis::aggregate::FlowAggregate>> {
        self.read(|c| super::learning::aggregates(c, device, from_ns, to_ns))
    }

    fn baseline_lifecycle(
        &self,
        device: &str,
    ) -> Result<Option<(wardgate_analysis::baseline::lifecycle::Lifecycle, i64)>> {
        self.read(|c| super::learning::lifecycle(c, device))
    }

    fn inventory(&self, q: &super::InventoryQuery) -> Result<super::InventoryPage> {
        self.read(|c| super::console::inventory(c, q))
    }

    fn observed_flows(&self, from_day: u32) -> Result<Vec<super::ObservedFlow>> {
        self.read(|c| super::console::observed_flows(c, from_day))
    }

    fn cert_expiry(&self) -> Result<BTreeMap<String, i64>> {
        self.read(super::fleet::cert_expiry)
    }

    fn insert_session(&self, s: &super::SessionRow) -> Result<()> {
        super::console::insert_session(&self.conn(), s)
    }

    fn gateway_revoked(&self, gateway: &str) -> Result<bool> {
        self.read(|c| super::fleet::revoked(c, gateway))
    }

    fn revoked_serials(&self) -> Result<Vec<String>> {
        self.read(super::fleet::revoked_serials)
    }

    fn session(&self, id_hash: &str) -> Result<Option<super::SessionRow>> {
        // On a read connection, so a page never waits behind a write: sessions are stored and
        // revoked in their own commits, which a reader started after them sees.
        self.read(|c| super::console::session(c, id_hash))
    }

    fn touch_session(&self, id_hash: &str, now_ms: i64) -> Result<()> {
        super::console::touch_session(&self.conn(), id_hash, now_ms)
    }

    fn revoke_session(&self, id_hash: &str, now_ms: i64) -> Result<bool> {
        super::console::revoke_session(&self.conn(), id_hash, now_ms)
    }

    fn quarantine_request(&self, id: i64) -> Result<Option<super::QuarantineRequestRow>> {
        self.read(|c| super::quarantine::get(c, id))
    }

    fn pending_quarantines(&self) -> Result<Vec<super::QuarantineRequestRow>> {
        self.read(super::quarantine::pending)
    }

    fn due_quarantine_timers(&self, now_ms: i64) -> Result<Vec<super::QuarantineTimerRow>> {
        self.read(|c| super::quarantine::due(c, now_ms))
    }

    fn pending_change(&self, id: i64) -> Result<Option<super::PendingChangeRow>> {
        self.read(|c| super::pending::get(c, id))
    }

    fn pending_changes(&self, device: &str, limit: u32) -> Result<Vec<super::PendingChangeRow>> {
        self.read(|c| super::pending::of_device(c, device, limit))
    }

    fn alert_page(&self, q: &super::AlertPageQuery) -> Result<super::AlertPage> {
        self.read(|c| super::console_alerts::page(c, q))
    }

    fn console_alert(&self, first_seq: i64) -> Result<Option<super::ConsoleAlert>> {
        self.read(|c| super::console_alerts::by_first_seq(c, first_seq))
    }

    fn device_fields(&self, device: Option<&str>) -> Result<Vec<super::FieldRow>> {
        self.read(|c| super::provenance::fields(c, device))
    }

    fn latest_changes(
        &self,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<super::PendingChangeRow>> {
        self.read(|c| super::pending::latest(c, pending_only, limit))
    }

    fn sessions_of(&self, user: &str) -> Result<Vec<super::SessionRow>> {
        self.read(|c| super::console::sessions_of(c, user))
    }

    fn prune_sessions(&self, before_ms: i64) -> Result<usize> {
        Ok(self
            .conn()
            .prepare_cached("DELETE FROM console_sessions WHERE created_ms < ?1")?
            .execute([before_ms])?)
    }

    fn audit_with_head(&self, head_path: &Path) -> Result<super::AuditWithHead> {
        // Under the connection lock, which every write holds from its head append to its
        // commit: the two are read at the same point.
        let c = self.conn();
        let entries = audit_rows(&c)?;
        Ok((entries, head::read(head_path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Change;

    #[test]
    fn the_bundle_columns_come_with_the_migration_the_legacy_read_expects() {
        let m = MIGRATIONS[BUNDLE_SCHEMA as usize - 1];
        assert!(m.contains("ADD COLUMN format") && m.contains("ADD COLUMN bundle"));
        // A store opened read-only is read as its version says: later migrations must leave
        // the generations table alone, or the legacy read needs another case.
        for later in &MIGRATIONS[BUNDLE_SCHEMA as usize..] {
            assert!(
                !later.contains("generations"),
                "a later migration changes generations: check the legacy read"
            );
        }
    }

    #[test]
    fn writes_never_checkpoint_the_wal_the_checkpoint_thread_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let auto: i64 = store
            .conn()
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            auto, 0,
            "the store's connection must not checkpoint in a commit"
        );
        let db = dir.path().join("wardgate.db");
        let size = || std::fs::metadata(&db).unwrap().len();
        // Let the migrations' checkpoint land first.
        std::thread::sleep(checkpoint::EVERY * 2);
        let before = size();
        // About 2 MiB of alerts: only a checkpoint moves them from the WAL into the file.
        let body = "x".repeat(1024);
        for batch in 0..20 {
            let rows: Vec<NewAlert> = (0..100)
                .map(|i| NewAlert {
                    id: format!("{batch}-{i}"),
                    device: "d".into(),
                    severity: 1,
                    body: body.clone(),
                    detector: "scan_vertical".into(),
                    peer: String::new(),
                    count: 1,
                    last_seen_ns: 0,
                })
                .collect();
            store.insert_alerts("gw", &rows).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() < before + 1_000_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL was not checkpointed within 10 s ({} -> {} bytes)",
                before,
                size()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        drop(store);
        let wal = dir.path().join("wardgate.db-wal");
        assert!(
            std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0,
            "closing the store leaves no WAL behind"
        );
        // Everything is in the file.
        let again = SqliteStore::open_read_only(dir.path()).unwrap();
        assert_eq!(again.alerts_after(0, 5000).unwrap().len(), 2000);
    }

    #[test]
    fn sink_cursors_follow_sequence_numbers_that_are_never_reused() {
        let store = SqliteStore::in_memory().unwrap().with_alert_quota(2);
        let row = |id: &str, severity: u8| NewAlert {
            id: id.into(),
            device: "d".into(),
            severity,
            body: "{}".into(),
            detector: "scan_vertical".into(),
            peer: String::new(),
            count: 1,
            last_seen_ns: 0,
        };
        store
            .insert_alerts("gw", &[row("a", 3), row("b", 3)])
            .unwrap();
        let first = store.alerts_after(0, 10).unwrap();
        assert_eq!(
            first
                .iter()
                .map(|a| (a.seq, a.id.as_str()))
                .collect::<Vec<_>>(),
            [(1, "a"), (2, "b")]
        );
        store.advance_sink_cursor("siem", 2).unwrap();
        // Past the quota the newest row (the lowest severity) is deleted at once; the next
        // alert must not take its number, or a sink whose cursor passed it would skip it.
        store.insert_alerts("gw", &[row("low", 0)]).unwrap();
        store.insert_alerts("gw", &[row("c", 3)]).unwrap();
        let after = store
            .alerts_after(store.sink_cursor("siem").unwrap(), 10)
            .unwrap();
        assert_eq!(
            after
                .iter()
                .map(|a| (a.seq, a.id.as_str()))
                .collect::<Vec<_>>(),
            [(4, "c")]
        );
        // A cursor never moves back; an unknown sink starts at the oldest.
        store.advance_sink_cursor("siem", 1).unwrap();
        assert_eq!(store.sink_cursor("siem").unwrap(), 2);
        assert_eq!(store.sink_cursor("new").unwrap(), 0);
    }

    #[test]
    fn a_higher_count_is_stored_as_an_update_and_a_repeat_is_ignored() {
        let store = SqliteStore::in_memory().unwrap().with_alert_quota(2);
        let row = |id: &str, count: u64, last_seen_ns: u64| NewAlert {
            id: id.into(),
            device: "d".into(),
            severity: 2,
            body: format!(r#"{{"count":{count}}}"#),
            detector: "scan_vertical".into(),
            peer: String::new(),
            count,
            last_seen_ns,
        };
        let rows = |after: i64| -> Vec<(i64, bool, String, String)> {
            store
                .alerts_after(after, 10)
                .unwrap()
                .into_iter()
                .map(|a| (a.seq, a.is_update(), a.id, a.body))
                .collect()
        };
        let listed = || -> Vec<String> {
            store
                .alerts(&AlertQuery::recent(10))
                .unwrap()
                .into_iter()
                .map(|a| a.body)
                .collect()
        };
        store
            .insert_alerts("gw", &[row("x", 1, 10), row("y", 1, 10)])
            .unwrap();
        // x grows; y's copy is a retry; then x's older copy arrives late, and x's current again.
        let acked = store
            .insert_alerts("gw", &[row("x", 5, 50), row("y", 1, 10)])
            .unwrap();
        assert_eq!(acked, ["x", "y"], "every copy is acknowledged");
        store.insert_alerts("gw", &[row("x", 1, 10)]).unwrap();
        store.insert_alerts("gw", &[row("x", 5, 50)]).unwrap();
        let c1 = r#"{"count":1}"#.to_string();
        let c5 = r#"{"count":5}"#.to_string();
        // A reader from the start: x's creation, y, then x's update.
        assert_eq!(
            rows(0),
            [
                (1, false, "x".into(), c1.clone()),
                (2, false, "y".into(), c1.clone()),
                (3, true, "x".into(), c5.clone()),
            ]
        );
        assert_eq!(
            listed(),
            [c5.clone(), c1.clone()],
            "one alert per id, the latest"
        );
        // The same count seen later is an update too: it replaces the previous update row.
        // The acknowledgement is kept.
        // The acknowledgement is a change row (its audit entry is the write service's).
        let mut tx = store.begin().unwrap();
        tx.apply(&Change::AcknowledgeAlerts {
            ids: vec!["x".into()],
            by: "user:sam".into(),
        })
        .unwrap();
        tx.commit().unwrap();
        store.insert_alerts("gw", &[row("x", 5, 60)]).unwrap();
        let x = store.alerts_after(2, 10).unwrap();
        assert_eq!((x.len(), x[0].seq, x[0].first_seq), (1, 4, 1));
        assert!(
            x[0].acknowledged,
            "an acknowledged alert that grows stays acknowledged"
        );
        assert_eq!(
            rows(0).len(),
            3,
            "at most a creation and a latest row per alert"
        );
        assert_eq!(store.alerts_pending(2).unwrap(), 1);
        // The quota counts alerts, not rows (2 alerts, quota 2: nothing dropped); past it an
        // alert goes with both its rows and counts once.
        assert_eq!(store.alert_drops("gw").unwrap(), [0; 4]);
        store.insert_alerts("gw", &[row("z", 1, 10)]).unwrap();
        assert_eq!(store.alert_drops("gw").unwrap(), [0, 0, 1, 0]);
        assert!(
            rows(0).iter().all(|r| r.2 != "x"),
            "x (acknowledged) went first"
        );
    }

    #[test]
    fn past_its_quota_a_gateway_loses_its_lowest_severity_alerts_first_and_counts_them() {
        let store = SqliteStore::in_memory().unwrap().with_alert_quota(10);
        let batch = |prefix: &str, n: usize, severity: u8| -> Vec<NewAlert> {
            (0..n)
                .map(|i| NewAlert {
                    id: format!("{prefix}-{i}"),
                    device: "d".into(),
                    severity,
                    body: format!(r#"{{"severity":{severity}}}"#),
                    detector: "scan_vertical".into(),
                    peer: String::new(),
                    count: 1,
                    last_seen_ns: 0,
                })
                .collect()
        };
        store.insert_alerts("gw-a", &batch("crit", 4, 3)).unwrap();
        store.insert_alerts("gw-a", &batch("med", 3, 1)).unwrap();
        store.insert_alerts("gw-a", &batch("low", 8, 0)).unwrap();
        store.insert_alerts("gw-b", &batch("low", 5, 0)).unwrap();
        let held = |gw: &str, min: u8| {
            store
                .alerts(&AlertQuery {
                    gateway: gw.into(),
                    min_severity: min,
                    include_acknowledged: true,
                    limit: 100,
                    ..Default::default()
                })
                .unwrap()
                .len()
        };
        assert_eq!(held("gw-a", 0), 10, "capped at the quota");
        assert_eq!(held("gw-a", 3), 4, "every critical kept");
        assert_eq!(held("gw-a", 1), 7, "every medium kept");
        assert_eq!(store.alert_drops("gw-a").unwrap(), [5, 0, 0, 0]);
        assert_eq!(held("gw-b", 0), 5, "another gateway is not touched");
        assert_eq!(store.alert_drops("gw-b").unwrap(), [0; 4]);
        // A flood of lows past the quota keeps pushing out lows, never the criticals.
        store.insert_alerts("gw-a", &batch("flood", 50, 0)).unwrap();
        assert_eq!(held("gw-a", 3), 4);
        assert_eq!(store.alert_drops("gw-a").unwrap(), [55, 0, 0, 0]);
    }

    /// The health a status carries is stored with its time; the watchdog's firing keeps its
    /// first report's time while it lasts; a status without health (an older agent) clears it.
    #[test]
    fn reported_health_round_trips_and_a_status_without_it_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let mut tx = store.begin().unwrap();
        for name in ["gw-a", "gw-b"] {
            tx.apply(&Change::UpsertGateway(GatewayRow {
                name: name.into(),
                interfaces: vec!["wg-dev0".into()],
                location: String::new(),
                applied_generation: 0,
                last_error: String::new(),
                applied_epoch: String::new(),
            }))
            .unwrap();
        }
        tx.commit().unwrap();
        assert!(store.gateway_health().unwrap().is_empty());
        let mut fired = AgentHealth {
            agent_version: "0.9.1".into(),
            watchdog_fired: true,
            watchdog_fired_count: 3,
            watchdog_recovered_count: 2,
            fail_open_devices: 7,
            heartbeat_age_ms: Some(12_345),
        };
        let before = now_ms();
        store
            .report_status("gw-a", 4, "e1", "", Some(&fired))
            .unwrap();
        store.report_status("gw-b", 4, "e1", "", None).unwrap();
        let all = store.gateway_health().unwrap();
        assert_eq!(
            all.keys().collect::<Vec<_>>(),
            ["gw-a"],
            "gw-b reported none"
        );
        let a = &all["gw-a"];
        assert_eq!(a.health, fired);
        assert!(a.received_ms >= before && a.received_ms <= now_ms());
        let since = a.watchdog_fired_since_ms.expect("fired");
        assert_eq!(since, a.received_ms);
        // Still fired: the firing started at the first report.
        std::thread::sleep(std::time::Duration::from_millis(5));
        fired.heartbeat_age_ms = None;
        store
            .report_status("gw-a", 4, "e1", "", Some(&fired))
            .unwrap();
        let a = &store.gateway_health().unwrap()["gw-a"];
        assert_eq!(a.watchdog_fired_since_ms, Some(since));
        assert!(a.received_ms > since);
        assert_eq!(a.health.heartbeat_age_ms, None);
        // Recovered: no firing time.
        let ok = AgentHealth {
            watchdog_fired: false,
            watchdog_recovered_count: 3,
            ..fired.clone()
        };
        store.report_status("gw-a", 5, "e1", "", Some(&ok)).unwrap();
        let a = &store.gateway_health().unwrap()["gw-a"];
        assert_eq!((&a.health, a.watchdog_fired_since_ms), (&ok, None));
        // An older agent's status: no health any more, the generation still stored.
        store.report_status("gw-a", 6, "e1", "", None).unwrap();
        assert!(store.gateway_health().unwrap().is_empty());
        assert_eq!(
            store.gateway("gw-a").unwrap().unwrap().applied_generation,
            6
        );
    }
}
