//! `wardctl site ...`: compile a site's desired state for one gateway, and diff two of them.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use wardgate_policy::{Compiled, ProfileSet, compile_detailed, diff, parse_site};

use super::output::{self, OutputFormat};

#[derive(Subcommand)]
pub enum SiteCmd {
    /// Compile the desired state of one gateway (the JSON the agent applies).
    Compile {
        #[arg(long)]
        site: PathBuf,
        #[arg(long, default_value = "device-profiles")]
        profiles: PathBuf,
        #[arg(long)]
        gateway: String,
        #[arg(long, default_value_t = 1)]
        generation: u32,
        /// Write the desired state here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// What changes for a gateway between two versions of the site file.
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long, default_value = "device-profiles")]
        profiles: PathBuf,
        #[arg(long)]
        gateway: String,
    },
}

fn compile_file(
    site: &Path,
    profiles: &Path,
    gateway: &str,
    generation: u32,
) -> anyhow::Result<Compiled> {
    let set = ProfileSet::load_dir(profiles).map_err(|d| anyhow!("{d}"))?;
    let file = site.display().to_string();
    let text = std::fs::read_to_string(site).with_context(|| format!("reading {file}"))?;
    let parsed = parse_site(&file, &text).map_err(|d| anyhow!("{d}"))?;
    compile_detailed(&file, &parsed, &set, gateway, generation).map_err(|e| anyhow!("{e}"))
}

pub fn run(cmd: SiteCmd, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        SiteCmd::Compile {
            site,
            profiles,
            gateway,
            generation,
            out: dest,
        } => {
            let c = compile_file(&site, &profiles, &gateway, generation)?;
            for u in &c.unresolved {
                eprintln!("note: not enforced: {u}");
            }
            let json = c.state.to_json();
            match dest {
                Some(path) => {
                    std::fs::write(&path, json + "\n")
                        .with_context(|| format!("writing {}", path.display()))?;
                    if out == OutputFormat::Human {
                        let s = &c.state;
                        println!(
                            "{}: generation {}, {} devices, {} profiles, {} peer prefixes, {} port rules -> {}",
                            s.gateway,
                            s.generation,
                            s.devices.len(),
                            s.policies.len(),
                            s.peers.len(),
                            s.ports.len(),
                            path.display()
                        );
                    }
                }
                None => println!("{json}"),
            }
            Ok(())
        }
        SiteCmd::Diff {
            old,
            new,
            profiles,
            gateway,
        } => {
            let a = compile_file(&old, &profiles, &gateway, 1)?.state;
            let b = compile_file(&new, &profiles, &gateway, 2)?.state;
            let d = diff(&a, &b);
            match out {
                OutputFormat::Json => output::json(&d)?,
                OutputFormat::Human => {
                    if d.is_empty() {
                        println!("no change for {gateway}");
                    }
                    for (label, items) in [
                        ("+ device", &d.devices_added),
                        ("- device", &d.devices_removed),
                        ("~ device", &d.devices_changed),
                        ("+ rule", &d.rules_added),
                        ("- rule", &d.rules_removed),
                    ] {
                        for i in items {
                            println!("{label} {i}");
                        }
                    }
                    println!(
                        "map entries: +{} -{} peer prefixes, +{} -{} port rules",
                        d.peers_added.len(),
                        d.peers_removed.len(),
                        d.ports_added.len(),
                        d.ports_removed.len()
                    );
                }
            }
            Ok(())
        }
    }
}
