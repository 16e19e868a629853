//! `Store` for [`PgStore`]: reads on a pooled connection, writes in a transaction holding the
//! write lock (see the module doc of `postgres`).

use std::collections::BTreeMap;

use wardgate_analysis::{FlowRecord, aggregate::FlowAggregate, baseline::lifecycle::Lifecycle};

use super::{
    PgStore, Sql, alerts, console, fleet, learning, pending, provenance, quarantine, site, u32_of,
    unsigned,
};
use crate::{
    audit::{AuditEntry, now_ms},
    error::Result,
    store::{
        AgentHealth, AlertPage, AlertPageQuery, AlertQuery, AlertRow, ConsoleAlert, DeviceRow,
        FieldRow, FlowLimits, FlowsStored, GatewayGenerations, GatewayRow, GenerationRow,
        HealthRow, InventoryPage, InventoryQuery, NewAlert, ObservedFlow, PendingChangeRow,
        ProfileRow, QuarantineRequestRow, QuarantineTimerRow, SessionRow, Snapshot, Store, StoreTx,
        StoredAlert, SuppressionRow, oldest_day, sqlite::not_found,
    },
};

impl Store for PgStore {
    fn begin(&self) -> Result<Box<dyn StoreTx + '_>> {
        Ok(Box::new(self.begin_tx()?))
    }

    fn read_site(&self) -> Result<Box<dyn crate::store::SiteReader + '_>> {
        // A reader's connection, without the write lock: an availability assessment reads
        // beside the writes (500 of them at once waited for the lock one by one).
        Ok(Box::new(self.on_reader(super::tx::PgTx::read_only)?))
    }

    fn snapshot(&self) -> Result<Snapshot> {
        self.on(site::snapshot)
    }

    fn device(&self, name: &str) -> Result<Option<DeviceRow>> {
        self.on(|c| site::device(c, name))
    }

    fn groups(&self) -> Result<BTreeMap<String, Vec<String>>> {
        Ok(self.on(site::base)?.groups)
    }

    fn gateway(&self, name: &str) -> Result<Option<GatewayRow>> {
        Ok(self
            .on(|c| site::gateways_where(c, "WHERE name = $1", &[&name]))?
            .pop())
    }

    fn profile(&self, name: &str) -> Result<Option<ProfileRow>> {
        self.on(|c| site::profile(c, name))
    }

    fn epoch(&self) -> Result<String> {
        self.on(site::epoch)
    }

    fn generations_after(&self, gateway: &str, after: u32) -> Result<Vec<GenerationRow>> {
        self.on(|c| {
            site::generations_where(
                c,
                "WHERE gateway = $1 AND generation > $2 ORDER BY generation",
                &[&gateway, &i64::from(after)],
            )
        })
    }

    fn latest(&self, gateway: &str) -> Result<Option<GenerationRow>> {
        self.on(|c| site::latest(c, gateway))
    }

    fn latest_generation(&self, gateway: &str) -> Result<u32> {
        let n: i64 = self
            .conn()?
            .one(
                "SELECT COALESCE(MAX(generation), 0) FROM generations WHERE gateway = $1",
                &[&gateway],
            )?
            .try_get(0)?;
        u32_of("generations", gateway, n)
    }

    fn generation(&self, gateway: &str, generation: u32) -> Result<Option<GenerationRow>> {
        Ok(self
            .on(|c| {
                site::generations_where(
                    c,
                    "WHERE gateway = $1 AND generation = $2",
                    &[&gateway, &i64::from(generation)],
                )
            })?
            .pop())
    }

    fn gateway_generations(&self) -> Result<Vec<GatewayGenerations>> {
        self.on(|c| {
            c.rows(
                "SELECT g.name, COALESCE(MAX(n.generation), 0), g.applied_generation \
                 FROM gateways g LEFT JOIN generations n ON n.gateway = g.name \
                 GROUP BY g.name ORDER BY g.name",
                &[],
            )
        })?
        .iter()
        .map(|r| {
            let gateway: String = r.try_get(0)?;
            Ok(GatewayGenerations {
                latest: u32_of("generations", &gateway, r.try_get(1)?)?,
                applied: u32_of("gateways", &gateway, r.try_get(2)?)?,
                gateway,
            })
        })
        .collect()
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
        // One statement: the firing's start is kept while reports say fired, and cleared by
        // one that does not.
        let n = self.on(|c| c.exec(
            "UPDATE gateways SET applied_generation = $2, last_error = $3, last_seen_ms = $4, \
             applied_epoch = $5, health_received_ms = $6, agent_version = $7, \
             watchdog_fired = $8, \
             watchdog_fired_since_ms = CASE WHEN $8 THEN COALESCE(watchdog_fired_since_ms, $4) END, \
             watchdog_fired_count = $9, watchdog_recovered_count = $10, \
             fail_open_reported = $11, heartbeat_age_ms = $12 WHERE name = $1",
            &[
                &gateway,
                &i64::from(applied),
                &error,
                &now,
                &epoch,
                &health.map(|_| now),
                &h.agent_version,
                &h.watchdog_fired,
                &i64::from(h.watchdog_fired_count),
                &i64::from(h.watchdog_recovered_count),
                &i64::from(h.fail_open_devices),
                &h.heartbeat_age_ms.map(super::big),
            ],
        ))?;
        if n == 0 {
            return Err(not_found("gateway", gateway));
        }
        Ok(())
    }

    fn gateway_health(&self) -> Result<BTreeMap<String, HealthRow>> {
        self.on(|c| {
            c.rows(
                "SELECT name, health_received_ms, agent_version, watchdog_fired, \
                 watchdog_fired_since_ms, watchdog_fired_count, watchdog_recovered_count, \
                 fail_open_reported, heartbeat_age_ms FROM gateways \
                 WHERE health_received_ms IS NOT NULL",
                &[],
            )
        })?
        .iter()
        .map(|r| {
            let name: String = r.try_get(0)?;
            let count = |i: usize| -> Result<u32> { u32_of("gateways", &name, r.try_get(i)?) };
            let row = HealthRow {
                received_ms: r.try_get(1)?,
                health: AgentHealth {
                    agent_version: r.try_get(2)?,
                    watchdog_fired: r.try_get(3)?,
                    watchdog_fired_count: count(5)?,
                    watchdog_recovered_count: count(6)?,
                    fail_open_devices: count(7)?,
                    heartbeat_age_ms: r.try_get::<_, Option<i64>>(8)?.map(unsigned),
                },
                watchdog_fired_since_ms: r.try_get(4)?,
            };
            Ok((name, row))
        })
        .collect()
    }

    fn insert_alerts(&self, gateway: &str, new: &[NewAlert]) -> Result<Vec<String>> {
        self.write(|c| alerts::insert(c, gateway, new, self.alert_quota))
    }

    fn alerts_since(&self, q: &AlertQuery, after: i64) -> Result<Vec<StoredAlert>> {
        self.on(|c| alerts::since(c, q, after))
    }

    fn alerts_pending(&self, after: i64) -> Result<u64> {
        self.on(|c| alerts::pending(c, after))
    }

    fn sink_cursor(&self, sink: &str) -> Result<i64> {
        self.on(|c| alerts::cursor(c, sink))
    }

    fn advance_sink_cursor(&self, sink: &str, seq: i64) -> Result<()> {
        self.on(|c| alerts::advance(c, sink, seq))
    }

    fn hold_sink_lease(&self, sink: &str, ttl: std::time::Duration) -> Result<bool> {
        self.on(|c| super::lease::hold(c, sink, &self.holder, ttl))
    }

    fn advance_held_sink_cursor(&self, sink: &str, seq: i64) -> Result<bool> {
        self.on(|c| super::lease::advance(c, sink, &self.holder, seq))
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<crate::store::StoreEvent>> {
        Some(self.events.subscribe())
    }

    fn alert_drops(&self, gateway: &str) -> Result<[u64; 4]> {
        self.on(|c| alerts::drops(c, gateway))
    }

    fn alerts(&self, q: &AlertQuery) -> Result<Vec<AlertRow>> {
        self.on(|c| alerts::list(c, q))
    }

    fn suppressions(&self) -> Result<Vec<SuppressionRow>> {
        self.on(alerts::suppressions)
    }

    fn quarantine_request(&self, id: i64) -> Result<Option<QuarantineRequestRow>> {
        self.on(|c| quarantine::get(c, id))
    }

    fn pending_quarantines(&self) -> Result<Vec<QuarantineRequestRow>> {
        self.on(quarantine::pending)
    }

    fn due_quarantine_timers(&self, now_ms: i64) -> Result<Vec<QuarantineTimerRow>> {
        self.on(|c| quarantine::due(c, now_ms))
    }

    fn audit(&self) -> Result<Vec<AuditEntry>> {
        self.on(site::audit_rows)
    }

    fn audit_chain_head(&self) -> Result<(u64, String)> {
        self.on(site::chain_head)
    }

    fn insert_flows(
        &self,
        gateway: &str,
        records: &[FlowRecord],
        now_ns: u64,
        limits: FlowLimits,
    ) -> Result<FlowsStored> {
        self.write(|c| learning::insert_flows(c, gateway, records, now_ns, limits))
    }

    fn flow_overflow(&self, device: &str) -> Result<Vec<(u32, u64)>> {
        self.on(|c| learning::overflow(c, device))
    }

    fn prune_flows(&self, now_ns: u64, retention_days: u32) -> Result<usize> {
        self.write(|c| learning::prune(c, oldest_day(now_ns, retention_days)))
    }

    fn flow_aggregates(
        &self,
        device: &str,
        from_ns: u64,
        to_ns: u64,
    ) -> Result<Vec<FlowAggregate>> {
        self.on(|c| learning::aggregates(c, device, from_ns, to_ns))
    }

    fn baseline_lifecycle(&self, device: &str) -> Result<Option<(Lifecycle, i64)>> {
        self.on(|c| learning::lifecycle(c, device))
    }

    fn inventory(&self, q: &InventoryQuery) -> Result<InventoryPage> {
        self.on(|c| console::inventory(c, q))
    }

    fn insert_session(&self, s: &SessionRow) -> Result<()> {
        self.on(|c| console::insert_session(c, s))
    }

    fn session(&self, id_hash: &str) -> Result<Option<SessionRow>> {
        self.on(|c| console::session(c, id_hash))
    }

    fn touch_session(&self, id_hash: &str, now_ms: i64) -> Result<()> {
        self.on(|c| console::touch_session(c, id_hash, now_ms))
    }

    fn revoke_session(&self, id_hash: &str, now_ms: i64) -> Result<bool> {
        self.on(|c| console::revoke_session(c, id_hash, now_ms))
    }

    fn sessions_of(&self, user: &str) -> Result<Vec<SessionRow>> {
        self.on(|c| console::sessions_of(c, user))
    }

    fn prune_sessions(&self, before_ms: i64) -> Result<usize> {
        self.on(|c| console::prune_sessions(c, before_ms))
    }

    fn gateway_revoked(&self, gateway: &str) -> Result<bool> {
        self.on(|c| fleet::revoked(c, gateway))
    }

    fn revoked_serials(&self) -> Result<Vec<String>> {
        self.on(fleet::revoked_serials)
    }

    fn pending_change(&self, id: i64) -> Result<Option<PendingChangeRow>> {
        self.on(|c| pending::get(c, id))
    }

    fn pending_changes(&self, device: &str, limit: u32) -> Result<Vec<PendingChangeRow>> {
        self.on(|c| pending::of_device(c, device, limit))
    }

    fn alert_page(&self, q: &AlertPageQuery) -> Result<AlertPage> {
        self.on(|c| alerts::page(c, q))
    }

    fn console_alert(&self, first_seq: i64) -> Result<Option<ConsoleAlert>> {
        self.on(|c| alerts::by_first_seq(c, first_seq))
    }

    fn device_fields(&self, device: Option<&str>) -> Result<Vec<FieldRow>> {
        self.on(|c| provenance::fields(c, device))
    }

    fn observed_flows(&self, from_day: u32) -> Result<Vec<ObservedFlow>> {
        self.on(|c| console::observed_flows(c, from_day))
    }

    fn cert_expiry(&self) -> Result<BTreeMap<String, i64>> {
        self.on(fleet::cert_expiry)
    }

    fn latest_changes(&self, pending_only: bool, limit: u32) -> Result<Vec<PendingChangeRow>> {
        self.on(|c| pending::latest(c, pending_only, limit))
    }
}
