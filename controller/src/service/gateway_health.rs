//! Each gateway's health for the console's `/gateways`: connected now, the generation it
//! applied against the latest, its last error, its certificate's expiry, from what the
//! controller holds; and what its agent last reported of itself (release, fail-open watchdog,
//! fail-open devices), `None` for an agent that reports none.

use super::Ctx;
use crate::{error::Result, store::HealthRow};

/// Days of certificate validity under which a gateway is flagged.
pub const CERT_WARN_DAYS: i64 = 30;

/// Minutes after which a reported health is flagged as old: agents refresh it every minute by
/// default (`controller.health_report_every_ms`), so three missed refreshes.
pub const HEALTH_STALE_MINUTES: i64 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayHealth {
    pub name: String,
    pub location: String,
    /// An agent of this gateway follows its policy stream now.
    pub connected: bool,
    pub applied_generation: u32,
    pub latest_generation: u32,
    /// The applied generation is of another store (epoch): not comparable.
    pub other_store: bool,
    pub last_error: String,
    /// Expiry (Unix ms) of the latest certificate this controller issued it; `None` for a
    /// gateway whose certificate was made outside (`wardctl certs`).
    pub cert_not_after_ms: Option<i64>,
    /// Devices of the gateway whose profile says `fail_mode: open`.
    pub fail_open_devices: usize,
    /// What its agent last reported of its health (`None`: its last status had none).
    pub reported: Option<HealthRow>,
}

impl GatewayHealth {
    /// Whole days of certificate validity left at `now_ms` (negative once expired).
    pub fn cert_days_left(&self, now_ms: i64) -> Option<i64> {
        self.cert_not_after_ms
            .map(|t| (t - now_ms).div_euclid(24 * 3600 * 1000))
    }

    /// Whole minutes since the reported health came, once that is `HEALTH_STALE_MINUTES` or
    /// more (`None` while it is fresh, or without one).
    pub fn report_stale_minutes(&self, now_ms: i64) -> Option<i64> {
        let r = self.reported.as_ref()?;
        let minutes = (now_ms - r.received_ms).div_euclid(60 * 1000);
        (minutes >= HEALTH_STALE_MINUTES).then_some(minutes)
    }
}

pub fn gateways(ctx: &Ctx) -> Result<Vec<GatewayHealth>> {
    let snap = ctx.store.snapshot()?;
    let epoch = ctx.store.epoch()?;
    let latest: std::collections::BTreeMap<String, u32> = ctx
        .store
        .gateway_generations()?
        .into_iter()
        .map(|g| (g.gateway, g.latest))
        .collect();
    let certs = ctx.store.cert_expiry()?;
    let mut reported = ctx.store.gateway_health()?;
    let set = crate::compile::profiles(&snap)?;
    let fail_open = |gw: &str| {
        snap.devices
            .iter()
            .filter(|d| d.gateway == gw)
            .filter(|d| {
                set.get(&d.profile)
                    .is_some_and(|p| p.fail_mode == wardgate_policy::profile::FailMode::Open)
            })
            .count()
    };
    Ok(snap
        .gateways
        .iter()
        .map(|g| GatewayHealth {
            name: g.name.clone(),
            location: g.location.clone(),
            connected: ctx.push.watchers(&g.name) > 0,
            applied_generation: g.applied_generation,
            latest_generation: latest.get(&g.name).copied().unwrap_or(0),
            other_store: !g.applied_epoch.is_empty() && g.applied_epoch != epoch,
            last_error: g.last_error.clone(),
            cert_not_after_ms: certs.get(&g.name).copied(),
            fail_open_devices: fail_open(&g.name),
            reported: reported.remove(&g.name),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AgentHealth;

    #[test]
    fn a_report_is_flagged_once_three_minutes_old() {
        let received_ms = 1_000_000_000;
        let mut g = GatewayHealth {
            name: "gw".into(),
            location: String::new(),
            connected: true,
            applied_generation: 1,
            latest_generation: 1,
            other_store: false,
            last_error: String::new(),
            cert_not_after_ms: None,
            fail_open_devices: 0,
            reported: None,
        };
        assert_eq!(g.report_stale_minutes(received_ms), None, "no report");
        g.reported = Some(HealthRow {
            health: AgentHealth::default(),
            received_ms,
            watchdog_fired_since_ms: None,
        });
        let minute = 60_000;
        assert_eq!(
            g.report_stale_minutes(received_ms + 2 * minute + 59_999),
            None
        );
        assert_eq!(g.report_stale_minutes(received_ms + 3 * minute), Some(3));
        assert_eq!(g.report_stale_minutes(received_ms + 61 * minute), Some(61));
    }
}
