//! The heartbeat while the map-writer loop is not running yet (start) or any more (stop).
//!
//! The fail-open watchdog (`ebpf/src/watchdog.rs`) monitors enforced fail-open devices once the
//! agent's heartbeat is older than `heartbeat_limit_ms`. The map-writer loop beats, but a
//! restarted agent spends time before its loop runs (verifying and loading the programs,
//! attaching, opening the outbox, loading baselines) and a stopping one after it (finishing
//! flows, flushing the outbox): without a beat meanwhile, a restart would flip fail-open devices
//! to monitored. [`Beat`] writes the pinned heartbeat at once when it starts (at adoption,
//! before anything is loaded) and then every `every` from a thread of its own, until it is
//! dropped or `limit` has passed (a start or stop that hangs still lets the watchdog fire).

use std::{
    path::Path,
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use wardgate_common::map_names;

use crate::datapath::{self, DatapathError, pinned};

/// Writes the pinned heartbeat (`WG_HEART_V1`) from a thread until dropped or past its limit.
pub struct Beat {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// The pinned heartbeat map, if there is one (none on a first boot: nothing enforces yet).
fn pinned_heart(pin_root: &Path) -> Option<Array<MapData, u64>> {
    if !crate::paths::maps_dir(pin_root)
        .join(map_names::HEARTBEAT)
        .exists()
    {
        return None;
    }
    let opened = pinned::open(pin_root, map_names::HEARTBEAT).and_then(|m| {
        Array::try_from(Map::Array(m)).map_err(datapath::map_err(map_names::HEARTBEAT))
    });
    match opened {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "pinned heartbeat not opened");
            None
        }
    }
}

fn write(heart: &mut Array<MapData, u64>) -> Result<(), DatapathError> {
    heart
        .set(0, &datapath::coarse_now_ns(), 0)
        .map_err(datapath::map_err(map_names::HEARTBEAT))
}

impl Beat {
    /// Beats now (if the datapath's maps are pinned under `pin_root`) and then every `every`
    /// for at most `limit`; `phase` names what it covers in the log. `None` when there is no
    /// pinned heartbeat to write.
    pub fn start(
        pin_root: &Path,
        every: Duration,
        limit: Duration,
        phase: &'static str,
    ) -> Option<Self> {
        let mut heart = pinned_heart(pin_root)?;
        if let Err(e) = write(&mut heart) {
            tracing::warn!(error = %format!("{e:#}"), phase, "heartbeat not written");
            return None;
        }
        tracing::debug!(
            phase,
            ?every,
            ?limit,
            "heartbeat kept beating from a thread"
        );
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wg-beat".into())
            .spawn(move || {
                let started = Instant::now();
                let (lock, cvar) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    let (guard, _) = cvar
                        .wait_timeout(stopped, every)
                        .unwrap_or_else(|p| p.into_inner());
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    if started.elapsed() >= limit {
                        tracing::warn!(phase, ?limit, "still not done; heartbeat left to go stale");
                        return;
                    }
                    if let Err(e) = write(&mut heart) {
                        tracing::warn!(error = %format!("{e:#}"), phase, "heartbeat not written");
                    }
                }
            })
            .inspect_err(|e| tracing::warn!(error = %e, phase, "heartbeat thread not started"))
            .ok()?;
        Some(Beat {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Beat {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
