//! Well-known paths, in one place.

use std::path::{Path, PathBuf};

/// Default agent configuration file.
pub const CONFIG: &str = "/etc/wardgate/agent.yaml";
/// Default desired-state file (written by the controller sync or by hand).
pub const DESIRED_STATE: &str = "/var/lib/wardgate/desired.json";

/// Pinned maps live in `<pin_root>/maps/<MAP NAME>`.
pub fn maps_dir(pin_root: &Path) -> PathBuf {
    pin_root.join("maps")
}

/// Pinned TCX links live in `<pin_root>/links/<interface>-<ingress|egress>`.
pub fn link_pin(pin_root: &Path, iface: &str, hook: &str) -> PathBuf {
    pin_root.join("links").join(format!("{iface}-{hook}"))
}
