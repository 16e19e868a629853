//! Embedded SQLite store (rusqlite, bundled SQLite): one file, WAL, migrations.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Mutex,
};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use wardgate_analysis::baseline::lifecycle::Action;

use super::{
    AlertQuery, Change, Compiler, DeviceRow, GatewayRow, GenerationRow, NewAlert, ProfileRow,
    SiteReader, Snapshot, Store, StoreError, StoredAlert, WriteOutcome,
    checkpoint::{self, Checkpointer},
    migrations::MIGRATIONS,
    reader::Readers,
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
    /// WAL checkpoints of a store file (none in memory or read-only); dropped after `conn`.
    checkpointer: Option<Checkpointer>,
    /// Read connections for reads that can be long (flow rows, listings), so they never hold
    /// `conn`, which writes wait for (none in memory: those reads use `conn`).
    readers: Option<Readers>,
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

/// A JSON list column of row `name` in `table`.
fn list(table: &'static str, name: &str, s: &str) -> Result<Vec<String>> {
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
        conn.query_row("SELECT version FROM schema_version", [], |r| {
            r.get::<_, u32>(0)
        })
        .map_err(|e| Error::Internal(format!("{} is not a wardgate store: {e}", db.display())))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            alert_quota: ALERT_QUOTA,
            head: None,
            checkpointer: None,
            readers: None,
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
struct RawDevice {
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

fn raw_device(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDevice> {
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
fn device_from_raw(r: RawDevice) -> Result<DeviceRow> {
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
    let mode = crate::compile::parse_mode(&r.mode).map_err(|e| bad(format!("mode: {e}")))?;
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

const DEVICE_COLS: &str = "name, id, mac, addresses, profile, mode, gateway, location, asset_id";

fn devices_where(c: &Connection, filter: &str, p: impl rusqlite::Params) -> Result<Vec<DeviceRow>> {
    let mut q = c.prepare_cached(&format!(
        "SELECT {DEVICE_COLS} FROM devices {filter} ORDER BY id"
    ))?;
    let raw: Vec<RawDevice> = q
        .query_map(p, raw_device)?
        .collect::<rusqlite::Result<_>>()?;
    raw.into_iter().map(device_from_raw).collect()
}

fn device_by_name(c: &Connection, name: &str) -> Result<Option<DeviceRow>> {
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

fn gateways_where(
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
fn base(c: &Connection) -> Result<Snapshot> {
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

fn mode_text(m: wardgate_policy::Mode) -> &'static str {
    m.as_str()
}

/// A device's MAC and addresses are its own across the site: checked here, with indexed
/// lookups, so a write to one device does not validate every other.
fn unique_mac_and_addresses(tx: &Transaction<'_>, d: &DeviceRow) -> Result<()> {
    let mac = d.mac.to_string();
    if let Some(other) = tx
        .query_row(
            "SELECT name FROM devices WHERE mac = ?1 AND name != ?2",
            params![mac, d.name],
            |r| r.get::<_, String>(0),
        )
        .optional()?
    {
        return Err(Error::Invalid(format!(
            "device `{}`: duplicate MAC {mac}, already used by `{other}`",
            d.name
        )));
    }
    for a in &d.addresses {
        if let Some(other) = tx
            .query_row(
                "SELECT device FROM device_addresses WHERE address = ?1 AND device != ?2",
                params![a.to_string(), d.name],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        {
            return Err(Error::Invalid(format!(
                "device `{}`: duplicate address {a}, already used by `{other}`",
                d.name
            )));
        }
    }
    Ok(())
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
        device_by_name(tx, name)?.ok_or_else(|| not_found("device", name))
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
            unique_mac_and_addresses(tx, d)?;
            tx.execute(
                &format!(
                    "INSERT INTO devices ({DEVICE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT(name) DO UPDATE SET id = ?2, mac = ?3, addresses = ?4, profile = ?5, \
                     mode = ?6, gateway = ?7, location = ?8, asset_id = ?9"
                ),
                params![d.name, d.id, d.mac.to_string(), json(&d.addresses), d.profile, mode_text(d.mode), d.gateway, d.location, d.asset_id],
            )?;
            tx.execute("DELETE FROM device_addresses WHERE device = ?1", [&d.name])?;
            for a in &d.addresses {
                tx.execute(
                    "INSERT OR IGNORE INTO device_addresses (address, device) VALUES (?1, ?2)",
                    params![a.to_string(), d.name],
                )?;
            }
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
                params![name, mode_text(*mode)],
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
                    &serde_json::json!(before.map(|b| list("groups", name, &b)).transpose()?),
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
        Change::SetBaseline {
            device: name,
            action,
            now_ns,
        } => {
            device(name)?;
            let (before, after, cleared) =
                super::learning::set_baseline(tx, name, *action, *now_ns)?;
            let verb = match action {
                Action::Freeze => "freeze",
                Action::Approve => "approve",
                Action::Relearn { .. } => "relearn",
            };
            (
                format!("baseline_{verb}"),
                name.clone(),
                diff(
                    &serde_json::json!(before),
                    &serde_json::json!({"lifecycle": after, "flow_rows_cleared": cleared}),
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
                        let holders: u32 = tx.query_row(
                            "SELECT COUNT(DISTINCT gateway) FROM alerts WHERE id = ?1",
                            [id],
                            |r| r.get(0),
                        )?;
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

/// Cancels the head lines of a write that did not commit, newest first.
fn abort_heads(head: &HeadFile, heads: &[(u64, String)], ts: i64) {
    for (seq, hash) in heads.iter().rev() {
        if let Err(h) = head.abort(*seq, hash, ts) {
            tracing::error!(
                seq,
                "the audit head file keeps a head that did not commit: {h}"
            );
        }
    }
}

/// The site as a write's transaction sees it.
struct TxReader<'a>(&'a Connection);

impl SiteReader for TxReader<'_> {
    fn base(&self) -> Result<Snapshot> {
        base(self.0)
    }

    fn gateways(&self, names: &BTreeSet<String>) -> Result<Vec<GatewayRow>> {
        gateways_where(
            self.0,
            "WHERE name IN (SELECT value FROM json_each(?1))",
            params![json(&names.iter().collect::<Vec<_>>())],
        )
    }

    fn gateway_names(&self) -> Result<Vec<String>> {
        Ok(self
            .0
            .prepare_cached("SELECT name FROM gateways ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn devices_of(
        &self,
        gateways: &BTreeSet<String>,
        profiles: &BTreeSet<String>,
    ) -> Result<Vec<DeviceRow>> {
        let as_json = |s: &BTreeSet<String>| json(&s.iter().collect::<Vec<_>>());
        devices_where(
            self.0,
            "WHERE gateway IN (SELECT value FROM json_each(?1)) \
             OR profile IN (SELECT value FROM json_each(?2))",
            params![as_json(gateways), as_json(profiles)],
        )
    }

    fn device(&self, name: &str) -> Result<Option<DeviceRow>> {
        device_by_name(self.0, name)
    }
}

/// A count or time for an SQLite integer (past i64::MAX is i64::MAX).
fn sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store for SqliteStore {
    fn audit_head_path(&self) -> Option<PathBuf> {
        self.head.as_ref().map(|h| h.path().to_path_buf())
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

    fn alerts(&self, q: &AlertQuery) -> Result<Vec<(String, String, bool, String)>> {
        let c = self.conn();
        let mut stmt = c.prepare_cached(
            "SELECT gateway, body, acknowledged, acknowledged_by FROM alerts \
             WHERE latest = 1 AND (?1 = '' OR gateway = ?1) AND (?2 = '' OR device = ?2) AND severity >= ?3 \
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
        changes: &[Change],
        compile: Compiler<'_>,
    ) -> Result<WriteOutcome> {
        if changes.is_empty() {
            return Err(Error::Invalid("nothing to write".into()));
        }
        let mut c = self.conn();
        let tx = c.transaction()?;
        let mut before = Vec::with_capacity(changes.len());
        let mut entries = Vec::with_capacity(changes.len());
        let mut new_profiles = BTreeSet::new();
        for change in changes {
            before.push(match change.device() {
                Some(name) => device_by_name(&tx, name)?,
                None => None,
            });
            entries.push(apply(&tx, change)?);
            if let Change::UpsertProfile { name, .. } = change {
                new_profiles.insert(name.clone());
            }
        }
        // Stable ids for the profiles written (and their flows), then compile with the changes
        // applied; any error rolls everything back.
        // Profiles stored before ids existed get theirs with the first write after.
        let unnumbered: Vec<String> = tx
            .prepare_cached(
                "SELECT DISTINCT name FROM profiles WHERE name NOT IN (SELECT profile FROM policy_ids)",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        new_profiles.extend(unnumbered);
        if !new_profiles.is_empty() {
            let b = base(&tx)?;
            let written = Snapshot {
                profiles: b
                    .profiles
                    .into_iter()
                    .filter(|p| new_profiles.contains(&p.name))
                    .collect(),
                ..Snapshot::default()
            };
            allocate_ids(&tx, &crate::compile::flow_keys(&written)?)?;
        }
        let states = compile(&TxReader(&tx), &before, changes)?;
        let epoch = epoch(&tx)?;
        let mut generations = BTreeMap::new();
        let mut sent = BTreeMap::new();
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
            let change = enforcement::gateway_change(prev.as_ref(), &state, &stored);
            tx.execute(
                "INSERT INTO generations (gateway, generation, state_json, reason, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![gateway, next, stored, reason, now_ms()],
            )?;
            state.epoch.clone_from(&epoch);
            state.content_hash.clone_from(&change.content_sha256);
            enforced.insert(gateway.clone(), change);
            generations.insert(gateway.clone(), next);
            sent.insert(gateway, state);
        }
        let (prev_hash, prev_seq): (String, u64) = tx
            .query_row(
                "SELECT hash, seq FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .optional()?
            .unwrap_or((audit::GENESIS.to_string(), 0));
        let ts = now_ms();
        // One entry per change; the generations the write produced go in the last one.
        let last = entries.len() - 1;
        let (mut seq, mut prev_hash) = (prev_seq, prev_hash);
        let mut heads = Vec::with_capacity(entries.len());
        for (i, (action, target, mut diff)) in entries.into_iter().enumerate() {
            if i == last && !enforced.is_empty() {
                diff["enforcement"] = serde_json::json!(enforced);
            }
            seq += 1;
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
            tx.prepare_cached(
                "INSERT INTO audit (seq, unix_ms, actor, action, target, diff, reason, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![e.seq as i64, e.unix_ms, e.actor, e.action, e.target, e.diff, e.reason, e.prev_hash, e.hash])?;
            heads.push((seq, e.hash.clone()));
            prev_hash = e.hash;
        }
        // The head leaves the database before the write commits: a write whose head cannot
        // be written is refused (the transaction rolls back when dropped).
        // One line per entry, so verify names the first entry of a rewrite.
        if let Some(head) = &self.head {
            for (i, (seq, hash)) in heads.iter().enumerate() {
                if let Err(err) = head.append(*seq, hash, ts) {
                    abort_heads(head, &heads[..i], ts);
                    return Err(Error::Internal(format!(
                        "recording the audit head in {}: {err}; nothing was written",
                        head.path().display()
                    )));
                }
            }
        }
        // The head file's fsync runs beside the store's commit (its own fsync): one after the
        // other they added 1.8-5 ms to every write on a busy 2-core machine.
        let (committed, synced) = std::thread::scope(|s| {
            let sync = self.head.as_ref().map(|h| s.spawn(|| h.sync()));
            let committed = tx.commit();
            (committed, sync.map(|j| j.join()))
        });
        if let Err(err) = committed {
            if let Some(head) = &self.head {
                abort_heads(head, &heads, ts);
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
            states: sent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                .map(|(_, body, _, _)| body)
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
        store
            .write(
                "user:sam",
                "triaged",
                &[Change::AcknowledgeAlerts {
                    ids: vec!["x".into()],
                }],
                &|_, _, _| Ok(BTreeMap::new()),
            )
            .unwrap();
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
}
