//! Who resolved what, and what devices ask, live (issues 21 and 22): a passive AF_PACKET
//! socket copies the DNS messages (UDP and TCP to or from port 53) crossing the device-facing
//! interfaces, without holding them (learning and monitored devices get their answers at once;
//! enforced devices' answers are still held by the datapath for `dns:` rules, and their copy is
//! seen when sent on). A classic BPF filter in the kernel keeps everything else out of the
//! socket, so the cost on other traffic is the filter's few instructions per packet.
//!
//! Each message goes two ways:
//! - to the detectors (`dns_tunnel`, `dns_nxdomain`), whatever the server (a tunnel goes to
//!   its operator's own): `analysis::dns::event` turns it into a `DnsEvent`, the one
//!   conversion `replay` uses too, and a bounded queue hands it to the flow reader's engine in
//!   the order the socket read them (time order); a full queue drops and counts
//!   (`wardgate_agent_dns_messages_dropped_total`);
//! - to the name table, an answer only from the site's resolvers (the site group `dns` and
//!   every policy's `dns_resolvers`); a site with none learns no names. The pure table
//!   (`analysis::dns::names`) is bounded per device and in total; the flow reader labels
//!   finished records from it (`flows::deliver`).

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
    Decoded, DeviceInfo, Devices, LinkType, Mac, decode,
    dns::{
        self, DnsEvent,
        names::{NameTable, NameTableConfig},
    },
};
use wardgate_policy::DesiredState;

/// The table the watcher fills and the flow reader reads.
pub type Shared = Arc<Mutex<NameTable>>;

pub fn shared() -> Shared {
    Arc::new(Mutex::new(NameTable::new(NameTableConfig::default())))
}

/// Frames read per wake at most (then the runtime's other tasks run).
const FRAMES_PER_WAKE: usize = 256;
/// Bytes copied of each message (the kernel truncates the rest; a longer one fails to parse
/// and is counted): EDNS's largest usual payload, so a tunnel's big TXT answers still parse.
const SNAP: u32 = 4096;
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

