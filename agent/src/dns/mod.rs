//! The DNS learner (issue 21 point 1): reads the answers the egress classifier held
//! (`WG_DNSANS_V1`, see `ebpf/src/dns.rs`), learns the addresses they name for the device's
//! policy's `dns:` names (`table`), writes them into `WG_DNSADDR_V1` and then sends the answer
//! on (`reinject`), so the device's first packet to an address finds it allowed. Runs on a
//! task of its own: one answer costs a map write and a send, never a wait on the policy
//! writer's loop.

pub mod names;
pub mod reinject;
pub mod table;

use std::{sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
};
use wardgate_policy::DesiredState;

use crate::{
    config::DnsConfig,
    datapath::{self, convert, dns::LearnedAddrs},
};

/// How often expired addresses are removed from the map (the datapath already ignores them).
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How often the counters are logged, when they changed.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What the learner did, for the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub answers: u64,
    pub learned: u64,
    pub ignored: u64,
    pub map_full: u64,
    pub sent: u64,
    pub send_failed: u64,
}

pub struct Learner {
    cfg: DnsConfig,
    table: table::Table,
    map: LearnedAddrs,
    out: reinject::Reinjector,
    pub counts: Counts,
}

impl Learner {
    pub fn new(cfg: DnsConfig, map: LearnedAddrs) -> std::io::Result<Self> {
        Ok(Learner {
            cfg,
            table: table::Table::default(),
            map,
            out: reinject::Reinjector::new()?,
            counts: Counts::default(),
        })
    }

    /// One held answer: learn, write, send on (always: the device gets its answer whatever
    /// it taught).
    pub fn handle(&mut self, record: &[u8], state: Option<&DesiredState>) {
        let Some((r, frame)) = convert::dns_answer(record) else {
            self.counts.ignored += 1;
            return;
        };
        self.counts.answers += 1;
        let now = datapath::coarse_now_ns();
        let writes = state.map(|s| {
            self.table
                .answer(&self.cfg, s, r.device_id, r.policy_id, frame, now)
        });
        match writes {
            Some(Ok(w)) => {
                self.counts.map_full += self.map.apply(&w) as u64;
                self.counts.learned += w.len() as u64;
                tracing::debug!(target: "wardgate::dns", device_id = r.device_id, writes = ?w, "answer learned");
            }
            Some(Err(why)) => {
                self.counts.ignored += 1;
                tracing::debug!(target: "wardgate::dns", device_id = r.device_id, ?why, "answer taught nothing");
            }
            None => self.counts.ignored += 1,
        }
        match self.out.send(r.ifindex, frame) {
            Ok(()) => self.counts.sent += 1,
            Err(e) => {
                self.counts.send_failed += 1;
                tracing::warn!(target: "wardgate::dns", ifindex = r.ifindex, error = %e, "held DNS answer not sent on");
            }
        }
    }

    pub fn sweep(&mut self) {
        let gone = self.table.sweep(datapath::coarse_now_ns());
        self.map.apply(&gone);
    }
}

/// Reads held answers until the ring's fd fails.
pub async fn run(
    ring: RingBuf<MapData>,
    mut learner: Learner,
    state: watch::Receiver<Option<Arc<DesiredState>>>,
) -> anyhow::Result<()> {
    // Safety: the ring buffer owns its fd and outlives the registration (both live in `fd`).
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the DNS answer ring buffer: {e}"))?;
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let mut report = tokio::time::interval(REPORT_EVERY);
    let mut last = Counts::default();
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let current = state.borrow().clone();
                let ring = guard.get_inner_mut();
                let mut read = false;
                while let Some(item) = ring.next() {
                    read = true;
                    learner.handle(&item, current.as_deref());
                }
                if !read {
                    guard.clear_ready();
                }
            }
            _ = sweep.tick() => learner.sweep(),
            _ = report.tick() => {
                let c = learner.counts;
                if c != last {
                    last = c;
                    tracing::info!(target: "wardgate::dns", answers = c.answers, learned = c.learned,
                        ignored = c.ignored, map_full = c.map_full, sent = c.sent,
                        send_failed = c.send_failed, "dns answers");
                }
            }
        }
    }
}
