//! Flow records on their way to the controller. The live flow table's records (finished flows
//! and long-running ones' snapshots) queue here, bounded: past the cap new records are dropped
//! and counted. A reporter task sends the queue with `sync::report_flows` every
//! `flow_report_every_ms`, sooner when a full batch is waiting, and once more when the agent
//! stops. Records leave the queue only when acknowledged: a retryable refusal (controller or
//! link down) keeps them for the next round; a batch refused for what it holds is logged,
//! dropped and counted (sending it again would be refused again).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::sync::Notify;
use tonic::transport::Channel;
use wardgate_analysis::FlowRecord;
use wardgate_proto::{flows::MAX_FLOWS_PER_BATCH, v1::agent_service_client::AgentServiceClient};

use crate::{config::ControllerConfig, metrics::Live, sync};

/// Records waiting at most by default (a record is about 200 bytes in memory: ~20 MB).
pub const DEFAULT_CAP: usize = 100_000;

/// The queue between the flow reader and the reporter.
pub struct FlowQueue {
    inner: Mutex<VecDeque<FlowRecord>>,
    cap: usize,
    /// A full batch is waiting: the reporter need not wait for its interval.
    batch_ready: Notify,
    metrics: Live,
}

impl FlowQueue {
    /// A queue of at most `cap` records, counting into `metrics`.
    pub fn new(cap: usize, metrics: Live) -> Arc<Self> {
        Arc::new(FlowQueue {
            inner: Mutex::new(VecDeque::new()),
            cap,
            batch_ready: Notify::new(),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<FlowRecord>> {
        // A panic while holding the lock leaves a valid queue: go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records waiting for acknowledgement.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `records`; those past the cap are dropped (the newest: what waits keeps its
    /// place) and counted.
    pub fn push_all(&self, records: &[FlowRecord]) {
        let (room, len) = {
            let mut q = self.lock();
            let room = self.cap.saturating_sub(q.len()).min(records.len());
            q.extend(records[..room].iter().cloned());
            (room, q.len())
        };
        let lost = records.len() - room;
        if lost > 0 {
            self.metrics
                .flow_records_dropped(DROP_QUEUE_FULL, lost as u64);
        }
        if len >= MAX_FLOWS_PER_BATCH {
            self.batch_ready.notify_one();
        }
    }

    /// A copy of the oldest `n` records (the reporter alone takes records off the front).
    fn front(&self, n: usize) -> Vec<FlowRecord> {
        self.lock().iter().take(n).cloned().collect()
    }

    fn take_front(&self, n: usize) {
        let mut q = self.lock();
        let n = n.min(q.len());
        q.drain(..n);
    }
}

/// Metric label of records dropped because the queue was full.
pub const DROP_QUEUE_FULL: &str = "queue_full";
/// Metric label of records dropped because the controller refused their batch.
pub const DROP_REFUSED: &str = "refused";

/// The reporter's connection: made when first needed, dropped after a retryable error so the
/// next round reconnects.
pub struct Reporter {
    cfg: ControllerConfig,
    queue: Arc<FlowQueue>,
    client: Option<AgentServiceClient<Channel>>,
}

impl Reporter {
    pub fn new(cfg: ControllerConfig, queue: Arc<FlowQueue>) -> Self {
        Reporter {
            cfg,
            queue,
            client: None,
        }
    }

    /// Sends every queued record, a batch at a time, until the queue is empty (what was
    /// queued meanwhile included). Stops at the first retryable error, keeping the batch.
    pub async fn send_pending(&mut self) -> anyhow::Result<()> {
        loop {
            let batch = self.queue.front(MAX_FLOWS_PER_BATCH);
            if batch.is_empty() {
                return Ok(());
            }
            let client = match &mut self.client {
                Some(c) => c,
                None => self.client.insert(sync::connect(&self.cfg).await?),
            };
            let result = sync::report_flows(client, &self.cfg.gateway, &batch).await;
            let acked = match &result {
                Ok(done) => done.acknowledged,
                Err(e) => e.reported.acknowledged,
            };
            // Counted before they leave the queue: an empty queue means counted.
            self.queue.metrics.flow_records_sent.inc_by(acked as u64);
            self.queue.take_front(acked);
            match result {
                Ok(done) => {
                    if done.unknown_device > 0 || done.expired > 0 {
                        tracing::debug!(
                            stored = done.stored,
                            unknown_device = done.unknown_device,
                            expired = done.expired,
                            "flow records acknowledged, some not kept by the controller"
                        );
                    }
                }
                Err(e) if e.retryable() => {
                    self.client = None;
                    return Err(e.into());
                }
                Err(e) => {
                    let refused = batch.len() - acked;
                    self.queue
                        .metrics
                        .flow_records_dropped(DROP_REFUSED, refused as u64);
                    self.queue.take_front(refused);
                    tracing::error!(error = %e, dropped = refused, "flow records refused by the controller; dropped");
                }
            }
        }
    }

    /// Sends the queue every `every` (sooner when a full batch waits) until the task is
    /// dropped; failures are logged and retried at the next round.
    pub async fn run(mut self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.queue.batch_ready.notified() => {}
            }
            if let Err(e) = self.send_pending().await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    pending = self.queue.len(),
                    "flow records not delivered; kept for the next round"
                );
            }
        }
    }

    /// At stop: sends what is queued, for at most `limit`. Returns how many records are left
    /// (lost: the queue is in memory only).
    pub async fn drain(&mut self, limit: Duration) -> usize {
        match tokio::time::timeout(limit, self.send_pending()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                error = format!("{e:#}"),
                "flow records not delivered at stop"
            ),
            Err(_) => tracing::warn!(?limit, "flow records not all delivered in time at stop"),
        }
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardgate_analysis::{FlowDirection, flow::DeviceRef};

    fn record(port: u16) -> FlowRecord {
        FlowRecord {
            device: DeviceRef {
                name: "pump".into(),
                id: None,
                mac: None,
            },
            direction: FlowDirection::Opened,
            device_addr: "192.0.2.10".parse().unwrap(),
            device_port: 40_000,
            peer: "198.51.100.30".parse().unwrap(),
            peer_port: port,
            proto: 6,
            port,
            icmp_type: None,
            vlan: None,
            packets_out: 1,
            bytes_out: 1,
            packets_in: 1,
            bytes_in: 1,
            first_seen_ns: 1,
            last_seen_ns: 2,
            tcp: None,
            outcome: wardgate_analysis::FlowOutcome::Established,
            rule: None,
            app: None,
            tcp_flags: None,
        }
    }

    #[test]
    fn past_the_cap_the_newest_records_are_dropped_and_counted() {
        let live = Live::default();
        let q = FlowQueue::new(3, live.clone());
        q.push_all(&[record(1), record(2)]);
        q.push_all(&[record(3), record(4), record(5)]);
        assert_eq!(q.len(), 3);
        let ports: Vec<u16> = q.front(10).iter().map(|r| r.port).collect();
        assert_eq!(ports, [1, 2, 3], "the waiting records keep their place");
        assert_eq!(live.flow_records_dropped_of(DROP_QUEUE_FULL), 2);
        q.take_front(2);
        assert_eq!(q.front(10)[0].port, 3);
        q.take_front(5);
        assert!(q.is_empty());
    }
}
