//! The PostgreSQL write transaction: one pooled connection from `begin` to commit, holding
//! the write lock (see the module doc of `postgres`); typed rows in and out, no policy
//! decided here. The SQL mirrors `sqlite_tx.rs`.

use std::{collections::BTreeSet, sync::Mutex};

use super::Db;

use super::{Conn, Sql, WRITE_LOCK, site};
use crate::{
    audit::{AuditEntry, now_ms},
    error::{Error, Result},
    store::{
        Applied, Change, DeviceRow, GatewayRow, GenerationRow, SiteReader, Snapshot, StoreTx,
        sqlite::{json, list, not_found},
    },
};

pub(super) struct PgTx<'a> {
    pub(super) conn: Conn<'a>,
    done: bool,
    /// The site without gateways and devices, as read in this transaction: a write reads it
    /// twice (ids, then the compile) and the second read is served from here unless the
    /// transaction wrote since (any change or id drops it).
    base: Mutex<Option<Snapshot>>,
    /// Audit entries and generations to insert, each in one statement, sent with the COMMIT
    /// in one round trip ([`PgTx::finish`]); `latest` reads the held generations first, and
    /// nothing reads the audit trail after its head.
    audit: Vec<AuditEntry>,
    generations: Vec<super::locked::Held>,
    /// The audit chain head and the store's epoch, read with the lock (the lock keeps the head
    /// as it is until the commit; the epoch never changes).
    head: (u64, String),
    epoch: Option<String>,
    /// The last device read by name and what it read, until the transaction writes: a write
    /// reads a change's device before applying it, and applying needs the same row.
    read: Mutex<Option<(String, Option<DeviceRow>)>>,
    /// What a group of writes will read, read ahead ([`StoreTx::read_ahead`]).
    pub(super) ahead: Option<super::ahead::Ahead>,
    /// Devices whose profile, mode or location a change set, by name, as they are now: a row
    /// already read is updated here and written in one statement before the next one that
    /// could read it ([`PgTx::db`]), or with the commit. An assignment in a group then makes
    /// no round trip of its own.
    updated: Mutex<std::collections::BTreeMap<String, DeviceRow>>,
}

impl<'a> PgTx<'a> {
    /// BEGIN, the write lock (held until COMMIT or ROLLBACK), then the audit chain head and
    /// the epoch, in one round trip: each round trip under the lock is paid by every write
    /// queued behind it.
    pub(super) fn begin(conn: Conn<'a>) -> Result<Self> {
        let (head, epoch) = super::locked::begin(&conn, WRITE_LOCK)?;
        Ok(PgTx::begun(conn, head, epoch))
    }

    /// A transaction begun on `conn`, with nothing read or written in it yet.
    fn begun(conn: Conn<'a>, head: super::locked::Head, epoch: Option<String>) -> Self {
        PgTx {
            conn,
            done: false,
            base: Mutex::new(None),
            audit: Vec::new(),
            generations: Vec::new(),
            head,
            epoch,
            read: Mutex::new(None),
            ahead: None,
            updated: Mutex::default(),
        }
    }

    /// A read-only transaction on `conn` (one snapshot of the site: REPEATABLE READ), without
    /// the write lock, for `Store::read_site`: only its `SiteReader` side is ever used (the
    /// server refuses a write in it).
    pub(super) fn read_only(conn: Conn<'a>) -> Result<Self> {
        conn.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        Ok(PgTx::begun(
            conn,
            (0, crate::audit::GENESIS.to_string()),
            None,
        ))
    }

    /// The generations, the audit entries and the COMMIT, sent together (one round trip). A
    /// failed insert aborts the transaction, so its COMMIT ends it as a rollback: the write
    /// fails with the insert's error and nothing of it stays.
    pub(super) fn finish(mut self) -> Result<()> {
        let generations = std::mem::take(&mut self.generations);
        let audit = std::mem::take(&mut self.audit);
        let updated = self.take_updates();
        let (result, ended) =
            super::locked::insert_and_commit(&self.conn, &updated, &generations, &audit);
        // Ended either way (committed, or rolled back by the server): no ROLLBACK at drop
        // unless nothing was sent or the connection itself failed.
        self.done = ended;
        result
    }

