//! A streaming standby of a test [`Server`]: `pg_basebackup -R` from the primary into its own
//! temporary directory, started with `pg_ctl` on its own port; promoted by the test (a
//! database failover, as Patroni or an operator does it), stopped at once when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use super::{Server, as_user, chown, free_port};

/// A running standby; stopped (immediate shutdown) and removed when dropped.
pub struct Standby {
    bin: PathBuf,
    user: Option<(u32, u32)>,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Runs `bin/name args` as `user`; its output. Panics with its output when it fails.
fn run(bin: &Path, user: Option<(u32, u32)>, name: &str, args: &[&str]) -> Output {
    let out = as_user(Command::new(bin.join(name)).args(args), user)
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Standby {
    /// A standby of `primary`, streaming from it, accepting read-only connections.
    pub fn of(primary: &Server) -> Standby {
        let dir = tempfile::Builder::new()
            .prefix("wardgate-pg-standby-")
            .tempdir()
            .expect("creating the standby's temporary directory");
        let user = primary.user();
        if let Some(user) = user {
            chown(dir.path(), user);
        }
        let data = dir.path().join("data");
        let port = free_port();
        let bin = primary.bin_dir().to_path_buf();
        let p = primary.port().to_string();
        run(
            &bin,
            user,
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &p,
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-R",
                // A fast checkpoint to start from (a spread one takes minutes).
                "-c",
                "fast",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c max_connections=300 -c fsync=off",
            dir.path().display()
        );
        let log = dir.path().join("standby.log");
        run(
            &bin,
            user,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        Standby {
            bin,
            user,
            data,
            port,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `sql` on the standby's `postgres` database (unaligned, tuples only); its output.
    pub fn psql(&self, sql: &str) -> String {
        let port = self.port.to_string();
        let out = run(
            &self.bin,
            None,
            "psql",
            &[
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits (at most `within`) until the standby has replayed the primary's WAL up to where
    /// it is now: a planned switchover's first step.
    pub fn catch_up(&self, primary: &Server, within: Duration) {
        let lsn = primary.psql("postgres", "SELECT pg_current_wal_lsn()");
        let started = Instant::now();
        while self.psql(&format!(
            "SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
        )) != "t"
        {
            assert!(
                started.elapsed() < within,
                "the standby did not replay up to {lsn} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Promotes the standby to primary (`pg_ctl promote`, waiting until it is done).
    pub fn promote(&self) {
        run(
            &self.bin,
            self.user,
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "promote",
            ],
        );
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]);
        let _ = as_user(&mut cmd, self.user).output();
    }
}
