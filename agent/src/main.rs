//! wardgate-agent: thin entry point over the agent library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use wardgate_agent::{config::AgentConfig, netns, paths};

#[derive(Parser)]
#[command(name = "wardgate-agent", version, about = "wardgate gateway agent")]
struct Cli {
    /// Run inside this named network namespace (`ip netns`); only the network namespace
    /// changes, so pins under /sys/fs/bpf stay shared.
    #[arg(long, global = true)]
    netns: Option<String>,
    #[command(flatten)]
    log: wardgate_daemon::log::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load or adopt the datapath and enforce the desired state until SIGTERM.
    Run {
        #[arg(long, default_value = paths::CONFIG)]
        config: PathBuf,
    },
    /// Learn flow records and per-device baselines from capture files (offline; no datapath).
    Learn(wardgate_agent::learn::LearnArgs),
    /// Run the detectors over capture files (offline, the capture's clock) and print the findings.
    Replay(wardgate_agent::replay::ReplayArgs),
    /// Get this gateway's certificate from the controller with a one-time token (`wardctl
    /// gateways enroll NAME`): the key is made here and never leaves the gateway.
    Enroll(wardgate_agent::enroll::EnrollArgs),
    /// Print the active generation, per-reason packet counters, lost events and the flows on
    /// grace (do-not-disrupt) from the pinned maps (read-only).
    Status {
        #[arg(long, default_value = wardgate_common::PIN_ROOT)]
        pin_root: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    wardgate_daemon::log::init(cli.log.log_format);
    // Before any thread exists, so every runtime thread is in the namespace too.
    if let Some(ns) = &cli.netns {
        netns::enter(ns).with_context(|| format!("entering network namespace {ns}"))?;
    }
    match cli.command {
        Command::Learn(args) => {
            let learned = wardgate_agent::learn::run(&args)?;
            wardgate_agent::learn::print_summary(&learned, &mut std::io::stdout().lock())?;
            Ok(())
        }
        Command::Replay(args) => {
            let r = wardgate_agent::replay::run(&args)?;
            wardgate_agent::replay::print(&r.findings, args.format, &mut std::io::stdout().lock())?;
            if let Some(path) = &args.summary {
                let text = serde_json::to_string_pretty(&r.summary())?;
                std::fs::write(path, text + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            tracing::info!(
                frames = r.frames,
                records = r.flows.len(),
                arp_claims = r.claims.len(),
                findings = r.findings.len(),
                detectors = %r.detectors.join(","),
                "replayed"
            );
            Ok(())
        }
        Command::Enroll(args) => {
            let target = args.target()?;
            let rt = wardgate_agent::run::runtime().context("starting tokio")?;
            let done = rt.block_on(wardgate_agent::enroll::enroll(
                &target,
                &args.token,
                &args.ca_fingerprint,
            ))?;
            println!(
                "enrolled as gateway:{} (certificate {}, serial {}, key {} mode 0600)",
                target.gateway,
                done.files.cert.display(),
                done.serial,
                done.files.key.display()
            );
            Ok(())
        }
        Command::Run { config } => {
            let cfg = AgentConfig::load(&config)?;
            wardgate_daemon::log::budget().set_limit(cfg.limits.log_bytes_per_minute.0);
            let rt = wardgate_agent::run::runtime().context("starting tokio")?;
            rt.block_on(wardgate_agent::run::run(cfg))
        }
        Command::Status { pin_root } => {
            // Read-only: the pinned maps are opened, nothing is loaded or attached.
            let st = wardgate_agent::datapath::pinned::status(&pin_root)?;
            println!("active slot {}, generation {}", st.slot, st.generation);
            match st.heartbeat_age_ms {
                Some(age) => println!(
                    "agent heartbeat {age} ms ago; watchdog {} (went stale {}, recovered {})",
                    if st.watchdog.stale != 0 {
                        "FIRED: fail-open devices monitored"
                    } else {
                        "ok"
                    },
                    st.watchdog.went_stale,
                    st.watchdog.recovered
                ),
                None => println!("agent heartbeat: never"),
            }
            for (reason, n) in st.reasons {
                if n > 0 {
                    println!("{:<28} {n}", reason.name());
                }
            }
            if st.events_lost.is_empty() {
                println!("events lost: none");
            } else {
                println!("events lost:");
                for ((why, kind), n) in st.events_lost {
                    println!("  {:<18} {:<16} {n}", why.name(), kind.name());
                }
            }
            // Do-not-disrupt: established flows the active generation denies, on grace.
            let grace = wardgate_agent::datapath::grace_flows(&pin_root)?;
            if grace.is_empty() {
                println!("flows on grace: none");
            } else {
                println!("flows on grace: {}", grace.len());
                for g in grace {
                    let proto = match g.proto {
                        6 => "tcp".to_string(),
                        17 => "udp".to_string(),
                        p => format!("proto {p}"),
                    };
                    println!(
                        "  device {} ({}) -> {} {proto}/{} ends in {} s (allowed under generation {})",
                        g.device_id, g.device, g.peer, g.port, g.ends_in_s, g.generation
                    );
                }
            }
            Ok(())
        }
    }
}
