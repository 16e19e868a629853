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
    let Parsed::Ip(pkt) = parse(&ctx) else {
        return aya_ebpf::bindings::TC_ACT_SHOT;
    };
    // Safety: DeviceInfo is plain data; all zeroes is a valid (unused) value.
    let dev: DeviceInfo = unsafe { core::mem::zeroed() };
    conntrack::commit(
        Ct::Miss,
        &pkt,
        DIR_FROM_DEVICE,
        0,
        clock::now(),
        &dev,
        None,
        CT_LEARNED,
    );
    aya_ebpf::bindings::TC_ACT_OK
}
