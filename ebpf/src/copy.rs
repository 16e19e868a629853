//! Byte arrays copied between two places in memory (the parsed packet in `wg_slow`'s request
//! slot, map values, ring records). A plain array assignment there compiles to a `memmove`
//! call, a byte loop in BPF; these go through registers in words. Every array copied here sits
//! at an offset that is a multiple of the word size in its struct (asserted below).

use core::mem::offset_of;

use wardgate_common::{CtValue, DeviceInfo, Event, FlowOpen};

use crate::parse::Packet;

const _: () = {
    assert!(offset_of!(Packet, src).is_multiple_of(4) && offset_of!(Packet, dst).is_multiple_of(4));
    assert!(offset_of!(Event, src).is_multiple_of(4) && offset_of!(Event, dst).is_multiple_of(4));
    assert!(
        offset_of!(Packet, src_mac).is_multiple_of(2)
            && offset_of!(Packet, dst_mac).is_multiple_of(2)
    );
    assert!(offset_of!(Event, src_mac).is_multiple_of(2));
    assert!(
        offset_of!(CtValue, dev_mac).is_multiple_of(2)
            && offset_of!(DeviceInfo, mac).is_multiple_of(2)
    );
    assert!(offset_of!(FlowOpen, dev_mac).is_multiple_of(2));
};

/// An address (16 bytes, 4-aligned on both sides).
#[inline(always)]
pub fn addr(dst: &mut [u8; 16], src: &[u8; 16]) {
    let s = src.as_ptr().cast::<u32>();
    let d = dst.as_mut_ptr().cast::<u32>();
    let mut i = 0;
    while i < 4 {
        // Safety: 16 bytes each, 4-aligned (above). The volatile load keeps LLVM from turning
        // the words back into a `memmove`.
        unsafe { d.add(i).write(s.add(i).read_volatile()) };
        i += 1;
    }
}

/// A MAC address (6 bytes, 2-aligned on both sides).
#[inline(always)]
pub fn mac(dst: &mut [u8; 6], src: &[u8; 6]) {
    let s = src.as_ptr().cast::<u16>();
    let d = dst.as_mut_ptr().cast::<u16>();
    let mut i = 0;
    while i < 3 {
        // Safety: 6 bytes each, 2-aligned (above); volatile as in `addr`.
        unsafe { d.add(i).write(s.add(i).read_volatile()) };
        i += 1;
    }
}
