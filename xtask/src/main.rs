//! Developer tasks for wardgate: `cargo xtask setup | test | bench | fuzz | demo | package | eval`.

mod bench;
mod bench_learn;
mod cmd;
mod demo;
mod eval;
mod fuzz;
mod package;
mod package_check;
mod package_skew;
mod package_upgrade;
mod previous;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "wardgate developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install apt packages, pinned toolchains, bpf-linker and Python gRPC (idempotent).
    Setup,
    /// Run every test tier (fmt, clippy, unit, datapath, attach, demo, package); runs setup first.
    Test {
        /// Run only these tiers (repeatable).
        #[arg(long = "tier", value_enum)]
        tiers: Vec<test::Tier>,
        /// Skip the setup check.
        #[arg(long)]
        no_setup: bool,
    },
    /// Run a benchmark and print its table.
    Bench {
        #[arg(value_enum)]
        which: bench::Bench,
        /// The controller bench's store(s): sqlite, postgres or both.
        #[arg(long, value_enum, default_value_t = bench::Stores::Both)]
        store: bench::Stores,
        /// The controller bench's replica counts (1 or 2; PostgreSQL only for 2). Default:
        /// 1 on SQLite, 1 and 2 on PostgreSQL.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
        replicas: Option<u8>,
    },
    /// Run every fuzz target for a bounded time.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Run the detectors over the project's test captures (regression: capture x detector,
    /// expected and got; fails on a difference) and over labelled third-party material
    /// (evaluation: per detector found / wrong source / missed, false alerts per device-day).
    Eval,
    /// The main job: a ward put under wardgate, the whole story (learning from real peers, four
    /// eyes, enforce, a scan caught, the SOC's syslog and OCSF, the console), in network
    /// namespaces on the embedded store.
    Demo {
        /// Stay up until Ctrl-C, the console reachable from this machine's browser.
        #[arg(long)]
        keep: bool,
        /// Passed to the demo (`cargo xtask demo -- --keep`).
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// Build the .deb packages of the agent and the controller (target/debian/).
    Package,
}

/// Errors end the run as one `error: ...` chain and exit 1, without the backtrace `anyhow`
/// prints for `main`'s error under RUST_BACKTRACE: CI shows the tail of the output, and a
/// backtrace of xtask there pushed out the failing tiers' reasons.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::run(),
        Task::Test { tiers, no_setup } => test::run(&tiers, no_setup),
        Task::Bench {
            which,
            store,
            replicas,
        } => bench::run(which, store, replicas),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::Demo { keep, rest } => demo::run(keep || rest.iter().any(|a| a == "--keep")),
        Task::Package => package::run().map(drop),
        Task::Eval => eval::run(),
    }
}
