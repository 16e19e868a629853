//! Upgrades and downgrades across a conntrack layout change (issue 23 point 3): the previous
//! release's entries (`WG_CT_V4`, 88-byte values) are copied into this release's map at load,
//! so an established flow goes on as established under the new programs, not as a new one; and
//! a stop leaves every flow in that layout for an older release.

use std::{ffi::CString, os::fd::RawFd};

use wardgate_agent::datapath::Migrated;
use wardgate_common::{CtKey, CtValue, map_names};

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

/// Fills the pinned conntrack map at `path` with `n` distinct flows, from one thread on each
/// CPU (the map keeps an LRU list per CPU: written from one CPU, a full map would evict its own
/// entries). Entry `i` counts `i` packets.
fn fill_conntrack(path: &std::path::Path, n: usize) {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let share = n.div_ceil(cpus);
    std::thread::scope(|s| {
        for cpu in 0..cpus {
            s.spawn(move || {
                // Safety: the cpu_set_t is zeroed and filled before use.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    assert_eq!(
                        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
                        0,
                        "sched_setaffinity"
                    );
                }
                let map = aya::maps::Map::LruHashMap(aya::maps::MapData::from_pin(path).unwrap());
                let mut ct: aya::maps::HashMap<_, CtKey, CtValue> =
                    aya::maps::HashMap::try_from(map).unwrap();
                for i in cpu * share..((cpu + 1) * share).min(n) {
                    let key = flow_key(i);
                    let value = CtValue {
                        packets_fwd: i as u64,
                        grace_until_ns: 7,
                        ..CtValue::default()
                    };
                    ct.insert(&key, &value, 0).unwrap();
                }
            });
        }
    });
}

/// Flow `i`: from one of 250 devices of 192.0.2.0/24 and its own port to 198.51.100.1:104.
fn flow_key(i: usize) -> CtKey {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[192, 0, 2, (i % 250) as u8 + 1]);
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&[198, 51, 100, 1]);
    CtKey {
        a,
        b,
        a_port_be: ((i / 250) as u16 + 1024).to_be_bytes(),
        b_port_be: 104u16.to_be_bytes(),
        proto: 6,
        family: wardgate_common::FAMILY_V4,
        dev_is_a: 1,
        _pad: 0,
    }
}

fn count_previous(path: &std::path::Path) -> Vec<(CtKey, [u8; 88])> {
    let map = aya::maps::Map::LruHashMap(aya::maps::MapData::from_pin(path).unwrap());
    let old: aya::maps::HashMap<_, CtKey, [u8; 88]> = aya::maps::HashMap::try_from(map).unwrap();
    old.iter().map(|kv| kv.unwrap()).collect()
}

