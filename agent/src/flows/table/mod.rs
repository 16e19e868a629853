//! The agent's live flow table: one entry per flow-open record, keyed like conntrack, its
//! counters refreshed from the conntrack entry by a bounded sweep, finished into an
//! `analysis::FlowRecord` when the entry is gone or idle past its timeout.
//!
//! Why a sweep and not flow-end records from the datapath: an LRU eviction tells no one, so
//! the agent has to notice vanished entries by looking anyway; a sweep also costs the
//! established path nothing (no FIN/RST or expiry work in the kernel), and the flow cache
//! already folds its counts into conntrack once a second.
//!
//! Inspected flows (DICOM and HL7, `ebpf/src/payload.rs`) also get payload records: their
//! first bytes each way go through `analysis::flow::FlowIdentity` (the parsers `learn` uses)
//! and the identity found is set in the record before the detectors observe it.
//!
//! A flow is first observed by the detectors as a failed first contact (denied, refused, or no
//! answer within `answer_wait`) as soon as that is known, so scans are seen within a sweep or
//! two; any other flow when it finishes, or once it has run `long_running` (a snapshot). A flow
//! that carries on after it was observed (a UDP stream nobody answers, a long session) feeds
//! what it sent since as a continuation record (`FlowRecord::continuation`) every
//! `long_running` and when it finishes, so its volume reaches the detectors as it runs and in
//! full. Continuations feed only the detectors of amounts (the engine gives the others none)
//! and are not sent to the controller. Failed TCP contacts are observed once: their later
//! packets are retransmissions of the same attempt.
//!
//! A flow's last counts: the datapath's flow cache folds what it answered into the conntrack
//! entry only when a later packet falls through (once a second), so when a flow finishes its
//! record also takes what the cache holds for it unsynced ([`Counters::unsynced`]); the last
//! second of a burst that stops is not lost.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use wardgate_analysis::{
    FlowRecord,
    flow::{DeviceRef, FlowDirection, FlowIdentity, FlowOutcome, TcpFlags, TcpOutcome},
};
use wardgate_common::CtKey;

use crate::datapath::convert::{FlowCounters, FlowOpened, PayloadSegment, Unsynced};

const NS: u64 = 1_000_000_000;
const TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;

/// Timing and bounds of the table (defaults in `Default`).
#[derive(Clone, Copy, Debug)]
pub struct LiveConfig {
    /// A first contact with no answer after this long failed (1 s).
    pub answer_wait_ns: u64,
    /// A flow still running after this long is observed as it stands, and again each time it
    /// has run this long more, with what it sent since (60 s).
    pub long_running_ns: u64,
    /// A denied contact is remembered this long after its last packet, so retransmissions
    /// count as one contact (10 s).
    pub denied_hold_ns: u64,
    /// Conntrack lookups per sweep for each of the two queues (young, old).
    pub per_sweep: usize,
    /// Flows held at most (conntrack's capacity and as many denied contacts).
    pub max_flows: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            answer_wait_ns: NS,
            long_running_ns: 60 * NS,
            denied_hold_ns: 10 * NS,
            per_sweep: 8192,
            max_flows: 2 * wardgate_common::capacity::CONNTRACK as usize,
        }
    }
}

/// What the table did, since the agent started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    pub opened: u64,
    pub denied: u64,
    pub finished: u64,
    pub observed: u64,
    /// Continuation records given (what an observed flow moved since its last record).
    pub continued: u64,
    /// Records not kept because the table was full.
    pub table_full: u64,
    /// Payload records applied to a held flow, and those for no held flow (its flow-open
    /// record lost, or the flow already finished).
    pub payload: u64,
    pub payload_unmatched: u64,
    /// Flows whose app identity was found (or changed) from payload records.
    pub identified: u64,
}

struct Live {
    rec: FlowRecord,
    /// The opening packet went device -> peer.
    from_device: bool,
    denied: bool,
    /// What the detectors were given of the flow so far, if anything.
    fed: Option<Fed>,
    opened_mono: u64,
    last_mono: u64,
    /// First payload bytes each way, only for flows the datapath inspects (boxed: most have
    /// none). Bounded by `FirstBytes` (1 KiB a direction).
    ident: Option<Box<FlowIdentity>>,
}

