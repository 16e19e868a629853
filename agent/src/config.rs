//! Agent configuration: typed, with documented defaults, unknown keys rejected.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ipnet::IpNet;
use serde::Deserialize;
use wardgate_policy::Proto;

use crate::paths;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Device-facing interfaces; the datapath is attached to ingress and egress of each.
    pub interfaces: Vec<String>,
    /// bpffs directory for pinned maps and links. Default `/sys/fs/bpf/wardgate`.
    #[serde(default = "default_pin_root")]
    pub pin_root: PathBuf,
    /// Desired-state file, applied at start. With a controller, the last-known-good copy the
    /// agent writes after each applied generation (read only at start); without one, the
    /// operator's input, re-applied on change or SIGHUP. Default `/var/lib/wardgate/desired.json`.
    #[serde(default = "default_desired_state")]
    pub desired_state: PathBuf,
    /// What happens to IP traffic of addresses that are not known devices. Default `pass`.
    #[serde(default)]
    pub unknown_devices: Action,
    /// What happens to EtherTypes other than IPv4, IPv6 and ARP. Default `pass`.
    #[serde(default)]
    pub non_ip: Action,
    /// 802.1Q / 802.1ad tagged frames on a device-facing interface (a trunk): `enforce` the IP
    /// packet inside (up to two tags; a third is dropped), or `drop` every tagged frame.
    /// Default `enforce`. Never passed unparsed.
    #[serde(default)]
    pub vlan_tagged: VlanAction,
    #[serde(default)]
    pub events: EventConfig,
    #[serde(default)]
    pub watchdog: WatchdogConfig,
    /// `dns:` peers: how long an address a device's resolver answered stays allowed, and how
    /// many one device may hold.
    #[serde(default)]
    pub dns: DnsConfig,
    /// What device traffic meets while no policy is in the maps at all (first boot: empty
    /// bpffs and no last-known-good desired state): `hold` (default) drops device traffic,
    /// except ARP, IPv6 ND, DHCP and the management allowlist, until the first generation is
    /// applied; `closed` drops DHCP and non-IP frames too; `open` lets `unknown_devices` and
    /// `non_ip` decide from the start (every device is unknown until a policy arrives).
    #[serde(default)]
    pub fail_mode: FailMode,
    /// Flows that are never blocked, whatever the policy or mode (gateway SSH, controller).
    #[serde(default)]
    pub management: Vec<MgmtRule>,
    /// Policy sync from a controller. Without it the agent only applies `desired_state`.
    #[serde(default)]
    pub controller: Option<ControllerConfig>,
    /// Prometheus metrics on `GET /metrics`. Without it the agent serves none.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Live flow records and the detectors over them.
    #[serde(default)]
    pub detection: DetectionConfig,
    /// Flow recording in the datapath (flow-open records, counters, first payload bytes).
    #[serde(default)]
    pub recording: RecordingConfig,
    /// Bounds on the memory, files and disk the agent uses.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// A size in bytes: a number, or a number with `K`, `M` or `G` (powers of 1024, as systemd
