//! The gateway's health as the agent reports it with each status (`StatusReport.health`): its
//! release, the fail-open watchdog as the datapath last recorded it (read through
//! `pinned::status`, the read-only path `wardgate-agent status` and the metrics use), and the
//! enforced devices of the applied policy whose profile fails open: those the datapath only
//! monitors while the watchdog has fired (the maps do not count them, so the policy does).

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use wardgate_policy::{DesiredState, Mode};
use wardgate_proto::{compat, v1::GatewayHealth};

use crate::datapath::pinned;

/// The health `status` shows, with `applied` the policy the map writer last applied.
pub fn of(status: &pinned::Status, applied: Option<&DesiredState>) -> GatewayHealth {
    GatewayHealth {
        agent_version: compat::VERSION.into(),
        watchdog_fired: status.watchdog.stale != 0,
        watchdog_fired_count: status.watchdog.went_stale,
        watchdog_recovered_count: status.watchdog.recovered,
        fail_open_devices: applied.map_or(0, fail_open_enforced),
        heartbeat_age_ms: status.heartbeat_age_ms,
    }
}

/// Enforced devices whose profile fails open (monitored, quarantined and learning ones are not
/// changed by the watchdog).
fn fail_open_enforced(state: &DesiredState) -> u32 {
    let n = state
        .devices
        .iter()
        .filter(|d| d.fail_open && d.mode == Mode::Enforce)
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Where the sync task reads the health it reports: the pins and the last policy the map
/// writer applied, or nothing (`None`: the status goes without health).
#[derive(Clone)]
pub struct HealthSource(Arc<dyn Fn() -> Option<GatewayHealth> + Send + Sync>);

impl HealthSource {
    /// The pinned maps under `pin_root`, the applied policy from `applied`. Unreadable pins
    /// are logged once (until they read again) and the status goes without health.
    pub fn pinned(pin_root: PathBuf, applied: crate::metrics::Applied) -> Self {
        let failing = AtomicBool::new(false);
        HealthSource(Arc::new(move || match pinned::status(&pin_root) {
            Ok(status) => {
                failing.store(false, Ordering::Relaxed);
                Some(of(&status, applied.borrow().as_deref()))
            }
            Err(e) => {
                if !failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "gateway health unread: statuses go without it");
                }
                None
            }
        }))
    }

    /// What `read` returns (tests; `|| None` for a link that reports no health).
    pub fn from_fn(read: impl Fn() -> Option<GatewayHealth> + Send + Sync + 'static) -> Self {
        HealthSource(Arc::new(read))
    }

    pub fn read(&self) -> Option<GatewayHealth> {
        (self.0)()
    }
}

impl std::fmt::Debug for HealthSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HealthSource")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use wardgate_common::WatchdogState;
    use wardgate_policy::desired::{DeviceEntry, MacAddr};

    use super::*;

    fn device(id: u32, mode: Mode, fail_open: bool) -> DeviceEntry {
        DeviceEntry {
            device_id: id,
            name: format!("dev-{id}"),
            addrs: vec![format!("192.0.2.{id}").parse().unwrap()],
            mac: MacAddr([2, 0, 0, 0, 0, id as u8]),
            policy_id: 1,
            mode,
            max_flows: 0,
            fail_open,
            grace_s: wardgate_common::DEFAULT_GRACE_S,
        }
    }

    #[test]
    fn the_health_says_the_watchdog_and_the_enforced_fail_open_devices() {
        let status = pinned::Status {
            slot: 0,
            generation: 4,
            reasons: BTreeMap::new(),
            events_lost: BTreeMap::new(),
            heartbeat_age_ms: Some(9_000),
            watchdog: WatchdogState {
                stale: 1,
                went_stale: 3,
                recovered: 2,
                _pad: 0,
            },
            app_refused: BTreeMap::new(),
        };
        let state = DesiredState {
            gateway: "gw".into(),
            generation: 4,
            epoch: String::new(),
            content_hash: String::new(),
            devices: vec![
                device(1, Mode::Enforce, true),
                device(2, Mode::Enforce, true),
                device(3, Mode::Enforce, false),
                device(4, Mode::Monitor, true),
                device(5, Mode::Quarantine, true),
            ],
            policies: vec![],
            peers: vec![],
            ports: vec![],
            groups: Default::default(),
            dns: Default::default(),
        };
        let h = of(&status, Some(&state));
        assert_eq!(
            h,
            GatewayHealth {
                agent_version: env!("CARGO_PKG_VERSION").into(),
                watchdog_fired: true,
                watchdog_fired_count: 3,
                watchdog_recovered_count: 2,
                fail_open_devices: 2,
                heartbeat_age_ms: Some(9_000),
            }
        );
        // Recovered, and before any policy: nothing fails open.
        let ok = pinned::Status {
            watchdog: WatchdogState {
                stale: 0,
                recovered: 3,
                ..status.watchdog
            },
            ..status
        };
        let h = of(&ok, None);
        assert!(!h.watchdog_fired);
        assert_eq!((h.watchdog_recovered_count, h.fail_open_devices), (3, 0));
    }
}
