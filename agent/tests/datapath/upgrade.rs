//! Upgrades across a conntrack layout change (issue 23 point 3): the previous release's
//! entries (`WG_CT_V4`, 88-byte values) are copied into this release's map at load, so an
//! established flow goes on as established under the new programs, not as a new one.

use std::{ffi::CString, os::fd::RawFd};

use super::*;

/// `bpf(2)` with a zero-padded attribute of the size given (include/uapi/linux/bpf.h).
fn bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> i64 {
    // Safety: `attr` is a zeroed 64-byte prefix of `union bpf_attr`, filled as `cmd` reads it.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 64u32) }
}

/// Pins an LRU hash shaped like the previous release's conntrack map at `path`, holding
/// `entries` (key bytes, value bytes): what the previous release leaves on bpffs.
fn pin_previous_conntrack(path: &std::path::Path, entries: &[(Vec<u8>, Vec<u8>)]) {
    const MAP_CREATE: libc::c_long = 0;
    const MAP_UPDATE_ELEM: libc::c_long = 2;
    const OBJ_PIN: libc::c_long = 6;
    const LRU_HASH: u64 = 9;
    let mut attr = [0u64; 8];
    // map_type, key_size | value_size, max_entries.
    attr[0] = LRU_HASH | (40 << 32);
    attr[1] = 88 | (1024 << 32);
    let fd = bpf(MAP_CREATE, &mut attr);
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    for (k, v) in entries {
        assert_eq!((k.len(), v.len()), (40, 88));
        let mut attr = [0u64; 8];
        attr[0] = fd as u64;
        attr[1] = k.as_ptr() as u64;
        attr[2] = v.as_ptr() as u64;
        assert_eq!(bpf(MAP_UPDATE_ELEM, &mut attr), 0, "BPF_MAP_UPDATE_ELEM");
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let name = CString::new(path.to_str().unwrap()).unwrap();
    let mut attr = [0u64; 8];
    attr[0] = name.as_ptr() as u64;
    attr[1] = fd as u64;
    assert_eq!(
        bpf(OBJ_PIN, &mut attr),
        0,
        "BPF_OBJ_PIN: {}",
        std::io::Error::last_os_error()
    );
    // Safety: our own descriptor, closed once; the pin keeps the map.
    unsafe { libc::close(fd as RawFd) };
}

fn bytes<T: Copy>(t: &T) -> Vec<u8> {
    // Safety: plain-data map key or value, read as its bytes.
    unsafe { std::slice::from_raw_parts((t as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

#[test]
fn an_established_flow_of_the_previous_release_goes_on_as_established() {
    // The flow as the previous release left it: made here by this release's programs (the
    // first 88 bytes of a value are the previous layout), then written into an old-style map.
    let (_old_pin, mut old) = datapath("upgrade-old");
    let pump = "192.0.2.10:40200";
    let pacs = "198.51.100.10:104";
    expect(
        &mut old,
        true,
        &frame(PUMP_MAC, pump, pacs, L4::Syn),
        TC_ACT_OK,
        Reason::PassPolicy,
    );
    let syn_ack = syn_ack_frame(GW_MAC, PUMP_MAC, pacs, pump, 5000);
    expect(&mut old, false, &syn_ack, TC_ACT_OK, Reason::PassReply);
    let ct_pin = old
        .pin_root()
        .join("maps")
        .join(wardgate_common::map_names::CONNTRACK);
    let map = aya::maps::Map::LruHashMap(aya::maps::MapData::from_pin(&ct_pin).unwrap());
    let ct: aya::maps::HashMap<_, wardgate_common::CtKey, wardgate_common::CtValue> =
        aya::maps::HashMap::try_from(map).unwrap();
    let entries: Vec<_> = ct
        .iter()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (bytes(&k), bytes(&v)[..88].to_vec())
        })
        .collect();
    assert_eq!(entries.len(), 1, "one entry for the handshake");

    // The upgrade: a pin root holding the previous release's conntrack map, loaded by this one.
    require_privileges();
    let pin = PinRoot::new("upgrade-new");
    pin_previous_conntrack(&pin.0.join("maps").join("WG_CT_V4"), &entries);
    let mut dp = Datapath::load(&pin.0).expect("load over the previous release's pins");
    dp.set_gateway_config(&gateway_config(false, false))
        .unwrap();
    dp.apply(&reference_state(1)).unwrap();
    let copied: Vec<_> = conntrack_values(&mut dp);
    assert_eq!(
        copied.len(),
        1,
        "the previous release's entry is in {}",
        ct_pin.display()
    );
    assert_eq!(
        &bytes(&copied[0])[..88],
        &entries[0].1[..],
        "every old field kept"
    );
    assert_eq!(copied[0].grace_until_ns, 0);
    // The handshake's ACK finds the flow: established, not a new flow admitted again.
    let ack = frame(PUMP_MAC, pump, pacs, L4::Ack);
    expect(&mut dp, true, &ack, TC_ACT_OK, Reason::PassEstablished);

    // Once the interfaces run the new programs: a second pass, then the old pin is gone.
    let done = dp
        .finish_migration()
        .unwrap()
        .expect("there was a map to migrate");
    assert_eq!((done.copied, done.present), (0, 1));
    assert!(
        !pin.0.join("maps").join("WG_CT_V4").exists(),
        "old map unpinned"
    );
    assert_eq!(
        dp.finish_migration().unwrap(),
        None,
        "nothing left to migrate"
    );
}
