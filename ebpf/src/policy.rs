//! Device, management and policy lookups. Cost is fixed by key width: one hash lookup for the
//! device; for the policy one hash lookup of the (host peer, single port) pair, the common
//! case; on a miss the two stages: the peer (host hash, then LPM of the prefixes) to its peer
//! set, then the exact port (hash), then (only for peer sets that have them) an LPM lookup of
//! port ranges and wildcards.

use aya_ebpf::maps::lpm_trie::Key;
use wardgate_common::{
    DeviceInfo, DeviceKey, DnsAddrKey, DnsNameKey, FAMILY_V4, HostPortKey, MGMT_FIXED_BITS, MacKey,
    MgmtKey, PEER_FIXED_BITS, PEER_HAS_PREFIX_PORTS, PORT_PROTO_BITS, PeerKey, PeerValue, PortKey,
    RULE_ALLOW, RuleValue,
};

use crate::maps::{
    WG_DEV_V2, WG_DNSADDR_V1, WG_DNSNAME_V1, WG_HOSTPORT_V1, WG_MAC_V1, WG_MGMT_V1, WG_PEER_V1,
    WG_PEERH_V1, WG_PORT_V1, WG_PORTX_V1,
};

#[inline(always)]
fn addr_bits(family: u8) -> u32 {
    if family == FAMILY_V4 { 32 } else { 128 }
}

#[inline(always)]
pub fn device(slot: u32, family: u8, addr: &[u8; 16]) -> Option<&'static DeviceInfo> {
    let key = DeviceKey {
        slot: slot as u8,
        family,
        _pad: [0; 2],
        addr: *addr,
    };
    // Safety: a map value pointer, valid for the program run (RCU); the agent writes only the
    // inactive slot's entries, so the value does not change under us. Not copied: the slow
    // path's device records would not fit the 512-byte stack.
    unsafe { WG_DEV_V2.get(&key) }
}

/// The device with this MAC, whatever address it uses.
#[inline(always)]
pub fn device_by_mac(slot: u32, mac: [u8; 6]) -> Option<&'static DeviceInfo> {
    let key = MacKey {
        slot: slot as u8,
        _pad: 0,
        mac,
    };
    // Safety: as for `device`.
    unsafe { WG_MAC_V1.get(&key) }
}

#[inline(always)]
pub fn mgmt_allows(family: u8, proto: u8, port_be: [u8; 2], addr: &[u8; 16]) -> bool {
    let key = Key::new(
        MGMT_FIXED_BITS + addr_bits(family),
        MgmtKey {
            family,
            proto,
            port_be,
            addr: *addr,
        },
    );
    WG_MGMT_V1.get(&key).is_some()
}

/// The rule allowing a new flow of `dev`: by the peer's address, else (`dns.rs`) by the
/// `dns:` name the device's resolver answered it for, while the answer lasts. The name is
/// asked after the whole address lookup (not only a peer miss): a profile with `any` on one
/// port and a name on another must allow the name's port.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "the packet's fields, kept in registers"
)]
pub fn lookup(
    slot: u32,
    dev: &DeviceInfo,
    direction: u8,
    family: u8,
    peer: &[u8; 16],
    proto: u8,
    port_be: [u8; 2],
    now: u64,
) -> Option<RuleValue> {
    if let Some(rule) = by_address(slot, dev.policy_id, direction, family, peer, proto, port_be) {
        return Some(rule);
    }
    let learned = WG_DNSADDR_V1.get_ptr(&DnsAddrKey {
        device_id: dev.device_id,
        family,
        _pad: 0,
        _pad1: 0,
        addr: *peer,
    })?;
    // Safety: a map value pointer, read at once.
    let (expires, name_id) = unsafe { ((*learned).expires_ns, (*learned).name_id) };
    if expires < now {
        return None;
    }
    let key = DnsNameKey {
        slot: slot as u8,
        direction,
        _pad: 0,
        policy_id: dev.policy_id,
        name_id,
    };
    // Safety: the value is copied out at once.
    let set = unsafe { *WG_DNSNAME_V1.get(&key)? };
    rule_of(slot, set, proto, port_be)
}

#[inline(always)]
fn by_address(
    slot: u32,
    policy_id: u32,
    direction: u8,
    family: u8,
    peer: &[u8; 16],
    proto: u8,
    port_be: [u8; 2],
) -> Option<RuleValue> {
    // The joined pair first: what the two stages below answer for a listed host and a single
    // port, in one lookup (a new flow's cost is mostly the cache lines its lookups touch).
    let pair = HostPortKey {
        slot: slot as u8,
        direction,
        family,
        proto,
        policy_id,
        addr: *peer,
        port_be,
        _pad: 0,
    };
    // Safety: the value is copied out at once.
    if let Some(rule) = unsafe { WG_HOSTPORT_V1.get(&pair) } {
        let rule = *rule;
        return if rule.action == RULE_ALLOW {
            Some(rule)
        } else {
            None
        };
    }
    let peer_key = PeerKey {
        slot: slot as u8,
        direction,
        family,
        _pad: 0,
        policy_id,
        addr: *peer,
    };
    // A host entry is the longest prefix there is: the hash answers first, the trie (CIDRs
    // only) after a miss.
    // Safety: values are copied out at once.
    let peer = match unsafe { WG_PEERH_V1.get(&peer_key) } {
        Some(v) => *v,
        None => *WG_PEER_V1.get(&Key::new(PEER_FIXED_BITS + addr_bits(family), peer_key))?,
    };
    rule_of(slot, peer, proto, port_be)
}

/// The port stage: (peer set, protocol, port) -> an allowing rule.
#[inline(always)]
fn rule_of(slot: u32, peer: PeerValue, proto: u8, port_be: [u8; 2]) -> Option<RuleValue> {
    let port = PortKey {
        slot: slot as u8,
        _pad: 0,
        _pad1: 0,
        peer_set: peer.peer_set,
        proto,
        port_be,
        _pad2: 0,
    };
    // A single port is the most specific match there is: the exact-port hash answers first,
    // and only peer sets with ranges or wildcards pay for the port LPM.
    // Safety: the value is copied out at once.
    let rule = match unsafe { WG_PORTX_V1.get(&port) } {
        Some(rule) => *rule,
        None if peer.flags & PEER_HAS_PREFIX_PORTS != 0 => {
            *WG_PORT_V1.get(&Key::new(PORT_PROTO_BITS + 16, port))?
        }
        None => return None,
    };
    if rule.action == RULE_ALLOW {
        Some(rule)
    } else {
        None
    }
}