    fn cached_base(&self) -> std::sync::MutexGuard<'_, Option<Snapshot>> {
        self.base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn last_read(&self) -> std::sync::MutexGuard<'_, Option<(String, Option<DeviceRow>)>> {
        self.read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn updates(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, DeviceRow>> {
        self.updated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The device updates held back, to be written now.
    fn take_updates(&self) -> Vec<DeviceRow> {
        std::mem::take(&mut *self.updates()).into_values().collect()
    }

    /// The connection, once the device updates held back are written: every statement but the
    /// commit's goes through here.
    pub(super) fn db(&self) -> Result<&Db> {
        let updated = self.take_updates();
        if !updated.is_empty() {
            super::locked::update_devices(&self.conn, &updated)?;
        }
        Ok(&self.conn)
    }

    /// A profile, mode or location set on a device whose row this transaction holds (the last
    /// read, or read ahead): the row as it is now, the update held back ([`PgTx::updated`]).
    /// None: the change is another, or the row must be read.
    fn update_held(
        &self,
        change: &Change,
        read: Option<&(String, Option<DeviceRow>)>,
    ) -> Option<(DeviceRow, DeviceRow)> {
        let name = change.device_update()?;
        let held = match read {
            Some((n, row)) if n == name => row.clone(),
            _ => self.ahead.as_ref()?.device(name)?,
        }?;
        let mut now = held.clone();
        match change {
            Change::AssignProfile { profile, .. } => now.profile = profile.clone(),
            Change::SetMode { mode, .. } => now.mode = *mode,
            Change::SetLocation { location, .. } => now.location = location.clone(),
            _ => return None,
        }
        self.updates().insert(name.to_string(), now.clone());
        Some((held, now))
    }

    /// The transaction wrote rows the memos may hold.
    fn wrote(&mut self) {
        *self.cached_base() = None;
        *self.last_read() = None;
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        // Not committed (an error, or a failed commit): nothing of the write stays.
        if !self.done
            && let Err(e) = self.conn.batch("ROLLBACK")
        {
            tracing::error!("rolling back a PostgreSQL store write: {e}");
            // The connection is in a state nobody knows: not given to the next caller.
            self.conn.broken = true;
        }
    }
}

/// A device's MAC and addresses are its own across the site (indexed lookups).
fn unique_mac_and_addresses(c: &Db, d: &DeviceRow) -> Result<()> {
    let mac = d.mac.to_string();
    if let Some(r) = c.opt(
        "SELECT name FROM devices WHERE mac = $1 AND name <> $2 LIMIT 1",
        &[&mac, &d.name],
    )? {
        let other: String = r.try_get(0)?;
        return Err(Error::Invalid(format!(
            "device `{}`: duplicate MAC {mac}, already used by `{other}`",
            d.name
        )));
    }
    let addresses: Vec<String> = d.addresses.iter().map(ToString::to_string).collect();
    let held = c.rows(
        "SELECT address, device FROM device_addresses WHERE address = ANY($1) AND device <> $2",
        &[&addresses, &d.name],
    )?;
    // The first of the device's addresses held by another, as one lookup each would find.
    for a in &addresses {
        for r in &held {
            if r.try_get::<_, &str>(0)? == a {
                let other: String = r.try_get(1)?;
                return Err(Error::Invalid(format!(
                    "device `{}`: duplicate address {a}, already used by `{other}`",
                    d.name
                )));
            }
        }
    }
    Ok(())
}

/// Writes one change's rows inside the transaction on `c`; returns what they were before, and
/// the device row as an update left it (the compile reads it next). `read` is a device row
/// already read in this transaction since its last write, if any.
pub(super) fn apply(
    c: &Db,
    change: &Change,
    read: Option<(String, Option<DeviceRow>)>,
) -> Result<(Applied, Option<DeviceRow>)> {
    let mut written = None;
    let stored = |name: &str| -> Result<Option<DeviceRow>> {
        match &read {
            Some((n, row)) if n == name => Ok(row.clone()),
            _ => site::device(c, name),
        }
    };
    let device = |name: &str| -> Result<DeviceRow> {
        stored(name)?.ok_or_else(|| not_found("device", name))
    };
    let applied = match change {
        Change::UpsertDevice(d) => {
            let before = stored(&d.name)?;
            unique_mac_and_addresses(c, d)?;
            c.exec(
                "INSERT INTO devices (name, id, mac, addresses, profile, mode, gateway, location, \
                 asset_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (name) DO UPDATE SET id = $2, mac = $3, addresses = $4, \
                 profile = $5, mode = $6, gateway = $7, location = $8, asset_id = $9",
                &[
                    &d.name,
                    &i64::from(d.id),
                    &d.mac.to_string(),
                    &json(&d.addresses),
                    &d.profile,
                    &d.mode.as_str(),
                    &d.gateway,
                    &d.location,
                    &d.asset_id,
                ],
            )?;
            c.exec("DELETE FROM device_addresses WHERE device = $1", &[&d.name])?;
            let addresses: Vec<String> = d.addresses.iter().map(ToString::to_string).collect();
            c.exec(
                "INSERT INTO device_addresses (address, device) \
                 SELECT a, $2 FROM UNNEST($1::TEXT[]) AS a ON CONFLICT DO NOTHING",
                &[&addresses, &d.name],
            )?;
            Applied::Device(before)
        }
        Change::AssignProfile {
            device: name,
            profile,
        } => {
            let d = device(name)?;
            written = site::update_device(c, "profile = $2", &[name, profile])?;
            Applied::Device(Some(d))
        }
        Change::SetMode { device: name, mode } => {
            let d = device(name)?;
            written = site::update_device(c, "mode = $2", &[name, &mode.as_str()])?;
            Applied::Device(Some(d))
        }
        Change::SetLocation {
            device: name,
            location,
        } => {
            let d = device(name)?;
            written = site::update_device(c, "location = $2", &[name, location])?;
            Applied::Device(Some(d))
        }
        Change::UpsertProfile { name, yaml } => {
            let before = site::profile(c, name)?;
            let version = before.as_ref().map_or(1, |p| p.version + 1);
            c.exec(
                "INSERT INTO profiles (name, version, yaml, created_ms) VALUES ($1, $2, $3, $4)",
                &[name, &i64::from(version), yaml, &now_ms()],
            )?;
            Applied::Profile { before, version }
        }
        Change::UpsertGroup { name, cidrs } => {
            let before: Option<String> = c
                .opt("SELECT cidrs FROM groups WHERE name = $1", &[name])?
                .map(|r| r.try_get(0))
                .transpose()?;
            c.exec(
                "INSERT INTO groups (name, cidrs) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET cidrs = $2",
                &[name, &json(cidrs)],
            )?;
            Applied::Group(before.map(|b| list("groups", name, &b)).transpose()?)
        }
        Change::UpsertGateway(g) => {
            c.exec(
                "INSERT INTO gateways (name, interfaces, location) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET interfaces = $2, location = $3",
                &[&g.name, &json(&g.interfaces), &g.location],
            )?;
            Applied::Recorded
        }
        Change::SetBaseline {
            device: name,
            action,
            now_ns,
        } => {
            device(name)?;
            let (before, after, cleared) =
                super::learning::set_baseline(c, name, *action, *now_ns)?;
            Applied::Baseline {
                before,
                after,
                cleared,
            }
        }
        Change::SuppressAlerts {
            device: name,
            detector,
            peer,
            made_by,
            made_ms,
            reason,
        } => {
            device(name)?;
            // Made again: the newest says who and why.
            c.exec(
                "INSERT INTO suppressions (device, detector, peer, made_ms, made_by, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device, detector, peer) DO UPDATE \
                 SET made_ms = $4, made_by = $5, reason = $6",
                &[name, detector, peer, made_ms, made_by, reason],
            )?;
            Applied::Recorded
        }
        Change::UnsuppressAlerts {
            device,
            detector,
            peer,
        } => {
            let n = c.exec(
                "DELETE FROM suppressions WHERE device = $1 AND detector = $2 AND peer = $3",
                &[device, detector, peer],
            )?;
            if n == 0 {
                let what = match peer.as_str() {
                    "" => format!("{detector} on {device}"),
                    p => format!("{detector} on {device} about {p}"),
                };
                return Err(not_found("suppression", &what));
            }
            Applied::Recorded
        }
        Change::RequestQuarantine {
            device: name,
            reason,
            by,
            at_ms,
            minutes,
        } => {
            device(name)?;
            super::quarantine::insert_request(c, name, reason, by, *at_ms, *minutes)?;
            Applied::Recorded
        }
        Change::ApproveQuarantine {
            id,
            device,
            approver,
            at_ms,
        } => {
            super::quarantine::approve(c, *id, device, approver, *at_ms)?;
            Applied::Recorded
        }
        Change::QuarantineTimer {
            device,
            until_ms,
            restore_mode,
            set_by,
        } => {
            super::quarantine::set_timer(c, device, *until_ms, restore_mode.as_str(), set_by)?;
            Applied::Recorded
        }
        Change::ClearQuarantineTimer { device } => {
            c.exec("DELETE FROM quarantine_timers WHERE device = $1", &[device])?;
            Applied::Recorded
        }
        Change::Refused { .. } | Change::ConsoleLogin { .. } => Applied::Recorded,
        Change::RecordImport { source, fields } => {
            super::provenance::record(c, source, fields, now_ms())?;
            Applied::Recorded
        }
        Change::IssueEnrollmentToken { .. }
        | Change::Enroll { .. }
        | Change::RenewCertificate { .. }
        | Change::RefuseCertificate { .. }
        | Change::RevokeGateway { .. } => super::fleet::apply(c, change)?,
        Change::SubmitChange(p) => {
            device(&p.device)?;
            super::pending::insert(c, p)?;
            Applied::Recorded
        }
        Change::ApproveChange {
            id,
            proposer,
            approver,
            at_ms,
            ..
        } => {
            super::pending::approve(c, *id, proposer, approver, *at_ms)?;
            Applied::Recorded
        }
        Change::CloseChange {
            id,
            proposer,
            by,
            closure,
            why,
            at_ms,
            ..
        } => {
            super::pending::close(c, *id, proposer, by, *closure, why, *at_ms)?;
            Applied::Recorded
        }
        Change::AcknowledgeAlerts { ids, by } => {
            for id in ids {
                // Ids are unique per gateway: `GATEWAY/ID`, or a bare id one gateway uses.
                let n = match id.split_once('/') {
                    Some((gw, aid)) => c.exec(
                        "UPDATE alerts SET acknowledged = TRUE, acknowledged_by = $3 \
                         WHERE gateway = $1 AND id = $2",
                        &[&gw, &aid, by],
                    )?,
                    None => {
                        let holders: i64 = c
                            .one(
                                "SELECT COUNT(DISTINCT gateway) FROM alerts WHERE id = $1",
                                &[id],
                            )?
                            .try_get(0)?;
                        if holders > 1 {
                            return Err(Error::Invalid(format!(
                                "alert id `{id}` is used by {holders} gateways; name one as GATEWAY/{id}"
                            )));
                        }
                        c.exec(
                            "UPDATE alerts SET acknowledged = TRUE, acknowledged_by = $2 \
                             WHERE id = $1",
                            &[id, by],
                        )?
                    }
                };
                if n == 0 {
                    return Err(not_found("alert", id));
                }
            }
            Applied::Recorded
        }
    };
    Ok((applied, written))
}

impl SiteReader for PgTx<'_> {
    fn base(&self) -> Result<Snapshot> {
        if let Some(s) = &*self.cached_base() {
            return Ok(s.clone());
        }
        let s = site::base(self.db()?)?;
        *self.cached_base() = Some(s.clone());
        Ok(s)
    }

    fn gateways(&self, names: &BTreeSet<String>) -> Result<Vec<GatewayRow>> {
        if let Some(rows) = self.ahead.as_ref().and_then(|a| a.gateways(names)) {
            return Ok(rows);
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        site::gateways_where(self.db()?, "WHERE name = ANY($1)", &[&names])
    }

    fn gateway_names(&self) -> Result<Vec<String>> {
        self.db()?
            .rows("SELECT name FROM gateways ORDER BY name", &[])?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }

    fn devices_of(
        &self,
        gateways: &BTreeSet<String>,
        profiles: &BTreeSet<String>,
    ) -> Result<Vec<DeviceRow>> {
        if profiles.is_empty()
            && let Some(rows) = self.ahead.as_ref().and_then(|a| a.devices_on(gateways))
        {
            return Ok(rows);
        }
        let gateways: Vec<&str> = gateways.iter().map(String::as_str).collect();
        let profiles: Vec<&str> = profiles.iter().map(String::as_str).collect();
        site::devices_where(
            self.db()?,
            "WHERE gateway = ANY($1) OR profile = ANY($2)",
            &[&gateways, &profiles],
        )
    }

    fn device(&self, name: &str) -> Result<Option<DeviceRow>> {
        if let Some((n, row)) = &*self.last_read()
            && n == name
        {
            return Ok(row.clone());
        }
        if let Some(row) = self.ahead.as_ref().and_then(|a| a.device(name)) {
            return Ok(row);
        }
        let row = site::device(self.db()?, name)?;
        *self.last_read() = Some((name.to_string(), row.clone()));
        Ok(row)
    }
}

impl StoreTx for PgTx<'_> {
    fn apply(&mut self, change: &Change) -> Result<Applied> {
        let read = self.last_read().take();
        if matches!(
            change,
            Change::UpsertProfile { .. } | Change::UpsertGroup { .. }
        ) {
            // The only changes to what `base` holds besides the ids (which drop it themselves).
            self.wrote();
        }
        let (applied, written) = match self.update_held(change, read.as_ref()) {
            Some((before, now)) => (Applied::Device(Some(before)), Some(now)),
            None => apply(self.db()?, change, read)?,
        };
        match (&mut self.ahead, &written) {
            (Some(ahead), Some(row)) => ahead.wrote(row),
            // Another change (or none of the device's rows written): read again from now on.
            (ahead, _) => *ahead = None,
        }
        if let Some(row) = written {
            *self.last_read() = Some((row.name.clone(), Some(row)));
        }
        Ok(applied)
    }

    fn max_device_id(&self) -> Result<u32> {
        let max: i64 = self
            .db()?
            .one("SELECT COALESCE(MAX(id), 0) FROM devices", &[])?
            .try_get(0)?;
        super::u32_of("devices", "MAX(id)", max)
    }

    fn insert_policy_id(&mut self, profile: &str, id: u32) -> Result<()> {
        self.wrote();
        self.db()?.exec(
            "INSERT INTO policy_ids (profile, id) VALUES ($1, $2)",
            &[&profile, &i64::from(id)],
        )?;
        Ok(())
    }

    fn insert_rule_id(&mut self, profile: &str, flow: &str, id: u32) -> Result<()> {
        self.wrote();
        self.db()?.exec(
            "INSERT INTO rule_ids (profile, flow, id) VALUES ($1, $2, $3)",
            &[&profile, &flow, &i64::from(id)],
        )?;
        Ok(())
    }

    fn epoch(&self) -> Result<String> {
        self.epoch
            .clone()
            .ok_or_else(|| Error::Internal("the PostgreSQL store has no epoch".into()))
    }

    fn latest(&self, gateway: &str) -> Result<Option<GenerationRow>> {
        // One this transaction inserted (held for the commit) is the latest.
        if let Some(held) = self
            .generations
            .iter()
            .filter(|g| g.gateway() == gateway)
            .max_by_key(|g| g.generation())
        {
            return Ok(Some(held.row()));
        }
        if let Some(row) = self.ahead.as_ref().and_then(|a| a.latest(gateway)) {
            return Ok(row);
        }
        site::latest(self.db()?, gateway)
    }

    fn insert_generation(&mut self, row: &GenerationRow) -> Result<()> {
        // Inserted at the commit (`finish`), with its NOTIFY.
        self.generations.push(super::locked::Held::of(row)?);
        Ok(())
    }

    fn audit_chain_head(&self) -> Result<(u64, String)> {
        Ok(self.head.clone())
    }

    fn insert_audit(&mut self, e: &AuditEntry) -> Result<()> {
        // Inserted with the others at the commit: nothing in the transaction reads the audit
        // trail but its chain head, which is this entry now (a group's next write chains
        // after it).
        self.head = (e.seq, e.hash.clone());
        self.audit.push(e.clone());
        Ok(())
    }

    fn read_ahead(&mut self, devices: &[&str]) -> Result<()> {
        if !devices.is_empty() {
            self.ahead = Some(super::ahead::Ahead::read(self.db()?, devices)?);
        }
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.finish()
    }
}
