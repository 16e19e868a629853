//! Sends a held DNS answer on: the frame, unchanged, out of the interface it was held on,
//! through an AF_PACKET socket whose packets carry `DNS_REINJECT_MARK` (`SO_MARK`, which only
//! CAP_NET_ADMIN may set), so the egress classifier judges it as usual instead of holding it
//! again.
//!
//! One thing is written: the UDP checksum. An answer forwarded between veths (or from a NIC
//! with checksum offload) is held with `CHECKSUM_PARTIAL` (the checksum field holds only the
//! pseudo-header sum, left for the device to complete); sent as raw bytes it would reach the
//! device with a bad checksum and be dropped. So it is computed here, as the hardware would.

use std::{io, os::fd::AsRawFd as _, os::fd::FromRawFd as _, os::fd::OwnedFd};

use wardgate_common::DNS_REINJECT_MARK;

pub struct Reinjector {
    fd: OwnedFd,
}

impl Reinjector {
    pub fn new() -> io::Result<Self> {
        // Protocol 0: this socket sends only, it never receives a copy of the traffic.
        // Safety: plain socket(2); the fd is owned at once.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // Safety: a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mark: u32 = DNS_REINJECT_MARK;
        // Safety: setsockopt with a u32 option value of its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MARK,
                (&raw const mark).cast(),
                size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Reinjector { fd })
    }

    /// Sends `frame` (an Ethernet frame) out of `ifindex`, its UDP checksum completed.
    pub fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        let mut frame = frame.to_vec();
        udp_checksum(&mut frame);
        let frame = frame.as_slice();
        if frame.len() < 14 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "short frame"));
        }
        // Safety: an all-zero sockaddr_ll is valid; the fields are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // Safety: sendto with the frame's buffer and a sockaddr_ll of its size.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Computes the UDP checksum of an Ethernet frame (up to two VLAN tags, IPv4 or IPv6 without
/// extension headers) in place; anything else is left as it is.
pub fn udp_checksum(frame: &mut [u8]) {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([
        frame.get(12).copied().unwrap_or(0),
        frame.get(13).copied().unwrap_or(0),
    ]);
    for _ in 0..2 {
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            off += 4;
            let Some(t) = frame.get(off..off + 2) else {
                return;
            };
            ethertype = u16::from_be_bytes([t[0], t[1]]);
        }
    }
    let ip = off + 2;
    let (udp, pseudo) = match ethertype {
        0x0800 => {
            let Some(h) = frame.get(ip..ip + 20) else {
                return;
            };
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if h[9] != 17 || ihl < 20 {
                return;
            }
            let mut sum = 0u32;
            sum += sum16(&h[12..20]);
            (ip + ihl, sum + 17)
        }
        0x86dd => {
            let Some(h) = frame.get(ip..ip + 40) else {
                return;
            };
            if h[6] != 17 {
                return;
            }
            (ip + 40, sum16(&h[8..40]) + 17)
        }
        _ => return,
    };
    let Some(head) = frame.get(udp..udp + 8) else {
        return;
    };
    let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
    if len < 8 || udp + len > frame.len() {
        return;
    }
    frame[udp + 6] = 0;
    frame[udp + 7] = 0;
    let mut sum = pseudo + len as u32 + sum16(&frame[udp..udp + len]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut c = !(sum as u16);
    if c == 0 {
        c = 0xffff;
    }
    frame[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
}

/// The ones'-complement sum of big-endian 16-bit words (an odd last byte padded with zero).
fn sum16(b: &[u8]) -> u32 {
    let mut sum = 0u32;
    let (words, rest) = b.as_chunks::<2>();
    for w in words {
        sum += u32::from(u16::from_be_bytes(*w));
    }
    if let [last] = rest {
        sum += u32::from(*last) << 8;
    }
    sum
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use super::udp_checksum;

    #[test]
    fn a_partial_checksum_is_completed_as_the_hardware_would() {
        let v4 = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 51, 100, 53], [192, 0, 2, 10], 64)
            .udp(53, 40000);
        let v6 = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53],
                [0x20, 1, 0xd, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
                64,
            )
            .udp(53, 40000);
        let payload = b"an odd-length dns answer";
        for (b, off) in [(v4, 14 + 20), (v6, 14 + 40)] {
            let mut good = Vec::new();
            b.write(&mut good, payload).unwrap();
            let mut held = good.clone();
            held[off + 6] = 0x12;
            held[off + 7] = 0x34;
            udp_checksum(&mut held);
            assert_eq!(held, good);
        }
    }
}
