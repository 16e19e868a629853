//! The PostgreSQL schema: the SQLite store's tables at its latest migration, translated
//! (INTEGER -> BIGINT, flags -> BOOLEAN, BLOB -> BYTEA, AUTOINCREMENT -> identity or a
//! sequence), as a migration list of its own; `schema_version` records the last one applied.
//! The controller writes generations as canonical bundle bytes only; `format` (migration 2)
//! marks the legacy JSON generations a store moved from SQLite brings along (`bundle` then
//! holds that JSON text's bytes, as stored: the audit hashes them so).
//!
//! Every text column compares bytewise (`COLLATE "C"`, added by [`migrate`]): listings come in
//! the order SQLite gives them, whatever the server's locale.

use super::{SCHEMA_LOCK, Sql};
use crate::error::Result;

pub const MIGRATIONS: &[&str] = &[
    // 1: the SQLite schema at its migration 18.
    "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE gateways (
        name TEXT PRIMARY KEY,
        interfaces TEXT NOT NULL,
        location TEXT NOT NULL DEFAULT '',
        applied_generation BIGINT NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        last_seen_ms BIGINT NOT NULL DEFAULT 0,
        applied_epoch TEXT NOT NULL DEFAULT '',
        health_received_ms BIGINT,
        agent_version TEXT NOT NULL DEFAULT '',
        watchdog_fired BOOLEAN NOT NULL DEFAULT FALSE,
        watchdog_fired_since_ms BIGINT,
        watchdog_fired_count BIGINT NOT NULL DEFAULT 0,
        watchdog_recovered_count BIGINT NOT NULL DEFAULT 0,
        fail_open_reported BIGINT NOT NULL DEFAULT 0,
        heartbeat_age_ms BIGINT
    );
    CREATE TABLE groups (name TEXT PRIMARY KEY, cidrs TEXT NOT NULL);
    CREATE TABLE profiles (
        name TEXT NOT NULL,
        version BIGINT NOT NULL,
        yaml TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE devices (
        name TEXT PRIMARY KEY,
        id BIGINT NOT NULL UNIQUE,
        mac TEXT NOT NULL,
        addresses TEXT NOT NULL,
        profile TEXT NOT NULL,
        mode TEXT NOT NULL,
        gateway TEXT NOT NULL,
        location TEXT NOT NULL DEFAULT '',
        asset_id TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX devices_gateway ON devices (gateway);
    CREATE INDEX devices_profile ON devices (profile);
    CREATE INDEX devices_mac ON devices (mac);
    CREATE INDEX devices_mode ON devices (mode);
    CREATE TABLE device_addresses (address TEXT PRIMARY KEY, device TEXT NOT NULL);
    CREATE INDEX device_addresses_device ON device_addresses (device);
    CREATE TABLE policy_ids (profile TEXT PRIMARY KEY, id BIGINT NOT NULL UNIQUE);
    CREATE TABLE rule_ids (
        profile TEXT NOT NULL,
        flow TEXT NOT NULL,
        id BIGINT NOT NULL UNIQUE,
        PRIMARY KEY (profile, flow)
    );
    CREATE TABLE generations (
        gateway TEXT NOT NULL,
        generation BIGINT NOT NULL,
        bundle BYTEA NOT NULL,
        reason TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        PRIMARY KEY (gateway, generation)
    );
    CREATE TABLE audit (
        seq BIGINT PRIMARY KEY,
        unix_ms BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        diff TEXT NOT NULL,
        reason TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE SEQUENCE alert_seq;
    CREATE TABLE alerts (
        seq BIGINT PRIMARY KEY,
        gateway TEXT NOT NULL,
        id TEXT NOT NULL,
        device TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL,
        severity BIGINT NOT NULL,
        received_ms BIGINT NOT NULL,
        acknowledged BOOLEAN NOT NULL DEFAULT FALSE,
        acknowledged_by TEXT NOT NULL DEFAULT '',
        suppressed BOOLEAN NOT NULL DEFAULT FALSE,
        count BIGINT NOT NULL DEFAULT 1,
        last_seen_ns BIGINT NOT NULL DEFAULT 0,
        first_seq BIGINT NOT NULL,
        latest BOOLEAN NOT NULL DEFAULT TRUE,
        UNIQUE (gateway, id, latest)
    );
    CREATE INDEX alerts_id ON alerts (id);
    CREATE TABLE alert_drops (
        gateway TEXT NOT NULL,
        severity BIGINT NOT NULL,
        dropped BIGINT NOT NULL,
        PRIMARY KEY (gateway, severity)
    );
    CREATE TABLE suppressions (
        device TEXT NOT NULL,
        detector TEXT NOT NULL,
        peer TEXT NOT NULL DEFAULT '',
        made_ms BIGINT NOT NULL DEFAULT 0,
        made_by TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (device, detector, peer)
    );
    CREATE TABLE sink_cursors (
        sink TEXT PRIMARY KEY,
        delivered BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    );
    CREATE TABLE flow_days (
        device TEXT NOT NULL,
        direction BIGINT NOT NULL,
        peer TEXT NOT NULL,
        proto BIGINT NOT NULL,
        port BIGINT NOT NULL,
        day BIGINT NOT NULL,
        gateway TEXT NOT NULL,
        flows BIGINT NOT NULL,
        packets_out BIGINT NOT NULL,
        packets_in BIGINT NOT NULL,
        bytes_out BIGINT NOT NULL,
        bytes_in BIGINT NOT NULL,
        first_seen_ns BIGINT NOT NULL,
        last_seen_ns BIGINT NOT NULL,
        detail TEXT NOT NULL,
        peer_name TEXT,
        named_flows BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (device, direction, peer, proto, port, day)
    );
    CREATE INDEX flow_days_by_day ON flow_days (day);
    CREATE INDEX flow_days_device_day ON flow_days (device, day);
    CREATE TABLE flow_overflow (
        device TEXT NOT NULL,
        day BIGINT NOT NULL,
        flows BIGINT NOT NULL,
        PRIMARY KEY (device, day)
    );
    CREATE TABLE baselines (
        device TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        start_ns BIGINT NOT NULL,
        window_days BIGINT NOT NULL,
        frozen_ns BIGINT,
        changed_ms BIGINT NOT NULL
    );
    CREATE TABLE console_sessions (
        id_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        role TEXT NOT NULL,
        source TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        acr TEXT NOT NULL DEFAULT '',
        csrf TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        revoked_ms BIGINT
    );
    CREATE INDEX console_sessions_user ON console_sessions (user_name, created_ms);
    CREATE TABLE enrollment_tokens (
        token_hash TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        expires_ms BIGINT NOT NULL,
        used_ms BIGINT
    );
    CREATE TABLE gateway_certs (
        serial TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        not_after_ms BIGINT NOT NULL
    );
    CREATE INDEX gateway_certs_gateway ON gateway_certs (gateway);
    CREATE TABLE revoked_gateways (name TEXT PRIMARY KEY, revoked_ms BIGINT NOT NULL);
    CREATE TABLE pending_changes (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        device TEXT NOT NULL,
        profile TEXT NOT NULL,
        yaml TEXT NOT NULL,
        reason TEXT NOT NULL,
        proposer TEXT NOT NULL,
        proposed_ms BIGINT NOT NULL,
        approver TEXT,
        decided_ms BIGINT,
        closed TEXT,
        closed_by TEXT,
        close_reason TEXT NOT NULL DEFAULT '',
        CHECK (approver IS NULL OR approver <> proposer)
    );
    CREATE INDEX pending_changes_device ON pending_changes (device, id);
    CREATE TABLE quarantine_requests (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        device TEXT NOT NULL,
        reason TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        requested_ms BIGINT NOT NULL,
        minutes BIGINT NOT NULL,
        approver TEXT,
        decided_ms BIGINT,
        CHECK (approver IS NULL OR approver <> requested_by)
    );
    CREATE TABLE quarantine_timers (
        device TEXT PRIMARY KEY,
        until_ms BIGINT NOT NULL,
        restore_mode TEXT NOT NULL,
        set_by TEXT NOT NULL
    );
    CREATE TABLE device_fields (
        device TEXT NOT NULL,
        field TEXT NOT NULL,
        value TEXT NOT NULL,
        source TEXT NOT NULL,
        file TEXT NOT NULL DEFAULT '',
        sha256 TEXT NOT NULL DEFAULT '',
        set_ms BIGINT NOT NULL,
        PRIMARY KEY (device, field)
    );
    -- A text field of a JSON body, NULL when the body is not JSON (SQLite's json_extract, for
    -- the console's detector filter, without failing the whole query on one odd body).
    CREATE FUNCTION wardgate_json_text(body text, field text) RETURNS text
        LANGUAGE plpgsql IMMUTABLE AS $$
        BEGIN
            RETURN body::jsonb ->> field;
        EXCEPTION WHEN others THEN
            RETURN NULL;
        END $$;",
    // 2: SOC sink leases (one controller of several delivers a sink's alerts; see `lease`).
    "CREATE TABLE sink_leases (
        sink TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires TIMESTAMPTZ NOT NULL
    );",
    // 3: a generation's format, as SQLite's (`bundle-v1`, or `json` for one moved from a
    // SQLite store written before its migration 9: `bundle` holds the JSON text's bytes).
    "ALTER TABLE generations ADD COLUMN format TEXT NOT NULL DEFAULT 'bundle-v1';",
];

/// A migration's SQL with every text column bytewise (see the module doc).
fn bytewise(sql: &str) -> String {
    sql.replace(" TEXT NOT NULL", " TEXT COLLATE \"C\" NOT NULL")
        .replace(" TEXT PRIMARY KEY", " TEXT COLLATE \"C\" PRIMARY KEY")
        .replace(" TEXT,", " TEXT COLLATE \"C\",")
        .replace(" TEXT\n", " TEXT COLLATE \"C\"\n")
}

/// Applies the migrations not yet applied, each in its own transaction, under an advisory
/// lock (replicas starting together take turns; the second finds nothing to do), then makes
/// the store's epoch if it has none.
pub(super) fn migrate(c: &super::Db) -> Result<()> {
    c.batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        c.batch("BEGIN")?;
        let step = (|| -> Result<bool> {
            c.exec("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            let current: i64 = c
                .opt("SELECT version FROM schema_version", &[])?
                .map_or(Ok(0), |r| r.try_get(0))?;
            if current > i as i64 {
                return Ok(false);
            }
            c.batch(&bytewise(sql))?;
            c.exec("DELETE FROM schema_version", &[])?;
            c.exec(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&(i as i64 + 1)],
            )?;
            Ok(true)
        })();
        match step {
            Ok(applied) => {
                c.batch("COMMIT")?;
                if applied {
                    tracing::info!(version = i + 1, "PostgreSQL store migrated");
                }
            }
            Err(e) => {
                let _ = c.batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    // Two replicas creating the epoch at once: one insert wins, both read it.
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| crate::error::Error::Internal(format!("no randomness for the epoch: {e}")))?;
    let n = c.exec(
        "INSERT INTO store_meta (key, value) VALUES ('epoch', $1) ON CONFLICT (key) DO NOTHING",
        &[&hex::encode(b)],
    )?;
    if n == 1 {
        tracing::info!(epoch = hex::encode(b), "new store epoch");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_text_column_of_the_schema_is_bytewise() {
        for m in super::MIGRATIONS {
            let sql = super::bytewise(m);
            let bare = sql
                .lines()
                .filter(|l| l.contains(" TEXT") && !l.contains("COLLATE") && !l.contains("--"))
                .collect::<Vec<_>>();
            assert!(
                bare.is_empty(),
                "text columns without a collation: {bare:?}"
            );
        }
    }
}
