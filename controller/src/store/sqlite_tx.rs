//! The SQLite write transaction: typed rows in and out (`StoreTx`), no policy decided here.

use std::{collections::BTreeSet, sync::MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Applied, Change, DeviceRow, GatewayRow, GenerationContent, GenerationRow, ProfileRow,
    SiteReader, Snapshot, StoreTx,
    sqlite::{
        DEVICE_COLS, FORMAT_BUNDLE, GENERATION_COLS, base, device_by_name, devices_where, epoch,
        gateways_where, generations_where, json, list, not_found,
    },
};
use crate::{
    audit::{self, AuditEntry, now_ms},
    error::{Error, Result},
};

/// A write transaction on the store's one connection, whose lock it holds until it commits or
/// is dropped (rolled back): writes wait for each other, and a read under the lock (the audit
/// trail with its head file) never sees a write half done.
pub(super) struct SqliteTx<'a> {
    conn: MutexGuard<'a, Connection>,
}

impl<'a> SqliteTx<'a> {
    pub(super) fn begin(conn: MutexGuard<'a, Connection>) -> Result<Self> {
        conn.execute_batch("BEGIN")?;
        Ok(SqliteTx { conn })
    }
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        // Not committed (an error, or a failed commit): nothing of the write stays.
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!("rolling back a store write: {e}");
        }
    }
}

/// A device's MAC and addresses are its own across the site: checked here, with indexed
/// lookups, so a write to one device does not validate every other.
fn unique_mac_and_addresses(c: &Connection, d: &DeviceRow) -> Result<()> {
    let mac = d.mac.to_string();
    if let Some(other) = c
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
        if let Some(other) = c
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

/// Writes one change's rows inside the transaction on `c`; returns what they were before.
fn apply(c: &Connection, change: &Change) -> Result<Applied> {
    let device = |name: &str| -> Result<DeviceRow> {
        device_by_name(c, name)?.ok_or_else(|| not_found("device", name))
    };
    Ok(match change {
        Change::UpsertDevice(d) => {
            let before = device_by_name(c, &d.name)?;
            unique_mac_and_addresses(c, d)?;
            c.execute(
                &format!(
                    "INSERT INTO devices ({DEVICE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT(name) DO UPDATE SET id = ?2, mac = ?3, addresses = ?4, profile = ?5, \
                     mode = ?6, gateway = ?7, location = ?8, asset_id = ?9"
                ),
                params![
                    d.name,
                    d.id,
                    d.mac.to_string(),
                    json(&d.addresses),
                    d.profile,
                    d.mode.as_str(),
                    d.gateway,
                    d.location,
                    d.asset_id
                ],
            )?;
            c.execute("DELETE FROM device_addresses WHERE device = ?1", [&d.name])?;
            for a in &d.addresses {
                c.execute(
                    "INSERT OR IGNORE INTO device_addresses (address, device) VALUES (?1, ?2)",
                    params![a.to_string(), d.name],
                )?;
            }
            Applied::Device(before)
        }
        Change::AssignProfile {
            device: name,
            profile,
        } => {
            let d = device(name)?;
            c.execute(
                "UPDATE devices SET profile = ?2 WHERE name = ?1",
                params![name, profile],
            )?;
            Applied::Device(Some(d))
        }
        Change::SetMode { device: name, mode } => {
            let d = device(name)?;
            c.execute(
                "UPDATE devices SET mode = ?2 WHERE name = ?1",
                params![name, mode.as_str()],
            )?;
            Applied::Device(Some(d))
        }
        Change::SetLocation {
            device: name,
            location,
        } => {
            let d = device(name)?;
            c.execute(
                "UPDATE devices SET location = ?2 WHERE name = ?1",
                params![name, location],
            )?;
            Applied::Device(Some(d))
        }
        Change::UpsertProfile { name, yaml } => {
            let before = c
                .query_row(
                    "SELECT name, version, yaml FROM profiles WHERE name = ?1 \
                     ORDER BY version DESC LIMIT 1",
                    [name],
                    |r| {
                        Ok(ProfileRow {
                            name: r.get(0)?,
                            version: r.get(1)?,
                            yaml: r.get(2)?,
                        })
                    },
                )
                .optional()?;
            let version = before.as_ref().map_or(1, |p| p.version + 1);
            c.execute(
                "INSERT INTO profiles (name, version, yaml, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![name, version, yaml, now_ms()],
            )?;
            Applied::Profile { before, version }
        }
        Change::UpsertGroup { name, cidrs } => {
            let before: Option<String> = c
                .query_row("SELECT cidrs FROM groups WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            c.execute(
                "INSERT INTO groups (name, cidrs) VALUES (?1, ?2) \
                 ON CONFLICT(name) DO UPDATE SET cidrs = ?2",
                params![name, json(cidrs)],
            )?;
            Applied::Group(before.map(|b| list("groups", name, &b)).transpose()?)
        }
        Change::UpsertGateway(g) => {
            c.execute(
                "INSERT INTO gateways (name, interfaces, location) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(name) DO UPDATE SET interfaces = ?2, location = ?3",
                params![g.name, json(&g.interfaces), g.location],
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
            c.execute(
                "INSERT INTO suppressions (device, detector, peer, made_ms, made_by, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(device, detector, peer) DO UPDATE \
                 SET made_ms = ?4, made_by = ?5, reason = ?6",
                params![name, detector, peer, made_ms, made_by, reason],
            )?;
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
            super::quarantine::clear_timer(c, device)?;
            Applied::Recorded
        }
        Change::Refused { .. } => Applied::Recorded,
        Change::RecordImport { source, fields } => {
            super::provenance::record(c, source, fields, now_ms())?;
            Applied::Recorded
        }
        Change::UnsuppressAlerts {
            device,
            detector,
            peer,
        } => {
            let n = c.execute(
                "DELETE FROM suppressions WHERE device = ?1 AND detector = ?2 AND peer = ?3",
                params![device, detector, peer],
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
        Change::IssueEnrollmentToken { .. }
        | Change::Enroll { .. }
        | Change::RenewCertificate { .. }
        | Change::RefuseCertificate { .. }
        | Change::RevokeGateway { .. } => super::fleet::apply(c, change)?,
        Change::ConsoleLogin { .. } => Applied::Recorded,
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
                    Some((gw, aid)) => c.execute(
                        "UPDATE alerts SET acknowledged = 1, acknowledged_by = ?3 \
                         WHERE gateway = ?1 AND id = ?2",
                        [gw, aid, by],
                    )?,
                    None => {
                        let holders: u32 = c.query_row(
                            "SELECT COUNT(DISTINCT gateway) FROM alerts WHERE id = ?1",
                            [id],
                            |r| r.get(0),
                        )?;
                        if holders > 1 {
                            return Err(Error::Invalid(format!(
                                "alert id `{id}` is used by {holders} gateways; name one as GATEWAY/{id}"
                            )));
                        }
                        c.execute(
                            "UPDATE alerts SET acknowledged = 1, acknowledged_by = ?2 WHERE id = ?1",
                            [id, by],
                        )?
                    }
                };
                if n == 0 {
                    return Err(not_found("alert", id));
                }
            }
            Applied::Recorded
        }
    })
}

impl SiteReader for SqliteTx<'_> {
    fn base(&self) -> Result<Snapshot> {
        base(&self.conn)
    }

    fn gateways(&self, names: &BTreeSet<String>) -> Result<Vec<GatewayRow>> {
        gateways_where(
            &self.conn,
            "WHERE name IN (SELECT value FROM json_each(?1))",
            params![json(&names.iter().collect::<Vec<_>>())],
        )
    }

    fn gateway_names(&self) -> Result<Vec<String>> {
        Ok(self
            .conn
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
            &self.conn,
            "WHERE gateway IN (SELECT value FROM json_each(?1)) \
             OR profile IN (SELECT value FROM json_each(?2))",
            params![as_json(gateways), as_json(profiles)],
        )
    }

    fn device(&self, name: &str) -> Result<Option<DeviceRow>> {
        device_by_name(&self.conn, name)
    }
}

