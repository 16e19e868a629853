//! Flow records on their way to the controller. The live flow table's records (finished flows
//! and long-running ones' snapshots) queue here, bounded (`limits.flow_records`): past the cap
//! the oldest records are dropped and counted. A reporter task sends the queue with `sync::report_flows` every
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

/// The records waiting, and the sequence number of the first (records dropped from the front
/// while a batch is in flight must not make its acknowledgement remove others).
#[derive(Default)]
struct Queued {
    records: VecDeque<FlowRecord>,
    head: u64,
}

/// The queue between the flow reader and the reporter.
pub struct FlowQueue {
    inner: Mutex<Queued>,
    cap: usize,
    /// A full batch is waiting: the reporter need not wait for its interval.
    batch_ready: Notify,
    metrics: Live,
}

impl FlowQueue {
    /// A queue of at most `cap` records, counting into `metrics`.
    pub fn new(cap: usize, metrics: Live) -> Arc<Self> {
        Arc::new(FlowQueue {
            inner: Mutex::new(Queued::default()),
            cap,
            batch_ready: Notify::new(),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queued> {
        // A panic while holding the lock leaves a valid queue: go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records waiting for acknowledgement.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// The most records the queue holds.
    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `records`; past the cap the oldest are dropped (those waiting first, then the
    /// oldest of `records`) and counted.
    pub fn push_all(&self, records: &[FlowRecord]) {
        let (lost, len) = {
            let mut q = self.lock();
            // Of `records`, only the newest `cap` can stay.
            let skip = records.len().saturating_sub(self.cap);
            let fresh = &records[skip..];
            let evict = (q.records.len() + fresh.len()).saturating_sub(self.cap);
            q.records.drain(..evict);
            q.head += evict as u64;
            q.records.extend(fresh.iter().cloned());
            (skip + evict, q.records.len())
        };
        if lost > 0 {
            self.metrics
                .flow_records_dropped(DROP_QUEUE_FULL, lost as u64);
        }
        if len >= MAX_FLOWS_PER_BATCH {
            self.batch_ready.notify_one();
        }
    }

    /// A copy of the oldest `n` records and the sequence number of the first (the reporter
    /// alone takes records off the front).
    fn front(&self, n: usize) -> (u64, Vec<FlowRecord>) {
        let q = self.lock();
        (q.head, q.records.iter().take(n).cloned().collect())
    }

    /// Removes the `n` records from sequence number `first` on, those still queued (the cap
    /// may have dropped some meanwhile).
    fn take_front(&self, first: u64, n: usize) {
        let mut q = self.lock();
        let end = first + n as u64;
        let gone = usize::try_from(end.saturating_sub(q.head))
            .unwrap_or(usize::MAX)
            .min(q.records.len());
        q.records.drain(..gone);
        q.head += gone as u64;
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
            let (first, batch) = self.queue.front(MAX_FLOWS_PER_BATCH);
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
            self.queue.take_front(first, acked);
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
                    self.queue.take_front(first + acked as u64, refused);
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
            peer_name: None,
            continuation: false,
        }
    }

    fn ports(q: &FlowQueue) -> Vec<u16> {
        q.front(10).1.iter().map(|r| r.port).collect()
    }

    #[test]
    fn past_the_cap_the_oldest_records_are_dropped_and_counted() {
        let live = Live::default();
        let q = FlowQueue::new(3, live.clone());
        q.push_all(&[record(1), record(2)]);
        q.push_all(&[record(3), record(4), record(5)]);
        assert_eq!(ports(&q), [3, 4, 5], "the newest records stay");
        assert_eq!(live.flow_records_dropped_of(DROP_QUEUE_FULL), 2);
        // More at once than the cap holds: only its newest stay.
        q.push_all(&(6..=10).map(record).collect::<Vec<_>>());
        assert_eq!(ports(&q), [8, 9, 10]);
        assert_eq!(live.flow_records_dropped_of(DROP_QUEUE_FULL), 7);
    }

    #[test]
    fn an_acknowledgement_removes_only_what_was_sent_even_after_drops() {
        let live = Live::default();
        let q = FlowQueue::new(4, live.clone());
        q.push_all(&(1..=4).map(record).collect::<Vec<_>>());
        // A batch of 1..=3 goes out; meanwhile 5 and 6 push 1 and 2 out of the queue.
        let (first, batch) = q.front(3);
        assert_eq!(batch.len(), 3);
        q.push_all(&[record(5), record(6)]);
        assert_eq!(ports(&q), [3, 4, 5, 6]);
        // The ack of 1..=3 removes 3 only: 4, 5 and 6 were never sent.
        q.take_front(first, 3);
        assert_eq!(ports(&q), [4, 5, 6]);
        assert_eq!(live.flow_records_dropped_of(DROP_QUEUE_FULL), 2);
        let (first, _) = q.front(10);
        q.take_front(first, 10);
        assert!(q.is_empty());
    }
}
