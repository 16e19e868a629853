//! The agent's bounded resources (`limits:` in its config): its own memory and descriptors,
//! read from /proc/self, and what it keeps for the controller and on disk, sampled every
//! `SAMPLE_EVERY` into the `wardgate_agent_resource_*` gauges (the log budget's use too), with one warning when a usage
//! crosses `WARN_AT` of its limit (and one line when it is back under `CLEAR_AT`). The bounds
//! themselves are enforced where the data is kept (`alerts::Outbox`, `flow_report::FlowQueue`,
//! `lkg::write`) and by the kernel (the unit's `MemoryMax=`, the open-file limit set here).

use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::{alerts::AlertQueue, config::LimitsConfig, flow_report::FlowQueue, metrics::Live};

/// How often usage is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// A usage at or over this share of its limit is warned about, once.
pub const WARN_AT: f64 = 0.8;
/// ... until it falls under this share again (no warning per sample around the line).
pub const CLEAR_AT: f64 = 0.7;

/// The agent's resident memory (`VmRSS` of /proc/self/status), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The agent's open file descriptors (/proc/self/fd, less the one reading it).
pub fn open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

/// The agent's cgroup v2 directory (the `0::` line of /proc/self/cgroup); `None` on a host
/// without the unified hierarchy.
fn cgroup_dir() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let dir = PathBuf::from("/sys/fs/cgroup").join(cgroup_path(&text)?.trim_start_matches('/'));
    dir.join("memory.current").exists().then_some(dir)
}

/// The cgroup v2 path in /proc/self/cgroup's `text`.
pub fn cgroup_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// A cgroup file holding one number; `max` (no limit) and a missing file are `None`.
fn cgroup_value(dir: &std::path::Path, name: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The soft open-file limit in force.
pub fn open_files_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: getrlimit writes the struct it is given.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0).then_some(r.rlim_cur)
}

/// Sets the soft open-file limit to `want` (at most the hard limit, which only a privileged
/// process could raise). Returns the limit in force.
pub fn set_open_files(want: u64) -> std::io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: getrlimit/setrlimit read and write the struct they are given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    r.rlim_cur = want.min(r.rlim_max);
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r.rlim_cur)
}

/// Whether a usage is over its warning line: says so once when it crosses `WARN_AT`, and once
/// when it is back under `CLEAR_AT`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermark {
    high: bool,
}

/// What a sample changed about a watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crossing {
    Up,
    Down,
}

impl Watermark {
    pub fn observe(&mut self, usage: u64, limit: u64) -> Option<Crossing> {
        if limit == 0 {
            return None;
        }
        let share = usage as f64 / limit as f64;
        if !self.high && share >= WARN_AT {
            self.high = true;
            Some(Crossing::Up)
        } else if self.high && share < CLEAR_AT {
            self.high = false;
            Some(Crossing::Down)
        } else {
            None
        }
    }
}

/// A resource the sampler follows: its metric label and unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// Resident memory (bytes).
    Memory,
    /// Open file descriptors.
    OpenFiles,
    /// Alerts in the outbox (entries).
    OutboxAlerts,
    /// Encoded bytes of those alerts.
    OutboxBytes,
    /// The outbox file and its write-ahead log (bytes).
    OutboxFile,
    /// Flow records waiting (entries).
    FlowRecords,
    /// The last-known-good desired-state file (bytes).
    StateFile,
    /// Log output in the current minute (bytes).
    Log,
    /// The cgroup's memory (`memory.current` against `memory.max`, the unit's `MemoryMax=`):
    /// the agent's and the BPF maps' it created, what the kernel enforces.
    CgroupMemory,
    /// The cgroup's tasks (`pids.current` against `pids.max`, the unit's `TasksMax=`).
    Tasks,
}

impl Resource {
    /// The `resource` label.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::OpenFiles => "open_files",
            Resource::OutboxAlerts | Resource::OutboxBytes => "outbox",
            Resource::OutboxFile => "outbox_file",
            Resource::FlowRecords => "flow_records",
            Resource::StateFile => "state_file",
            Resource::Log => "log_per_minute",
            Resource::CgroupMemory => "cgroup_memory",
            Resource::Tasks => "tasks",
        }
    }

    /// Counted in bytes (else in entries).
    pub fn bytes(self) -> bool {
        !matches!(
            self,
            Resource::OpenFiles | Resource::OutboxAlerts | Resource::FlowRecords | Resource::Tasks
        )
    }

    /// The config key that bounds it.
    pub fn key(self) -> &'static str {
        match self {
            Resource::Memory => "limits.memory",
            Resource::OpenFiles => "limits.open_files",
            Resource::OutboxAlerts => "limits.outbox_alerts",
            Resource::OutboxBytes | Resource::OutboxFile => "limits.outbox_bytes",
            Resource::FlowRecords => "limits.flow_records",
            Resource::StateFile => "limits.state_bytes",
            Resource::Log => "limits.log_bytes_per_minute",
            Resource::CgroupMemory => "MemoryMax= (and limits.memory)",
            Resource::Tasks => "TasksMax=",
        }
    }
}

/// What the sampler reads.
pub struct Usage {
    pub limits: LimitsConfig,
    pub live: Live,
    pub outbox: Option<Arc<AlertQueue>>,
    pub flows: Option<Arc<FlowQueue>>,
    /// The last-known-good file (only with a controller: without one the operator writes it).
    pub state_file: Option<PathBuf>,
    marks: std::collections::BTreeMap<Resource, Watermark>,
    /// Outbox write failures already counted.
    outbox_failures: u64,
}

