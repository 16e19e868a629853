//! Floors for `cargo xtask bench datapath`: programs that do one unavoidable piece of a verdict
//! and nothing else, so the bench can show how much of a path that piece is. Never attached.

use aya_ebpf::{macros::classifier, programs::TcContext};
use wardgate_common::{CT_LEARNED, DIR_FROM_DEVICE, DeviceInfo};

use crate::{
    clock,
    conntrack::{self, Ct},
    parse::{Parsed, parse},
};

/// Parse the frame and insert its conntrack entry: what any tracked new flow must pay.
#[classifier]
pub fn wg_floor_ct_insert(ctx: TcContext) -> i32 {
    let mut slot = core::mem::MaybeUninit::uninit();
    let Parsed::Ip = parse(&ctx, &mut slot) else {
        return aya_ebpf::bindings::TC_ACT_SHOT;
    };
    // Safety: `parse` wrote the packet before returning `Ip`.
    let pkt = unsafe { slot.assume_init_ref() };
    // Values like a real device's: runs of zeroes would compile to `memset` calls here that
    // the real path does not make, and raise the floor.
    let dev = DeviceInfo {
        device_id: 1,
        policy_id: 1,
        mode: 0,
        flags: 0,
        mac: pkt.src_mac,
        _pad: [0; 2],
        max_flows: 1,
        grace_s: 2,
    };
    conntrack::commit(
        Ct::Miss,
        pkt,
        DIR_FROM_DEVICE,
        DIR_FROM_DEVICE,
        1,
        clock::now(),
        &dev,
        None,
        CT_LEARNED,
    );
    aya_ebpf::bindings::TC_ACT_OK
}
