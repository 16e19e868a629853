//! Output format shared by every wardctl subcommand: tables for people, JSON for scripts.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Human,
    Json,
}
