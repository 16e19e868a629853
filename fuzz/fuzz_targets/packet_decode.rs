//! The packet decoder over any frame bytes, for every link type, and the flow table over what
//! it decodes: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate_analysis::{Decoded, Devices, FlowTable, FlowTableConfig, LinkType, decode};

const LINKS: [LinkType; 6] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::RawIp,
    LinkType::Null,
    LinkType::Loop,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frames)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(sel) % LINKS.len()];
    let mut table = FlowTable::new(FlowTableConfig::default(), Devices::discover());
    // Several frames in one input (split on a marker) so flows see more than one packet.
    for (i, frame) in frames.split(|&b| b == 0xa5).take(64).enumerate() {
        if let Ok(Decoded::Ip(p)) = decode(link, frame, i as u64 * 1_000_000) {
            table.add(&p);
        }
    }
    let _ = table.finish_all();
});
