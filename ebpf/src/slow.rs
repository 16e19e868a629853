//! The slow path's hand-over: a packet that neither the flow cache nor a conntrack entry
//! decides is judged by `wg_slow` (device, spoofing, mode, policy, management, budgets), a
//! program of its own reached by a tail call. The verifier then walks the slow path once, not
//! once per parse path of the classifiers: inline, the two together passed its 1M-instruction
//! limit. The classifier leaves the parsed packet and what its lookups found in a per-CPU slot
//! (the tail call runs on the same CPU, in the same packet's run).
//!
//! If the tail call fails (no program in the slot: only before the agent has loaded one) the
//! packet is dropped as `DropNoProgram`: without the slow path nothing new is allowed.

use aya_ebpf::{macros::map, maps::PerCpuArray, programs::TcContext};

use crate::{conntrack::Ct, maps::WG_SLOWPROG_V1, parse::Packet};

/// What the classifier hands `wg_slow`. Pinned under a versioned name, as the program slot is:
/// during an upgrade the previous release's classifiers may tail-call this release's `wg_slow`,
/// so both must read the same slot with the same layout (a new layout takes a new name).
#[repr(C)]
pub struct Request {
    /// First: 8-aligned, copied as words.
    pub pkt: Packet,
    pub now: u64,
    pub slot: u32,
    pub generation: u32,
    pub dir: u8,
    pub flow_dir: u8,
    /// `Ct::Miss` 0, `Ct::StaleForward` 1, `Ct::StaleReply` 2.
    ct: u8,
    _pad: u8,
}

#[map(name = "WG_SLOWREQ_V1")]
static WG_SLOWREQ_V1: PerCpuArray<Request> = PerCpuArray::pinned(1, 0);

impl Request {
    pub fn ct(&self) -> Ct {
        match self.ct {
            1 => Ct::StaleForward,
            2 => Ct::StaleReply,
            _ => Ct::Miss,
        }
    }
}

/// Leaves the packet for `wg_slow`; `false` if the slot is missing (never, but then nothing
/// is handed over and the packet is dropped).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn request(
    pkt: &Packet,
    dir: u8,
    flow_dir: u8,
    slot: u32,
    generation: u32,
    now: u64,
    ct: Ct,
) -> bool {
    let Some(r) = WG_SLOWREQ_V1.get_ptr_mut(0) else {
        return false;
    };
    // Safety: this CPU's slot; nothing else runs on this CPU while we do.
    let r = unsafe { &mut *r };
    copy(&mut r.pkt, pkt);
    r.now = now;
    r.slot = slot;
    r.generation = generation;
    r.dir = dir;
    r.flow_dir = flow_dir;
    r.ct = match ct {
        Ct::StaleForward => 1,
        Ct::StaleReply => 2,
        _ => 0,
    };
    true
}

/// The packet into the request: a BPF subprogram (its own small frame), not inlined: a copy in
/// the classifier let LLVM keep the parsed fields in registers from the parse on, and their
/// spills took the classifier past its 512-byte stack.
#[inline(never)]
fn copy(dst: &mut Packet, src: &Packet) {
    // Safety: two whole, distinct `Packet`s.
    unsafe { core::ptr::copy_nonoverlapping(src, dst, 1) };
}

/// Tail-calls `wg_slow`; returns only if that fails.
#[inline(always)]
pub fn hand_over(ctx: &TcContext) {
    // Safety: a tail call does not return when it succeeds.
    unsafe { WG_SLOWPROG_V1.tail_call(ctx, 0) };
}

/// `wg_slow`'s view of the request.
#[inline(always)]
pub fn taken() -> Option<&'static Request> {
    let r = WG_SLOWREQ_V1.get_ptr(0)?;
    // Safety: this CPU's slot, written by the classifier that tail-called us.
    Some(unsafe { &*r })
}
