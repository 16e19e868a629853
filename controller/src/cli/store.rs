//! `wardctl store migrate --from sqlite:PATH --to postgres:URL`: moves a stopped (or live)
//! controller's SQLite store into an empty PostgreSQL database, the audit trail verified on
//! both sides (`crate::store::migrate`). Works on the files and the database directly, not
//! through the API.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use super::output::{self, OutputFormat};
use crate::store::migrate::{self, Summary};

#[derive(Subcommand)]
pub enum StoreCmd {
    /// Copy every table of a SQLite store into an empty PostgreSQL database in one
    /// transaction, then check the copy there (audit chain, generations, rows per table)
    /// before it commits. Stop the controller first for a move without a gap.
    Migrate {
        /// `sqlite:DATA`: the controller's data directory (holding `wardgate.db`), or the
        /// `wardgate.db` file itself.
        #[arg(long)]
        from: String,
        /// `postgres:URL`: the target database (`postgres://USER@HOST:PORT/DB`), empty.
        #[arg(long)]
        to: String,
        /// The source's audit head file (default DATA/audit-head.log).
        #[arg(long)]
        audit_head: Option<PathBuf>,
    },
}

/// `sqlite:PATH` as a data directory.
pub fn sqlite_source(from: &str) -> anyhow::Result<PathBuf> {
    let path = from
        .strip_prefix("sqlite:")
        .with_context(|| format!("--from `{from}`: expected sqlite:PATH"))?;
    let path = Path::new(path);
    Ok(if path.file_name().is_some_and(|n| n == "wardgate.db") {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    })
}

/// `postgres:URL` as the URL (`postgres:postgres://...`, or `postgres://...` as it is).
pub fn postgres_target(to: &str) -> anyhow::Result<&str> {
    if to.starts_with("postgres://") || to.starts_with("postgresql://") {
        return Ok(to);
    }
    to.strip_prefix("postgres:")
        .with_context(|| format!("--to: expected postgres:URL, got `{}`", scheme(to)))
}

/// What comes before the first `:` (an error names the scheme, never the password).
fn scheme(s: &str) -> &str {
    s.split(':').next().unwrap_or_default()
}

pub fn run(cmd: StoreCmd, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        StoreCmd::Migrate {
            from,
            to,
            audit_head,
        } => {
            let data = sqlite_source(&from)?;
            let url = postgres_target(&to)?;
            let summary = migrate::sqlite_to_postgres(&data, audit_head.as_deref(), url)?;
            match out {
                OutputFormat::Json => output::json(&summary),
                OutputFormat::Human => {
                    println!("{}", human(&summary));
                    Ok(())
                }
            }
        }
    }
}

/// The summary for people: rows per table on both sides, then the trail on both sides.
pub fn human(s: &Summary) -> String {
    let rows: Vec<Vec<String>> = s
        .tables
        .iter()
        .map(|t| {
            vec![
                t.table.clone(),
                t.source.to_string(),
                t.target.to_string(),
                if t.source == t.target {
                    "ok"
                } else {
                    "DIFFERS"
                }
                .to_string(),
            ]
        })
        .collect();
    format!(
        "{}\n\nsource audit trail: {} entries verified against its head file, {} generations\n\
         target audit trail: {} entries verified, {} generations, last hash {}",
        output::table(&["TABLE", "SQLITE", "POSTGRES", ""], &rows),
        s.source.entries,
        s.source.generations,
        s.target_entries,
        s.target_generations,
        s.head_hash
    )
}
