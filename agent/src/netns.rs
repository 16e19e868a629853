//! Entering a named network namespace (`ip netns add NAME`) for the calling thread.
//!
//! Only the network namespace changes, not the mount namespace, so /sys/fs/bpf (and the pins
//! there) stay the host's: a restarted agent in the same namespace finds its pins again.

use std::{fs::File, io, os::fd::AsRawFd as _, path::Path};

/// Moves the calling thread into `/run/netns/<name>`. Threads created afterwards inherit it,
/// so call this before starting a runtime.
pub fn enter(name: &str) -> io::Result<()> {
    let path = Path::new("/run/netns").join(name);
    let file = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
    // Safety: setns on a valid namespace fd; affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("setns({}): {e}", path.display()),
        ));
    }
    Ok(())
}
