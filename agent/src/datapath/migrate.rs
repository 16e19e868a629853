//! Conntrack carried across an upgrade or a downgrade that changed its layout. Map names are
//! versioned: a release whose `CtValue` grew pins a new map (`WG_CT_V5`) beside the previous
//! release's (`WG_CT_V4`). Without a copy every established flow would start again from nothing
//! under the other release's programs: allowed flows are admitted again by their rule, but a
//! flow whose rule checks its application (DICOM, HL7) has its handshake and first bytes long
//! gone and is refused as `unverified`, and the flow counters restart.
//!
//! Upgrade: two passes, both with `BPF_NOEXIST` so an entry the new programs wrote is never
//! overwritten: at load, before the new programs run on any hook (the previous release's
//! programs still fill the old map), and once every interface runs the new programs (what the
//! old ones opened in between). Then the old pin is removed: nothing reads or writes it any more.
//!
//! Downgrade: the previous release has no migration code, and dpkg cannot refuse it, so this
//! release leaves the previous layout behind whenever it stops (`keep_for_previous`): every
//! entry's first 88 bytes in `WG_CT_V4`, created and pinned as the previous release declares it
//! when absent, so its loader adopts the pin. A start of this release copies them back (above;
//! present entries win) and unpins the map again.

use std::{
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Pod,
    maps::{HashMap, Map, MapData, MapError, ProgramArray},
};
use wardgate_common::{CtKey, CtValue, capacity, map_names};

use super::{Datapath, DatapathError, map_err};
use crate::paths;

/// The previous release's conntrack map: same key, the value without `grace_until_ns`.
const PREVIOUS: &str = "WG_CT_V4";
const PREVIOUS_VALUE: usize = 88;

/// The previous value's bytes (88: every field of `CtValue` up to `isn_seen`, same offsets).
type PreviousValue = [u8; PREVIOUS_VALUE];

/// The previous release's map as its object declares it (`ebpf/src/maps.rs` at 0.1.0): its
/// loader reuses a pin only when type, sizes, capacity and flags all match.
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_F_NO_COMMON_LRU: u32 = 2;

const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;

// The new layout is the old one with fields appended: the copy keeps every old byte in place.
const _: () = assert!(size_of::<CtValue>() >= PREVIOUS_VALUE);

/// A `CtValue` from the previous release's bytes: the same fields, the new ones zero (a flow
/// not on grace).
pub fn upgrade_value(old: &PreviousValue) -> CtValue {
    let mut bytes = [0u8; size_of::<CtValue>()];
    bytes[..PREVIOUS_VALUE].copy_from_slice(old);
    // Safety: `CtValue` is plain data (`aya::Pod`) of exactly these bytes, and all zero is a
    // valid value of every appended field.
    unsafe { std::mem::transmute::<[u8; size_of::<CtValue>()], CtValue>(bytes) }
}

/// The previous layout's bytes of a `CtValue`: its first 88, the appended fields dropped.
pub fn previous_value(v: &CtValue) -> PreviousValue {
    // Safety: `CtValue` is plain data (`aya::Pod`) without implicit padding.
    let bytes: [u8; size_of::<CtValue>()] = unsafe { std::mem::transmute(*v) };
    let mut old = [0u8; PREVIOUS_VALUE];
    old.copy_from_slice(&bytes[..PREVIOUS_VALUE]);
    old
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Entries copied into the new map.
    pub copied: usize,
    /// Entries the new map already had (written by the new programs): left as they are.
    pub present: usize,
}

/// What a stop left for the previous release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kept {
    /// Entries of this release's map.
    pub entries: usize,
    /// Of them, written into the previous release's map.
    pub written: usize,
    /// The walk and the writes.
    pub took: Duration,
}

