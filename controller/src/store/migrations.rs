//! Schema migrations, applied in order inside one transaction each; `schema_version` records
//! the last one applied.

pub const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE gateways (
        name TEXT PRIMARY KEY,
        interfaces TEXT NOT NULL,
        location TEXT NOT NULL DEFAULT '',
        applied_generation INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        last_seen_ms INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE groups (name TEXT PRIMARY KEY, cidrs TEXT NOT NULL);
    CREATE TABLE profiles (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        yaml TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE devices (
        name TEXT PRIMARY KEY,
        id INTEGER NOT NULL UNIQUE,
        mac TEXT NOT NULL,
        addresses TEXT NOT NULL,
        profile TEXT NOT NULL,
        mode TEXT NOT NULL,
        gateway TEXT NOT NULL,
        location TEXT NOT NULL DEFAULT '',
        asset_id TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE generations (
        gateway TEXT NOT NULL,
        generation INTEGER NOT NULL,
        state_json TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (gateway, generation)
    );
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        body TEXT NOT NULL,
        severity INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        acknowledged INTEGER NOT NULL DEFAULT 0,
        acknowledged_by TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        unix_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        diff TEXT NOT NULL,
        reason TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );",
    // 2: the store epoch (a random id made once per store: generation numbers of two stores
    // are not comparable), stable policy and rule ids (allocated once per profile name and per
    // flow key, never reused), and the epoch of what each gateway applied.
    "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE policy_ids (profile TEXT PRIMARY KEY, id INTEGER NOT NULL UNIQUE);
    CREATE TABLE rule_ids (
        profile TEXT NOT NULL,
        flow TEXT NOT NULL,
        id INTEGER NOT NULL UNIQUE,
        PRIMARY KEY (profile, flow)
    );
    ALTER TABLE gateways ADD COLUMN applied_epoch TEXT NOT NULL DEFAULT '';",
    // 3: alerts keyed by (gateway, id): an agent's ids are unique only on its gateway, so two
    // gateways' alerts never collide and one gateway cannot pre-insert another's ids; the
    // device gets a column so list filters run in the query, before the limit; alerts dropped
    // past a gateway's quota are counted per severity.
    "CREATE TABLE alerts_v3 (
        gateway TEXT NOT NULL,
        id TEXT NOT NULL,
        device TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL,
        severity INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        acknowledged INTEGER NOT NULL DEFAULT 0,
        acknowledged_by TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (gateway, id)
    );
    INSERT INTO alerts_v3 (gateway, id, device, body, severity, received_ms, acknowledged, acknowledged_by)
        SELECT gateway, id, COALESCE(json_extract(body, '$.device'), ''), body, severity,
               received_ms, acknowledged, acknowledged_by FROM alerts;
    DROP TABLE alerts;
    ALTER TABLE alerts_v3 RENAME TO alerts;
    CREATE INDEX alerts_recent ON alerts (received_ms DESC, gateway, id);
    CREATE TABLE alert_drops (
        gateway TEXT NOT NULL,
        severity INTEGER NOT NULL,
        dropped INTEGER NOT NULL,
        PRIMARY KEY (gateway, severity)
    );",
    // 4: writes read only what they change: devices indexed by gateway and profile (what a
    // compile reads), by MAC, and their addresses in a table of their own (site-wide
    // uniqueness checked by lookup). The canonical text of MACs and addresses is written by
    // `canonicalize_devices` in the same transaction.
    "CREATE INDEX devices_gateway ON devices (gateway);
    CREATE INDEX devices_profile ON devices (profile);
    CREATE INDEX devices_mac ON devices (mac);
    CREATE TABLE device_addresses (address TEXT PRIMARY KEY, device TEXT NOT NULL);
    CREATE INDEX device_addresses_device ON device_addresses (device);",
    // 5: learning. Flow records folded per device, direction, peer, protocol, service port and
    // UTC day (counts as columns; hourly volume, flow starts, app identities and TCP outcomes,
    // each bounded, as JSON in `detail`), pruned past the retention by day; and each device's
    // baseline lifecycle (learning window, frozen, approved).
    "CREATE TABLE flow_days (
        device TEXT NOT NULL,
        direction INTEGER NOT NULL,
        peer TEXT NOT NULL,
        proto INTEGER NOT NULL,
        port INTEGER NOT NULL,
        day INTEGER NOT NULL,
        gateway TEXT NOT NULL,
        flows INTEGER NOT NULL,
        packets_out INTEGER NOT NULL,
        packets_in INTEGER NOT NULL,
        bytes_out INTEGER NOT NULL,
        bytes_in INTEGER NOT NULL,
        first_seen_ns INTEGER NOT NULL,
        last_seen_ns INTEGER NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (device, direction, peer, proto, port, day)
    ) WITHOUT ROWID;
    CREATE INDEX flow_days_by_day ON flow_days (day);
    CREATE TABLE baselines (
        device TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        start_ns INTEGER NOT NULL,
        window_days INTEGER NOT NULL,
        frozen_ns INTEGER,
        changed_ms INTEGER NOT NULL
    );",
    // 6: alerts get a sequence number that only grows (AUTOINCREMENT: a row deleted past the
    // quota never has its number reused), so each SOC sink can keep a cursor, the last number
    // it delivered, in `sink_cursors`. Bodies written from now on are the analysis crate's
    // `Finding` as JSON; older bodies (the alert fields) still read. Suppressions (device,
    // detector, peer or '' for any) mark matching alerts as they are stored: kept, not sent.
    "CREATE TABLE alerts_v4 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        gateway TEXT NOT NULL,
        id TEXT NOT NULL,
        device TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL,
        severity INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        acknowledged INTEGER NOT NULL DEFAULT 0,
        acknowledged_by TEXT NOT NULL DEFAULT '',
        suppressed INTEGER NOT NULL DEFAULT 0,
        UNIQUE (gateway, id)
    );
    INSERT INTO alerts_v4 (gateway, id, device, body, severity, received_ms, acknowledged, acknowledged_by)
        SELECT gateway, id, device, body, severity, received_ms, acknowledged, acknowledged_by
        FROM alerts ORDER BY received_ms, rowid;
    DROP TABLE alerts;
    ALTER TABLE alerts_v4 RENAME TO alerts;
    CREATE INDEX alerts_id ON alerts (id);
    CREATE TABLE suppressions (
        device TEXT NOT NULL,
        detector TEXT NOT NULL,
        peer TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (device, detector, peer)
    );
    CREATE TABLE sink_cursors (
        sink TEXT PRIMARY KEY,
        delivered INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );",
    // 7: aggregated alerts are updated. An agent re-sends a finding under its id as its count
    // grows; a copy with a higher (count, last seen) becomes the alert's one `latest` row,
    // under a new `seq`, so every cursor reader delivers it once. The row first stored stays
    // at its number (`first_seq`) as the alert's creation, with its first body, so a reader
    // that was behind it still delivers a create before the update; a later update replaces
    // the previous update row. At most two rows per (gateway, id).
    "CREATE TABLE alerts_v5 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        gateway TEXT NOT NULL,
        id TEXT NOT NULL,
        device TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL,
        severity INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        acknowledged INTEGER NOT NULL DEFAULT 0,
        acknowledged_by TEXT NOT NULL DEFAULT '',
        suppressed INTEGER NOT NULL DEFAULT 0,
        count INTEGER NOT NULL DEFAULT 1,
        last_seen_ns INTEGER NOT NULL DEFAULT 0,
        first_seq INTEGER NOT NULL DEFAULT 0,
        latest INTEGER NOT NULL DEFAULT 1,
        UNIQUE (gateway, id, latest)
    );
    INSERT INTO alerts_v5 (seq, gateway, id, device, body, severity, received_ms, acknowledged,
        acknowledged_by, suppressed, count, last_seen_ns, first_seq)
        SELECT seq, gateway, id, device, body, severity, received_ms, acknowledged,
        acknowledged_by, suppressed, MAX(1, COALESCE(json_extract(body, '$.count'), 1)),
        COALESCE(json_extract(body, '$.last_seen_ns'), 0), seq
        FROM alerts ORDER BY seq;
    INSERT INTO sqlite_sequence (name, seq) SELECT 'alerts_v5', 0
        WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'alerts_v5');
    UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence
        WHERE name = 'alerts'), 0)) WHERE name = 'alerts_v5';
    DROP TABLE alerts;
    ALTER TABLE alerts_v5 RENAME TO alerts;
    CREATE INDEX alerts_id ON alerts (id);",
    // 8: flow rows are capped per device and UTC day (a gateway, or a device behind it, cannot
    // grow the store without bound by varying peers and ports): records that would make a row
    // past the cap are counted here, per device and day, and pruned with the rows. The index
    // makes a device's day countable without scanning its other days.
    "CREATE TABLE flow_overflow (
        device TEXT NOT NULL,
        day INTEGER NOT NULL,
        flows INTEGER NOT NULL,
        PRIMARY KEY (device, day)
    ) WITHOUT ROWID;
    CREATE INDEX flow_days_device_day ON flow_days (device, day);",
    // 9: generations are stored as their canonical policy-bundle bytes (`bundle`), which is
    // what their content hash covers; `format` marks each row's form. Rows stored before keep
    // their pretty JSON (`format = 'json'`, `bundle` NULL): their audit entries hashed that text,
    // so rewriting them would break the chain. New rows leave `state_json` empty.
    "ALTER TABLE generations ADD COLUMN format TEXT NOT NULL DEFAULT 'json';
    ALTER TABLE generations ADD COLUMN bundle BLOB;",
    // 10: console sessions (`crate::console::session`): the opaque id is stored only as its
    // SHA-256, with who (name, role, how they logged in), the CSRF token, and the times the
    // idle and absolute timeouts are checked against; a revoked session keeps its row. The mode
    // index serves the inventory's filter.
    "CREATE TABLE console_sessions (
        id_hash TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        role TEXT NOT NULL,
        source TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        acr TEXT NOT NULL DEFAULT '',
        csrf TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    );
    CREATE INDEX console_sessions_user ON console_sessions (user, created_ms);
    CREATE INDEX devices_mode ON devices (mode);",
    // 11: fleet: enrollment tokens (only their SHA-256; used_ms once spent), the certificates
    // the controller issued (serial, gateway, expiry) and revoked gateway names.
    "CREATE TABLE enrollment_tokens (
        token_hash TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        expires_ms INTEGER NOT NULL,
        used_ms INTEGER
    );
    CREATE TABLE gateway_certs (
        serial TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        not_after_ms INTEGER NOT NULL
    );
    CREATE INDEX gateway_certs_gateway ON gateway_certs (gateway);
    CREATE TABLE revoked_gateways (name TEXT PRIMARY KEY, revoked_ms INTEGER NOT NULL);",
    // 12: suppressions say who made them, when and why (`wardctl alerts suppressions`); older
    // rows read as made by nobody at time 0 (their audit entries still say).
    "ALTER TABLE suppressions ADD COLUMN made_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE suppressions ADD COLUMN made_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE suppressions ADD COLUMN reason TEXT NOT NULL DEFAULT '';",
    // 13: profile changes awaiting a second engineer's approval (`crate::console::approval`).
    // The CHECK makes an approval by the proposer impossible whatever the code above does.
    "CREATE TABLE pending_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device TEXT NOT NULL,
        profile TEXT NOT NULL,
        yaml TEXT NOT NULL,
        reason TEXT NOT NULL,
        proposer TEXT NOT NULL,
        proposed_ms INTEGER NOT NULL,
        approver TEXT,
        decided_ms INTEGER,
        CHECK (approver IS NULL OR approver <> proposer)
    );
    CREATE INDEX pending_changes_device ON pending_changes (device, id);",
    // 14: the SOC's emergency quarantine: requests an engineer approves (where the SOC may
    // not quarantine at once), and the time each SOC quarantine ends with the mode to go back
    // to (one per device).
    "CREATE TABLE quarantine_requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device TEXT NOT NULL,
        reason TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        requested_ms INTEGER NOT NULL,
        minutes INTEGER NOT NULL,
        approver TEXT,
        decided_ms INTEGER,
        CHECK (approver IS NULL OR approver <> requested_by)
    );
    CREATE TABLE quarantine_timers (
        device TEXT PRIMARY KEY,
        until_ms INTEGER NOT NULL,
        restore_mode TEXT NOT NULL,
        set_by TEXT NOT NULL
    );",
    // 15: where each device field came from (an inventory import's format, file and hash;
    // the console), one row per device and field, the latest source kept (the audit trail
    // keeps every one).
    "CREATE TABLE device_fields (
        device TEXT NOT NULL,
        field TEXT NOT NULL,
        value TEXT NOT NULL,
        source TEXT NOT NULL,
        file TEXT NOT NULL DEFAULT '',
        sha256 TEXT NOT NULL DEFAULT '',
        set_ms INTEGER NOT NULL,
        PRIMARY KEY (device, field)
    );",
    // 16: a pending change can be closed without being applied: withdrawn by its proposer or
    // rejected by another engineer, with who and why (`crate::console::approval`).
    "ALTER TABLE pending_changes ADD COLUMN closed TEXT;
    ALTER TABLE pending_changes ADD COLUMN closed_by TEXT;
    ALTER TABLE pending_changes ADD COLUMN close_reason TEXT NOT NULL DEFAULT '';",
    // 17: the DNS name a device resolved a flow's peer from (issue 21 point 2), and how many
    // of the row's flows had one; older rows have none.
    "ALTER TABLE flow_days ADD COLUMN peer_name TEXT;
    ALTER TABLE flow_days ADD COLUMN named_flows INTEGER NOT NULL DEFAULT 0;",
    // 18: the health a gateway's agent reports with its status (issue 19 point 6): its
    // release, the fail-open watchdog and its transition counts, its enforced fail-open
    // devices, its heartbeat's age; when it was received (NULL: the last status had none) and
    // since when the watchdog has been reported fired (NULL while it is not).
    "ALTER TABLE gateways ADD COLUMN health_received_ms INTEGER;
    ALTER TABLE gateways ADD COLUMN agent_version TEXT NOT NULL DEFAULT '';
    ALTER TABLE gateways ADD COLUMN watchdog_fired INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE gateways ADD COLUMN watchdog_fired_since_ms INTEGER;
    ALTER TABLE gateways ADD COLUMN watchdog_fired_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE gateways ADD COLUMN watchdog_recovered_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE gateways ADD COLUMN fail_open_reported INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE gateways ADD COLUMN heartbeat_age_ms INTEGER;",
];