/// reads `MemoryMax=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub const fn mib(n: u64) -> Self {
        Size(n << 20)
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size (e.g. 1048576, 512K, 64M, 1G)"))?;
        let shift = match unit.trim() {
            "" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            u => return Err(format!("`{s}`: unit `{u}` is not one of K, M, G")),
        };
        n.checked_mul(1 << shift)
            .map(Size)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => write!(f, "0"),
            n if n % (1 << 30) == 0 => write!(f, "{}G", n >> 30),
            n if n % (1 << 20) == 0 => write!(f, "{}M", n >> 20),
            n if n % (1 << 10) == 0 => write!(f, "{}K", n >> 10),
            n => write!(f, "{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Bounds on what the agent holds, so a gateway left alone for years neither fills its disk nor
/// runs out of memory, and so the usage shows in metrics (and a warning, at 80%) before a bound
/// is reached. `memory` and `open_files` are enforced by the kernel: the unit sets the same
/// numbers (`MemoryMax=`, `LimitNOFILE=`), and the agent lowers its own open-file limit to
/// `open_files` at start; the rest the agent enforces itself. At a bound nothing that enforces
/// stops: queues drop (lowest severity first, oldest first within it) and files are not
/// written, each counted.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// The agent's memory (the unit's `MemoryMax=`; the cgroup also holds the BPF maps the
    /// first start creates, 77 MiB). Warned at 80% of resident memory. Default 1G.
    #[serde(default = "default_memory")]
    pub memory: Size,
    /// Open file descriptors (the unit's `LimitNOFILE=`). Default 1024.
    #[serde(default = "default_open_files")]
    pub open_files: u64,
    /// Alerts waiting for the controller. Default 10000.
    #[serde(default = "default_outbox_alerts")]
    pub outbox_alerts: usize,
    /// Their encoded size. The outbox database is kept under twice this plus 1M (SQLite's page
    /// limit; a write past it is refused and counted, the alerts stay in memory), its log
    /// under this plus 1M. Default 64M.
    #[serde(default = "default_outbox_bytes")]
    pub outbox_bytes: Size,
    /// Flow records waiting for the controller (about 200 bytes each in memory). Default
    /// 100000.
    #[serde(default = "default_flow_records")]
    pub flow_records: usize,
    /// The last-known-good desired-state file: a larger policy is enforced but not written
    /// (counted, logged). Default 64M.
    #[serde(default = "default_state_bytes")]
    pub state_bytes: Size,
    /// Log output per minute (to stderr, so to the journal): past it lines below WARN are not
    /// written, past twice it none are, each counted; 0 turns the budget off. Default 1M.
    #[serde(default = "default_log_bytes_per_minute")]
    pub log_bytes_per_minute: Size,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            memory: default_memory(),
            open_files: default_open_files(),
            outbox_alerts: default_outbox_alerts(),
            outbox_bytes: default_outbox_bytes(),
            flow_records: default_flow_records(),
            state_bytes: default_state_bytes(),
            log_bytes_per_minute: default_log_bytes_per_minute(),
        }
    }
}

/// The smallest accepted value of each limit: below it the agent could not start or do its job.
pub const MIN_MEMORY: Size = Size::mib(128);
pub const MIN_OPEN_FILES: u64 = 256;
pub const MIN_STATE_BYTES: Size = Size::mib(1);
pub const MIN_OUTBOX_BYTES: Size = Size(64 << 10);
pub const MIN_LOG_BYTES: Size = Size(64 << 10);

fn default_memory() -> Size {
    Size(1 << 30)
}
fn default_open_files() -> u64 {
    1024
}
fn default_outbox_alerts() -> usize {
    crate::alerts::OUTBOX_CAP
}
fn default_outbox_bytes() -> Size {
    Size::mib(64)
}
fn default_flow_records() -> usize {
    crate::flow_report::DEFAULT_CAP
}
fn default_state_bytes() -> Size {
    Size::mib(64)
}
fn default_log_bytes_per_minute() -> Size {
    Size::mib(1)
}

impl LimitsConfig {
    /// Every bound at or above its minimum, the error naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        at_least(
            "memory",
            self.memory,
            MIN_MEMORY,
            "the BPF maps alone take 77M",
        )?;
        at_least(
            "open_files",
            self.open_files,
            MIN_OPEN_FILES,
            "every pinned map, program and link is a descriptor",
        )?;
        at_least("outbox_alerts", self.outbox_alerts, 1, "alerts need room")?;
        at_least(
            "outbox_bytes",
            self.outbox_bytes,
            MIN_OUTBOX_BYTES,
            "an alert can be several kilobytes",
        )?;
        at_least("flow_records", self.flow_records, 1, "records need room")?;
        // 0 turns the log budget off.
        if self.log_bytes_per_minute.0 != 0 {
            at_least(
                "log_bytes_per_minute",
                self.log_bytes_per_minute,
                MIN_LOG_BYTES,
                "a start alone logs a few kilobytes; 0 turns the budget off",
            )?;
        }
        at_least(
            "state_bytes",
            self.state_bytes,
            MIN_STATE_BYTES,
            "a site's policy is hundreds of kilobytes",
        )
    }
}

/// `limits.KEY` must be at least `min`; the error says why.
fn at_least<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
    why: &str,
) -> anyhow::Result<()> {
    if value < min {
        anyhow::bail!("limits.{key}: {value} is below the minimum {min} ({why})");
    }
    Ok(())
}

