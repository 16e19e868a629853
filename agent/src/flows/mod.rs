//! Live flow records: the datapath's flow-open records (`WG_FLOWS_V1`) into the live flow table,
//! counters from the conntrack map by a bounded sweep, the first payload bytes of inspected
//! flows (`WG_PAYLOAD_V1`) into their app identity, and every record the table gives up fed
//! to the detectors (`analysis::detect::Engine`) as it comes; what they find goes to the alert
//! outbox, and the records to the controller's queue (`flow_report`). Reads maps only: the map
//! writer stays the one in `run.rs`. The devices' DNS messages (`dns::names`) are observations
//! of the same engine, as in `replay`.

pub mod table;

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
};
use wardgate_analysis::{
    FlowRecord, Mac,
    detect::{
        self, AddressClaim, Baselines, ClaimKind, DetectConfig, DeviceFacts, Engine, Finding,
        Observation, SiteFacts,
    },
    dns::DnsEvent,
    flow::DeviceRef,
};
use wardgate_common::{CtKey, CtValue, FlowSlot, map_names};
use wardgate_policy::DesiredState;

pub use table::{Clock, Counters, LiveConfig, LiveFlows, LiveStats};

use crate::{
    alerts::{self, AlertQueue},
    datapath::{self, DatapathError, convert, pinned},
    events::Generations,
};

/// At most this many records are read from each ring per wake-up; with more waiting the ring
/// stays ready and is read again after the sweep, the flush, the claims and the stop had their
/// turn (a flood of new flows cannot keep the table from being swept or the reader from
/// stopping).
pub const RECORDS_PER_WAKE: usize = 4096;

/// How often the table is swept (young flows first, each sweep bounded).
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// How often the table's counts (and flow records lost to a full ring) are logged, when they
/// changed.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// An update of an open finding goes to the outbox at most this often (its opening at once);
/// an update held back goes out once this has passed, or when the finding closes.
pub const UPDATE_EVERY_NS: u64 = 30_000_000_000;

/// How often held-back updates and closed findings are looked for.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The conntrack map and the flow and payload loss counters, opened read-only from their pins,
/// and the flow cache of the program the agent loaded (read at a flow's end, see
/// [`table::Counters`]).
pub struct CtReader {
    ct: BpfHashMap<MapData, CtKey, CtValue>,
    cache: Option<PerCpuArray<MapData, FlowSlot>>,
    lost: PerCpuArray<MapData, u64>,
    payload_lost: PerCpuArray<MapData, u64>,
}

impl CtReader {
    pub fn open(pin_root: &Path) -> Result<Self, DatapathError> {
        let ct = pinned::open(pin_root, map_names::CONNTRACK)?;
        let lost = pinned::open(pin_root, map_names::FLOWS_LOST)?;
        let payload_lost = pinned::open(pin_root, map_names::PAYLOAD_LOST)?;
        Ok(CtReader {
            cache: None,
            payload_lost: PerCpuArray::try_from(Map::PerCpuArray(payload_lost))
                .map_err(datapath::map_err(map_names::PAYLOAD_LOST))?,
            ct: BpfHashMap::try_from(Map::LruHashMap(ct))
                .map_err(datapath::map_err(map_names::CONNTRACK))?,
            lost: PerCpuArray::try_from(Map::PerCpuArray(lost))
                .map_err(datapath::map_err(map_names::FLOWS_LOST))?,
        })
    }

