//! `wardgate-agent replay`: runs the detectors over capture files with the captures' own clock
//! and prints the findings as JSON, RFC 5424 + CEF, or OCSF lines, so an analyst can check a
//! capture. Reading and decoding is the learn command's loop; the flow table, the detectors and
//! the formats are the pure crate's, as live. DNS messages to or from port 53 of a device
//! (`wardgate_analysis::dns::event`) are observations too, merged with the records in time order,
//! and the site's resolvers' answers name the flows that follow them (`peer_name`, which
//! `beacon` keys by), through the name table the live agent fills: the same engine.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use wardgate_analysis::{
    Devices, FlowRecord, FlowTable, FlowTableConfig,
    baseline::Groups,
    decode::{self, Decoded},
    detect::{
        self, AddressClaim, Baselines, DetectConfig, Finding, SiteFacts,
        format::{cef, ocsf},
    },
    dns::{
        self, DnsEvent,
        names::{NameTable, NameTableConfig},
    },
};

use crate::learn::capture;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One finding per line, the pure crate's Finding as JSON.
    Json,
    /// RFC 5424 syslog lines with a CEF payload.
    Cef,
    /// OCSF 1.3 Detection Finding JSON lines.
    Ocsf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Capture files (pcap or pcapng), read in order as one capture.
    #[arg(long = "pcap", required = true, num_args = 1..)]
    pub pcap: Vec<PathBuf>,
    /// Site file: its devices (with their class, location and asset id) and groups. Without one,
    /// every unicast MAC that sends is a device (a general host: looser thresholds, no class).
    #[arg(long)]
    pub site: Option<PathBuf>,
    /// A `learn --out` directory: its baselines.json enables the baseline detectors (new
    /// peer/service/protocol/app, volume, beacon).
    #[arg(long)]
    pub baselines: Option<PathBuf>,
    /// Profiles directory: each class's `baseline_sensitivity` scales its thresholds.
    #[arg(long)]
    pub profiles: Option<PathBuf>,
    /// Detector parameters (YAML, any subset of the defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Also write a JSON summary (frames, records, devices, device-days, findings) to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
}

/// What a replay found.
pub struct Replayed {
    pub findings: Vec<Finding>,
    pub flows: Vec<FlowRecord>,
    pub claims: Vec<AddressClaim>,
    /// DNS messages of devices, in capture order.
    pub dns: Vec<DnsEvent>,
    pub frames: u64,
    pub malformed: u64,
    /// Packets to or from port 53 of a device whose DNS message did not parse.
    pub dns_malformed: u64,
    pub detectors: Vec<&'static str>,
}

fn read_site(path: &Path) -> anyhow::Result<wardgate_policy::Site> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    wardgate_policy::parse_site(&path.display().to_string(), &text)
        .map_err(|d| anyhow::anyhow!("{d}"))
}

/// Reads a baselines file (or a `learn --out` directory's) into the detectors' compact form,
/// one baseline at a time: the file's text and the full list never sit in memory at once.
pub fn read_baselines(dir: &Path) -> anyhow::Result<Baselines> {
    let path = if dir.is_dir() {
        dir.join("baselines.json")
    } else {
        dir.to_path_buf()
    };
    let file = std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("parsing {}", path.display()))
}

pub fn read_config(path: &Path) -> anyhow::Result<DetectConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Sets each profile's sensitivity and detector tuning on its class; returns the resolver
/// groups the profiles name (`dns_resolvers`), which live trusts beside the site's `dns`.
fn apply_profiles(dir: &Path, site: &mut SiteFacts) -> anyhow::Result<Vec<String>> {
    let mut resolver_groups = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let prof = wardgate_policy::parse_profile(&p.display().to_string(), &text)
            .map_err(|d| anyhow::anyhow!("{d}"))?;
        site.set_sensitivity(&prof.name.value, prof.baseline_sensitivity);
        let tuning = wardgate_policy::detection::parse(&prof.detection).map_err(|problems| {
            let lines: Vec<String> = problems
                .iter()
                .map(|pr| {
                    let at = if pr.at_key {
                        (pr.key.line, pr.key.column)
                    } else {
                        (pr.value.line, pr.value.column)
                    };
                    format!("{}:{}:{}: detection: {}", p.display(), at.0, at.1, pr.why)
                })
                .collect();
            anyhow::anyhow!("{}", lines.join("\n"))
        })?;
        site.set_detection(&prof.name.value, &tuning);
        resolver_groups.extend(prof.dns_resolvers.map(|g| g.value));
    }
    Ok(resolver_groups)
}

