//! The last-known-good copy of the policy: the desired-state file, written by the map writer
//! after a generation from the controller is in the maps, read at start so a gateway that
//! reboots during a controller outage enforces its last policy before any link comes up.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use wardgate_policy::DesiredState;

/// Writes `state` to `path` so that a crash at any moment leaves either the old file or the
/// new one, complete, on disk: a temporary file beside it, fsynced, renamed over it, and the
/// directory fsynced so the rename itself survives a power cut. A state larger than `budget`
/// bytes (`limits.state_bytes`) is not written (the old copy stays); neither is one the disk
/// cannot take (the temporary file is removed). Returns the bytes written.
pub fn write(path: &Path, state: &DesiredState, budget: u64) -> anyhow::Result<u64> {
    let json = state.to_json();
    let len = json.len() as u64;
    if len > budget {
        anyhow::bail!(
            "last-known-good copy {} not written: generation {} is {len} bytes, over \
             limits.state_bytes ({budget}); the file keeps the previous generation",
            path.display(),
            state.generation
        );
    }
    let tmp = path.with_extension("tmp");
    write_atomic(path, &tmp, json.as_bytes()).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(len)
}

fn write_atomic(path: &Path, tmp: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut f =
        std::fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(generation: u32) -> DesiredState {
        let mut s = wardgate_policy::lower::lower("gw", generation, vec![], vec![]).unwrap();
        s.epoch = "e1".into();
        s.content_hash = "h1".into();
        s
    }

    #[test]
    fn the_copy_round_trips_with_its_epoch_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/desired.json");
        write(&path, &state(3), 1 << 20).unwrap();
        let len = write(&path, &state(4), 1 << 20).unwrap();
        assert_eq!(len, std::fs::metadata(&path).unwrap().len());
        let back = DesiredState::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, state(4));
        assert!(!path.with_extension("tmp").exists(), "no temporary left");
    }

    #[test]
    fn an_unwritable_place_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let e = write(&blocker.join("desired.json"), &state(1), 1 << 20).unwrap_err();
        assert!(format!("{e:#}").contains("file"), "{e:#}");
    }

    #[test]
    fn a_state_over_its_budget_is_not_written_and_the_old_copy_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desired.json");
        let len = write(&path, &state(3), 1 << 20).unwrap();
        let e = write(&path, &state(4), len - 1).unwrap_err();
        assert!(format!("{e:#}").contains("limits.state_bytes"), "{e:#}");
        let back = DesiredState::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back.generation, 3, "the previous generation stays on disk");
        assert!(!path.with_extension("tmp").exists());
    }
}
