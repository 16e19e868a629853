//! The site's rows in PostgreSQL: devices, gateways, profiles, groups, stable ids,
//! generations and the audit trail, read by the store and by a write's transaction.

use std::net::IpAddr;

use super::Db;
use tokio_postgres::{Row, types::ToSql};

use super::{Sql, u32_of};
use crate::{
    audit::{self, AuditEntry},
    error::Result,
    store::{
        DeviceRow, GatewayRow, GenerationContent, GenerationRow, ProfileRow, Snapshot, StoreError,
        sqlite::list,
    },
};

pub(super) const DEVICE_COLS: &str =
    "name, id, mac, addresses, profile, mode, gateway, location, asset_id";

/// A device row (columns [`DEVICE_COLS`] from `at`): a column that does not parse is a
/// corrupt row, named.
pub(super) fn device_at(r: &Row, at: usize) -> Result<DeviceRow> {
    let name: String = r.try_get(at)?;
    let bad = |p: String| StoreError::corrupt("devices", &name, p);
    let mac: String = r.try_get(at + 2)?;
    let mac = mac.parse().map_err(|e: String| bad(format!("mac: {e}")))?;
    let addresses: String = r.try_get(at + 3)?;
    let addresses = list("devices", &name, &addresses)?
        .iter()
        .map(|a| {
            a.trim()
                .parse::<IpAddr>()
                .map_err(|_| bad(format!("addresses: `{a}` is not an IP address")))
        })
        .collect::<std::result::Result<_, _>>()?;
    let mode: String = r.try_get(at + 5)?;
    let mode = mode
        .parse()
        .map_err(|e: wardgate_policy::UnknownMode| bad(format!("mode: {e}")))?;
    Ok(DeviceRow {
        id: u32_of("devices", &name, r.try_get(at + 1)?)?,
        mac,
        addresses,
        mode,
        profile: r.try_get(at + 4)?,
        gateway: r.try_get(at + 6)?,
        location: r.try_get(at + 7)?,
        asset_id: r.try_get(at + 8)?,
        name,
    })
}

