//! `wardgate-agent learn`: flow records and per-device baselines from capture files, through the
//! same pure flow table and baseline code the live agent uses (wardgate-analysis). Reading the
//! files is here; everything after the frame bytes is in the pure crate.

pub mod capture;
mod propose;
mod simulate;
mod summary;

use std::{
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Serialize;
use wardgate_analysis::{
    DeviceInfo, Devices, FlowRecord, FlowTable, FlowTableConfig,
    baseline::{self, Baseline, Groups, Limits, Window},
    decode::{self, Decoded},
    dns::names::{NameTable, NameTableConfig},
};

pub use summary::print_summary;

/// Malformed packets listed by number (all are counted).
const MALFORMED_LISTED: usize = 20;
/// Files larger than this get a progress bar (when stderr is a terminal).
const PROGRESS_BYTES: u64 = 4 << 20;

#[derive(clap::Args, Debug, Clone)]
pub struct LearnArgs {
    /// Capture files (pcap or pcapng), read in order as one capture.
    #[arg(long = "pcap", required = true, num_args = 1..)]
    pub pcap: Vec<PathBuf>,
    /// Site file: its devices are the devices (by MAC, else address) and its groups name peers.
    /// Without one, every unicast MAC that sends is a device, named by its vendor.
    #[arg(long)]
    pub site: Option<PathBuf>,
    /// Directory for flows.jsonl, baselines.json, devices.json and summary.json.
    #[arg(long, required_unless_present = "simulate")]
    pub out: Option<PathBuf>,
    /// Also write a proposed profile per device (`proposed-<device>.yaml`) into this directory.
    #[arg(long)]
    pub propose: Option<PathBuf>,
    /// Replay the capture's flows through this candidate profile and list what it would block.
    #[arg(long)]
    pub simulate: Option<PathBuf>,
    /// Devices to simulate (default: the site's devices assigned the profile, else the
    /// capture's one device; a capture of several needs it).
    #[arg(long = "device", requires = "simulate")]
    pub devices: Vec<String>,
    /// With `--propose`: also make rules from flows that did not complete (refused, unanswered,
    /// denied, unknown). Captures taken on one side only (a mirror port seeing one direction)
    /// have no completed flows.
    #[arg(long, requires = "propose")]
    pub include_incomplete: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Malformed {
    pub file: PathBuf,
    pub number: u64,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub file: PathBuf,
    #[serde(flatten)]
    pub end: capture::FileEnd,
    pub malformed: u64,
    /// Frames that are not IP (ARP, LLDP, ...).
    pub not_ip: u64,
}

/// What `learn` found, also written as summary.json.
#[derive(Debug, Clone, Serialize)]
pub struct Learned {
    pub files: Vec<FileReport>,
    pub frames: u64,
    pub malformed: u64,
    /// The first MALFORMED_LISTED malformed packets.
    pub malformed_listed: Vec<Malformed>,
    pub table: wardgate_analysis::flow::TableStats,
    pub window: Window,
    pub devices: Vec<DeviceInfo>,
    /// MACs left out as routers (they sent from more than 8 addresses; discovery only).
    pub routers: Vec<wardgate_analysis::Mac>,
    pub records: usize,
    /// Proposed profiles written (`--propose`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proposed: Vec<PathBuf>,
    /// What the candidate profile would have blocked (`--simulate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulation: Option<simulate::Simulation>,
    #[serde(skip)]
    pub baselines: Vec<Baseline>,
    #[serde(skip)]
    pub flows: Vec<FlowRecord>,
}

pub fn run(args: &LearnArgs) -> anyhow::Result<Learned> {
    let site = match &args.site {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                wardgate_policy::parse_site(&path.display().to_string(), &text)
                    .map_err(|d| anyhow::anyhow!("{d}"))?,
            )
        }
        None => None,
    };
    // The candidate is read before the captures: a typo fails at once.
    let candidate = args
        .simulate
        .as_deref()
        .map(simulate::load_profile)
        .transpose()?;
    let (devices, groups) = match &site {
        Some(s) => (
            Devices::from_site(s).with_context(|| {
                format!(
                    "site file {}",
                    args.site.as_deref().unwrap_or(Path::new("")).display()
                )
            })?,
            Groups::from_site(s),
        ),
        None => (Devices::discover(), Groups::default()),
    };
    // Long flows give continuations every 60 s as live (`replay` does the same), so the
    // baselines count their bytes in the hours they moved them, as the live `volume` does.
    let mut table = FlowTable::new(
        FlowTableConfig {
            continue_every_ns: Some(crate::flows::LiveConfig::default().long_running_ns),
            ..FlowTableConfig::default()
        },
        devices,
    );
    // Who resolved what: answers from the site's `dns` group (any sender without one) name
    // the flows that follow them (`dns:NAME` in proposals).
    let mut names = NameTable::new(NameTableConfig::default());
    let resolvers = groups.nets("dns");
    let mut files = Vec::new();
    let mut malformed_listed = Vec::new();
    let mut window: Option<Window> = None;
    for path in &args.pcap {
        let mut malformed = 0u64;
        let mut not_ip = 0u64;
        let end = capture::read_frames(
            path,
            |f| progress(path, f),
            |frame| {
                match decode::decode(frame.link, frame.data, frame.ts_ns) {
                    Ok(Decoded::Ip(pkt)) => {
                        let w = window.get_or_insert(Window {
                            start_ns: pkt.ts_ns,
                            end_ns: pkt.ts_ns,
                        });
                        w.start_ns = w.start_ns.min(pkt.ts_ns);
                        w.end_ns = w.end_ns.max(pkt.ts_ns);
                        table.add(&pkt);
                        let _ = names.observe_packet(&pkt, |a| {
                            resolvers.is_empty() || resolvers.iter().any(|n| n.contains(&a))
                        });
                    }
                    Ok(Decoded::NotIp { .. }) => not_ip += 1,
                    Err(e) => {
                        malformed += 1;
                        if malformed_listed.len() < MALFORMED_LISTED {
                            malformed_listed.push(Malformed {
                                file: path.clone(),
                                number: frame.number,
                                error: e.to_string(),
                            });
                        }
                    }
                }
                Ok(())
            },
        )?;
        if let Some(cut) = &end.cut {
            tracing::warn!(file = %path.display(), frames = end.frames, "{cut}; read up to the cut");
        }
        if malformed > 0 {
            tracing::warn!(file = %path.display(), malformed, "malformed packets skipped");
        }
        files.push(FileReport {
            file: path.clone(),
            end,
            malformed,
            not_ip,
        });
    }
    let (mut flows, devices, stats) = table.finish_all();
    let named = names.label(&mut flows);
    if named > 0 {
        tracing::info!(named, "flows named by the DNS answers before them");
    }
    let window = window.unwrap_or(Window {
        start_ns: 0,
        end_ns: 0,
    });
    let baselines = baseline::baselines(&flows, &groups, &Limits::default(), window);
    // The records written and proposed from are the flows; continuations only add bytes.
    flows.retain(|r| !r.continuation);
    let mut learned = Learned {
        frames: files.iter().map(|f| f.end.frames).sum(),
        malformed: files.iter().map(|f| f.malformed).sum(),
        files,
        malformed_listed,
        table: stats,
        window,
        devices: devices.list(),
        routers: devices.routers(),
        records: flows.len(),
        proposed: Vec::new(),
        simulation: None,
        baselines,
        flows,
    };
    if let Some(dir) = &args.propose {
        learned.proposed = propose::write(
            dir,
            &learned,
            &groups,
            site.as_ref(),
            args.include_incomplete,
        )?;
    }
    if let Some(profile) = &candidate {
        learned.simulation = Some(simulate::run(
            profile,
            site.as_ref(),
            &args.devices,
            &learned,
        )?);
    }
    if let Some(out) = &args.out {
        write_out(out, &learned)?;
    }
    Ok(learned)
}

fn progress(path: &Path, file: std::fs::File) -> Box<dyn std::io::Read> {
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size < PROGRESS_BYTES || !std::io::stderr().is_terminal() {
        return Box::new(file);
    }
    let bar = indicatif::ProgressBar::new(size).with_message(path.display().to_string());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    Box::new(bar.wrap_read(file))
}

fn write_out(dir: &Path, l: &Learned) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("flows.jsonl");
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    for r in &l.flows {
        serde_json::to_writer(&mut w, r)?;
        w.write_all(b"\n")?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    write_json(&dir.join("baselines.json"), &l.baselines)?;
    write_json(&dir.join("devices.json"), &l.devices)?;
    write_json(&dir.join("summary.json"), l)
}

fn write_json(path: &Path, v: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