/// Flow recording in the datapath. Off, the datapath sends no flow-open or payload records and
/// folds no flow cache counts into conntrack (enforcement is unchanged).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Server ports whose new TCP flows are inspected (first payload bytes to the agent, for
    /// DICOM and HL7 identity) when no rule decides for the device (learn, monitor would-deny);
    /// flows admitted by a rule are inspected when the rule has an app constraint. At most
    /// `wardgate_common::INSPECT_PORTS`. Default DICOM 104 and 11112, HL7/MLLP 2575.
    #[serde(default = "default_inspect_ports")]
    pub inspect_ports: Vec<u16>,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            enabled: true,
            inspect_ports: default_inspect_ports(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_inspect_ports() -> Vec<u16> {
    vec![104, 11112, 2575]
}

/// The detectors over live flow records (`flows/`). Findings go to the alert outbox.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DetectionConfig {
    /// Baselines (a `learn --out` directory or its `baselines.json`): enables the baseline
    /// detectors (new peer/service/protocol/app, volume, beacon). Default none: only the
    /// detectors that need none (scans, fan-out, class protocols, floods, spoofing) run.
    #[serde(default)]
    pub baselines: Option<PathBuf>,
    /// Detector parameters (YAML, any subset of the defaults, as `replay --config` reads).
    #[serde(default)]
    pub config: Option<PathBuf>,
}

/// The metrics endpoint (plain HTTP: bind it to loopback or a management address).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// e.g. `127.0.0.1:9464`
    pub listen: std::net::SocketAddr,
    /// How often map fill levels are sampled (a walk over every key of the large maps:
    /// about 0.8 s of one core with a full conntrack map). Default 60; at least 1.
    #[serde(default = "default_map_fill_every_s")]
    pub map_fill_every_s: u32,
}

impl MetricsConfig {
    pub fn map_fill_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.map_fill_every_s.max(1)))
    }
}

fn default_map_fill_every_s() -> u32 {
    60
}

/// Where the controller is and which gateway this agent is (mTLS with the gateway's
/// certificate: `<certs>/ca.pem`, `<certs>/gateway-<gateway>.pem` and `.key`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// One controller (`https://controller.hospital.example:7443`) or a list of replicas of
    /// one store (`[https://ctl-a:7443, https://ctl-b:7443]`): the agent connects to the first
    /// that answers and moves to the next in order when a connection fails or its stream
    /// breaks.
    pub address: Addresses,
    pub certs: PathBuf,
    pub gateway: String,
    /// The name the controller's certificate must carry (`wardctl certs init --server-name`).
    /// Default "localhost", which suits only the demo.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// Alerts waiting for the controller (SQLite). Default `alerts-outbox.sqlite` beside
    /// `desired_state`.
    #[serde(default)]
    pub outbox: Option<PathBuf>,
    /// How often flow records are sent to the controller (sooner when a full batch of 4096
    /// waits). Default 30000; at least 100.
    #[serde(default = "default_flow_report_every_ms")]
    pub flow_report_every_ms: u64,
    /// How often the gateway's health (release, fail-open watchdog) is reported again with
    /// the applied generation; a watchdog change is reported at once (looked at every
    /// second). Default 60000; at least 1000.
    #[serde(default = "default_health_report_every_ms")]
    pub health_report_every_ms: u64,
    /// How long one attempt to reach a controller may take (TCP, TLS, registering) before
    /// the next address is tried. Default 5000; at least 100.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Renewing the gateway's certificate through the controller.
    #[serde(default)]
    pub renewal: RenewalConfig,
}

/// The controller addresses of `controller.address`: a string, or a non-empty list of
/// distinct strings, in the order they are tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addresses(Vec<String>);

impl Addresses {
    /// `list` in order; refused when empty, with an empty entry or a repeated one.
    pub fn new(list: Vec<String>) -> Result<Self, String> {
        if list.is_empty() {
            return Err(
                "controller.address: the list is empty; give one controller \
                        (https://HOST:PORT) or a list of its replicas"
                    .into(),
            );
        }
        for (i, a) in list.iter().enumerate() {
            if a.trim().is_empty() {
                return Err(format!("controller.address: entry {} is empty", i + 1));
            }
            if list[..i].contains(a) {
                return Err(format!("controller.address: `{a}` is listed twice"));
            }
        }
        Ok(Addresses(list))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true (an empty list is refused); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One address.
impl From<String> for Addresses {
    fn from(a: String) -> Self {
        Addresses(vec![a])
    }
}

impl From<&str> for Addresses {
    fn from(a: &str) -> Self {
        Addresses(vec![a.to_string()])
    }
}

impl std::fmt::Display for Addresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

impl<'de> Deserialize<'de> for Addresses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            List(Vec<String>),
        }
        let list = match Raw::deserialize(d)? {
            Raw::One(a) => vec![a],
            Raw::List(l) => l,
        };
        Addresses::new(list).map_err(serde::de::Error::custom)
    }
}