impl StoreTx for SqliteTx<'_> {
    fn apply(&mut self, change: &Change) -> Result<Applied> {
        apply(&self.conn, change)
    }

    fn max_device_id(&self) -> Result<u32> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM devices", [], |r| r.get(0))?)
    }

    fn insert_policy_id(&mut self, profile: &str, id: u32) -> Result<()> {
        self.conn.execute(
            "INSERT INTO policy_ids (profile, id) VALUES (?1, ?2)",
            params![profile, id],
        )?;
        Ok(())
    }

    fn insert_rule_id(&mut self, profile: &str, flow: &str, id: u32) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO rule_ids (profile, flow, id) VALUES (?1, ?2, ?3)")?
            .execute(params![profile, flow, id])?;
        Ok(())
    }

    fn epoch(&self) -> Result<String> {
        epoch(&self.conn)
    }

    fn latest(&self, gateway: &str) -> Result<Option<GenerationRow>> {
        Ok(generations_where(
            &self.conn,
            GENERATION_COLS,
            "WHERE gateway = ?1 ORDER BY generation DESC LIMIT 1",
            [gateway],
        )?
        .pop())
    }

    fn insert_generation(&mut self, row: &GenerationRow) -> Result<()> {
        let (format, json, bundle): (&str, &str, Option<&[u8]>) = match &row.content {
            GenerationContent::LegacyJson(j) => ("json", j, None),
            GenerationContent::Bundle(b) => (FORMAT_BUNDLE, "", Some(b)),
        };
        self.conn.execute(
            "INSERT INTO generations (gateway, generation, format, state_json, bundle, reason, \
             created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                row.gateway,
                row.generation,
                format,
                json,
                bundle,
                row.reason,
                now_ms()
            ],
        )?;
        Ok(())
    }

    fn audit_chain_head(&self) -> Result<(u64, String)> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, audit::GENESIS.to_string())))
    }

    fn insert_audit(&mut self, e: &AuditEntry) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit (seq, unix_ms, actor, action, target, diff, reason, prev_hash, \
                 hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                e.seq as i64,
                e.unix_ms,
                e.actor,
                e.action,
                e.target,
                e.diff,
                e.reason,
                e.prev_hash,
                e.hash
            ])?;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        // On failure the transaction is still open and `drop` rolls it back.
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }
}
