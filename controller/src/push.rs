//! Policy push and alert fan-out: per-gateway watch channels carrying the latest generation,
//! and a broadcast of new alerts for SOC subscribers.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::{broadcast, watch};
use wardgate_proto::v1::Alert;

pub struct Push {
    gateways: Mutex<HashMap<String, watch::Sender<u32>>>,
    alerts: broadcast::Sender<Alert>,
}

impl Default for Push {
    fn default() -> Self {
        Push {
            gateways: Mutex::new(HashMap::new()),
            alerts: broadcast::channel(4096).0,
        }
    }
}

impl Push {
    fn sender(&self, gateway: &str) -> watch::Sender<u32> {
        let mut map = self
            .gateways
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(gateway.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    /// Announces a new generation of `gateway` to its watchers.
    pub fn generation(&self, gateway: &str, generation: u32) {
        self.sender(gateway).send_replace(generation);
    }

    pub fn watch(&self, gateway: &str) -> watch::Receiver<u32> {
        self.sender(gateway).subscribe()
    }

    pub fn alert(&self, alert: Alert) {
        let _ = self.alerts.send(alert);
    }

    pub fn alerts(&self) -> broadcast::Receiver<Alert> {
        self.alerts.subscribe()
    }
}
