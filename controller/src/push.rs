//! Policy push and alert wake-ups: per-gateway watch channels carrying the latest generation as
//! it travels (built once per generation, shared by every watcher of the gateway), and a
//! signal that alerts were stored, for the readers of the alert store (Subscribe streams),
//! which then read the store from their own cursors: the signal carries no alerts, so a slow
//! reader loses none.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;
use wardgate_proto::v1::PolicyBundle;

/// One generation of a gateway, ready to send.
#[derive(Debug)]
pub struct Published {
    pub generation: u32,
    pub content_hash: String,
    pub bundle: PolicyBundle,
}

/// The newest generation announced for a gateway (none since the controller started).
pub type Latest = Option<Arc<Published>>;

pub struct Push {
    gateways: Mutex<HashMap<String, watch::Sender<Latest>>>,
    /// Bumped after every batch of alerts is stored.
    alerts: watch::Sender<u64>,
}

impl Default for Push {
    fn default() -> Self {
        Push {
            gateways: Mutex::new(HashMap::new()),
            alerts: watch::channel(0).0,
        }
    }
}

impl Push {
    fn sender(&self, gateway: &str) -> watch::Sender<Latest> {
        let mut map = self
            .gateways
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(gateway.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }

    /// Announces a generation of `gateway` to its watchers, unless a newer one was announced
    /// already (two writes to one gateway may announce out of order).
    pub fn generation(&self, gateway: &str, p: Arc<Published>) {
        self.sender(gateway).send_if_modified(|cur| {
            if cur.as_ref().is_some_and(|c| c.generation >= p.generation) {
                return false;
            }
            *cur = Some(p);
            true
        });
    }

    pub fn watch(&self, gateway: &str) -> watch::Receiver<Latest> {
        self.sender(gateway).subscribe()
    }

    /// Ends every policy stream of `gateway` (revoked): their tasks see the channel closed.
    /// A later watcher gets a new channel (and is refused before it gets there).
    pub fn disconnect(&self, gateway: &str) {
        self.gateways
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(gateway);
    }

    /// How many policy streams of `gateway` are open now (its agents connected).
    pub fn watchers(&self, gateway: &str) -> usize {
        self.gateways
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(gateway)
            .map_or(0, watch::Sender::receiver_count)
    }

    /// Says that alerts were stored (or updated).
    pub fn alerts_stored(&self) {
        self.alerts.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever alerts were stored.
    pub fn alerts(&self) -> watch::Receiver<u64> {
        self.alerts.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(generation: u32) -> Arc<Published> {
        Arc::new(Published {
            generation,
            content_hash: String::new(),
            bundle: PolicyBundle::default(),
        })
    }

    #[test]
    fn an_older_generation_announced_late_does_not_replace_a_newer_one() {
        let push = Push::default();
        let rx = push.watch("gw");
        push.generation("gw", published(6));
        push.generation("gw", published(5));
        assert_eq!(rx.borrow().as_ref().map(|p| p.generation), Some(6));
    }
}
