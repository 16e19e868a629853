//! The addresses each device learned from its resolvers' answers, as the agent keeps them
//! beside `WG_DNSADDR_V1` (the datapath reads only the map): what to write for an answer, what
//! to remove when a device is over its bound or an entry expired. No I/O, so the rules (TTL
//! floor and ceiling, the per-device bound, answers from anyone but a resolver) are tested
//! here.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use wardgate_analysis::dns::answer;
use wardgate_policy::DesiredState;

use crate::config::DnsConfig;

/// One change to the learned-address map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Put {
        device_id: u32,
        addr: IpAddr,
        name_id: u32,
        expires_ns: u64,
    },
    Remove {
        device_id: u32,
        addr: IpAddr,
    },
}

/// Why an answer taught nothing (counted by the learner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ignored {
    /// Not a UDP message from port 53, or not a DNS answer.
    Malformed,
    /// The source is none of the device's policy's resolvers (the datapath checks this too).
    NotResolver,
    /// A name the policy does not list, or no addresses.
    NoName,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    name_id: u32,
    expires_ns: u64,
}

#[derive(Default)]
pub struct Table {
    by_device: HashMap<u32, BTreeMap<IpAddr, Entry>>,
}

impl Table {
    /// The writes an answer frame (Ethernet, as held) for `device_id` under `policy_id` makes.
    pub fn answer(
        &mut self,
        cfg: &DnsConfig,
        state: &DesiredState,
        device_id: u32,
        policy_id: u32,
        frame: &[u8],
        now_ns: u64,
    ) -> Result<Vec<Write>, Ignored> {
        use wardgate_analysis::decode::{Decoded, LinkType, decode};
        let Ok(Decoded::Ip(pkt)) = decode(LinkType::Ethernet, frame, 0) else {
            return Err(Ignored::Malformed);
        };
        if pkt.proto != wardgate_common::PROTO_UDP || pkt.src_port != 53 {
            return Err(Ignored::Malformed);
        }
        if !is_resolver(state, policy_id, pkt.src) {
            return Err(Ignored::NotResolver);
        }
        let chain = answer::chain(pkt.payload).map_err(|_| Ignored::Malformed)?;
        let patterns: Vec<(u32, &str)> = state
            .dns
            .names_of(policy_id)
            .map(|n| (n.name_id, n.name.as_str()))
            .collect();
        let learned = answer::learn(&chain, &patterns);
        if learned.is_empty() {
            return Err(Ignored::NoName);
        }
        Ok(self.learn(cfg, device_id, &learned, now_ns))
    }

    /// Records (name id, address, TTL) for a device: the TTL held within the floor and the
    /// ceiling; over the device's bound, the entries that expire first make room.
    pub fn learn(
        &mut self,
        cfg: &DnsConfig,
        device_id: u32,
        learned: &[(u32, IpAddr, u32)],
        now_ns: u64,
    ) -> Vec<Write> {
        let mut out = Vec::new();
        let entries = self.by_device.entry(device_id).or_default();
        for &(name_id, addr, ttl) in learned {
            let ttl = ttl.clamp(cfg.ttl_floor_s, cfg.ttl_ceiling_s.max(cfg.ttl_floor_s));
            let expires_ns = now_ns + u64::from(ttl) * 1_000_000_000;
            // An address already learned keeps the later expiry (two names, or a repeat).
            if let Some(e) = entries.get(&addr)
                && e.expires_ns >= expires_ns
            {
                continue;
            }
            entries.insert(
                addr,
                Entry {
                    name_id,
                    expires_ns,
                },
            );
            out.push(Write::Put {
                device_id,
                addr,
                name_id,
                expires_ns,
            });
        }
        while entries.len() > cfg.max_addrs_per_device.max(1) {
            let Some((&oldest, _)) = entries.iter().min_by_key(|(_, e)| e.expires_ns) else {
                break;
            };
            entries.remove(&oldest);
            out.retain(|w| !matches!(w, Write::Put { addr, .. } if *addr == oldest));
            out.push(Write::Remove {
                device_id,
                addr: oldest,
            });
        }
        out
    }

    /// Removes what expired before `now_ns` (the datapath already ignores it: this frees room).
    pub fn sweep(&mut self, now_ns: u64) -> Vec<Write> {
        let mut out = Vec::new();
        for (&device_id, entries) in &mut self.by_device {
            entries.retain(|&addr, e| {
                let keep = e.expires_ns >= now_ns;
                if !keep {
                    out.push(Write::Remove { device_id, addr });
                }
                keep
            });
        }
        self.by_device.retain(|_, e| !e.is_empty());
        out
    }

    /// Addresses a device holds now.
    pub fn len_of(&self, device_id: u32) -> usize {
        self.by_device.get(&device_id).map_or(0, BTreeMap::len)
    }
}

/// Whether `addr` is one of `policy_id`'s resolvers.
pub fn is_resolver(state: &DesiredState, policy_id: u32, addr: IpAddr) -> bool {
    state
        .dns
        .resolvers
        .iter()
        .any(|r| r.policy_id == policy_id && IpNet::contains(&r.cidr, &addr))
}

#[cfg(test)]
mod tests;