    /// Reads the flow cache too (`Datapath::take_flow_cache`).
    pub fn with_cache(mut self, cache: PerCpuArray<MapData, FlowSlot>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn counters(&self, key: &CtKey) -> Option<convert::FlowCounters> {
        self.ct.get(key, 0).ok().map(|v| convert::flow_counters(&v))
    }

    /// What the flow cache holds of the flow unsynced, over every CPU's slots of its keys.
    pub fn unsynced(&self, key: &CtKey) -> convert::Unsynced {
        let mut u = convert::Unsynced::default();
        let Some(cache) = &self.cache else {
            return u;
        };
        for k in convert::cache_keys(key) {
            if let Ok(slots) = cache.get(&k.index(), 0) {
                for slot in slots.iter() {
                    convert::add_unsynced(&mut u, &k, slot);
                }
            }
        }
        u
    }

    /// Flow-open records the datapath could not deliver (ring full), summed over CPUs.
    pub fn lost(&self) -> u64 {
        self.lost.get(&0, 0).map_or(0, |v| v.iter().sum())
    }

    /// Payload records the datapath did not deliver: (over a rate bound, ring full, no
    /// handshake seen or outside the window after the SYN).
    pub fn payload_lost(&self) -> (u64, u64, u64) {
        let sum = |i| self.payload_lost.get(&i, 0).map_or(0, |v| v.iter().sum());
        (
            sum(wardgate_common::PAYLOAD_LOST_RATE),
            sum(wardgate_common::PAYLOAD_LOST_RING),
            sum(wardgate_common::PAYLOAD_LOST_UNVERIFIED),
        )
    }
}

impl Counters for &CtReader {
    fn entry(&mut self, key: &CtKey) -> Option<convert::FlowCounters> {
        self.counters(key)
    }
    fn unsynced(&mut self, key: &CtKey) -> convert::Unsynced {
        CtReader::unsynced(self, key)
    }
}

/// The datapath clock's offset to wall time, now.
pub fn clock_now() -> Clock {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    Clock {
        offset_ns: wall - datapath::coarse_now_ns() as i64,
    }
}

/// What the detectors know of the site, from the generation the agent enforces: each device
/// with its class (profile), the class's sensitivity and detector tuning, addresses and MAC,
/// and the site's groups:
/// the same facts `replay` reads from the site and profile files, so live and offline judge
/// alike.
pub fn site_facts(state: &DesiredState) -> SiteFacts {
    let mut site = SiteFacts::default();
    for (name, nets) in &state.groups {
        for net in nets {
            site.add_group(name, *net);
        }
    }
    for d in &state.devices {
        let policy = state.policies.iter().find(|p| p.policy_id == d.policy_id);
        site.add(DeviceFacts {
            name: d.name.clone(),
            class: policy.map(|p| p.profile.clone()),
            gateway: Some(state.gateway.clone()).filter(|g| !g.is_empty()),
            mac: Some(Mac(d.mac.0)),
            addresses: d.addrs.clone(),
            sensitivity: policy.map(|p| p.sensitivity).unwrap_or_default(),
            detection: policy.map(|p| p.detection.clone()).unwrap_or_default(),
            ..DeviceFacts::default()
        });
    }
    site
}

/// The device end of a record, named from the generation that opened it.
fn device_ref(o: &convert::FlowOpened, state: Option<&DesiredState>) -> DeviceRef {
    let name = state
        .and_then(|s| s.device(o.device_id))
        .map_or_else(|| o.device.to_string(), |d| d.name.clone());
    DeviceRef {
        name,
        id: (o.device_id != 0).then_some(o.device_id),
        mac: Some(Mac(o.dev_mac)),
    }
}

/// The detectors over live records, and which open findings went to the outbox when. Every
/// version of a finding goes out under one alert id (`STARTMS-FINDINGID`), so the controller
/// keeps one alert and replaces it with each higher count.
pub struct Detection {
    engine: Engine,
    /// Open findings sent, by finding id (as many as the engine holds open: closed ones are
    /// removed).
    sent: HashMap<String, Sent>,
    started_ms: i64,
}

struct Sent {
    /// Wall ns it was last sent.
    at: u64,
    /// Its latest version, when that was not sent yet (held back by `UPDATE_EVERY_NS`).
    held: Option<Finding>,
}

impl Detection {
    pub fn new(cfg: &DetectConfig, baselines: Baselines) -> Self {
        let dets = detect::detectors(cfg, !baselines.is_empty());
        Detection {
            engine: Engine::new(dets, SiteFacts::default(), baselines, cfg.aggregate.clone()),
            sent: HashMap::new(),
            started_ms: crate::events::unix_ms(),
        }
    }

    pub fn set_site(&mut self, site: SiteFacts) {
        self.engine.set_site(site);
    }

