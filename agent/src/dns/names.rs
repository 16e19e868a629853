//! Who resolved what, live (issue 21 point 2): a passive AF_PACKET socket copies the DNS
//! answers (UDP from port 53) crossing the device-facing interfaces, without holding them
//! (learning and monitored devices get their answers at once; enforced devices' answers are
//! still held by the datapath for `dns:` rules, and their copy is seen when sent on). A classic
//! BPF filter in the kernel keeps everything else out of the socket, so the cost on other
//! traffic is the filter's few instructions per packet. Answers count only from the site's
//! resolvers (the site group `dns` and every policy's `dns_resolvers`); a site with none learns
//! no names. The pure table (`analysis::dns::names`) is bounded per device and in total; the
//! flow reader labels finished records from it (`flows::deliver`).

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use ipnet::IpNet;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
};
use wardgate_analysis::{
    Decoded, LinkType, decode,
    dns::names::{NameTable, NameTableConfig},
};
use wardgate_policy::DesiredState;

/// The table the watcher fills and the flow reader reads.
pub type Shared = Arc<Mutex<NameTable>>;

pub fn shared() -> Shared {
    Arc::new(Mutex::new(NameTable::new(NameTableConfig::default())))
}

/// Frames read per wake at most (then the runtime's other tasks run).
const FRAMES_PER_WAKE: usize = 256;
/// Bytes copied of each answer (the kernel truncates the rest; a longer answer fails to parse
/// and is counted).
const SNAP: u32 = 2048;
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

/// `udp and src port 53` over Ethernet, IPv4 (not a later fragment) and IPv6 (no extension
/// header), as `tcpdump -dd` would write it.
fn filter() -> [libc::sock_filter; 16] {
    let i = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    [
        i(0x28, 0, 0, 12),      // ldh [12]: ethertype
        i(0x15, 8, 0, 0x86dd),  // IPv6 -> 10
        i(0x15, 0, 12, 0x0800), // not IPv4 -> drop
        i(0x30, 0, 0, 23),      // ldb [23]: protocol
        i(0x15, 0, 10, 17),     // not UDP -> drop
        i(0x28, 0, 0, 20),      // ldh [20]: fragment offset
        i(0x45, 8, 0, 0x1fff),  // a later fragment -> drop
        i(0xb1, 0, 0, 14),      // x = IPv4 header length
        i(0x48, 0, 0, 14),      // ldh [x + 14]: source port
        i(0x15, 4, 5, 53),      // 53 -> accept, else drop
        i(0x30, 0, 0, 20),      // ldb [20]: IPv6 next header
        i(0x15, 0, 3, 17),      // not UDP -> drop
        i(0x28, 0, 0, 54),      // ldh [54]: source port
        i(0x15, 0, 1, 53),      // not 53 -> drop
        i(0x06, 0, 0, SNAP),    // accept
        i(0x06, 0, 0, 0),       // drop
    ]
}

/// A non-blocking AF_PACKET socket receiving the filtered frames of every interface.
fn open_socket() -> io::Result<OwnedFd> {
    // Protocol 0 until the filter is attached: no frame is queued unfiltered.
    // Safety: plain socket(2); the fd is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // Safety: `raw` is a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut prog = filter();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // Safety: the program outlives the call (the kernel copies it).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // The kernel's time of each frame (when it crossed the interface), not the time this task
    // got to read it: a flow the device opens right after its answer starts after it.
    let on: libc::c_int = 1;
    // Safety: an int option of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // Safety: zeroed sockaddr_ll is valid; then bound to every interface, every protocol.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    // Safety: `addr` is a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// One frame read: its length, the interface it crossed and when the kernel saw it.
struct Frame {
    len: usize,
    ifindex: i32,
    /// ns since the Unix epoch (`SCM_TIMESTAMPNS`); `None` if the kernel gave no time.
    ts_ns: Option<u64>,
}

/// One frame; `None` when none is waiting.
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<Frame>> {
    // Safety: zeroed sockaddr_ll and msghdr are valid; recvmsg writes at most the sizes given.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    // u64s: aligned for cmsghdr; room for the one timestamp asked for.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Safety: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // Safety: every pointer in `msg` is valid for the length beside it.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
    }
    let mut ts_ns = None;
    // Safety: the kernel filled `msg_controllen` bytes of `control` with well-formed cmsgs.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                ts_ns = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Some(Frame {
        len: n as usize,
        ifindex: from.sll_ifindex,
        ts_ns,
    }))
}

