//! Output format shared by every wardctl subcommand: tables for people, JSON for scripts.

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Human,
    Json,
}

/// Prints `value` as JSON (for `--output json`).
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
