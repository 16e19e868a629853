//! Each gateway's health for the console's `/gateways`: connected now, the generation it
//! applied against the latest, its last error, and its certificate's expiry, from what the
//! controller holds. The agent does not report its release (it sends it at registration,
//! where it is checked, not kept), its watchdog or its fail-open state: those stay `None`.

use super::Ctx;
use crate::error::Result;

/// Days of certificate validity under which a gateway is flagged.
pub const CERT_WARN_DAYS: i64 = 30;

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
}

impl GatewayHealth {
    /// Whole days of certificate validity left at `now_ms` (negative once expired).
    pub fn cert_days_left(&self, now_ms: i64) -> Option<i64> {
        self.cert_not_after_ms
            .map(|t| (t - now_ms).div_euclid(24 * 3600 * 1000))
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
        })
        .collect())
}