/// The resolvers answers count from: the site group `dns` and every policy's resolvers.
pub fn resolvers(state: &DesiredState) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = state.groups.get("dns").cloned().unwrap_or_default();
    out.extend(state.dns.resolvers.iter().map(|r| r.cidr));
    out.sort();
    out.dedup();
    out
}

fn wall_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One tick of the coarse clock the datapath stamps flows with: a flow record's first packet
/// may read up to a tick early (`flows::clock_now`), so an answer counts from a tick before
/// its own time, or the flow opened right after it could seem to precede it.
fn flow_clock_tick_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: clock_getres writes the timespec we pass.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc < 0 {
        return 10_000_000; // the longest tick (HZ=100)
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn ifindex(name: &str) -> Option<i32> {
    let c = std::ffi::CString::new(name).ok()?;
    // Safety: a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i as i32)
}

/// Reads answers on `interfaces` into `table` until the socket fails.
pub async fn run(
    interfaces: Vec<String>,
    table: Shared,
    mut state: watch::Receiver<Option<Arc<DesiredState>>>,
) -> anyhow::Result<()> {
    let sock = open_socket().map_err(|e| anyhow::anyhow!("DNS name socket: {e}"))?;
    // Safety: the socket is owned by the registration and dropped with it.
    let fd = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }?;
    let mut ours: Vec<i32> = interfaces.iter().filter_map(|n| ifindex(n)).collect();
    let mut allowed: Vec<IpNet> = state.borrow().as_deref().map(resolvers).unwrap_or_default();
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    let mut buf = vec![0u8; SNAP as usize];
    let tick = flow_clock_tick_ns();
    let (mut frames, mut other_iface) = (0u64, 0u64);
    loop {
        tokio::select! {
            guard = fd.readable() => {
                let mut guard = guard?;
                let mut drained = false;
                for _ in 0..FRAMES_PER_WAKE {
                    let Some(f) = recv(fd.get_ref(), &mut buf)? else {
                        drained = true;
                        break;
                    };
                    // Interfaces come and go (a lab, a restart of a bridge): look again.
                    if !ours.contains(&f.ifindex) {
                        ours = interfaces.iter().filter_map(|n| ifindex(n)).collect();
                        if !ours.contains(&f.ifindex) {
                            other_iface += 1;
                            continue;
                        }
                    }
                    frames += 1;
                    let at = f.ts_ns.unwrap_or_else(wall_now_ns).saturating_sub(tick);
                    if let Ok(Decoded::Ip(pkt)) = decode(LinkType::Ethernet, &buf[..f.len], at) {
                        let mut t = table.lock().expect("name table lock");
                        let _ = t.observe_packet(&pkt, |a: IpAddr| allowed.iter().any(|r| r.contains(&a)));
                    }
                }
                if drained {
                    guard.clear_ready();
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                allowed = state.borrow_and_update().as_deref().map(resolvers).unwrap_or_default();
                if allowed.is_empty() {
                    tracing::info!(target: "wardgate::dns", "no resolvers in the site (group `dns`): flows get no DNS names");
                }
            }
            _ = expire.tick() => {
                let mut t = table.lock().expect("name table lock");
                t.expire(wall_now_ns());
                let s = t.stats();
                tracing::debug!(target: "wardgate::dns", frames, other_iface, held = t.len(),
                    answers = s.answers, evicted = s.evicted, not_resolver = s.not_resolver, "dns names");
            }
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_jump_of_the_filter_lands_inside_it() {
        let f = super::filter();
        for (i, ins) in f.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                assert!(i + 1 + usize::from(ins.jt) < f.len(), "{i}");
                assert!(i + 1 + usize::from(ins.jf) < f.len(), "{i}");
            }
        }
        assert_eq!(f[14].k, super::SNAP);
        assert_eq!(f[15].k, 0);
    }
}