pub(super) fn devices_where(
    c: &Db,
    filter: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Vec<DeviceRow>> {
    c.rows(
        &format!("SELECT {DEVICE_COLS} FROM devices {filter} ORDER BY id"),
        p,
    )?
    .iter()
    .map(|r| device_at(r, 0))
    .collect()
}

pub(super) fn device(c: &Db, name: &str) -> Result<Option<DeviceRow>> {
    Ok(devices_where(c, "WHERE name = $1", &[&name])?.pop())
}

/// Sets `set` (columns from `$2`) on device `$1`: the row as it is now (None: no such device).
pub(super) fn update_device(
    c: &Db,
    set: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Option<DeviceRow>> {
    c.opt(
        &format!("UPDATE devices SET {set} WHERE name = $1 RETURNING {DEVICE_COLS}"),
        p,
    )?
    .map(|r| device_at(&r, 0))
    .transpose()
}

pub(super) fn gateways_where(
    c: &Db,
    filter: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Vec<GatewayRow>> {
    c.rows(
        &format!(
            "SELECT name, interfaces, location, applied_generation, last_error, applied_epoch \
             FROM gateways {filter} ORDER BY name"
        ),
        p,
    )?
    .iter()
    .map(|r| {
        let name: String = r.try_get(0)?;
        let interfaces: String = r.try_get(1)?;
        Ok(GatewayRow {
            interfaces: list("gateways", &name, &interfaces)?,
            location: r.try_get(2)?,
            applied_generation: u32_of("gateways", &name, r.try_get(3)?)?,
            last_error: r.try_get(4)?,
            applied_epoch: r.try_get(5)?,
            name,
        })
    })
    .collect()
}

fn profile_row(r: &Row) -> Result<ProfileRow> {
    let name: String = r.try_get(0)?;
    Ok(ProfileRow {
        version: u32_of("profiles", &name, r.try_get(1)?)?,
        yaml: r.try_get(2)?,
        name,
    })
}

/// The latest version of profile `name`.
pub(super) fn profile(c: &Db, name: &str) -> Result<Option<ProfileRow>> {
    c.opt(
        "SELECT name, version, yaml FROM profiles WHERE name = $1 ORDER BY version DESC LIMIT 1",
        &[&name],
    )?
    .as_ref()
    .map(profile_row)
    .transpose()
}

/// The site without its gateways and devices (a write reads those it needs by name).
pub(super) fn base(c: &Db) -> Result<Snapshot> {
    let statements = [
        "SELECT DISTINCT ON (name) name, version, yaml FROM profiles ORDER BY name, version DESC",
        "SELECT name, cidrs FROM groups ORDER BY name",
        "SELECT profile, id FROM policy_ids",
        "SELECT profile, flow, id FROM rule_ids",
    ]
    .map(|sql| c.statement(sql));
    let [profiles, groups, policy_ids, rule_ids] = statements;
    let (profiles, groups, policy_ids, rule_ids) = (profiles?, groups?, policy_ids?, rule_ids?);
    // Pipelined: the four are sent together, so a write waits one round trip for them.
    let (profiles, groups, policy_ids, rule_ids) = super::wait(async {
        tokio::try_join!(
            c.query(&profiles, &[]),
            c.query(&groups, &[]),
            c.query(&policy_ids, &[]),
            c.query(&rule_ids, &[]),
        )
    })?;
    let mut s = Snapshot {
        profiles: profiles.iter().map(profile_row).collect::<Result<_>>()?,
        ..Snapshot::default()
    };
    for r in groups {
        let name: String = r.try_get(0)?;
        let cidrs: String = r.try_get(1)?;
        let cidrs = list("groups", &name, &cidrs)?;
        s.groups.insert(name, cidrs);
    }
    for r in policy_ids {
        let profile: String = r.try_get(0)?;
        let id = u32_of("policy_ids", &profile, r.try_get(1)?)?;
        s.policy_ids.insert(profile, id);
    }
    for r in rule_ids {
        let profile: String = r.try_get(0)?;
        let id = u32_of("rule_ids", &profile, r.try_get(2)?)?;
        s.rule_ids.insert((profile, r.try_get(1)?), id);
    }
    Ok(s)
}

pub(super) fn snapshot(c: &Db) -> Result<Snapshot> {
    let mut s = base(c)?;
    s.gateways = gateways_where(c, "", &[])?;
    s.devices = devices_where(c, "", &[])?;
    Ok(s)
}

pub(super) fn epoch(c: &Db) -> Result<String> {
    Ok(
        c.one("SELECT value FROM store_meta WHERE key = 'epoch'", &[])?
            .try_get(0)?,
    )
}

pub(super) fn generations_where(
    c: &Db,
    filter: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Vec<GenerationRow>> {
    c.rows(
        &format!("SELECT gateway, generation, bundle, reason, format FROM generations {filter}"),
        p,
    )?
    .iter()
    .map(|r| {
        let gateway: String = r.try_get(0)?;
        let generation = u32_of("generations", &gateway, r.try_get(1)?)?;
        let bytes: Vec<u8> = r.try_get(2)?;
        let format: &str = r.try_get(4)?;
        let content = match format {
            "bundle-v1" => GenerationContent::Bundle(bytes),
            "json" => GenerationContent::LegacyJson(String::from_utf8(bytes).map_err(|_| {
                StoreError::corrupt("generations", &gateway, "legacy JSON that is not UTF-8")
            })?),
            other => {
                return Err(StoreError::corrupt(
                    "generations",
                    &gateway,
                    format!("unknown format `{other}`"),
                )
                .into());
            }
        };
        Ok(GenerationRow {
            generation,
            content,
            reason: r.try_get(3)?,
            gateway,
        })
    })
    .collect()
}

pub(super) fn latest(c: &Db, gateway: &str) -> Result<Option<GenerationRow>> {
    Ok(generations_where(
        c,
        "WHERE gateway = $1 ORDER BY generation DESC LIMIT 1",
        &[&gateway],
    )?
    .pop())
}

pub(super) fn chain_head(c: &Db) -> Result<(u64, String)> {
    Ok(
        match c.opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])? {
            Some(r) => (super::unsigned(r.try_get(0)?), r.try_get(1)?),
            None => (0, audit::GENESIS.to_string()),
        },
    )
}

pub(super) fn audit_rows(c: &Db) -> Result<Vec<AuditEntry>> {
    c.rows(
        "SELECT seq, unix_ms, actor, action, target, diff, reason, prev_hash, hash FROM audit \
         ORDER BY seq",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(AuditEntry {
            seq: super::unsigned(r.try_get(0)?),
            unix_ms: r.try_get(1)?,
            actor: r.try_get(2)?,
            action: r.try_get(3)?,
            target: r.try_get(4)?,
            diff: r.try_get(5)?,
            reason: r.try_get(6)?,
            prev_hash: r.try_get(7)?,
            hash: r.try_get(8)?,
        })
    })
    .collect()
}

/// The audit rows' insert: every entry in one statement, as columns ([`AuditColumns`]).
pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit (seq, unix_ms, actor, action, target, diff, reason, prev_hash, hash) \
     SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
     $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[])";

/// Audit entries as the columns of [`INSERT_AUDIT`].
pub(super) struct AuditColumns<'a> {
    seq: Vec<i64>,
    unix_ms: Vec<i64>,
    text: [Vec<&'a str>; 7],
}

impl<'a> AuditColumns<'a> {
    pub(super) fn of(entries: &'a [AuditEntry]) -> Self {
        let column = |f: fn(&AuditEntry) -> &str| -> Vec<&str> { entries.iter().map(f).collect() };
        AuditColumns {
            seq: entries.iter().map(|e| super::big(e.seq)).collect(),
            unix_ms: entries.iter().map(|e| e.unix_ms).collect(),
            text: [
                column(|e| &e.actor),
                column(|e| &e.action),
                column(|e| &e.target),
                column(|e| &e.diff),
                column(|e| &e.reason),
                column(|e| &e.prev_hash),
                column(|e| &e.hash),
            ],
        }
    }

    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut p: Vec<&(dyn ToSql + Sync)> = vec![&self.seq, &self.unix_ms];
        p.extend(self.text.iter().map(|c| c as &(dyn ToSql + Sync)));
        p
    }
}