/// The counters and last packet of a flow when it was last observed, and when (datapath ns).
#[derive(Clone, Copy, Debug)]
struct Fed {
    packets_out: u64,
    bytes_out: u64,
    packets_in: u64,
    bytes_in: u64,
    last_seen_ns: u64,
    at_mono: u64,
}

/// Where the table reads a flow's counters: its conntrack entry (`None`: gone) at every
/// visit, and, once, when the flow finishes, what the flow cache answered and did not fold
/// into the entry yet.
pub trait Counters {
    fn entry(&mut self, key: &CtKey) -> Option<FlowCounters>;
    fn unsynced(&mut self, _key: &CtKey) -> Unsynced {
        Unsynced::default()
    }
}

/// Counters from conntrack entries alone, read by `entry` (nothing unsynced): the tests'.
#[cfg(test)]
fn entries(entry: impl FnMut(&CtKey) -> Option<FlowCounters>) -> impl Counters {
    Entries(entry)
}

#[cfg(test)]
struct Entries<F>(F);

#[cfg(test)]
impl<F: FnMut(&CtKey) -> Option<FlowCounters>> Counters for Entries<F> {
    fn entry(&mut self, key: &CtKey) -> Option<FlowCounters> {
        (self.0)(key)
    }
}

/// Clock of the datapath (monotonic coarse ns) to wall ns: `mono + offset`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    pub offset_ns: i64,
}

impl Clock {
    pub fn wall(self, mono_ns: u64) -> u64 {
        (mono_ns as i64).saturating_add(self.offset_ns).max(0) as u64
    }
}

#[derive(Default)]
pub struct LiveFlows {
    cfg: LiveConfig,
    flows: HashMap<CtKey, Live>,
    /// Flows whose first answer is still awaited, oldest first.
    young: VecDeque<CtKey>,
    /// Every other flow, visited round-robin.
    old: VecDeque<CtKey>,
    pub stats: LiveStats,
}

