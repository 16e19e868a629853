//! The store conformance suite: what any `Store` backend must do, observed through the trait
//! (and the write service, as the gRPC API drives it), the same tests for every backend.
//!
//! Each backend is one `conformance!` line: a name and a function that opens a new, empty store
//! with the given per-gateway alert quota (and keeps alive what it needs).

#[path = "store_conformance/alerts.rs"]
mod alerts;
#[path = "store_conformance/console.rs"]
mod console;
#[path = "store_conformance/fixture.rs"]
mod fixture;
#[path = "store_conformance/flows.rs"]
mod flows;
#[path = "store_conformance/site.rs"]
mod site;

use fixture::Fixture;
use wardgate_controller::store::SqliteStore;

/// One `#[test]` per case of the suite, each opening its stores with `$open`.
macro_rules! cases {
    ($open:ident: $($module:ident::$case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                crate::$module::$case($open);
            }
        )*
    };
}

/// The whole suite against one backend, in a module named for it: `$open` is a
/// `fn(alert_quota: u32) -> Fixture` (a closure that captures nothing).
macro_rules! conformance {
    ($backend:ident, $open:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            const OPEN: crate::fixture::Open = $open;

            cases!(OPEN:
                site::devices_are_upserted_with_ids_that_never_change,
                site::a_refused_write_leaves_nothing_behind,
                site::a_transaction_sees_its_changes_and_rolls_back_when_dropped,
                site::profiles_are_versioned,
                site::groups_and_gateways_round_trip,
                site::generations_are_numbered_per_gateway_without_gaps,
                site::the_epoch_is_made_once_and_never_changes,
                site::the_audit_chain_verifies_after_many_writes,
                site::two_writers_at_once_neither_fork_the_chain_nor_share_a_generation,
                site::writes_waiting_together_commit_as_one_group_each_with_its_own_outcome,
                alerts::status_reports_and_health_round_trip,
                alerts::an_alert_is_stored_once_and_updated_by_a_higher_count,
                alerts::copies_of_an_alert_in_one_batch_leave_its_creation_and_latest_rows,
                alerts::past_its_quota_a_gateway_drops_its_lowest_severity_first_and_counts_them,
                alerts::sequence_numbers_are_never_reused_and_cursors_never_move_back,
                alerts::a_sink_tailing_two_writers_misses_no_alert,
                alerts::alerts_since_filters_in_the_query_and_reads_oldest_first,
                alerts::acknowledgements_name_one_gateways_alert,
                alerts::suppressed_alerts_are_stored_but_not_sent,
                alerts::the_console_alert_page_filters_counts_and_pages,
                flows::flows_are_folded_per_device_peer_port_and_day,
                flows::past_the_row_cap_records_are_counted_per_device_and_day,
                flows::flows_past_the_retention_are_pruned,
                flows::baselines_freeze_approve_and_relearn,
                flows::observed_flows_sum_a_devices_days_with_its_profile,
                flows::the_inventory_pages_filters_and_searches_in_the_query,
                console::console_sessions_are_stored_touched_revoked_and_pruned,
                console::pending_changes_are_submitted_approved_and_closed,
                console::quarantine_requests_and_timers,
                console::enrollment_tokens_certificates_and_revocation,
                console::imports_keep_each_fields_provenance,
            );
        }
    };
}

// SQLite as the controller opens it: a data directory with its head file, read connections
// and checkpointer.
conformance!(sqlite, |quota| {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path())
        .unwrap()
        .with_alert_quota(quota);
    Fixture::new(store, dir)
});

// SQLite on one in-memory connection: no head file, no read connections (as a backend without
// them, every read goes through the writer's connection).
conformance!(sqlite_in_memory, |quota| Fixture::new(
    SqliteStore::in_memory().unwrap().with_alert_quota(quota),
    ()
));

// PostgreSQL: a fresh database of the test process's own server (`wardgate_testkit::postgres`).
conformance!(postgres, |quota| Fixture::new(
    wardgate_controller::store::PgStore::connect(
        &wardgate_testkit::postgres::Server::shared().fresh_database()
    )
    .unwrap()
    .with_alert_quota(quota),
    (),
));