/// `(udp or tcp) and port 53` over Ethernet, IPv4 (not a later fragment) and IPv6 (no
/// extension header), as `tcpdump -dd` would write it: what `analysis::dns::event` reads
/// (queries and answers, UDP and TCP) and nothing else.
fn filter() -> [libc::sock_filter; 22] {
    let i = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    [
        i(0x28, 0, 0, 12),      // 0: ldh [12]: ethertype
        i(0x15, 11, 0, 0x86dd), // 1: IPv6 -> 13
        i(0x15, 0, 18, 0x0800), // 2: not IPv4 -> drop
        i(0x30, 0, 0, 23),      // 3: ldb [23]: protocol
        i(0x15, 1, 0, 17),      // 4: UDP -> 6
        i(0x15, 0, 15, 6),      // 5: not TCP -> drop
        i(0x28, 0, 0, 20),      // 6: ldh [20]: fragment offset
        i(0x45, 13, 0, 0x1fff), // 7: a later fragment -> drop
        i(0xb1, 0, 0, 14),      // 8: x = IPv4 header length
        i(0x48, 0, 0, 14),      // 9: ldh [x + 14]: source port
        i(0x15, 9, 0, 53),      // 10: 53 -> accept
        i(0x48, 0, 0, 16),      // 11: ldh [x + 16]: destination port
        i(0x15, 7, 8, 53),      // 12: 53 -> accept, else drop
        i(0x30, 0, 0, 20),      // 13: ldb [20]: IPv6 next header
        i(0x15, 1, 0, 17),      // 14: UDP -> 16
        i(0x15, 0, 5, 6),       // 15: not TCP -> drop
        i(0x28, 0, 0, 54),      // 16: ldh [54]: source port
        i(0x15, 2, 0, 53),      // 17: 53 -> accept
        i(0x28, 0, 0, 56),      // 18: ldh [56]: destination port
        i(0x15, 0, 1, 53),      // 19: not 53 -> drop
        i(0x06, 0, 0, SNAP),    // 20: accept
        i(0x06, 0, 0, 0),       // 21: drop
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

/// The site's devices as the detectors name them (by MAC, else by address), from the
/// generation the agent enforces: the same names and ids its flow records carry.
pub fn devices(state: &DesiredState) -> Devices {
    Devices::from_list(
        state
            .devices
            .iter()
            .map(|d| DeviceInfo {
                name: d.name.clone(),
                id: Some(d.device_id),
                mac: Some(Mac(d.mac.0)),
                vendor: None,
                profile: None,
                addresses: d.addrs.clone(),
            })
            .collect(),
    )
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

/// Where the watcher's DNS messages go: the detectors' bounded queue, and the counter of what
/// it could not take.
pub struct ToDetectors {
    pub queue: tokio::sync::mpsc::Sender<DnsEvent>,
    pub dropped: prometheus_client::metrics::counter::Counter,
}

impl ToDetectors {
    /// Hands one message over without waiting; a full (or closed) queue drops and counts it.
    fn offer(&self, e: DnsEvent) {
        if self.queue.try_send(e).is_err() {
            self.dropped.inc();
        }
    }
}

/// Reads DNS messages on `interfaces`, the devices' to `detectors` and the resolvers' answers
/// into `table`, until the socket fails.
pub async fn run(
    interfaces: Vec<String>,
    table: Shared,
    detectors: ToDetectors,
    mut state: watch::Receiver<Option<Arc<DesiredState>>>,
) -> anyhow::Result<()> {
    let sock = open_socket().map_err(|e| anyhow::anyhow!("DNS name socket: {e}"))?;
    // Safety: the socket is owned by the registration and dropped with it.
    let fd = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }?;
    let mut ours: Vec<i32> = interfaces.iter().filter_map(|n| ifindex(n)).collect();
    let (mut allowed, mut known) = {
        let s = state.borrow_and_update();
        let s = s.as_deref();
        (
            s.map(resolvers).unwrap_or_default(),
            s.map_or_else(|| Devices::from_list(Vec::new()), devices),
        )
    };
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    let mut buf = vec![0u8; SNAP as usize];
    let tick = flow_clock_tick_ns();
    let (mut frames, mut other_iface, mut malformed) = (0u64, 0u64, 0u64);
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
                    let at = f.ts_ns.unwrap_or_else(wall_now_ns);
                    let Ok(Decoded::Ip(mut pkt)) = decode(LinkType::Ethernet, &buf[..f.len], at) else {
                        continue;
                    };
                    // At the packet's own time, as replay reads it from a capture.
                    match dns::event(&pkt, &known) {
                        Some(Ok(e)) => detectors.offer(e),
                        Some(Err(_)) => malformed += 1,
                        None => {}
                    }
                    // The name table takes the answer a flow-clock tick early (see above).
                    pkt.ts_ns = at.saturating_sub(tick);
                    let mut t = table.lock().expect("name table lock");
                    let _ = t.observe_packet(&pkt, |a: IpAddr| allowed.iter().any(|r| r.contains(&a)));
                }
                if drained {
                    guard.clear_ready();
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let s = state.borrow_and_update().clone();
                allowed = s.as_deref().map(resolvers).unwrap_or_default();
                if let Some(s) = s.as_deref() {
                    known = devices(s);
                }
                if allowed.is_empty() {
                    tracing::info!(target: "wardgate::dns", "no resolvers in the site (group `dns`): flows get no DNS names");
                }
            }
            _ = expire.tick() => {
                let mut t = table.lock().expect("name table lock");
                t.expire(wall_now_ns());
                let s = t.stats();
                tracing::debug!(target: "wardgate::dns", frames, other_iface, malformed,
                    dropped = detectors.dropped.get(), held = t.len(), answers = s.answers,
                    evicted = s.evicted, not_resolver = s.not_resolver, "dns names");
            }
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::{SNAP, ToDetectors, filter};

    #[test]
    fn a_full_detector_queue_drops_and_counts() {
        let (queue, mut rx) = tokio::sync::mpsc::channel(2);
        let to = ToDetectors {
            queue,
            dropped: Default::default(),
        };
        let event = |i: u64| wardgate_analysis::dns::DnsEvent {
            ts_ns: i,
            device: wardgate_analysis::flow::DeviceRef {
                name: "pump".into(),
                id: Some(1),
                mac: None,
            },
            device_addr: [192, 0, 2, 10].into(),
            resolver: [198, 51, 100, 53].into(),
            proto: 17,
            name: format!("n{i}.example"),
            qtype: 1,
            rcode: None,
            answers: 0,
        };
        for i in 0..5 {
            to.offer(event(i));
        }
        assert_eq!(to.dropped.get(), 3);
        // The first ones stay, in order.
        assert_eq!(rx.try_recv().unwrap().ts_ns, 0);
        assert_eq!(rx.try_recv().unwrap().ts_ns, 1);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn every_jump_of_the_filter_lands_inside_it() {
        let f = filter();
        for (i, ins) in f.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                assert!(i + 1 + usize::from(ins.jt) < f.len(), "{i}");
                assert!(i + 1 + usize::from(ins.jf) < f.len(), "{i}");
            }
        }
        assert_eq!(f[20].k, SNAP);
        assert_eq!(f[21].k, 0);
    }

    /// The classic BPF machine for the instructions the filter uses: a load past the frame's
    /// end drops, as in the kernel.
    fn verdict(frame: &[u8]) -> u32 {
        let prog = filter();
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |off: usize, n: usize| {
            frame
                .get(off..off + n)
                .map(|b| b.iter().fold(0u32, |v, &c| v << 8 | u32::from(c)))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            let k = i.k as usize;
            match i.code {
                0x28 | 0x30 | 0x48 => {
                    let off = if i.code == 0x48 { x as usize + k } else { k };
                    let n = if i.code == 0x30 { 1 } else { 2 };
                    match load(off, n) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                0xb1 => match frame.get(k) {
                    Some(b) => x = u32::from(b & 0x0f) * 4,
                    None => return 0,
                },
                0x15 => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                0x45 => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                0x06 => return i.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    /// An Ethernet frame: IPv4 (header of `ihl` words, fragment field `frag`) or IPv6, then
    /// the transport's ports.
    fn frame(v6: bool, proto: u8, sport: u16, dport: u16, ihl: u8, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if v6 {
            f.extend([0x86, 0xdd, 0x60, 0, 0, 0, 0, 16, proto, 64]);
            f.extend([0u8; 32]);
        } else {
            f.extend([0x08, 0x00, 0x40 | ihl, 0, 0, 40, 0, 0]);
            f.extend(frag.to_be_bytes());
            f.extend([64, proto, 0, 0]);
            f.extend([0u8; 8]);
            f.extend(vec![0u8; usize::from(ihl - 5) * 4]);
        }
        f.extend(sport.to_be_bytes());
        f.extend(dport.to_be_bytes());
        f.extend([0u8; 16]);
        f
    }

    #[test]
    fn the_filter_admits_dns_both_ways_over_udp_and_tcp_and_nothing_else() {
        for v6 in [false, true] {
            for proto in [17, 6] {
                assert_eq!(
                    verdict(&frame(v6, proto, 40000, 53, 5, 0)),
                    SNAP,
                    "query {v6} {proto}"
                );
                assert_eq!(
                    verdict(&frame(v6, proto, 53, 40000, 5, 0)),
                    SNAP,
                    "answer {v6} {proto}"
                );
                assert_eq!(
                    verdict(&frame(v6, proto, 40000, 443, 5, 0)),
                    0,
                    "other {v6} {proto}"
                );
            }
            // ICMP (an unreachable quoting a query) and SCTP to 53 are not DNS messages.
            assert_eq!(verdict(&frame(v6, 1, 40000, 53, 5, 0)), 0);
            assert_eq!(verdict(&frame(v6, 132, 40000, 53, 5, 0)), 0);
        }
        // IPv4 options move the ports; a first fragment has them, a later one does not.
        assert_eq!(verdict(&frame(false, 17, 40000, 53, 6, 0)), SNAP);
        assert_eq!(verdict(&frame(false, 17, 40000, 53, 5, 0x2000)), SNAP);
        assert_eq!(verdict(&frame(false, 17, 40000, 53, 5, 0x0010)), 0);
        // ARP, and a frame cut before its ports.
        let mut arp = frame(false, 17, 53, 53, 5, 0);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(verdict(&arp), 0);
        assert_eq!(verdict(&frame(false, 17, 40000, 53, 5, 0)[..35]), 0);
    }
}
