//! Embedded SQLite store (rusqlite, bundled SQLite): one file, WAL, migrations.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Mutex,
};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use super::{
    AlertQuery, Change, Compiler, DeviceRow, GatewayRow, GenerationRow, NewAlert, ProfileRow,
    Snapshot, Store, StoredAlert, WriteOutcome, migrations::MIGRATIONS,
};
use crate::{
    audit::{
        self, AuditEntry,
        enforcement::{self, Enforcement},
        head::{self, HeadFile},
    },
    error::{Error, Result},
};

pub struct SqliteStore {
    conn: Mutex<Connection>,
    alert_quota: u32,
    /// Where every write's chain head goes (none for an in-memory or read-only store).
    head: Option<HeadFile>,
}

/// Alerts kept per gateway. Past it the store drops that gateway's acknowledged alerts first,
/// then the lowest severity, oldest first, and counts what it dropped: one noisy gateway
/// cannot fill the store, and a flood of low alerts never pushes out a critical one.
pub const ALERT_QUOTA: u32 = 100_000;

use crate::audit::now_ms;

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("rows serialize")
}

/// 128 random bits in hex: a store's epoch.
fn new_epoch() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| Error::Internal(format!("no randomness for the epoch: {e}")))?;
    Ok(hex::encode(b))
}

fn epoch(c: &Connection) -> Result<String> {
    Ok(c.query_row(
        "SELECT value FROM store_meta WHERE key = 'epoch'",
        [],
        |r| r.get(0),
    )?)
}

/// Gives every profile in `keys` a policy id and every (profile, flow key) a rule id if it has
/// none yet: the next unused number, kept forever (an id is never reused for another name).
fn allocate_ids(tx: &Transaction<'_>, keys: &[(String, Vec<String>)]) -> Result<()> {
    let too_many = |what: &str| Error::Internal(format!("{what} ids exhausted"));
    for (profile, flows) in keys {
        tx.execute(
            "INSERT OR IGNORE INTO policy_ids (profile, id) \
             SELECT ?1, COALESCE(MAX(id), 0) + 1 FROM policy_ids",
            [profile],
        )?;
        for flow in flows {
            tx.execute(
                "INSERT OR IGNORE INTO rule_ids (profile, flow, id) \
                 SELECT ?1, ?2, COALESCE(MAX(id), 0) + 1 FROM rule_ids",
                params![profile, flow],
            )?;
        }
    }
    // Ids travel in 32-bit map fields; stay well inside them.
    let max: u32 = tx.query_row(
        "SELECT MAX(COALESCE((SELECT MAX(id) FROM policy_ids), 0), COALESCE((SELECT MAX(id) FROM rule_ids), 0))",
        [],
        |r| r.get(0),
    )?;
    if max > u32::MAX >> 1 {
        return Err(too_many("policy or rule"));
    }
    Ok(())
}

fn list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
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
        let conn = Connection::open(data_dir.join("wardgate.db"))?;
        let mut store = Self::init(conn)?;
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
        conn.query_row("SELECT version FROM schema_version", [], |r| {
            r.get::<_, u32>(0)
        })
        .map_err(|e| Error::Internal(format!("{} is not a wardgate store: {e}", db.display())))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            alert_quota: ALERT_QUOTA,
            head: None,
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
        })
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

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        name: r.get(0)?,
        id: r.get(1)?,
        mac: r.get(2)?,
        addresses: list(&r.get::<_, String>(3)?),
        profile: r.get(4)?,
        mode: r.get(5)?,
        gateway: r.get(6)?,
        location: r.get(7)?,
        asset_id: r.get(8)?,
    })
}

const DEVICE_COLS: &str = "name, id, mac, addresses, profile, mode, gateway, location, asset_id";

fn device_by_name(c: &Connection, name: &str) -> Result<Option<DeviceRow>> {
    Ok(c.query_row(
        &format!("SELECT {DEVICE_COLS} FROM devices WHERE name = ?1"),
        [name],
        device_row,
    )
    .optional()?)
}