impl Datapath {
    /// Copies the previous release's conntrack entries into this release's map, if its pin is
    /// there; `None` when there is nothing to migrate.
    pub fn migrate_conntrack(&mut self) -> Result<Option<Migrated>, DatapathError> {
        let path = previous_path(&self.pin_root);
        if !path.exists() {
            return Ok(None);
        }
        let data = MapData::from_pin(&path).map_err(map_err(PREVIOUS))?;
        let old: HashMap<MapData, CtKey, PreviousValue> =
            HashMap::try_from(Map::LruHashMap(data)).map_err(map_err(PREVIOUS))?;
        // An entry evicted or expired while we walk is simply gone.
        let entries: Vec<_> = old
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, upgrade_value(&v)))
            .collect();
        let copied = write_spread(
            &paths::maps_dir(&self.pin_root).join(map_names::CONNTRACK),
            map_names::CONNTRACK,
            &entries,
            BPF_NOEXIST,
        )?;
        Ok(Some(Migrated {
            copied,
            present: entries.len() - copied,
        }))
    }

    /// At stop: this release's conntrack entries written, in the previous layout, into the
    /// previous release's map (created and pinned as that release declares it), so that a
    /// downgrade's older agent adopts the flows.
    pub fn keep_for_previous(&mut self) -> Result<Kept, DatapathError> {
        let started = Instant::now();
        let current: HashMap<&mut MapData, CtKey, CtValue> = self.typed(map_names::CONNTRACK)?;
        let entries: Vec<_> = current
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, previous_value(&v)))
            .collect();
        // A map kept by an earlier stop holds nothing newer: a fresh one, since an update of a
        // full LRU map evicts an entry even when its key is there.
        let path = previous_path(&self.pin_root);
        if path.exists() {
            remove_previous(&self.pin_root);
        }
        create_previous(&path)?;
        let written = write_spread(&path, PREVIOUS, &entries, BPF_ANY)?;
        Ok(Kept {
            entries: entries.len(),
            written,
            took: started.elapsed(),
        })
    }

    /// New flows held from now on: the classifiers' slow-path slot emptied, so a packet that
    /// would open a flow is dropped (`DropNoProgram`) until the next agent puts its own slow
    /// path there (the older release shares the slot's pin); established flows go on. For a
    /// downgrade: a flow this release's programs opened after `keep_for_previous` would be in
    /// no map the older programs read, and an application-checked one would be refused as
    /// `unverified`; held, its opening packet is sent again (a TCP SYN after a second) and
    /// meets the older programs.
    pub fn hold_new_flows(&mut self) -> Result<(), DatapathError> {
        let mut slot: ProgramArray<&mut MapData> = self.typed(map_names::SLOW_PROG)?;
        slot.clear_index(&0).map_err(map_err(map_names::SLOW_PROG))
    }

    /// The second pass, once every interface runs this release's programs, then the old pin
    /// removed.
    pub fn finish_migration(&mut self) -> Result<Option<Migrated>, DatapathError> {
        let done = self.migrate_conntrack()?;
        if done.is_some() {
            remove_previous(&self.pin_root);
        }
        Ok(done)
    }
}

fn previous_path(pin_root: &Path) -> PathBuf {
    paths::maps_dir(pin_root).join(PREVIOUS)
}

fn remove_previous(pin_root: &Path) {
    let path = previous_path(pin_root);
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "previous conntrack map not unpinned");
    }
}

/// Creates the previous release's conntrack map and pins it at `path`. A raw `BPF_MAP_CREATE`:
/// aya creates maps only from an object's definition.
fn create_previous(path: &Path) -> Result<(), DatapathError> {
    /// The prefix of `union bpf_attr` that `BPF_MAP_CREATE` reads (include/uapi/linux/bpf.h);
    /// the kernel takes the fields after it as zero.
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        inner_map_fd: u32,
        numa_node: u32,
        map_name: [u8; 16],
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    let mut map_name = [0u8; 16];
    map_name[..PREVIOUS.len()].copy_from_slice(PREVIOUS.as_bytes());
    let attr = MapCreate {
        map_type: BPF_MAP_TYPE_LRU_HASH,
        key_size: size_of::<CtKey>() as u32,
        value_size: PREVIOUS_VALUE as u32,
        max_entries: capacity::CONNTRACK,
        map_flags: BPF_F_NO_COMMON_LRU,
        inner_map_fd: 0,
        numa_node: 0,
        map_name,
    };
    // Safety: `attr` is a valid `bpf_attr` prefix of the size passed, read by the kernel only
    // during the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreate,
            size_of::<MapCreate>() as u32,
        )
    };
    if fd < 0 {
        return Err(map_err(PREVIOUS)(MapError::CreateError {
            name: PREVIOUS.into(),
            io_error: std::io::Error::last_os_error(),
        }));
    }
    // Safety: a new descriptor of our own, owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let map = MapData::from_fd(fd).map_err(map_err(PREVIOUS))?;
    map.pin(path).map_err(|e| {
        map_err(PREVIOUS)(MapError::PinError {
            name: Some(PREVIOUS.into()),
            error: e,
        })
    })
}

