//! The real `wardgate-agent` binary as a test runs it: in a namespace, its log in a file the
//! test waits on, killed when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running agent; killed on drop.
pub struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    /// `bin --netns NS run --config CONFIG` (info logs on stderr into `log`). `bin` is the
    /// caller's `env!("CARGO_BIN_EXE_wardgate-agent")`.
    pub fn start(bin: &Path, ns: &str, config: &Path, log: PathBuf) -> AgentProcess {
        let child = Command::new(bin)
            .args(["--netns", ns, "run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start agent");
        AgentProcess { child, log }
    }

    /// The agent's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the agent has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A graceful stop: SIGTERM, then waits (bounded by `limit`; panics with the log past it)
    /// for the agent to exit. Its exit status.
    pub fn stop(&mut self, limit: Duration) -> std::process::ExitStatus {
        // Safety: kill on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to the agent");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent still running {limit:?} after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 30 s) until the log contains `needle`; panics with the log otherwise.
    pub fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent never logged `{needle}`:\n{}", self.log_text());
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
