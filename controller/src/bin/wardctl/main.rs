//! wardctl: the command line for engineers and scripts.

use clap::Parser;
use wardgate_controller::cli::output::OutputFormat;

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
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = cli.output;
    match cli.command {
        None => anyhow::bail!("no command given; see `wardctl --help`"),
    }
}