pub fn run(args: &ReplayArgs) -> anyhow::Result<Replayed> {
    let cfg = match &args.config {
        Some(p) => read_config(p)?,
        None => DetectConfig::default(),
    };
    let (devices, mut facts, groups) = match &args.site {
        Some(path) => {
            let site = read_site(path)?;
            let devices = Devices::from_site(&site)
                .with_context(|| format!("site file {}", path.display()))?;
            (
                devices,
                SiteFacts::from_site(&site),
                Some(Groups::from_site(&site)),
            )
        }
        None => (Devices::discover(), SiteFacts::default(), None),
    };
    let resolver_groups = match &args.profiles {
        Some(dir) => apply_profiles(dir, &mut facts)?,
        None => Vec::new(),
    };
    // The site's `dns` group and every group a profile names as its resolvers, as live.
    let resolvers: Vec<_> = groups.map_or_else(Vec::new, |g| {
        std::iter::once("dns")
            .chain(resolver_groups.iter().map(String::as_str))
            .flat_map(|name| g.nets(name))
            .collect()
    });
    let baselines = match &args.baselines {
        Some(dir) => read_baselines(dir)?,
        None => Baselines::default(),
    };
    // Long flows as the live table gives them: a record at `long_running`, then continuations.
    let table_cfg = FlowTableConfig {
        continue_every_ns: Some(crate::flows::LiveConfig::default().long_running_ns),
        ..FlowTableConfig::default()
    };
    let mut table = FlowTable::new(table_cfg, devices);
    let mut claims = Vec::new();
    let mut dns_events = Vec::new();
    // Who resolved what, as live (`agent::dns::names`): answers count only from the site's
    // resolvers (its group `dns` and the profiles' `dns_resolvers`); without a site, none.
    let mut names = NameTable::new(NameTableConfig::default());
    let (mut frames, mut malformed, mut dns_malformed) = (0u64, 0u64, 0u64);
    for path in &args.pcap {
        let end = capture::read_frames(
            path,
            |f| Box::new(f),
            |frame| {
                match decode::decode(frame.link, frame.data, frame.ts_ns) {
                    Ok(Decoded::Ip(pkt)) => {
                        table.add(&pkt);
                        let _ = names
                            .observe_packet(&pkt, |a| resolvers.iter().any(|n| n.contains(&a)));
                        match dns::event(&pkt, table.devices()) {
                            Some(Ok(e)) => dns_events.push(e),
                            Some(Err(e)) => {
                                dns_malformed += 1;
                                tracing::debug!(file = %path.display(), number = frame.number, "DNS message skipped: {e}");
                            }
                            None => {}
                        }
                    }
                    Ok(Decoded::NotIp { .. }) => {
                        claims.extend(detect::arp::claim(frame.link, frame.data, frame.ts_ns));
                    }
                    Err(e) => {
                        malformed += 1;
                        tracing::debug!(file = %path.display(), number = frame.number, "skipped: {e}");
                    }
                }
                Ok(())
            },
        )?;
        if let Some(cut) = &end.cut {
            tracing::warn!(file = %path.display(), frames = end.frames, "{cut}; read up to the cut");
        }
        frames += end.frames;
    }
    if malformed > 0 {
        tracing::warn!(malformed, "malformed packets skipped");
    }
    if dns_malformed > 0 {
        tracing::warn!(dns_malformed, "malformed DNS messages skipped");
    }
    let (mut flows, _devices, _stats) = table.finish_all();
    names.label(&mut flows);
    let dets = detect::detectors(&cfg, !baselines.is_empty());
    let detectors = dets.iter().map(|d| d.name()).collect();
    let findings = detect::run_observed(
        dets,
        facts,
        baselines,
        cfg.aggregate,
        &flows,
        &claims,
        &dns_events,
    );
    Ok(Replayed {
        findings,
        flows,
        claims,
        dns: dns_events,
        frames,
        malformed,
        dns_malformed,
        detectors,
    })
}

/// What a replay covered, for `--summary` and the eval.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub frames: u64,
    pub malformed: u64,
    pub records: usize,
    pub arp_claims: usize,
    /// DNS messages of devices read, and those that did not parse.
    pub dns_messages: usize,
    pub dns_malformed: u64,
    pub devices: usize,
    /// Sum over devices of the span between their first and last flow, in days.
    pub device_days: f64,
    pub findings: usize,
    pub detectors: Vec<&'static str>,
}

impl Replayed {
    pub fn summary(&self) -> Summary {
        let mut spans: std::collections::HashMap<&str, (u64, u64)> = Default::default();
        for r in &self.flows {
            let s = spans
                .entry(r.device.name.as_str())
                .or_insert((r.first_seen_ns, r.last_seen_ns));
            s.0 = s.0.min(r.first_seen_ns);
            s.1 = s.1.max(r.last_seen_ns);
        }
        let ns: u64 = spans.values().map(|(a, b)| b - a).sum();
        Summary {
            frames: self.frames,
            malformed: self.malformed,
            records: self.flows.iter().filter(|r| !r.continuation).count(),
            arp_claims: self.claims.len(),
            dns_messages: self.dns.len(),
            dns_malformed: self.dns_malformed,
            devices: spans.len(),
            device_days: ns as f64 / 86_400e9,
            findings: self.findings.len(),
            detectors: self.detectors.clone(),
        }
    }
}

/// Writes the findings one per line in `format`.
pub fn print(findings: &[Finding], format: Format, out: &mut impl Write) -> anyhow::Result<()> {
    for f in findings {
        match format {
            Format::Json => serde_json::to_writer(&mut *out, f)?,
            Format::Cef => {
                out.write_all(cef::syslog_line(f, cef::FACILITY_SECURITY, "-").as_bytes())?
            }
            Format::Ocsf => serde_json::to_writer(
                &mut *out,
                &ocsf::detection_finding(f, ocsf::ACTIVITY_CREATE),
            )?,
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