impl Usage {
    pub fn new(
        limits: LimitsConfig,
        live: Live,
        outbox: Option<Arc<AlertQueue>>,
        flows: Option<Arc<FlowQueue>>,
        state_file: Option<PathBuf>,
    ) -> Self {
        Usage {
            limits,
            live,
            outbox,
            flows,
            state_file,
            marks: Default::default(),
            outbox_failures: 0,
        }
    }

    /// Every resource's (usage, limit) now.
    pub fn read(&mut self) -> Vec<(Resource, u64, u64)> {
        let l = &self.limits;
        let mut v = Vec::new();
        if let Some(rss) = resident_bytes() {
            v.push((Resource::Memory, rss, l.memory.0));
        }
        if let (Some(fds), Some(max)) = (open_fds(), open_files_limit()) {
            v.push((Resource::OpenFiles, fds, max));
        }
        // Only what has a limit (a cgroup of `max` is bounded by nothing to warn about).
        if let Some(dir) = cgroup_dir() {
            for (r, current, max) in [
                (Resource::CgroupMemory, "memory.current", "memory.max"),
                (Resource::Tasks, "pids.current", "pids.max"),
            ] {
                if let (Some(c), Some(m)) = (cgroup_value(&dir, current), cgroup_value(&dir, max)) {
                    v.push((r, c, m));
                }
            }
        }
        if let Some(q) = &self.outbox {
            let (len, bytes, file, limits, failures) = {
                let o = q.lock();
                (
                    o.len(),
                    o.bytes(),
                    o.file_bytes(),
                    o.limits(),
                    o.write_failures(),
                )
            };
            v.push((Resource::OutboxAlerts, len as u64, limits.alerts as u64));
            v.push((Resource::OutboxBytes, bytes, limits.bytes));
            v.push((Resource::OutboxFile, file, limits.file_bytes()));
            self.live
                .disk_write_refused(FILE_OUTBOX, failures - self.outbox_failures);
            self.outbox_failures = failures;
        }
        if let Some(q) = &self.flows {
            v.push((Resource::FlowRecords, q.len() as u64, q.cap() as u64));
        }
        if let Some(p) = &self.state_file {
            let size = std::fs::metadata(p).map_or(0, |m| m.len());
            v.push((Resource::StateFile, size, l.state_bytes.0));
        }
        let log = wardgate_daemon::log::budget();
        if log.limit() > 0 {
            v.push((Resource::Log, log.used(), log.limit()));
        }
        v
    }

    /// Samples every resource into the gauges, and logs a crossing of the warning line (and
    /// log lines the budget kept out since the last sample).
    pub fn sample(&mut self) {
        let unwritten = wardgate_daemon::log::budget().take_unreported();
        if unwritten > 0 {
            tracing::warn!(
                lines = unwritten,
                limit = wardgate_daemon::log::budget().limit(),
                "log lines not written: over limits.log_bytes_per_minute (counted in \
                 wardgate_agent_log_lines_suppressed_total)"
            );
        }
        for (r, usage, limit) in self.read() {
            self.live.resource(r, usage, limit);
            match self.marks.entry(r).or_default().observe(usage, limit) {
                Some(Crossing::Up) => tracing::warn!(
                    resource = r.name(),
                    usage,
                    limit,
                    key = r.key(),
                    "{} at {}% of its limit: raise {} or find what grows",
                    r.name(),
                    usage * 100 / limit,
                    r.key()
                ),
                Some(Crossing::Down) => tracing::info!(
                    resource = r.name(),
                    usage,
                    limit,
                    "{} back under {}% of its limit",
                    r.name(),
                    (CLEAR_AT * 100.0) as u32
                ),
                None => {}
            }
        }
    }

    /// Samples every `SAMPLE_EVERY` until the task is dropped.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample();
        }
    }
}

/// `file` label of the last-known-good desired-state file.
pub const FILE_STATE: &str = "state";
/// `file` label of the alert outbox.
pub const FILE_OUTBOX: &str = "outbox";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crossing_is_said_once_each_way() {
        let mut m = Watermark::default();
        assert_eq!(m.observe(79, 100), None);
        assert_eq!(m.observe(80, 100), Some(Crossing::Up));
        assert_eq!(m.observe(95, 100), None, "said once");
        assert_eq!(m.observe(75, 100), None, "between the lines: still high");
        assert_eq!(m.observe(69, 100), Some(Crossing::Down));
        assert_eq!(m.observe(10, 100), None);
        assert_eq!(m.observe(100, 100), Some(Crossing::Up));
        assert_eq!(m.observe(5, 0), None, "no limit, nothing to say");
    }

    #[test]
    fn the_cgroup_v2_path_is_the_unified_line() {
        let hybrid = "4:memory:/x\n1:cpu:/\n0::/system.slice/wardgate-agent.service\n";
        assert_eq!(
            cgroup_path(hybrid),
            Some("/system.slice/wardgate-agent.service")
        );
        assert_eq!(cgroup_path("4:memory:/x\n"), None, "cgroup v1 only");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("pids.max"), "64\n").unwrap();
        assert_eq!(cgroup_value(dir.path(), "memory.max"), None, "no limit");
        assert_eq!(cgroup_value(dir.path(), "pids.max"), Some(64));
        assert_eq!(cgroup_value(dir.path(), "pids.current"), None);
    }

    #[test]
    fn the_agents_own_memory_and_descriptors_are_read() {
        let rss = resident_bytes().unwrap();
        // A test binary resides in at least a megabyte and far less than a gigabyte.
        assert!((1 << 20..1 << 30).contains(&rss), "{rss}");
        let before = open_fds().unwrap();
        let files: Vec<_> = (0..5).map(|_| tempfile::tempfile().unwrap()).collect();
        // Other test threads may open files meanwhile: at least ours are counted.
        assert!(open_fds().unwrap() >= before + 5);
        drop(files);
        assert!(open_files_limit().unwrap() > 0);
    }
}
