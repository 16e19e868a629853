//! wardctl: the command line for engineers and scripts.

use clap::Parser;
use wardgate_controller::cli::{output::OutputFormat, profile, site};

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Profile(cmd) => profile::run(cmd, cli.output),
        Command::Site(cmd) => site::run(cmd, cli.output),
    }
}
