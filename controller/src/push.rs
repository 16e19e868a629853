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

use crate::store::{Store, StoreEvent};

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

impl Push {
    /// The generation last announced for `gateway`, if any.
    pub fn announced(&self, gateway: &str) -> Option<u32> {
        self.gateways
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(gateway)
            .and_then(|s| s.borrow().as_ref().map(|p| p.generation))
    }

    /// Gateways with a channel (watched now or announced since the controller started).
    fn known(&self) -> Vec<String> {
        self.gateways
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Announces `gateway`'s stored generation `generation` (None: its latest), read from
    /// `store`, unless as new a one was announced already.
    fn announce_stored(
        &self,
        store: &dyn Store,
        epoch: &str,
        gateway: &str,
        generation: Option<u32>,
    ) -> crate::error::Result<()> {
        if let (Some(g), Some(had)) = (generation, self.announced(gateway))
            && had >= g
        {
            return Ok(());
        }
        let row = match generation {
            Some(g) => store.generation(gateway, g)?,
            None => store.latest(gateway)?,
        };
        let Some(row) = row else { return Ok(()) };
        if self
            .announced(gateway)
            .is_some_and(|had| had >= row.generation)
        {
            return Ok(());
        }
        let bundle = wardgate_proto::bundle::to_bundle(&row.state(epoch)?, &row.reason);
        self.generation(
            gateway,
            Arc::new(Published {
                generation: row.generation,
                content_hash: row.content_hash(),
                bundle,
            }),
        );
        Ok(())
    }

    /// Applies one change another controller committed (see [`follow`]).
    fn apply(&self, store: &dyn Store, epoch: &str, event: StoreEvent) -> crate::error::Result<()> {
        match event {
            StoreEvent::Generation {
                gateway,
                generation,
            } => self.announce_stored(store, epoch, &gateway, Some(generation)),
            StoreEvent::Alerts => {
                self.alerts_stored();
                Ok(())
            }
            StoreEvent::Resync => {
                for gateway in self.known() {
                    self.announce_stored(store, epoch, &gateway, None)?;
                }
                self.alerts_stored();
                Ok(())
            }
        }
    }
}

/// Republishes what other controllers on the same database commit (a store whose
/// [`Store::changes`] is None has no others: returns at once), so agents watching this
/// controller get a generation written through another as soon as that one's own agents:
/// each new generation is read from the store and announced here, and new alerts wake this
/// controller's alert readers. Runs until the store's change stream ends.
pub async fn follow(store: Arc<dyn Store>, push: Arc<Push>) {
    use tokio::sync::broadcast::error::RecvError;
    let Some(mut changes) = store.changes() else {
        return;
    };
    let mut epoch: Option<String> = None;
    loop {
        let event = match changes.recv().await {
            Ok(e) => e,
            // Fell behind: some changes were dropped, so re-read them all.
            Err(RecvError::Lagged(_)) => StoreEvent::Resync,
            Err(RecvError::Closed) => return,
        };
        let (store, push, known) = (store.clone(), push.clone(), epoch.clone());
        let done = tokio::task::spawn_blocking(move || -> crate::error::Result<String> {
            let epoch = match known {
                Some(e) => e,
                None => store.epoch()?,
            };
            push.apply(store.as_ref(), &epoch, event)?;
            Ok(epoch)
        })
        .await;
        match done {
            Ok(Ok(e)) => epoch = Some(e),
            Ok(Err(e)) => tracing::warn!(error = %e, "republishing another controller's change"),
            Err(e) => tracing::error!(error = %e, "the republishing task failed"),
        }
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
