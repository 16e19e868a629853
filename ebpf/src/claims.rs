//! Address claims on the link: ARP senders and IPv6 neighbour advertisement targets. A device
//! that claims another listed device's address with its own MAC is poisoning the gateway's (or
//! a neighbour's) cache to take that device's traffic; one that claims an address not listed
//! for it is using an address outside its allowlist.

use wardgate_common::{DeviceInfo, FAMILY_V4, FAMILY_V6, MODE_ENFORCE};

use crate::policy;

pub enum Claim {
    /// Nothing wrong (or nothing the device table knows about).
    Fine,
    /// A listed address claimed with another MAC, or an enforced device claiming an address
    /// not listed for it. `drop` when the claimed device or the claimant is enforced.
    Spoof {
        dev: &'static DeviceInfo,
        drop: bool,
    },
    /// A learning or monitored device at an address not listed for it.
    NewAddress(&'static DeviceInfo),
    /// A claim that does not parse: dropped, never passed unchecked.
    Malformed,
}

#[inline(always)]
fn enforced(d: &DeviceInfo) -> bool {
    d.mode >= MODE_ENFORCE
}

/// `addr` (family `family`) claimed to be at `mac`, in a frame from `frame_mac`.
/// `unlisted_too`: an address missing from the table is checked against the claimant's MAC.
#[inline(always)]
pub fn check(
    slot: u32,
    family: u8,
    addr: &[u8; 16],
    mac: [u8; 6],
    frame_mac: [u8; 6],
    unlisted_too: bool,
) -> Claim {
    if let Some(dev) = policy::device(slot, family, addr) {
        if dev.mac == mac && dev.mac == frame_mac {
            return Claim::Fine;
        }
        // Blamed on the claimant when it is a known device, not on the device it robs.
        let claimant = policy::device_by_mac(slot, frame_mac);
        let drop = enforced(dev) || claimant.is_some_and(enforced);
        return Claim::Spoof {
            dev: claimant.unwrap_or(dev),
            drop,
        };
    }
    if !unlisted_too {
        return Claim::Fine;
    }
    match policy::device_by_mac(slot, frame_mac) {
        Some(dev) if enforced(dev) => Claim::Spoof { dev, drop: true },
        Some(dev) => Claim::NewAddress(dev),
        None => Claim::Fine,
    }
}

/// An IPv4 address as the 16-byte field of keys and events. Built as one integer: zeroing the
/// tail of a byte array compiles to a `memset` call (a byte loop in BPF).
#[inline(always)]
pub fn v4_addr(a: [u8; 4]) -> [u8; 16] {
    u128::from(u32::from_ne_bytes(a)).to_ne_bytes()
}

/// An ARP sender claim. Probes (sender 0.0.0.0) claim nothing.
#[inline(always)]
pub fn arp(slot: u32, sender_ip: [u8; 4], sender_mac: [u8; 6], frame_mac: [u8; 6]) -> Claim {
    if u32::from_ne_bytes(sender_ip) == 0 {
        return Claim::Fine;
    }
    check(
        slot,
        FAMILY_V4,
        &v4_addr(sender_ip),
        sender_mac,
        frame_mac,
        true,
    )
}

/// A neighbour advertisement's target, claimed at `mac` (its option, or the frame's source).
/// Only listed targets are checked: every device also advertises its link-local address.
#[inline(always)]
pub fn advert(slot: u32, target: &[u8; 16], mac: [u8; 6], frame_mac: [u8; 6]) -> Claim {
    check(slot, FAMILY_V6, target, mac, frame_mac, false)
}

/// A neighbour discovery message whose link-layer option names a MAC other than its sender's:
/// it points `addr` (its source) at someone else. Reported as spoofing by the sender (or the
/// address's owner); dropped unless both are known and neither is enforced: no device on a
/// device VLAN has a reason to speak for another MAC.
#[inline(always)]
pub fn foreign_link_layer(slot: u32, family: u8, addr: &[u8; 16], frame_mac: [u8; 6]) -> Claim {
    let owner = policy::device(slot, family, addr);
    let sender = policy::device_by_mac(slot, frame_mac);
    match (sender, owner) {
        (Some(s), Some(o)) => Claim::Spoof {
            dev: s,
            drop: enforced(s) || enforced(o),
        },
        (Some(dev), None) | (None, Some(dev)) => Claim::Spoof { dev, drop: true },
        (None, None) => Claim::Malformed,
    }
}
