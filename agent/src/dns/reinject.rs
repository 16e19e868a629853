//! Sends a held DNS answer on: the frame, unchanged, out of the interface it was held on,
//! through an AF_PACKET socket whose packets carry `DNS_REINJECT_MARK` (`SO_MARK`, which only
//! CAP_NET_ADMIN may set), so the egress classifier judges it as usual instead of holding it
//! again.

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

    /// Sends `frame` (an Ethernet frame) out of `ifindex`.
    pub fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
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