    /// Feeds records; returns the alerts to send: a finding when it opens, an update of it at
    /// most every `UPDATE_EVERY_NS` (later ones are held for `flush`).
    pub fn observe(
        &mut self,
        records: &[FlowRecord],
        now_ns: u64,
    ) -> Vec<wardgate_proto::v1::Alert> {
        let mut out = Vec::new();
        for r in records {
            for f in self.engine.observe(&Observation::Flow(r)) {
                self.offer(f, now_ns, &mut out);
            }
        }
        out
    }

    /// Feeds an address claim (ARP, from a datapath spoof or new-address event).
    pub fn observe_claim(
        &mut self,
        claim: &AddressClaim,
        now_ns: u64,
    ) -> Vec<wardgate_proto::v1::Alert> {
        self.observe_one(&Observation::Claim(claim), now_ns)
    }

    /// Feeds a device's DNS message (its query, or the answer it got).
    pub fn observe_dns(&mut self, e: &DnsEvent, now_ns: u64) -> Vec<wardgate_proto::v1::Alert> {
        self.observe_one(&Observation::Dns(e), now_ns)
    }

    fn observe_one(
        &mut self,
        obs: &Observation<'_>,
        now_ns: u64,
    ) -> Vec<wardgate_proto::v1::Alert> {
        let mut out = Vec::new();
        for f in self.engine.observe(obs) {
            self.offer(f, now_ns, &mut out);
        }
        out
    }

    /// At wall time `now_ns`: the held-back updates now due, and the last version of each
    /// finding that closed (its window ended) if that was not sent; closed findings are
    /// forgotten here and in the engine.
    pub fn flush(&mut self, now_ns: u64) -> Vec<wardgate_proto::v1::Alert> {
        let mut out = Vec::new();
        for f in self.engine.expire(now_ns) {
            match self.sent.remove(&f.id) {
                Some(Sent { held: None, .. }) => {}
                // Held back, or closed before it was ever offered: its final state goes out.
                Some(Sent { held: Some(_), .. }) | None => out.push(self.alert(&f)),
            }
        }
        let started_ms = self.started_ms;
        for s in self.sent.values_mut() {
            if now_ns.saturating_sub(s.at) >= UPDATE_EVERY_NS
                && let Some(f) = s.held.take()
            {
                s.at = now_ns;
                out.push(alert_of(started_ms, &f));
            }
        }
        out
    }

    /// At the stop: every held-back update goes out now, whatever its age (the agent that
    /// held it is going; the controller keeps the highest count under the finding's id).
    pub fn flush_held(&mut self) -> Vec<wardgate_proto::v1::Alert> {
        let started_ms = self.started_ms;
        self.sent
            .values_mut()
            .filter_map(|s| s.held.take())
            .map(|f| alert_of(started_ms, &f))
            .collect()
    }

    /// Findings open now and closed early past the aggregator's cap (for the log).
    pub fn aggregation(&self) -> (usize, u64) {
        let a = self.engine.aggregation();
        (a.open_len(), a.evicted())
    }

    fn offer(&mut self, f: Finding, now_ns: u64, out: &mut Vec<wardgate_proto::v1::Alert>) {
        match self.sent.get_mut(&f.id) {
            Some(s) if now_ns.saturating_sub(s.at) < UPDATE_EVERY_NS => s.held = Some(f),
            Some(s) => {
                s.at = now_ns;
                s.held = None;
                out.push(alert_of(self.started_ms, &f));
            }
            None => {
                out.push(self.alert(&f));
                self.sent.insert(
                    f.id.clone(),
                    Sent {
                        at: now_ns,
                        held: None,
                    },
                );
            }
        }
    }

