//! The audit checkpoint emitter: watches the store's chain head and signs a checkpoint (see
//! `audit::checkpoint`) at start, once the trail has grown by `every_entries`, and every
//! `every_seconds` while it grows; the newest is published to every sink task, which sends it
//! before its next batch of alerts (a sink that is down sends the newest one when it is back).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    audit::{
        checkpoint::{Checkpoint, Signed},
        now_ms,
        signing::SigningKey,
    },
    config::CheckpointConfig,
    store::Store,
};

/// How often the chain head is looked at.
const POLL: Duration = Duration::from_millis(200);

/// The newest signed checkpoint (`None` before the first).
pub type Latest = watch::Receiver<Option<Arc<Signed>>>;

/// When the next checkpoint is due.
#[derive(Debug)]
struct Schedule {
    every_entries: u64,
    every: Duration,
    /// The last checkpoint's entry and when it was made.
    last: Option<(u64, Instant)>,
}

impl Schedule {
    fn due(&self, seq: u64, now: Instant) -> bool {
        match self.last {
            None => true,
            Some((s, _)) if seq < s => true, // the trail went back: say so at once
            Some((s, at)) => {
                seq >= s + self.every_entries || (seq > s && now.duration_since(at) >= self.every)
            }
        }
    }
}

/// Starts the emitter; it ends when every receiver is gone.
pub fn start(store: Arc<dyn Store>, key: SigningKey, cfg: &CheckpointConfig) -> Latest {
    let (tx, rx) = watch::channel(None);
    let mut schedule = Schedule {
        every_entries: cfg.every_entries,
        every: Duration::from_secs(cfg.every_seconds),
        last: None,
    };
    tracing::info!(key = %key.public().id(), every_entries = cfg.every_entries, every_seconds = cfg.every_seconds, "signed audit checkpoints to the SOC sinks");
    tokio::spawn(async move {
        while !tx.is_closed() {
            match tokio::task::block_in_place(|| store.audit_chain_head()) {
                Ok((seq, hash)) => {
                    let now = Instant::now();
                    if schedule.due(seq, now) {
                        let signed = Checkpoint {
                            seq,
                            hash,
                            unix_ms: now_ms(),
                        }
                        .sign(&key);
                        tracing::debug!(seq, "audit checkpoint signed");
                        tx.send_replace(Some(Arc::new(signed)));
                        schedule.last = Some((seq, now));
                    }
                }
                Err(e) => tracing::error!("reading the audit chain head for a checkpoint: {e}"),
            }
            tokio::time::sleep(POLL).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_at_start_after_n_entries_and_after_the_interval_if_it_grew() {
        let t0 = Instant::now();
        let mut s = Schedule {
            every_entries: 100,
            every: Duration::from_secs(60),
            last: None,
        };
        assert!(s.due(0, t0));
        s.last = Some((5, t0));
        assert!(!s.due(5, t0 + Duration::from_secs(3600)), "nothing new");
        assert!(!s.due(104, t0 + Duration::from_secs(59)));
        assert!(s.due(105, t0 + Duration::from_secs(1)));
        assert!(s.due(6, t0 + Duration::from_secs(60)));
        assert!(s.due(4, t0), "a trail that went back");
    }
}
