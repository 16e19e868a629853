//! Ring-buffer events, rate-limited with a token bucket per device and event kind (a flood of
//! one kind cannot use up another's budget: denies never hide a spoof). Every event not
//! delivered is counted by why (rate limit, full ring buffer) and kind in `WG_EVLOST_V2`.

use wardgate_common::{
    DIR_FROM_DEVICE, DeviceInfo, EVENT_KINDS, Event, LOST_RATE_LIMITED, LOST_RING_FULL, RateKey,
    RateState,
};

use crate::{
    maps::{WG_CONFIG_V3, WG_EVENTS_V1, WG_EVLOST_V2, WG_RATE_V2},
    parse::Packet,
};

const NS_PER_S: u64 = 1_000_000_000;

/// An event being prepared. Only the ids are gathered on the way; the event itself is built in
/// `send`, so packets that report nothing (allowed flows) never pay for building one.
pub struct Report<'a> {
    pkt: &'a Packet,
    dir: u8,
    generation: u32,
    now: u64,
    device_id: u32,
    policy_id: u32,
    rule_id: u32,
}

impl<'a> Report<'a> {
    #[inline(always)]
    pub fn new(pkt: &'a Packet, dir: u8, generation: u32, now: u64) -> Self {
        Report {
            pkt,
            dir,
            generation,
            now,
            device_id: 0,
            policy_id: 0,
            rule_id: 0,
        }
    }

    #[inline(always)]
    pub fn device(&mut self, dev: &DeviceInfo) {
        self.device_id = dev.device_id;
        self.policy_id = dev.policy_id;
    }

    #[inline(always)]
    pub fn rule(&mut self, rule_id: u32) {
        self.rule_id = rule_id;
    }

    #[inline(always)]
    pub fn send(&self, kind: u32, reason: wardgate_common::Reason) {
        // Unknown hosts (device id 0) each have their own budget, keyed by their address (the
        // device side's): one of them cannot use up every other's.
        let budget_id = if self.device_id == 0 {
            let addr = if self.dir == DIR_FROM_DEVICE {
                &self.pkt.src
            } else {
                &self.pkt.dst
            };
            0x8000_0000 | crate::budget::source_hash(addr)
        } else {
            self.device_id
        };
        match take_token(budget_id, kind, self.now) {
            Budget::Take => {}
            Budget::Empty => {
                lost(LOST_RATE_LIMITED, kind);
                return;
            }
            Budget::Off => return,
        }
        let pkt = self.pkt;
        let Some(mut entry) = WG_EVENTS_V1.reserve::<Event>(0) else {
            lost(LOST_RING_FULL, kind);
            return;
        };
        // Written field by field into the ring's memory: an event built on the stack first
        // would take 80 of the 512 bytes the verifier allows, on the slow path's deepest point.
        let r = entry.as_mut_ptr();
        // Safety: `r` points to the reserved event, valid until submitted; every field is
        // written.
        unsafe {
            (*r).ts_ns = self.now;
            (*r).kind = kind;
            (*r).reason = reason as u32;
            (*r).device_id = self.device_id;
            (*r).policy_id = self.policy_id;
            (*r).rule_id = self.rule_id;
            (*r).generation = self.generation;
            (*r).family = pkt.family;
            (*r).proto = pkt.proto;
            (*r).direction = self.dir;
            (*r)._pad = 0;
            (*r).sport_be = pkt.sport_be;
            (*r).dport_be = pkt.dport_be;
            crate::copy::addr(&mut (*r).src, &pkt.src);
            crate::copy::addr(&mut (*r).dst, &pkt.dst);
            crate::copy::mac(&mut (*r).src_mac, &pkt.src_mac);
            (*r)._pad2 = [0; 2];
        }
        entry.submit(0);
    }
}

/// Takes a token of `device_id`'s budget for an event of `kind` (counting a refusal): `false`
/// when nothing may be sent.
#[inline(always)]
pub fn admit(device_id: u32, kind: u32, now: u64) -> bool {
    match take_token(device_id, kind, now) {
        Budget::Take => true,
        Budget::Empty => {
            lost(LOST_RATE_LIMITED, kind);
            false
        }
        Budget::Off => false,
    }
}

/// An event of `kind` the full ring could not take.
#[inline(always)]
pub fn lost_ring(kind: u32) {
    lost(LOST_RING_FULL, kind);
}

#[inline(always)]
fn lost(why: u32, kind: u32) {
    if kind >= EVENT_KINDS {
        return;
    }
    if let Some(n) = WG_EVLOST_V2.get_ptr_mut(why * EVENT_KINDS + kind) {
        // Safety: this CPU's slot; nothing else runs on this CPU while we do.
        unsafe { *n += 1 };
    }
}

enum Budget {
    Take,
    Empty,
    /// Events are switched off by configuration (rate 0): nothing is lost.
    Off,
}

#[inline(always)]
fn take_token(device_id: u32, kind: u32, now: u64) -> Budget {
    let Some(cfg) = WG_CONFIG_V3.get(0) else {
        return Budget::Off;
    };
    if cfg.event_rate == 0 {
        return Budget::Off;
    }
    let key = RateKey { device_id, kind };
    let burst = u64::from(cfg.event_burst.max(1));
    let rate = u64::from(cfg.event_rate);
    if let Some(state) = WG_RATE_V2.get_ptr_mut(&key) {
        // Safety: map value pointer from a successful lookup. Races between CPUs can only
        // let an extra event through or lose one token, never corrupt memory.
        let state = unsafe { &mut *state };
        return if crate::budget::take(&mut state.tokens, &mut state.last_ns, now, rate, burst) {
            Budget::Take
        } else {
            Budget::Empty
        };
    }
    let state = RateState {
        tokens: burst * NS_PER_S - NS_PER_S,
        last_ns: now,
    };
    let _ = WG_RATE_V2.insert(&key, &state, 0);
    Budget::Take
}