    fn alert(&self, f: &Finding) -> wardgate_proto::v1::Alert {
        alert_of(self.started_ms, f)
    }
}

/// The outbox alert of a finding: one id for all its versions, unique on the gateway (the
/// agent's start and the engine's finding id). Observed when the packet that raised it passed
/// the gateway (its record's time).
fn alert_of(started_ms: i64, f: &Finding) -> wardgate_proto::v1::Alert {
    alerts::from_finding(f, format!("{started_ms}-{}", f.id))
}

/// The ARP claim a datapath event reports (spoof or new address from an ARP frame: protocol 0,
/// the ARP operation in the ports), at wall time `ts_ns`. The event carries the frame's source
/// MAC, which the datapath checked against the claim: it stands for both.
pub fn claim_of(ev: &convert::DatapathEvent, ts_ns: u64) -> Option<AddressClaim> {
    use convert::EventKind;
    if ev.proto != 0 || !matches!(ev.kind, EventKind::Spoof | EventKind::NewAddress) {
        return None;
    }
    let kind = if ev.src == ev.dst {
        ClaimKind::Gratuitous
    } else if ev.sport == 2 {
        ClaimKind::ArpReply
    } else {
        ClaimKind::ArpRequest
    };
    Some(AddressClaim {
        ts_ns,
        mac: Mac(ev.src_mac),
        frame_src: Mac(ev.src_mac),
        addr: ev.src,
        kind,
        vlan: None,
    })
}

/// Claims the event reader hands over, at most this many waiting (more are dropped, counted in
/// the log: the spoof alert from the event itself is not lost).
pub const CLAIMS_QUEUE: usize = 1024;

/// DNS messages the name watcher hands over, at most this many waiting (more are dropped,
/// counted in `wardgate_agent_dns_messages_dropped_total`): a few seconds of a busy ward's lookups.
pub const DNS_QUEUE: usize = 4096;
/// DNS messages fed to the detectors per wake-up at most (then the rings and the sweep have a
/// turn).
const DNS_PER_WAKE: usize = 256;

/// The flow reader's two rings: flow-open records and payload records.
pub struct Rings {
    pub flows: RingBuf<MapData>,
    pub payload: RingBuf<MapData>,
}

/// Logs a flow's app identity when payload records found or changed it (the identity as JSON,
/// last on the line).
fn log_identity(r: &FlowRecord) {
    let Some(app) = &r.app else {
        return;
    };
    let json = serde_json::to_string(app).unwrap_or_default();
    tracing::info!(target: "wardgate::flows", device = r.device.name, peer = %r.peer,
        port = r.port, summary = app.summary(), app = %json, "app identity");
}

/// Where the flow reader's results go (when there is a controller): findings' alerts to the
/// outbox, records to the controller's queue.
#[derive(Default)]
pub struct Outputs {
    pub alerts: Option<Arc<AlertQueue>>,
    pub records: Option<Arc<crate::flow_report::FlowQueue>>,
    /// Who resolved what (`dns::names`): finished records take the name of their peer.
    pub names: Option<crate::dns::names::Shared>,
}

/// What the flow reader takes from the agent's other tasks.
pub struct Inputs {
    /// The generation the agent enforces (device names, the detectors' site facts).
    pub state: watch::Receiver<Option<Arc<DesiredState>>>,
    /// Address claims from the event reader.
    pub claims: tokio::sync::mpsc::Receiver<AddressClaim>,
    /// The devices' DNS messages from the name watcher, in the order it read them.
    pub dns: tokio::sync::mpsc::Receiver<DnsEvent>,
    /// Sent at a graceful stop (or dropped): the reader finishes every flow it holds and ends.
    pub stop: tokio::sync::oneshot::Receiver<()>,
}

/// Reads flow-open and payload records and sweeps the table until `inputs.stop`; then reads
/// what the rings still hold and finishes every held flow as it stands ([`LiveFlows::finish_all`]):
/// the detectors observe those records and they join the controller's queue, so the stop
/// loses none (UDP flows, held until their conntrack entry goes, would wait minutes otherwise).
pub async fn run(
    rings: Rings,
    ct: CtReader,
    inputs: Inputs,
    out: Outputs,
    detection: (DetectConfig, Baselines),
    cfg: LiveConfig,
) -> anyhow::Result<()> {
    let Inputs {
        mut state,
        mut claims,
        mut dns,
        mut stop,
    } = inputs;
    let mut dns_batch = Vec::with_capacity(DNS_PER_WAKE);
    let mut dns_open = true;
    // Made here: detectors are not `Send`, they live on this task.
    let mut detection = Detection::new(&detection.0, detection.1);
    // Safety: the ring buffer owns its fd and outlives the registration (both live in `fd`).
    let mut fd = unsafe { AsyncFd::register_with_interest(rings.flows, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the flow ring buffer: {e}"))?;
    // Safety: as above.
    let mut payload_fd =
        unsafe { AsyncFd::register_with_interest(rings.payload, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the payload ring buffer: {e}"))?;
    let mut table = LiveFlows::new(cfg);
    let mut generations = Generations::default();
    // What was applied before this task started (the last-known-good file at a restart): a
    // receiver from `subscribe` counts it as seen.
    state.mark_changed();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(REPORT_EVERY);
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut malformed = 0u64;
    let mut last_report = (LiveStats::default(), 0u64, (0u64, 0u64, 0u64), 0u64, 0u64);
    let mut records = Vec::new();
    loop {
        follow(&mut state, &mut generations, &mut detection);
        let clock = clock_now();
        tokio::select! {
            _ = &mut stop => break,
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                // A flow opened just after a generation switch names its devices from it: the
                // switch may have happened while this task waited.
                follow(&mut state, &mut generations, &mut detection);
                if !read_opens(guard.get_inner_mut(), &mut table, &generations, clock, &mut records, &mut malformed) {
                    guard.clear_ready();
                }
            }
            guard = payload_fd.readable_mut() => {
                let mut guard = guard?;
                // A flow's opening went to the other ring before its first payload: read it
                // first, or a short flow (an HL7 message and its ACK) whose two records are
                // ready at once may find its payload matching no flow, and lose its identity.
                follow(&mut state, &mut generations, &mut detection);
                read_opens(fd.get_mut(), &mut table, &generations, clock, &mut records, &mut malformed);
                if !read_payload(guard.get_inner_mut(), &mut table, &mut malformed) {
                    guard.clear_ready();
                }
            }
            Some(c) = claims.recv() => {
                let found = detection.observe_claim(&c, c.ts_ns);
                send(&out.alerts, found);
            }
            n = dns.recv_many(&mut dns_batch, DNS_PER_WAKE), if dns_open => {
                // 0: the watcher is gone (it logged why); flows go on without DNS.
                dns_open = n > 0;
                for e in dns_batch.drain(..) {
                    let found = detection.observe_dns(&e, e.ts_ns);
                    send(&out.alerts, found);
                }
            }
            _ = sweep.tick() => {
                table.sweep(datapath::coarse_now_ns(), clock, &ct, &mut records);
            }
            _ = flush.tick() => {
                let found = detection.flush(clock.wall(datapath::coarse_now_ns()));
                send(&out.alerts, found);
            }
            _ = report.tick() => {
                let lost = ct.lost();
                let payload_lost = ct.payload_lost();
                let s = table.stats;
                let (findings_open, findings_evicted) = detection.aggregation();
                if (s, lost, payload_lost, malformed, findings_evicted) != last_report {
                    last_report = (s, lost, payload_lost, malformed, findings_evicted);
                    tracing::info!(target: "wardgate::flows", held = table.len(), opened = s.opened,
                        denied = s.denied, finished = s.finished, observed = s.observed,
                        table_full = s.table_full, lost, malformed, payload = s.payload,
                        payload_unmatched = s.payload_unmatched, identified = s.identified,
                        payload_rate_limited = payload_lost.0, payload_ring_full = payload_lost.1,
                        payload_unverified = payload_lost.2,
                        findings_open, findings_evicted, "live flow table");
                }
            }
        }
        deliver(&mut records, &mut detection, clock, &out);
        // A ring left ready (more than a batch waiting) is read on the next turn; give the
        // runtime's other tasks theirs first.
        tokio::task::yield_now().await;
    }
    // The stop: flows whose opening is still in the ring are held too, then all finished
    // (bounded: what a ring takes while this reads waits for the next start's reader).
    let clock = clock_now();
    follow(&mut state, &mut generations, &mut detection);
    for _ in 0..STOP_BATCHES {
        let more = read_opens(
            fd.get_mut(),
            &mut table,
            &generations,
            clock,
            &mut records,
            &mut malformed,
        );
        if !more {
            break;
        }
    }
    for _ in 0..STOP_BATCHES {
        if !read_payload(payload_fd.get_mut(), &mut table, &mut malformed) {
            break;
        }
    }
    // DNS messages the watcher handed over before the stop (bounded by the queue).
    for _ in 0..DNS_QUEUE {
        let Ok(e) = dns.try_recv() else { break };
        let found = detection.observe_dns(&e, e.ts_ns);
        send(&out.alerts, found);
    }
    let held = table.finish_all(clock, &ct, &mut records);
    let finished = records.len();
    deliver(&mut records, &mut detection, clock, &out);
    send(&out.alerts, detection.flush_held());
    tracing::info!(target: "wardgate::flows", held, records = finished, malformed,
        "live flow table finished at stop");
    Ok(())
}

/// Finished records to the detectors (their findings to the outbox) and, but for
/// continuations, to the controller's queue; `records` is left empty.
fn deliver(records: &mut Vec<FlowRecord>, detection: &mut Detection, clock: Clock, out: &Outputs) {
    if records.is_empty() {
        return;
    }
    if let Some(names) = &out.names {
        names.lock().expect("name table lock").label(records);
    }
    let found = detection.observe(records, clock.wall(datapath::coarse_now_ns()));
    if let Some(q) = &out.records {
        // Continuations stay here: an older controller would count each as a flow, and the
        // controller's records are per flow (proposals, learning, the console).
        records.retain(|r| !r.continuation);
        q.push_all(records);
    }
    records.clear();
    send(&out.alerts, found);
}

/// Takes a newly applied generation, if there is one: it names devices in the records and
/// gives the detectors their site.
fn follow(
    state: &mut watch::Receiver<Option<Arc<DesiredState>>>,
    generations: &mut Generations,
    detection: &mut Detection,
) {
    if state.has_changed().unwrap_or(false)
        && let Some(s) = state.borrow_and_update().clone()
    {
        detection.set_site(site_facts(&s));
        generations.observe(s);
    }
}

/// At the stop, at most this many batches of `RECORDS_PER_WAKE` are read from each ring (the
/// flow ring holds about 30,000 records).
const STOP_BATCHES: usize = 16;

/// Flow-open records waiting in the ring, at most `RECORDS_PER_WAKE`, into the table (records
/// to observe to `out`); whether it stopped at the bound (more may be waiting).
fn read_opens(
    ring: &mut RingBuf<MapData>,
    table: &mut LiveFlows,
    generations: &Generations,
    clock: Clock,
    out: &mut Vec<FlowRecord>,
    malformed: &mut u64,
) -> bool {
    for _ in 0..RECORDS_PER_WAKE {
        let Some(item) = ring.next() else {
            return false;
        };
        match convert::flow_open(&item) {
            Some(o) => {
                let dev = device_ref(&o, generations.get(o.generation));
                table.open(&o, dev, clock, out);
            }
            None => *malformed += 1,
        }
    }
    true
}

/// Payload records waiting in the ring, at most `RECORDS_PER_WAKE`, into their flows' app
/// identity; whether it stopped at the bound.
fn read_payload(ring: &mut RingBuf<MapData>, table: &mut LiveFlows, malformed: &mut u64) -> bool {
    for _ in 0..RECORDS_PER_WAKE {
        let Some(item) = ring.next() else {
            return false;
        };
        match convert::payload(&item) {
            Some(seg) => {
                if let Some(r) = table.payload(&seg) {
                    log_identity(r);
                }
            }
            None => *malformed += 1,
        }
    }
    true
}

/// Logs findings' alerts and hands them to the outbox (when there is a controller).
fn send(alerts: &Option<Arc<AlertQueue>>, found: Vec<wardgate_proto::v1::Alert>) {
    for a in &found {
        tracing::info!(target: "wardgate::finding", id = a.id, kind = a.kind,
            severity = a.severity, device = a.device, "detector finding");
    }
    if let Some(q) = alerts
        && !found.is_empty()
    {
        q.push_all(found);
    }
}

#[cfg(test)]
mod tests;
