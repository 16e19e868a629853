//! `wardctl profile ...`: work with profile files (validate, show, import from MUD).

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use wardgate_policy::{ProfileSet, mud, parse_site, profile::Peer, validate};

use super::output::{self, OutputFormat};

#[derive(Subcommand)]
pub enum ProfileCmd {
    /// Validate profile files, or every profile in a directory (and, with --site, their group
    /// references).
    Validate {
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
        #[arg(long)]
        site: Option<PathBuf>,
    },
    /// Show one profile: its flows, timeouts and application constraints.
    Show {
        name: String,
        #[arg(long, default_value = "device-profiles")]
        dir: PathBuf,
    },
    /// Propose a profile from a device's baseline on the controller (validated).
    Propose(super::propose::ProposeArgs),
    /// Import an RFC 8520 MUD file as a profile.
    ImportMud {
        file: PathBuf,
        /// Bind a MUD abstraction to a site group: controller=GROUP, my-controller=GROUP,
        /// local-networks=GROUP, same-manufacturer=GROUP, manufacturer=GROUP, model=GROUP.
        #[arg(long = "bind", value_parser = parse_bind)]
        binds: Vec<(String, String)>,
        /// Profile name (default: from the MUD model name or systeminfo).
        #[arg(long)]
        name: Option<String>,
        /// Write the profile here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

const BIND_KEYS: &[&str] = &[
    "controller",
    "my-controller",
    "local-networks",
    "same-manufacturer",
    "manufacturer",
    "model",
];

fn parse_bind(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected ABSTRACTION=GROUP"))?;
    if !BIND_KEYS.contains(&k) {
        return Err(format!(
            "`{k}` is not a MUD abstraction (one of {})",
            BIND_KEYS.join(", ")
        ));
    }
    if v.is_empty() {
        return Err(format!("`{s}`: empty group name"));
    }
    Ok((k.to_string(), v.to_string()))
}

pub fn run(cmd: ProfileCmd, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        // The one subcommand that talks to the controller.
        ProfileCmd::Propose(a) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(super::propose::run(a, out)),
        ProfileCmd::Validate { paths, site } => {
            let mut problems = match ProfileSet::load_paths(&paths) {
                Ok(set) => {
                    let mut d = wardgate_policy::Diagnostics::default();
                    if let Some(site_path) = site {
                        let file = site_path.display().to_string();
                        let text = std::fs::read_to_string(&site_path)
                            .with_context(|| format!("reading the site file {file} (--site)"))?;
                        match parse_site(&file, &text) {
                            Ok(s) => d.extend(validate(&file, &s, &set)),
                            Err(e) => d.extend(e),
                        }
                    }
                    if d.is_empty() {
                        match out {
                            OutputFormat::Json => output::json(&serde_json::json!({
                                "valid": true,
                                "profiles": set.profiles.keys().collect::<Vec<_>>(),
                            }))?,
                            OutputFormat::Human => println!(
                                "{} profiles valid in {}",
                                set.profiles.len(),
                                paths
                                    .iter()
                                    .map(|p| p.display().to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        }
                        return Ok(());
                    }
                    d
                }
                Err(d) => d,
            };
            problems.0.sort();
            match out {
                OutputFormat::Json => {
                    output::json(&serde_json::json!({"valid": false, "problems": problems}))?
                }
                OutputFormat::Human => eprintln!("{problems}"),
            }
            bail!("{} problem(s) found", problems.len())
        }
        ProfileCmd::Show { name, dir } => {
            let set = ProfileSet::load_dir(&dir).map_err(|d| anyhow::anyhow!("{d}"))?;
            let Some(p) = set.get(&name) else {
                let names: Vec<&str> = set.profiles.keys().map(String::as_str).collect();
                let hint = wardgate_policy::diag::closest(&name, &names)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                bail!("no profile `{name}` in {}{hint}", dir.display());
            };
            match out {
                OutputFormat::Json => output::json(p)?,
                OutputFormat::Human => show(p, set.file_of(&name)),
            }
            Ok(())
        }
        ProfileCmd::ImportMud {
            file,
            binds,
            name,
            out: dest,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let parsed = mud::parse_mud(&text).with_context(|| format!("{}", file.display()))?;
            let binds: BTreeMap<String, String> = binds.into_iter().collect();
            let imported = mud::import(&parsed, &binds, name.as_deref())
                .with_context(|| format!("{}", file.display()))?;
            let yaml = mud::to_yaml(&imported);
            match (&dest, out) {
                (_, OutputFormat::Json) => output::json(&serde_json::json!({
                    "profile": imported.profile, "notes": imported.notes, "groups": imported.groups,
                }))?,
                (Some(path), _) => {
                    std::fs::write(path, &yaml)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "wrote {} ({} flows, {} notes)",
                        path.display(),
                        imported.profile.flows.len(),
                        imported.notes.len()
                    );
                }
                (None, _) => print!("{yaml}"),
            }
            Ok(())
        }
    }
}

fn show(p: &wardgate_policy::Profile, file: &str) {
    println!("{} ({file})", p.name.value);
    if !p.description.is_empty() {
        println!("  {}", p.description);
    }
    if !p.vendors.is_empty() {
        println!("  vendors: {}", p.vendors.join(", "));
    }
    let fail = match p.fail_mode {
        wardgate_policy::profile::FailMode::Open => "open (passes while the gateway is unhealthy)",
        wardgate_policy::profile::FailMode::Closed => "closed (stays enforced)",
    };
    let sensitivity = match p.baseline_sensitivity {
        wardgate_policy::profile::Sensitivity::Low => "low",
        wardgate_policy::profile::Sensitivity::Medium => "medium",
        wardgate_policy::profile::Sensitivity::High => "high",
    };
    println!(
        "  new devices start in {} ({})",
        p.default_mode.as_str(),
        crate::words::mode_meaning(p.default_mode)
    );
    println!(
        "  fail {fail}; anomaly sensitivity {sensitivity}; idle timeouts tcp {}s, udp {}s, icmp {}s",
        p.conntrack.tcp_idle_s, p.conntrack.udp_idle_s, p.conntrack.icmp_idle_s
    );
    // Validated before it is shown; a map with problems was refused with them.
    let tuning = wardgate_policy::detection::parse(&p.detection).unwrap_or_default();
    if !tuning.is_empty() {
        println!("  detectors tuned for the class: {}", tuning.describe());
    }
    println!(
        "  {:<3} {:<12} {:<7} {:<34} {:<16} flow",
        "#", "direction", "proto", "peers", "ports"
    );
    for (i, f) in p.flows.iter().enumerate() {
        let peers: Vec<String> = f
            .peers
            .iter()
            .map(|x| match Peer::parse(&x.value) {
                Ok(Peer::Dns(n)) => format!("dns:{n} (addresses its resolvers answer)"),
                _ => x.value.clone(),
            })
            .collect();
        let ports = f
            .ports
            .as_ref()
            .map_or("all".to_string(), |r| match r.value.ranges() {
                Ok(v) => v
                    .iter()
                    .map(|(a, b)| {
                        if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Err(_) => "invalid".into(),
            });
        let dir = crate::words::direction(f.direction);
        println!(
            "  {:<3} {:<12} {:<7} {:<34} {:<16} {}",
            i + 1,
            dir,
            format!("{:?}", f.protocol.value).to_lowercase(),
            peers.join(","),
            ports,
            f.name
        );
        if let Some(app) = &f.app {
            println!(
                "      application rule (enforced at each flow's first message): {}",
                app.describe()
            );
        }
    }
}