/// The gateway's certificate is renewed through the controller (a new key each time) once two
/// thirds of its lifetime have passed; failures are retried with exponential backoff and
/// jitter between `retry_min_ms` and `retry_max_ms`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RenewalConfig {
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Default 5000.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    /// Default 3600000 (an hour).
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// A warning is logged (at every attempt) once fewer days than this are left, or a third
    /// of the certificate's lifetime if that is shorter: the renewal is overdue. Default 30.
    #[serde(default = "default_warn_days")]
    pub warn_days: u32,
}

impl Default for RenewalConfig {
    fn default() -> Self {
        RenewalConfig {
            enabled: true,
            retry_min_ms: default_retry_min_ms(),
            retry_max_ms: default_retry_max_ms(),
            warn_days: default_warn_days(),
        }
    }
}

fn default_retry_min_ms() -> u64 {
    5_000
}

fn default_retry_max_ms() -> u64 {
    3_600_000
}

fn default_warn_days() -> u32 {
    30
}

fn default_flow_report_every_ms() -> u64 {
    30_000
}

fn default_health_report_every_ms() -> u64 {
    60_000
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_server_name() -> String {
    "localhost".into()
}

impl ControllerConfig {
    pub fn flow_report_every(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.flow_report_every_ms.max(100))
    }

    pub fn health_report_every(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.health_report_every_ms.max(1000))
    }

    /// The bound of one attempt to reach a controller.
    pub fn connect_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.connect_timeout_ms.max(100))
    }

    /// The outbox file: as configured, or beside the desired-state file.
    pub fn outbox_path(&self, desired_state: &Path) -> PathBuf {
        self.outbox.clone().unwrap_or_else(|| {
            desired_state
                .parent()
                .unwrap_or(Path::new("."))
                .join("alerts-outbox.sqlite")
        })
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Pass,
    Drop,
}

/// The gateway's behaviour before its first policy (`AgentConfig::fail_mode`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Drop device traffic until the first generation, except ARP, IPv6 ND, DHCP (v4 and
    /// v6) and the management allowlist.
    #[default]
    Hold,
    /// As `hold`, but DHCP and non-IP frames are dropped too.
    Closed,
    /// The configured `unknown_devices` / `non_ip` defaults from the start.
    Open,
}

impl FailMode {
    pub fn name(self) -> &'static str {
        match self {
            FailMode::Hold => "hold",
            FailMode::Closed => "closed",
            FailMode::Open => "open",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VlanAction {
    #[default]
    Enforce,
    Drop,
}

/// `dns:` peers (`crate::dns`): the TTL bounds and the per-device bound of learned addresses.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// An answer's TTL is raised to this (seconds). Default 30: a device that caches an answer
    /// a little past its TTL is not cut off, and a TTL of 0 still lets the device connect.
    #[serde(default = "default_ttl_floor")]
    pub ttl_floor_s: u32,
    /// ... and lowered to this. Default 3600.
    #[serde(default = "default_ttl_ceiling")]
    pub ttl_ceiling_s: u32,
    /// Learned addresses one device holds at most; over it, those expiring first go.
    /// Default 256.
    #[serde(default = "default_max_addrs")]
    pub max_addrs_per_device: usize,
}

fn default_ttl_floor() -> u32 {
    30
}

fn default_ttl_ceiling() -> u32 {
    3600
}

fn default_max_addrs() -> usize {
    256
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            ttl_floor_s: default_ttl_floor(),
            ttl_ceiling_s: default_ttl_ceiling(),
            max_addrs_per_device: default_max_addrs(),
        }
    }
}

/// Fail-open watchdog: the agent's map-writer loop beats every `heartbeat_limit_ms / 5`; when
/// the datapath sees the beat older than the limit, enforced devices whose profile fails open
/// are monitored until it returns (fail-closed devices stay enforced, quarantined ones cut).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WatchdogConfig {
    /// Default 5000; 0 turns the watchdog off (every device stays as its mode says).
    #[serde(default = "default_heartbeat_limit")]
    pub heartbeat_limit_ms: u32,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            heartbeat_limit_ms: default_heartbeat_limit(),
        }
    }
}