/// Writes `entries` into the pinned hash at `path` with `flags`; how many were written (with
/// `BPF_NOEXIST` the others were there already). The conntrack maps keep an LRU list per CPU
/// (`BPF_F_NO_COMMON_LRU`): an update takes its free entry from the list of the CPU it runs
/// on, which holds a CPU's share of the capacity, so a full map's entries written from one CPU
/// would evict each other. The writes are spread: one thread on each CPU we may run on, each
/// its share. An update takes (and on a full list evicts) an entry before it checks the key,
/// so `BPF_NOEXIST` alone does not keep a present entry: a key found is skipped unwritten.
fn write_spread<V: Pod + Send + Sync>(
    path: &Path,
    name: &'static str,
    entries: &[(CtKey, V)],
    flags: u64,
) -> Result<usize, DatapathError> {
    let cpus = allowed_cpus();
    let share = entries.len().div_ceil(cpus.len().max(1)).max(1);
    std::thread::scope(|s| {
        let writers: Vec<_> = entries
            .chunks(share)
            .zip(&cpus)
            .map(|(part, &cpu)| {
                s.spawn(move || -> Result<usize, DatapathError> {
                    pin_to_cpu(cpu);
                    let data = MapData::from_pin(path).map_err(map_err(name))?;
                    let mut map: HashMap<MapData, CtKey, V> =
                        HashMap::try_from(Map::LruHashMap(data)).map_err(map_err(name))?;
                    Ok(part
                        .iter()
                        .filter(|(k, v)| {
                            let present = flags == BPF_NOEXIST && map.get(k, 0).is_ok();
                            !present && map.insert(k, v, flags).is_ok()
                        })
                        .count())
                })
            })
            .collect();
        writers
            .into_iter()
            .map(|w| w.join().expect("map writer thread panicked"))
            .sum()
    })
}

/// The CPUs this process may run on (at least one entry: the current CPU set unknown, any).
fn allowed_cpus() -> Vec<usize> {
    // Safety: a zeroed `cpu_set_t` is an empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // Safety: `set` is a valid `cpu_set_t` of the size passed.
    let ok = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // Safety: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| ok && unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    if cpus.is_empty() { vec![0] } else { cpus }
}

/// Moves the calling thread to `cpu` (best effort: on failure the writes still happen, their
/// spread is only less even).
fn pin_to_cpu(cpu: usize) {
    // Safety: a zeroed `cpu_set_t` is an empty set; `cpu` is below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_entry_keeps_every_field_and_is_not_on_grace() {
        let mut old = [0u8; PREVIOUS_VALUE];
        for (i, b) in old.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let v = upgrade_value(&old);
        // Safety: reading the plain bytes of a plain-data value.
        let bytes: [u8; size_of::<CtValue>()] = unsafe { std::mem::transmute(v) };
        assert_eq!(&bytes[..PREVIOUS_VALUE], &old[..]);
        assert_eq!(v.grace_until_ns, 0);
    }

    #[test]
    fn a_downgrade_keeps_the_previous_layouts_bytes() {
        let mut old = [0u8; PREVIOUS_VALUE];
        for (i, b) in old.iter_mut().enumerate() {
            *b = 200 - i as u8;
        }
        let mut v = upgrade_value(&old);
        v.grace_until_ns = u64::MAX;
        assert_eq!(previous_value(&v), old);
    }
}
