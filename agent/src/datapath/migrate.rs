//! Conntrack carried across an upgrade that changed its layout. Map names are versioned: a
//! release whose `CtValue` grew pins a new map (`WG_CT_V5`) beside the previous release's
//! (`WG_CT_V4`). Without a copy every established flow would start again from nothing under the
//! new programs: allowed flows are admitted again by their rule, but a flow whose rule checks
//! its application (DICOM, HL7) has its handshake and first bytes long gone and is refused as
//! `unverified`, and the flow counters restart.
//!
//! Two passes, both with `BPF_NOEXIST` so an entry the new programs wrote is never overwritten:
//! at load, before the new programs run on any hook (the previous release's programs still
//! fill the old map), and once every interface runs the new programs (what the old ones
//! opened in between). Then the old pin is removed: nothing reads or writes it any more.

use std::path::Path;

use aya::maps::{HashMap, Map, MapData};
use wardgate_common::{CtKey, CtValue, map_names};

use super::{Datapath, DatapathError, map_err};
use crate::paths;

/// The previous release's conntrack map: same key, the value without `grace_until_ns`.
const PREVIOUS: &str = "WG_CT_V4";
const PREVIOUS_VALUE: usize = 88;

/// The previous value's bytes (88: every field of `CtValue` up to `isn_seen`, same offsets).
type PreviousValue = [u8; PREVIOUS_VALUE];

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

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Entries copied into the new map.
    pub copied: usize,
    /// Entries the new map already had (written by the new programs): left as they are.
    pub present: usize,
}

impl Datapath {
    /// Copies the previous release's conntrack entries into this release's map, if its pin is
    /// there; `None` when there is nothing to migrate.
    pub fn migrate_conntrack(&mut self) -> Result<Option<Migrated>, DatapathError> {
        let path = paths::maps_dir(&self.pin_root).join(PREVIOUS);
        if !path.exists() {
            return Ok(None);
        }
        let data = MapData::from_pin(&path).map_err(map_err(PREVIOUS))?;
        let old: HashMap<MapData, CtKey, PreviousValue> =
            HashMap::try_from(Map::LruHashMap(data)).map_err(map_err(PREVIOUS))?;
        let mut new: HashMap<&mut MapData, CtKey, CtValue> = self.typed(map_names::CONNTRACK)?;
        let mut done = Migrated::default();
        for entry in old.iter() {
            // An entry evicted or expired while we walk is simply gone.
            let Ok((key, value)) = entry else { continue };
            const BPF_NOEXIST: u64 = 1;
            match new.insert(&key, &upgrade_value(&value), BPF_NOEXIST) {
                Ok(()) => done.copied += 1,
                Err(_) => done.present += 1,
            }
        }
        Ok(Some(done))
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

fn remove_previous(pin_root: &Path) {
    let path = paths::maps_dir(pin_root).join(PREVIOUS);
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "previous conntrack map not unpinned");
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
}