fn default_heartbeat_limit() -> u32 {
    5_000
}

impl WatchdogConfig {
    /// How often the agent beats.
    pub fn beat_every(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from((self.heartbeat_limit_ms / 5).max(100)))
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EventConfig {
    /// Events per second per device and event kind (token bucket refill: a flood of denies
    /// cannot use up the budget of spoofing reports). Default 20; 0 turns events off.
    #[serde(default = "default_rate")]
    pub rate_per_s: u32,
    /// Bucket size per device and event kind. Default 50.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

impl Default for EventConfig {
    fn default() -> Self {
        EventConfig {
            rate_per_s: default_rate(),
            burst: default_burst(),
        }
    }
}

/// A management service: flows opened from a host in `cidr` to a device's `proto`/`port`, or
/// from a device to `port` on a host in `cidr`, always pass (tracked, so their replies pass
/// too), whatever the device's policy or mode (quarantine included). Never matched on the
/// source port of an inbound packet, and never for a spoofed frame.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MgmtRule {
    pub cidr: IpNet,
    pub proto: Proto,
    pub port: u16,
}

fn default_pin_root() -> PathBuf {
    PathBuf::from(wardgate_common::PIN_ROOT)
}
fn default_desired_state() -> PathBuf {
    PathBuf::from(paths::DESIRED_STATE)
}
fn default_rate() -> u32 {
    20
}
fn default_burst() -> u32 {
    50
}

impl AgentConfig {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let cfg: AgentConfig = serde_saphyr::from_str(text)?;
        if cfg.interfaces.is_empty() {
            anyhow::bail!("`interfaces` is empty: name at least one device-facing interface");
        }
        for m in &cfg.management {
            if !matches!(m.proto, Proto::Tcp | Proto::Udp) {
                anyhow::bail!("management rule for {}: proto must be tcp or udp", m.cidr);
            }
        }
        let ports = &cfg.recording.inspect_ports;
        if ports.len() > wardgate_common::INSPECT_PORTS {
            anyhow::bail!(
                "recording.inspect_ports lists {} ports; the datapath holds at most {}",
                ports.len(),
                wardgate_common::INSPECT_PORTS
            );
        }
        if ports.contains(&0) {
            anyhow::bail!("recording.inspect_ports: 0 is not a server port");
        }
        cfg.limits.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading agent config {}", path.display()))?;
        Self::parse(&text).map_err(|e| {
            // file:line:column when the YAML says where.
            let at = match e
                .downcast_ref::<serde_saphyr::Error>()
                .and_then(serde_saphyr::Error::location)
            {
                Some(l) => format!("{}:{}:{}", path.display(), l.line(), l.column()),
                None => path.display().to_string(),
            };
            e.context(format!("in agent config {at}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in() {
        let cfg = AgentConfig::parse("interfaces: [wg-dev0]\n").unwrap();
        assert_eq!(cfg.pin_root, PathBuf::from("/sys/fs/bpf/wardgate"));
        assert_eq!(cfg.unknown_devices, Action::Pass);
        assert_eq!(cfg.events.rate_per_s, 20);
        assert!(cfg.management.is_empty());
        assert!(cfg.recording.enabled);
        assert_eq!(cfg.recording.inspect_ports, [104, 11112, 2575]);
        assert_eq!(cfg.fail_mode, FailMode::Hold, "the safe default");
    }

    #[test]
    fn limits_have_defaults_sizes_and_errors_naming_the_key() {
        let cfg = AgentConfig::parse("interfaces: [a]\n").unwrap();
        assert_eq!(cfg.limits, LimitsConfig::default());
        assert_eq!(cfg.limits.memory, Size(1 << 30));
        assert_eq!(cfg.limits.outbox_alerts, 10_000);
        let cfg = AgentConfig::parse(
            "interfaces: [a]\nlimits: {memory: 512M, open_files: 4096, outbox_alerts: 10, \
             outbox_bytes: 65536, flow_records: 5, state_bytes: 2M}\n",
        )
        .unwrap();
        let l = cfg.limits;
        assert_eq!(
            (l.memory.0, l.open_files, l.outbox_alerts, l.outbox_bytes.0),
            (512 << 20, 4096, 10, 65_536)
        );
        assert_eq!((l.flow_records, l.state_bytes.0), (5, 2 << 20));
        assert_eq!(l.log_bytes_per_minute, Size::mib(1), "the default");
        let cfg = AgentConfig::parse("interfaces: [a]\nlimits: {log_bytes_per_minute: 0}\n");
        assert_eq!(cfg.unwrap().limits.log_bytes_per_minute, Size(0), "off");
        for (text, key) in [
            (
                "{memory: 64M}",
                "limits.memory: 64M is below the minimum 128M",
            ),
            (
                "{open_files: 10}",
                "limits.open_files: 10 is below the minimum 256",
            ),
            ("{outbox_alerts: 0}", "limits.outbox_alerts"),
            ("{outbox_bytes: 1K}", "limits.outbox_bytes: 1K"),
            ("{flow_records: 0}", "limits.flow_records"),
            ("{state_bytes: 1000}", "limits.state_bytes: 1000"),
            (
                "{log_bytes_per_minute: 1K}",
                "limits.log_bytes_per_minute: 1K",
            ),
        ] {
            let err =
                AgentConfig::parse(&format!("interfaces: [a]\nlimits: {text}\n")).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{text}: {err:#}");
        }
        for text in ["{memory: 1T}", "{memory: lots}", "{outbox_limit: 3}"] {
            let err =
                AgentConfig::parse(&format!("interfaces: [a]\nlimits: {text}\n")).unwrap_err();
            assert!(format!("{err:#}").contains("line 2"), "{text}: {err:#}");
        }
        assert_eq!(Size(3 << 30).to_string(), "3G");
        assert_eq!("100K".parse::<Size>().unwrap(), Size(102_400));
    }

    #[test]
    fn fail_mode_is_one_of_three() {
        for (text, mode) in [
            ("hold", FailMode::Hold),
            ("closed", FailMode::Closed),
            ("open", FailMode::Open),
        ] {
            let cfg = AgentConfig::parse(&format!("interfaces: [a]\nfail_mode: {text}\n")).unwrap();
            assert_eq!(cfg.fail_mode, mode);
            assert_eq!(mode.name(), text);
        }
        let err = AgentConfig::parse("interfaces: [a]\nfail_mode: shut\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }

    #[test]
    fn recording_can_be_turned_off_and_its_ports_are_bounded() {
        let cfg = AgentConfig::parse(
            "interfaces: [a]\nrecording: {enabled: false, inspect_ports: [4242]}\n",
        )
        .unwrap();
        assert!(!cfg.recording.enabled);
        assert_eq!(cfg.recording.inspect_ports, [4242]);
        let err = AgentConfig::parse(
            "interfaces: [a]\nrecording: {inspect_ports: [1, 2, 3, 4, 5, 6, 7, 8, 9]}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("at most 8"), "{err}");
        assert!(AgentConfig::parse("interfaces: [a]\nrecording: {inspect_ports: [0]}\n").is_err());
    }

    #[test]
    fn full_config_parses() {
        let cfg = AgentConfig::parse(
            "interfaces: [wg-dev0, wg-dev1]\nunknown_devices: drop\nnon_ip: drop\n\
             events: {rate_per_s: 5, burst: 10}\n\
             management:\n  - {cidr: 203.0.113.1/32, proto: tcp, port: 22}\n",
        )
        .unwrap();
        assert_eq!(cfg.interfaces.len(), 2);
        assert_eq!(cfg.non_ip, Action::Drop);
        assert_eq!(cfg.management[0].port, 22);
    }

    #[test]
    fn the_controller_name_is_configurable() {
        let base = "interfaces: [a]\ncontroller:\n  address: https://198.51.100.20:7443\n  certs: /etc/wardgate/certs\n  gateway: gw-ward-3\n";
        let cfg = AgentConfig::parse(base).unwrap();
        let c = cfg.controller.unwrap();
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.health_report_every(), std::time::Duration::from_secs(60));
        let cfg = AgentConfig::parse(&format!("{base}  health_report_every_ms: 10\n")).unwrap();
        assert_eq!(
            cfg.controller.unwrap().health_report_every(),
            std::time::Duration::from_secs(1),
            "at least a second"
        );
        let cfg = AgentConfig::parse(&format!(
            "{base}  server_name: controller.hospital.example\n"
        ))
        .unwrap();
        assert_eq!(
            cfg.controller.unwrap().server_name,
            "controller.hospital.example"
        );
    }

    #[test]
    fn the_controller_address_is_one_or_a_list_never_none() {
        let cfg = |address: &str| {
            AgentConfig::parse(&format!(
                "interfaces: [a]\ncontroller:\n  address: {address}\n  certs: /c\n  gateway: g\n"
            ))
            .map(|c| c.controller.unwrap())
        };
        // One address, as before.
        let one = cfg("https://198.51.100.20:7443").unwrap();
        assert_eq!(one.address.as_slice(), ["https://198.51.100.20:7443"]);
        assert_eq!(one.connect_timeout(), std::time::Duration::from_secs(5));
        // A list (flow or block style), in order.
        let two = cfg("[https://198.51.100.20:7443, https://198.51.100.21:7443]").unwrap();
        assert_eq!(
            two.address.as_slice(),
            ["https://198.51.100.20:7443", "https://198.51.100.21:7443"]
        );
        let block =
            cfg("\n    - https://198.51.100.21:7443\n    - https://198.51.100.20:7443").unwrap();
        assert_eq!(
            block.address.as_slice(),
            ["https://198.51.100.21:7443", "https://198.51.100.20:7443"]
        );
        assert_eq!(
            block.address.to_string(),
            "https://198.51.100.21:7443, https://198.51.100.20:7443"
        );
        // An empty list, an empty entry, a repeated one: refused, naming the field and line.
        for (text, says) in [
            ("[]", "controller.address: the list is empty"),
            ("['https://198.51.100.20:7443', '']", "entry 2 is empty"),
            (
                "[https://198.51.100.20:7443, https://198.51.100.20:7443]",
                "`https://198.51.100.20:7443` is listed twice",
            ),
        ] {
            let err = format!("{:#}", cfg(text).unwrap_err());
            assert!(
                err.contains(says) && err.contains("line 3"),
                "{text}: {err}"
            );
        }
        let c = AgentConfig::parse(
            "interfaces: [a]\ncontroller: {address: x, certs: /c, gateway: g, connect_timeout_ms: 1}\n",
        )
        .unwrap()
        .controller
        .unwrap();
        assert_eq!(c.connect_timeout(), std::time::Duration::from_millis(100));
    }

    #[test]
    fn a_file_error_names_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(
            &path,
            "interfaces: [a]\nmetrics:\n  listen: 127.0.0.1:9464\n  lsiten: x\n",
        )
        .unwrap();
        let msg = format!("{:#}", AgentConfig::load(&path).unwrap_err());
        assert!(
            msg.contains(&format!("{}:4:3", path.display())) && msg.contains("lsiten"),
            "{msg}"
        );
    }

    #[test]
    fn the_packaged_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples/agent.yaml");
        let cfg = AgentConfig::load(&path).unwrap();
        assert_eq!(cfg.interfaces, ["eth1"]);
        assert_eq!(cfg.desired_state, PathBuf::from(paths::DESIRED_STATE));
        assert_eq!(cfg.controller.unwrap().gateway, "gw-ward-3");
        assert_eq!(
            cfg.metrics.unwrap().listen,
            "127.0.0.1:9464".parse().unwrap()
        );
    }

    #[test]
    fn metrics_endpoint_is_optional_and_strict() {
        let cfg = AgentConfig::parse("interfaces: [a]\n").unwrap();
        assert_eq!(cfg.metrics, None);
        let cfg =
            AgentConfig::parse("interfaces: [a]\nmetrics: {listen: \"127.0.0.1:9464\"}\n").unwrap();
        let m = cfg.metrics.unwrap();
        assert_eq!(m.listen, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(m.map_fill_every(), std::time::Duration::from_secs(60));
        let err = AgentConfig::parse(
            "interfaces: [a]\nmetrics:\n  listen: 127.0.0.1:9464\n  lsiten: x\n",
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("lsiten") && msg.contains("line 4"), "{msg}");
        let err =
            AgentConfig::parse("interfaces: [a]\nmetrics: {listen: \"localhost\"}\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }

    #[test]
    fn typos_and_bad_values_are_errors_with_location() {
        let err = AgentConfig::parse("interfaces: [a]\nunknown_device: drop\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("unknown_device") && msg.contains("line 2"),
            "{msg}"
        );
        assert!(AgentConfig::parse("interfaces: []\n").is_err());
        let err = AgentConfig::parse(
            "interfaces: [a]\nmanagement:\n  - {cidr: 203.0.113.1/32, proto: icmp, port: 0}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("tcp or udp"));
    }
}