fn snapshot(c: &Connection) -> Result<Snapshot> {
    let mut s = Snapshot::default();
    let mut q = c.prepare(&format!("SELECT {DEVICE_COLS} FROM devices ORDER BY id"))?;
    s.devices = q
        .query_map([], device_row)?
        .collect::<rusqlite::Result<_>>()?;
    let mut q = c.prepare(
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
    let mut q = c.prepare("SELECT name, cidrs FROM groups ORDER BY name")?;
    s.groups = q
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, list(&r.get::<_, String>(1)?)))
        })?
        .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
    let mut q = c.prepare("SELECT name, interfaces, location, applied_generation, last_error, applied_epoch FROM gateways ORDER BY name")?;
    s.gateways = q
        .query_map([], |r| {
            Ok(GatewayRow {
                name: r.get(0)?,
                interfaces: list(&r.get::<_, String>(1)?),
                location: r.get(2)?,
                applied_generation: r.get(3)?,
                last_error: r.get(4)?,
                applied_epoch: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut q = c.prepare("SELECT profile, id FROM policy_ids")?;
    s.policy_ids = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut q = c.prepare("SELECT profile, flow, id FROM rule_ids")?;
    s.rule_ids = q
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(s)
}

fn not_found(what: &'static str, name: &str) -> Error {
    Error::NotFound {
        what,
        name: name.to_string(),
    }
}

/// Applies one change inside `tx`; returns (action, target, diff).
fn apply(tx: &Transaction<'_>, change: &Change) -> Result<(String, String, serde_json::Value)> {
    let device = |name: &str| -> Result<DeviceRow> {
        tx.query_row(
            &format!("SELECT {DEVICE_COLS} FROM devices WHERE name = ?1"),
            [name],
            device_row,
        )
        .optional()?
        .ok_or_else(|| not_found("device", name))
    };
    let diff = |before: &serde_json::Value, after: &serde_json::Value| serde_json::json!({"before": before, "after": after});
    Ok(match change {
        Change::UpsertDevice(d) => {
            let before = device(&d.name).ok();
            // The id is the store's: kept for the device's name, the next free one for a new
            // device, whatever the request says (positions in a site file are not stable).
            let id: u32 = match &before {
                Some(b) => b.id,
                None => tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM devices", [], |r| {
                    r.get(0)
                })?,
            };
            let d = &DeviceRow { id, ..d.clone() };
            tx.execute(
                &format!(
                    "INSERT INTO devices ({DEVICE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT(name) DO UPDATE SET id = ?2, mac = ?3, addresses = ?4, profile = ?5, \
                     mode = ?6, gateway = ?7, location = ?8, asset_id = ?9"
                ),
                params![d.name, d.id, d.mac, json(&d.addresses), d.profile, d.mode, d.gateway, d.location, d.asset_id],
            )?;
            (
                "upsert_device".into(),
                d.name.clone(),
                diff(&serde_json::json!(before), &serde_json::json!(d)),
            )
        }
        Change::AssignProfile {
            device: name,
            profile,
        } => {
            let d = device(name)?;
            tx.execute(
                "UPDATE devices SET profile = ?2 WHERE name = ?1",
                params![name, profile],
            )?;
            (
                "assign_profile".into(),
                name.clone(),
                diff(
                    &serde_json::json!({"profile": d.profile}),
                    &serde_json::json!({"profile": profile}),
                ),
            )
        }
        Change::SetMode { device: name, mode } => {
            let d = device(name)?;
            tx.execute(
                "UPDATE devices SET mode = ?2 WHERE name = ?1",
                params![name, mode],
            )?;
            (
                "set_mode".into(),
                name.clone(),
                diff(
                    &serde_json::json!({"mode": d.mode}),
                    &serde_json::json!({"mode": mode}),
                ),
            )
        }
        Change::SetLocation {
            device: name,
            location,
        } => {
            let d = device(name)?;
            tx.execute(
                "UPDATE devices SET location = ?2 WHERE name = ?1",
                params![name, location],
            )?;
            (
                "set_location".into(),
                name.clone(),
                diff(
                    &serde_json::json!({"location": d.location}),
                    &serde_json::json!({"location": location}),
                ),
            )
        }
        Change::UpsertProfile { name, yaml } => {
            let prev: Option<(u32, String)> = tx
                .query_row("SELECT version, yaml FROM profiles WHERE name = ?1 ORDER BY version DESC LIMIT 1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let version = prev.as_ref().map_or(1, |(v, _)| v + 1);
            tx.execute(
                "INSERT INTO profiles (name, version, yaml, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![name, version, yaml, now_ms()],
            )?;
            let before = prev.map(|(v, y)| serde_json::json!({"version": v, "yaml": y}));
            (
                "upsert_profile".into(),
                name.clone(),
                diff(
                    &serde_json::json!(before),
                    &serde_json::json!({"version": version, "yaml": yaml}),
                ),
            )
        }
        Change::UpsertGroup { name, cidrs } => {
            let before: Option<String> = tx
                .query_row("SELECT cidrs FROM groups WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            tx.execute("INSERT INTO groups (name, cidrs) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET cidrs = ?2", params![name, json(cidrs)])?;
            (
                "upsert_group".into(),
                name.clone(),
                diff(
                    &serde_json::json!(before.map(|b| list(&b))),
                    &serde_json::json!(cidrs),
                ),
            )
        }
        Change::UpsertGateway(g) => {
            tx.execute(
                "INSERT INTO gateways (name, interfaces, location) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(name) DO UPDATE SET interfaces = ?2, location = ?3",
                params![g.name, json(&g.interfaces), g.location],
            )?;
            (
                "upsert_gateway".into(),
                g.name.clone(),
                diff(
                    &serde_json::Value::Null,
                    &serde_json::json!({"interfaces": g.interfaces, "location": g.location}),
                ),
            )
        }
        Change::SuppressAlerts {
            device: name,
            detector,
            peer,
        } => {
            device(name)?;
            tx.execute(
                "INSERT OR IGNORE INTO suppressions (device, detector, peer) VALUES (?1, ?2, ?3)",
                params![name, detector, peer],
            )?;
            (
                "suppress_alerts".into(),
                name.clone(),
                diff(
                    &serde_json::Value::Null,
                    &serde_json::json!({"detector": detector, "peer": peer}),
                ),
            )
        }
        Change::AcknowledgeAlerts { ids } => {
            for id in ids {
                // Ids are unique per gateway: `GATEWAY/ID`, or a bare id one gateway uses.
                let n = match id.split_once('/') {
                    Some((gw, aid)) => tx.execute(
                        "UPDATE alerts SET acknowledged = 1 WHERE gateway = ?1 AND id = ?2",
                        [gw, aid],
                    )?,
                    None => {
                        let holders: u32 =
                            tx.query_row("SELECT COUNT(*) FROM alerts WHERE id = ?1", [id], |r| {
                                r.get(0)
                            })?;
                        if holders > 1 {
                            return Err(Error::Invalid(format!(
                                "alert id `{id}` is used by {holders} gateways; name one as GATEWAY/{id}"
                            )));
                        }
                        tx.execute("UPDATE alerts SET acknowledged = 1 WHERE id = ?1", [id])?
                    }
                };
                if n == 0 {
                    return Err(not_found("alert", id));
                }
            }
            (
                "acknowledge_alerts".into(),
                ids.join(","),
                diff(
                    &serde_json::json!({"acknowledged": false}),
                    &serde_json::json!({"acknowledged": true}),
                ),
            )
        }
    })
}

impl Store for SqliteStore {
    fn audit_head_path(&self) -> Option<PathBuf> {
        self.head.as_ref().map(|h| h.path().to_path_buf())
    }

    fn snapshot(&self) -> Result<Snapshot> {
        snapshot(&self.conn())
    }

    fn device(&self, name: &str) -> Result<Option<DeviceRow>> {
        device_by_name(&self.conn(), name)
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
        Ok(self
            .conn()
            .query_row(
                "SELECT gateway, generation, state_json, reason FROM generations \
                 WHERE gateway = ?1 ORDER BY generation DESC LIMIT 1",
                [gateway],
                |r| {
                    Ok(GenerationRow {
                        gateway: r.get(0)?,
                        generation: r.get(1)?,
                        state_json: r.get(2)?,
                        reason: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    fn generations_after(&self, gateway: &str, after: u32) -> Result<Vec<GenerationRow>> {
        let c = self.conn();
        let mut q = c.prepare(
            "SELECT gateway, generation, state_json, reason FROM generations \
             WHERE gateway = ?1 AND generation > ?2 ORDER BY generation",
        )?;
        let rows = q
            .query_map(params![gateway, after], |r| {
                Ok(GenerationRow {
                    gateway: r.get(0)?,
                    generation: r.get(1)?,
                    state_json: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn generation(&self, gateway: &str, generation: u32) -> Result<Option<GenerationRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT gateway, generation, state_json, reason FROM generations \
                 WHERE gateway = ?1 AND generation = ?2",
                params![gateway, generation],
                |r| {
                    Ok(GenerationRow {
                        gateway: r.get(0)?,
                        generation: r.get(1)?,
                        state_json: r.get(2)?,
                        reason: r.get(3)?,
                    })
                },
            )
            .optional()?)
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

    fn report_status(&self, gateway: &str, applied: u32, epoch: &str, error: &str) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE gateways SET applied_generation = ?2, last_error = ?3, last_seen_ms = ?4, applied_epoch = ?5 WHERE name = ?1",
            params![gateway, applied, error, now_ms(), epoch],
        )?;
        if n == 0 {
            return Err(not_found("gateway", gateway));
        }
        Ok(())
    }

    fn insert_alerts(&self, gateway: &str, alerts: &[NewAlert]) -> Result<Vec<String>> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let now = now_ms();
        for a in alerts {
            // Sequence numbers are taken in commit order (one writer at a time), so a sink that
            // has read up to N never sees a smaller number commit later.
            tx.execute(
                "INSERT OR IGNORE INTO alerts (id, gateway, device, body, severity, received_ms, suppressed) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, EXISTS (SELECT 1 FROM suppressions \
                 WHERE device = ?3 AND detector = ?7 AND (peer = '' OR peer = ?8)))",
                params![a.id, gateway, a.device, a.body, a.severity, now, a.detector, a.peer],
            )?;
        }
        let held: u32 = tx.query_row(
            "SELECT COUNT(*) FROM alerts WHERE gateway = ?1",
            [gateway],
            |r| r.get(0),
        )?;
        if held > self.alert_quota {
            let over = held - self.alert_quota;
            let dropped: Vec<u8> = tx
                .prepare(
                    "DELETE FROM alerts WHERE seq IN (SELECT seq FROM alerts WHERE gateway = ?1 \
                     ORDER BY acknowledged DESC, severity, seq LIMIT ?2) RETURNING severity",
                )?
                .query_map(params![gateway, over], |r| r.get(0))?
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

    fn alerts_after(&self, after: i64, limit: u32) -> Result<Vec<StoredAlert>> {
        let c = self.conn();
        let mut q = c.prepare_cached(
            "SELECT seq, gateway, id, body FROM alerts WHERE seq > ?1 AND suppressed = 0 \
             ORDER BY seq LIMIT ?2",
        )?;
        let rows = q
            .query_map(params![after, limit], |r| {
                Ok(StoredAlert {
                    seq: r.get(0)?,
                    gateway: r.get(1)?,
                    id: r.get(2)?,
                    body: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
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

    fn alerts(&self, q: &AlertQuery) -> Result<Vec<(String, String, bool, String)>> {
        let c = self.conn();
        let mut stmt = c.prepare_cached(
            "SELECT gateway, body, acknowledged, acknowledged_by FROM alerts \
             WHERE (?1 = '' OR gateway = ?1) AND (?2 = '' OR device = ?2) AND severity >= ?3 \
             AND (?4 OR acknowledged = 0) \
             ORDER BY seq DESC LIMIT ?5",
        )?;
        let rows = stmt
            .query_map(
                params![
                    q.gateway,
                    q.device,
                    q.min_severity,
                    q.include_acknowledged,
                    q.limit
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0, r.get(3)?)),
            )?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn audit(&self) -> Result<Vec<AuditEntry>> {
        audit_rows(&self.conn())
    }

    fn audit_with_head(&self, head_path: &Path) -> Result<super::AuditWithHead> {
        // Under the connection lock, which every write holds from its head append to its
        // commit: the two are read at the same point.
        let c = self.conn();
        let entries = audit_rows(&c)?;
        Ok((entries, head::read(head_path)))
    }

    fn write(
        &self,
        actor: &str,
        reason: &str,
        change: &Change,
        compile: Compiler<'_>,
    ) -> Result<WriteOutcome> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let before = match change.device() {
            Some(name) => device_by_name(&tx, name)?,
            None => None,
        };
        let (action, target, diff) = apply(&tx, change)?;
        // Stable ids for any new profile or flow, then compile with the change applied; any
        // error rolls everything back.
        allocate_ids(&tx, &crate::compile::flow_keys(&snapshot(&tx)?)?)?;
        let states = compile(&snapshot(&tx)?, before.as_ref(), change)?;
        let epoch = epoch(&tx)?;
        let mut generations = BTreeMap::new();
        let mut enforced = Enforcement::new();
        for (gateway, mut state) in states {
            let latest: Option<(u32, String)> = tx
                .query_row(
                    "SELECT generation, state_json FROM generations WHERE gateway = ?1 ORDER BY generation DESC LIMIT 1",
                    [&gateway],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let next = latest.as_ref().map_or(1, |(g, _)| g + 1);
            let prev = latest
                .as_ref()
                .and_then(|(_, json)| wardgate_policy::DesiredState::from_json(json).ok());
            if let (Some((g, _)), Some(prev)) = (&latest, &prev) {
                state.generation = *g;
                if prev == &state {
                    continue; // this gateway's policy did not change
                }
            }
            state.generation = next;
            // Refuse what the gateway could not receive (checked with this store's epoch and a
            // content hash, which travel with it).
            state.epoch.clone_from(&epoch);
            state.content_hash = "0".repeat(64);
            let len = wardgate_proto::bundle_len(&state, reason);
            // Stored without them: they are added when the generation is read out.
            state.epoch.clear();
            state.content_hash.clear();
            if len > wardgate_proto::MAX_BUNDLE_BYTES {
                return Err(Error::TooLarge(format!(
                    "the policy of gateway `{gateway}` would be a {len}-byte bundle, over the \
                     {}-byte limit agents receive; refusing the change (split the gateway, or \
                     use fewer or smaller peer groups per profile)",
                    wardgate_proto::MAX_BUNDLE_BYTES
                )));
            }
            let stored = state.to_json();
            enforced.insert(
                gateway.clone(),
                enforcement::gateway_change(prev.as_ref(), &state, &stored),
            );
            tx.execute(
                "INSERT INTO generations (gateway, generation, state_json, reason, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![gateway, next, stored, reason, now_ms()],
            )?;
            generations.insert(gateway, next);
        }
        let (prev_hash, prev_seq): (String, u64) = tx
            .query_row(
                "SELECT hash, seq FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .optional()?
            .unwrap_or((audit::GENESIS.to_string(), 0));
        let seq = prev_seq + 1;
        let ts = now_ms();
        let mut diff = diff;
        if !enforced.is_empty() {
            diff["enforcement"] = serde_json::json!(enforced);
        }
        let mut e = AuditEntry {
            seq,
            unix_ms: ts,
            actor: actor.to_string(),
            action,
            target,
            diff: json(&diff),
            reason: reason.to_string(),
            prev_hash,
            hash: String::new(),
        };
        e.hash = e.content_hash();
        tx.execute(
            "INSERT INTO audit (seq, unix_ms, actor, action, target, diff, reason, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![e.seq as i64, e.unix_ms, e.actor, e.action, e.target, e.diff, e.reason, e.prev_hash, e.hash],
        )?;
        // The head leaves the database before the write commits: a write whose head cannot
        // be written is refused (the transaction rolls back when dropped).
        if let Some(head) = &self.head {
            head.append(seq, &e.hash, ts).map_err(|err| {
                Error::Internal(format!(
                    "recording the audit head in {}: {err}; nothing was written",
                    head.path().display()
                ))
            })?;
        }
        // The head file's fsync runs beside the store's commit (its own fsync): one after the
        // other they added 1.8-5 ms to every write on a busy 2-core machine.
        let (committed, synced) = std::thread::scope(|s| {
            let sync = self.head.as_ref().map(|h| s.spawn(|| h.sync()));
            let committed = tx.commit();
            (committed, sync.map(|j| j.join()))
        });
        if let Err(err) = committed {
            if let Some(head) = &self.head
                && let Err(h) = head.abort(seq, &e.hash, ts)
            {
                tracing::error!(
                    seq,
                    "the audit head file keeps a head that did not commit: {h}"
                );
            }
            return Err(err.into());
        }
        match synced {
            Some(Ok(Err(err))) => tracing::error!(
                seq,
                "audit entry stored, but its head may not be on disk in the head file: {err}"
            ),
            Some(Err(_)) => tracing::error!(seq, "the audit head sync panicked"),
            _ => {}
        }
        Ok(WriteOutcome {
            audit_seq: seq,
            generations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
