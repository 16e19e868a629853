//! wardctl: the command line for engineers, the SOC and scripts.

use std::path::PathBuf;

use clap::Parser;
use wardgate_controller::cli::{
    alerts, assign, audit, certs, changes, devices, errors, gateways, output::OutputFormat,
    profile, profiles, push, quarantine, remote::Remote, simulate, site, store,
};

#[derive(Parser)]
#[command(
    name = "wardctl",
    version,
    about = "wardgate control: profiles, sites, devices, alerts, audit"
)]
struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Profile files: validate, show, import from MUD.
    #[command(subcommand)]
    Profile(profile::ProfileCmd),
    /// Site files: compile a gateway's desired state, diff two versions.
    #[command(subcommand)]
    Site(site::SiteCmd),
    /// Load a site file and profiles into the controller.
    Push {
        #[arg(long)]
        site: PathBuf,
        #[arg(long, default_value = "device-profiles")]
        profiles: PathBuf,
        /// Why (a reason or ticket id for the audit trail); not needed with --dry-run.
        #[arg(long)]
        reason: Option<String>,
        /// Show what would change for each device; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Profiles on the controller: list, get, validate, upsert.
    Profiles {
        #[command(subcommand)]
        cmd: profiles::ProfilesCmd,
        #[command(flatten)]
        remote: Remote,
    },
    /// Devices known to the controller.
    Devices {
        #[command(subcommand)]
        cmd: devices::DevicesCmd,
        #[command(flatten)]
        remote: Remote,
    },
    /// Assign a profile to a device.
    Assign {
        device: String,
        profile: String,
        /// Why (a reason or ticket id for the audit trail); not needed with --dry-run.
        #[arg(long)]
        reason: Option<String>,
        /// Show what would change for the device; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply it even though it would cut off traffic seen recently on more than the
        /// controller's share of a device class on a ward (the availability warning).
        #[arg(long)]
        accept_impact: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Set a device's mode: learn, monitor, enforce, quarantine.
    Mode {
        device: String,
        mode: String,
        /// Why (a reason or ticket id for the audit trail); not needed with --dry-run.
        #[arg(long)]
        reason: Option<String>,
        /// Show what would change for the device; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// SOC emergency quarantine: how long until the device goes back to its mode (e.g.
        /// 2h; default and most: the controller's --soc-quarantine-max).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        for_: Option<std::time::Duration>,
        /// Apply it even though it would cut off traffic seen recently on more than the
        /// controller's share of a device class on a ward (the availability warning).
        #[arg(long)]
        accept_impact: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// The SOC's quarantine requests: list them, approve one (engineers).
    Quarantine {
        #[command(subcommand)]
        cmd: quarantine::QuarantineCmd,
        #[command(flatten)]
        remote: Remote,
    },
    /// Gateways and their policy generations; enroll a new one, revoke one.
    Gateways {
        #[command(subcommand)]
        cmd: Option<gateways::GatewaysCmd>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Alerts: tail, list, acknowledge.
    Alerts {
        #[command(subcommand)]
        cmd: alerts::AlertsCmd,
        /// Times in UTC (default: this machine's time zone).
        #[arg(long, global = true)]
        utc: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// The audit trail: list, verify.
    Audit {
        #[command(subcommand)]
        cmd: audit::AuditCmd,
        #[command(flatten)]
        remote: Remote,
    },
    /// What a candidate profile would block among a device's recorded flows.
    Simulate(simulate::SimulateArgs),
    /// Certificates for a demo or lab.
    #[command(subcommand)]
    Certs(certs::CertsCmd),
    /// The controller's store itself: move it from SQLite to PostgreSQL.
    #[command(subcommand)]
    Store(store::StoreCmd),
    /// Four eyes: submit a profile change for a device, list, show and approve changes.
    Changes {
        #[command(subcommand)]
        cmd: changes::ChangesCmd,
        #[command(flatten)]
        remote: Remote,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One plain line for people (the server's message, not gRPC's status dump).
            eprintln!("error: {}", errors::plain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let out = cli.output;
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Profile(cmd) => profile::run(cmd, out),
        Command::Site(cmd) => site::run(cmd, out),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Store(cmd) => store::run(cmd, out),
        Command::Simulate(a) => rt()?.block_on(simulate::run(a, out)),
        Command::Push {
            site,
            profiles,
            reason,
            dry_run,
            remote,
        } => {
            let reason = assign::reason(reason, dry_run)?;
            rt()?.block_on(push::run(&site, &profiles, &reason, dry_run, &remote, out))
        }
        Command::Devices { cmd, remote } => rt()?.block_on(devices::run(cmd, &remote, out)),
        Command::Profiles { cmd, remote } => rt()?.block_on(profiles::run(cmd, &remote, out)),
        Command::Assign {
            device,
            profile,
            reason,
            dry_run,
            accept_impact,
            remote,
        } => {
            let reason = assign::reason(reason, dry_run)?;
            let w = assign::Write {
                reason,
                dry_run,
                accept_impact,
            };
            rt()?.block_on(assign::assign(device, profile, w, &remote, out))
        }
        Command::Mode {
            device,
            mode,
            reason,
            dry_run,
            for_,
            accept_impact,
            remote,
        } => {
            let reason = assign::reason(reason, dry_run)?;
            let minutes = for_.map_or(0, |d| {
                d.as_secs().div_ceil(60).min(u64::from(u32::MAX)) as u32
            });
            let w = assign::Write {
                reason,
                dry_run,
                accept_impact,
            };
            rt()?.block_on(assign::mode(device, mode, w, minutes, &remote, out))
        }
        Command::Quarantine { cmd, remote } => rt()?.block_on(quarantine::run(cmd, &remote, out)),
        Command::Gateways { cmd, remote } => rt()?.block_on(gateways::run_cmd(cmd, &remote, out)),
        Command::Alerts { cmd, remote, utc } => rt()?.block_on(alerts::run(cmd, &remote, out, utc)),
        Command::Audit { cmd, remote } => rt()?.block_on(audit::run(cmd, &remote, out)),
        Command::Changes { cmd, remote } => rt()?.block_on(changes::run(cmd, &remote, out)),
    }
}