/// A downgrade (issue 23 point 3): the previous release has no migration code, so this one
/// leaves its flows in the previous layout at every stop. A full map (262,144 flows) is carried
/// to `WG_CT_V4` and back by the next start, every entry both ways; the copies are timed.
#[test]
fn a_stop_leaves_every_flow_for_a_downgrade_and_the_next_start_takes_them_back() {
    use wardgate_common::capacity;
    let n = capacity::CONNTRACK as usize;
    let (pin, mut dp) = datapath("downgrade");
    let maps = pin.0.join("maps");
    fill_conntrack(&maps.join(map_names::CONNTRACK), n);
    assert_eq!(conntrack_values(&mut dp).len(), n, "the map is full");

    let kept = dp.keep_for_previous().unwrap();
    eprintln!(
        "stop: {} entries kept in WG_CT_V4 in {} ms",
        kept.written,
        kept.took.as_millis()
    );
    assert_eq!((kept.entries, kept.written), (n, n));
    // Shaped as the previous release declares it, or its loader would refuse the pin.
    let old = aya::maps::MapInfo::from_pin(maps.join("WG_CT_V4")).unwrap();
    let new = aya::maps::MapInfo::from_pin(maps.join(map_names::CONNTRACK)).unwrap();
    assert_eq!(
        (
            old.key_size(),
            old.value_size(),
            old.max_entries(),
            old.map_flags()
        ),
        (40, 88, capacity::CONNTRACK, 2)
    );
    assert_eq!(
        (old.map_type().unwrap(), old.max_entries(), old.map_flags()),
        (new.map_type().unwrap(), new.max_entries(), new.map_flags())
    );
    let entries = count_previous(&maps.join("WG_CT_V4"));
    assert_eq!(entries.len(), n, "every flow in the previous layout");
    let (k, v) = entries[n / 2];
    let i = (0..n).find(|&i| flow_key(i) == k).expect("a flow we wrote");
    assert_eq!(v[8..16], (i as u64).to_ne_bytes(), "packets_fwd kept");
    // A second stop replaces the kept map: every flow, none twice.
    assert_eq!(dp.keep_for_previous().unwrap().written, n);
    assert_eq!(count_previous(&maps.join("WG_CT_V4")).len(), n);

    // The next start of this release with an empty map of its own (as after a downgrade and
    // an upgrade again): every flow comes back, off grace, and the old pin goes.
    let back = PinRoot::new("downgrade-back");
    let mut dp2 = Datapath::load(&back.0).unwrap();
    let old_map = aya::maps::MapData::from_pin(maps.join("WG_CT_V4")).unwrap();
    old_map.pin(back.0.join("maps").join("WG_CT_V4")).unwrap();
    let started = std::time::Instant::now();
    let m = dp2.migrate_conntrack().unwrap().expect("a map to migrate");
    eprintln!(
        "start: {} entries copied back into {} in {} ms",
        m.copied,
        map_names::CONNTRACK,
        started.elapsed().as_millis()
    );
    assert_eq!((m.copied, m.present), (n, 0));
    let values = conntrack_values(&mut dp2);
    assert_eq!(values.len(), n);
    assert!(values.iter().all(|v| v.grace_until_ns == 0));
    // The second pass finds every flow there (an update of a full LRU map would evict one).
    assert_eq!(
        dp2.finish_migration().unwrap(),
        Some(Migrated {
            copied: 0,
            present: n
        })
    );
    assert_eq!(conntrack_values(&mut dp2).len(), n);
    assert!(!back.0.join("maps").join("WG_CT_V4").exists());
}

/// A downgrade's stop holds new flows (`Datapath::hold_new_flows`): the slow path's slot
/// emptied, an established flow goes on, a new one is dropped until the next agent's slow path
/// is in place (here: this one's, as at a start).
#[test]
fn held_new_flows_wait_for_the_next_slow_path_and_established_ones_go_on() {
    let (_pin, mut dp) = datapath("hold");
    let pump = "192.0.2.10:40300";
    let pacs = "198.51.100.10:104";
    let syn = frame(PUMP_MAC, pump, pacs, L4::Syn);
    expect(&mut dp, true, &syn, TC_ACT_OK, Reason::PassPolicy);
    let syn_ack = syn_ack_frame(GW_MAC, PUMP_MAC, pacs, pump, 5000);
    expect(&mut dp, false, &syn_ack, TC_ACT_OK, Reason::PassReply);

    dp.hold_new_flows().unwrap();
    let ack = frame(PUMP_MAC, pump, pacs, L4::Ack);
    expect(&mut dp, true, &ack, TC_ACT_OK, Reason::PassEstablished);
    let other = frame(PUMP_MAC, "192.0.2.10:40301", pacs, L4::Syn);
    expect(&mut dp, true, &other, TC_ACT_SHOT, Reason::DropNoProgram);

    // The next agent's load puts its slow path in the shared slot: the flow opens.
    let _next = Datapath::load(dp.pin_root()).unwrap();
    expect(&mut dp, true, &other, TC_ACT_OK, Reason::PassPolicy);
}
