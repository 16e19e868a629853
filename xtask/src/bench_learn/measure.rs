//! One bounded run of a command: wall time, CPU time and peak RSS from wait4's rusage (the
//! child's own figures; /usr/bin/time would add a process and its own rounding).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::cmd;

#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub wall: Duration,
    pub cpu: Duration,
    pub max_rss_kib: i64,
}

/// Runs `c` with stdout and stderr to `log`, killed past `limit`; a failure is an error.
pub fn run(mut c: Command, log: &Path, limit: Duration) -> anyhow::Result<Run> {
    let shown = cmd::display(&c);
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    c.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let start = Instant::now();
    let child = c.spawn().with_context(|| format!("starting `{shown}`"))?;
    let pid = child.id() as libc::pid_t;
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills; pid is our own unreaped child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let got = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if got == pid {
            let wall = start.elapsed();
            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                bail!(
                    "`{shown}` failed (wait status {status}); output in {}",
                    log.display()
                );
            }
            let tv = |t: libc::timeval| {
                Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
            };
            return Ok(Run {
                wall,
                cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
                max_rss_kib: usage.ru_maxrss,
            });
        }
        if got < 0 {
            bail!("wait4 on `{shown}`: {}", std::io::Error::last_os_error());
        }
        if start.elapsed() > limit {
            // SAFETY: the child is not reaped yet, so the pid is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            unsafe { libc::waitpid(pid, &mut status, 0) };
            bail!("`{shown}` ran past {} s; killed", limit.as_secs());
        }
        // Polling costs at most 1 ms on runs of seconds.
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