impl LiveFlows {
    pub fn new(cfg: LiveConfig) -> Self {
        LiveFlows {
            cfg,
            ..LiveFlows::default()
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// A flow-open record from the datapath, for `device`. A denied contact is observed at once
    /// (pushed to `out`); a repeat of one held is counted into it.
    pub fn open(
        &mut self,
        o: &FlowOpened,
        device: DeviceRef,
        clock: Clock,
        out: &mut Vec<FlowRecord>,
    ) {
        if let Some(live) = self.flows.get_mut(&o.key) {
            if o.denied && live.denied {
                live.last_mono = o.ts_ns;
                live.rec.last_seen_ns = clock.wall(o.ts_ns);
                if live.from_device {
                    live.rec.packets_out += 1;
                    live.rec.bytes_out += u64::from(o.ip_len);
                } else {
                    live.rec.packets_in += 1;
                    live.rec.bytes_in += u64::from(o.ip_len);
                }
                return;
            }
            // The old entry ended (or was denied) and the tuple is new again: finish it first.
            let old = self.flows.remove(&o.key).expect("present");
            self.finish(old, out);
        }
        if self.flows.len() >= self.cfg.max_flows {
            self.stats.table_full += 1;
            return;
        }
        self.stats.opened += 1;
        let wall = clock.wall(o.ts_ns);
        let (port, direction) = if o.from_device {
            (o.peer_port, FlowDirection::Opened)
        } else {
            (o.device_port, FlowDirection::Received)
        };
        let len = u64::from(o.ip_len);
        let (out_n, in_n) = if o.from_device { (1, 0) } else { (0, 1) };
        let rec = FlowRecord {
            device,
            direction,
            device_addr: o.device,
            device_port: o.device_port,
            peer: o.peer,
            peer_port: o.peer_port,
            proto: o.proto,
            port,
            icmp_type: matches!(o.proto, 1 | 58).then_some(o.icmp_type),
            vlan: None,
            packets_out: out_n,
            bytes_out: out_n * len,
            packets_in: in_n,
            bytes_in: in_n * len,
            first_seen_ns: wall,
            last_seen_ns: wall,
            tcp: (o.proto == TCP).then_some(if o.denied {
                TcpOutcome::NoAnswer
            } else {
                TcpOutcome::Unknown
            }),
            outcome: FlowOutcome::Unknown,
            rule: (o.rule_id != 0).then_some(o.rule_id),
            app: None,
            tcp_flags: (o.proto == TCP).then(|| {
                let (sent, received) = if o.from_device {
                    (o.tcp_flags, 0)
                } else {
                    (0, o.tcp_flags)
                };
                TcpFlags {
                    first: o.tcp_flags,
                    sent,
                    received,
                }
            }),
            peer_name: None,
            continuation: false,
        };
        let mut live = Live {
            rec,
            from_device: o.from_device,
            denied: o.denied,
            fed: None,
            opened_mono: o.ts_ns,
            last_mono: o.ts_ns,
            ident: None,
        };
        set_outcome(&mut live);
        if o.denied {
            self.stats.denied += 1;
            self.observe(&mut live, o.ts_ns, out);
            self.old.push_back(o.key);
        } else {
            self.young.push_back(o.key);
        }
        self.flows.insert(o.key, live);
    }

    /// A payload record of a held flow: its bytes join the flow's first bytes that way. Returns
    /// the flow's record when its app identity was found or changed (set in the record, which
    /// the detectors observe later), for the caller to report.
    pub fn payload(&mut self, seg: &PayloadSegment) -> Option<&FlowRecord> {
        let Some(live) = self.flows.get_mut(&seg.key).filter(|l| !l.denied) else {
            self.stats.payload_unmatched += 1;
            return None;
        };
        self.stats.payload += 1;
        let ident = live.ident.get_or_insert_default();
        let side = usize::from(!seg.forward);
        if !ident.payload(side, live.rec.port, Some(seg.seq), seg.data) {
            return None;
        }
        live.rec.app = ident.app().cloned();
        self.stats.identified += 1;
        Some(&live.rec)
    }

    /// Gives the detectors the flow at datapath time `now`: the record the first time; after
    /// that, what it sent since it was last observed (counters and span since then), if it
    /// sent anything and is not a failed TCP contact.
    fn observe(&mut self, live: &mut Live, now: u64, out: &mut Vec<FlowRecord>) {
        let r = &live.rec;
        let total = (r.packets_out, r.bytes_out, r.packets_in, r.bytes_in);
        let record = match live.fed {
            None => Some(r.clone()),
            Some(f) => {
                let grew = total.0 + total.2 > f.packets_out + f.packets_in;
                let failed_tcp = matches!(r.tcp, Some(TcpOutcome::NoAnswer | TcpOutcome::Refused));
                (grew && !live.denied && !failed_tcp).then(|| FlowRecord {
                    packets_out: total.0.saturating_sub(f.packets_out),
                    bytes_out: total.1.saturating_sub(f.bytes_out),
                    packets_in: total.2.saturating_sub(f.packets_in),
                    bytes_in: total.3.saturating_sub(f.bytes_in),
                    first_seen_ns: f.last_seen_ns,
                    continuation: true,
                    ..r.clone()
                })
            }
        };
        if let Some(rec) = record {
            if rec.continuation {
                self.stats.continued += 1;
            } else {
                self.stats.observed += 1;
            }
            out.push(rec);
        }
        live.fed = Some(Fed {
            packets_out: total.0,
            bytes_out: total.1,
            packets_in: total.2,
            bytes_in: total.3,
            last_seen_ns: live.rec.last_seen_ns,
            at_mono: now,
        });
    }

    /// Finishes a flow that passed the datapath (not denied): what the flow cache holds of it
    /// unsynced joins its counts first.
    fn finish_read(
        &mut self,
        mut live: Live,
        key: &CtKey,
        counters: &mut impl Counters,
        out: &mut Vec<FlowRecord>,
    ) {
        add_unsynced(&mut live, counters.unsynced(key));
        self.finish(live, out);
    }

    fn finish(&mut self, mut live: Live, out: &mut Vec<FlowRecord>) {
        self.stats.finished += 1;
        let now = live.last_mono;
        self.observe(&mut live, now, out);
    }

    /// One sweep at datapath time `now`: up to `per_sweep` young and `per_sweep` old flows are
    /// looked up (`counters` reads the conntrack entry; `None` = gone). Records to observe are
    /// pushed to `out`.
    pub fn sweep(
        &mut self,
        now: u64,
        clock: Clock,
        mut counters: impl Counters,
        out: &mut Vec<FlowRecord>,
    ) {
        let n = self.young.len().min(self.cfg.per_sweep);
        for _ in 0..n {
            let Some(key) = self.young.pop_front() else {
                break;
            };
            match self.visit(&key, now, clock, &mut counters, out) {
                Keep::Young => self.young.push_back(key),
                Keep::Old => self.old.push_back(key),
                Keep::Gone => {}
            }
        }
        let n = self.old.len().min(self.cfg.per_sweep);
        for _ in 0..n {
            let Some(key) = self.old.pop_front() else {
                break;
            };
            if self.visit(&key, now, clock, &mut counters, out) != Keep::Gone {
                self.old.push_back(key);
            }
        }
    }

    fn visit(
        &mut self,
        key: &CtKey,
        now: u64,
        clock: Clock,
        counters: &mut impl Counters,
        out: &mut Vec<FlowRecord>,
    ) -> Keep {
        let Some(mut live) = self.flows.remove(key) else {
            return Keep::Gone;
        };
        if live.denied {
            if now.saturating_sub(live.last_mono) >= self.cfg.denied_hold_ns {
                self.finish(live, out);
                return Keep::Gone;
            }
            self.flows.insert(*key, live);
            return Keep::Old;
        }
        let Some(c) = counters.entry(key) else {
            self.finish_read(live, key, counters, out);
            return Keep::Gone;
        };
        update(&mut live, &c, clock);
        let idle = now.saturating_sub(c.last_seen_ns) >= u64::from(c.idle_timeout_s) * NS;
        if idle {
            self.finish_read(live, key, counters, out);
            return Keep::Gone;
        }
        let age = now.saturating_sub(live.opened_mono);
        let answered = c.packets_rev > 0;
        let refused = live.rec.tcp == Some(TcpOutcome::Refused);
        // Since it was last observed (or opened): a flow observed before is due again once it
        // has run another `long_running`.
        let since = now.saturating_sub(live.fed.map_or(live.opened_mono, |f| f.at_mono));
        let keep = if refused || (!answered && age >= self.cfg.answer_wait_ns) {
            if !answered && live.rec.proto == TCP {
                live.rec.tcp = Some(TcpOutcome::NoAnswer);
                set_outcome(&mut live);
            }
            if live.fed.is_none() || since >= self.cfg.long_running_ns {
                self.observe(&mut live, now, out);
            }
            Keep::Old
        } else if since >= self.cfg.long_running_ns {
            self.observe(&mut live, now, out);
            Keep::Old
        } else if age >= self.cfg.answer_wait_ns || answered {
            Keep::Old
        } else {
            Keep::Young
        };
        self.flows.insert(*key, live);
        keep
    }

    /// Finishes every held flow as it stands (at a graceful stop): counters refreshed from its
    /// conntrack entry where `counters` still finds one, plus what the flow cache holds of it
    /// unsynced, then observed like any finished flow (a
    /// flow observed before gives only what it sent since; a denied contact nothing more).
    /// Returns how many flows were held.
    ///
    /// Not reported twice after a restart: the next agent learns of flows only from flow-open
    /// records, one per new conntrack entry, and the entries of the flows finished here stay in
    /// the pinned map it adopts, so it never holds them. (The price: packets such a flow sends
    /// after the restart are in no record, as the entry's counters are not read again.)
    pub fn finish_all(
        &mut self,
        clock: Clock,
        mut counters: impl Counters,
        out: &mut Vec<FlowRecord>,
    ) -> usize {
        let held = self.flows.len();
        for (k, mut live) in std::mem::take(&mut self.flows) {
            if live.denied {
                self.finish(live, out);
                continue;
            }
            if let Some(c) = counters.entry(&k) {
                update(&mut live, &c, clock);
            }
            self.finish_read(live, &k, &mut counters, out);
        }
        self.young.clear();
        self.old.clear();
        held
    }

    /// The peer addresses of held flows of `device` (tests, status).
    pub fn peers_of(&self, device: IpAddr) -> Vec<IpAddr> {
        self.flows
            .values()
            .filter(|l| l.rec.device_addr == device)
            .map(|l| l.rec.peer)
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    Young,
    Old,
    Gone,
}

/// What the flow cache answered of a finishing flow and did not fold into its entry, added to
/// its counts (seen from the device).
fn add_unsynced(live: &mut Live, u: Unsynced) {
    if u == Unsynced::default() {
        return;
    }
    let r = &mut live.rec;
    let (out, inn) = if live.from_device {
        ((u.packets_fwd, u.bytes_fwd), (u.packets_rev, u.bytes_rev))
    } else {
        ((u.packets_rev, u.bytes_rev), (u.packets_fwd, u.bytes_fwd))
    };
    r.packets_out += out.0;
    r.bytes_out += out.1;
    r.packets_in += inn.0;
    r.bytes_in += inn.1;
    set_outcome(live);
}

/// Counters and handshake from the conntrack entry, seen from the device.
fn update(live: &mut Live, c: &FlowCounters, clock: Clock) {
    let r = &mut live.rec;
    let (out, inn) = if live.from_device {
        ((c.packets_fwd, c.bytes_fwd), (c.packets_rev, c.bytes_rev))
    } else {
        ((c.packets_rev, c.bytes_rev), (c.packets_fwd, c.bytes_fwd))
    };
    // Counters only grow: a re-checked entry keeps its counts.
    r.packets_out = r.packets_out.max(out.0);
    r.bytes_out = r.bytes_out.max(out.1);
    r.packets_in = r.packets_in.max(inn.0);
    r.bytes_in = r.bytes_in.max(inn.1);
    live.last_mono = live.last_mono.max(c.last_seen_ns);
    r.last_seen_ns = r.last_seen_ns.max(clock.wall(c.last_seen_ns));
    if let Some(f) = r.tcp_flags.as_mut() {
        let (sent, received) = if live.from_device {
            (c.tcp_flags_fwd, c.tcp_flags_rev)
        } else {
            (c.tcp_flags_rev, c.tcp_flags_fwd)
        };
        f.sent |= sent;
        f.received |= received;
    }
    if r.proto == TCP {
        r.tcp = Some(if c.tcp_flags_rev & TCP_SYN != 0 {
            TcpOutcome::Established
        } else if c.tcp_flags_rev & TCP_RST != 0 && c.tcp_flags_fwd & TCP_SYN != 0 {
            TcpOutcome::Refused
        } else if c.packets_rev > 0 {
            // Seen mid-stream (a learned flow's entry made after the handshake).
            if c.tcp_flags_fwd & TCP_SYN != 0 {
                TcpOutcome::Established
            } else {
                TcpOutcome::Unknown
            }
        } else {
            TcpOutcome::Unknown
        });
    }
    set_outcome(live);
}

/// The record's outcome from what the flow holds now: the datapath denied it, its handshake
/// (TCP flags each way, read from the conntrack entry), and for other protocols whether the
/// responder sent anything back (packets each way). An ICMP unreachable about a UDP flow
/// passes as related traffic without touching the entry, so such a flow stays `Unanswered`.
fn set_outcome(live: &mut Live) {
    let r = &mut live.rec;
    r.outcome = FlowOutcome::of_record(
        r.proto,
        r.direction,
        r.tcp,
        r.packets_out,
        r.packets_in,
        live.denied,
    );
}

#[cfg(test)]
mod tests;
