//! Whether this stop is a downgrade's: a package downgrade replaces the agent's binary on disk
//! with an older release's before it restarts the agent (dpkg unpacks, then postinst
//! `try-restart`s), so at SIGTERM the file this process was started from says what starts next.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// How long the binary on disk may take to say its version.
const VERSION_LIMIT: Duration = Duration::from_secs(2);

/// The older release the agent's binary on disk now is, if it was replaced by one (`None`
/// when it is this process's own file, the same or a newer release, or cannot say).
pub fn next_is_older() -> Option<String> {
    let exe = replaced_exe()?;
    let said = version_of(&exe)?;
    older(&said, env!("CARGO_PKG_VERSION")).then_some(said)
}

/// The path this process was started from, if the file there was replaced since (Linux shows
/// the running, unlinked file as `PATH (deleted)`).
fn replaced_exe() -> Option<PathBuf> {
    let link = std::fs::read_link("/proc/self/exe").ok()?;
    let path = link.to_str()?.strip_suffix(" (deleted)")?;
    Some(PathBuf::from(path))
}

/// `PATH --version`'s version (`wardgate-agent X.Y.Z`), bounded in time.
fn version_of(exe: &Path) -> Option<String> {
    let mut child = Command::new(exe)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + VERSION_LIMIT;
    while child.try_wait().ok()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().strip_prefix("wardgate-agent ")?.to_string())
}

/// Whether release `a` is older than `b` (`MAJOR.MINOR.PATCH`, pre-release tags ignored); a
/// version that does not parse is not older.
fn older(a: &str, b: &str) -> bool {
    fn parse(v: &str) -> Option<[u64; 3]> {
        let core = v.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let v = [parts.next()??, parts.next()??, parts.next()??];
        parts.next().is_none().then_some(v)
    }
    matches!((parse(a), parse(b)), (Some(a), Some(b)) if a < b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_release_is_told_from_the_same_a_newer_and_nonsense() {
        assert!(older("0.1.0", "0.2.0"));
        assert!(older("0.9.9", "1.0.0"));
        assert!(older("0.2.0", "0.10.0"), "numbers, not text");
        assert!(!older("0.2.0", "0.2.0"));
        assert!(!older("0.3.0", "0.2.0"));
        assert!(!older("0.1", "0.2.0"));
        assert!(!older("garbage", "0.2.0"));
        assert!(older("0.1.0-rc1", "0.2.0"));
    }

    #[test]
    fn a_running_test_binary_was_not_replaced() {
        assert_eq!(replaced_exe(), None);
        assert_eq!(next_is_older(), None);
    }
}
