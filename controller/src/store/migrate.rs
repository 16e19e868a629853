//! Moving a store from SQLite to PostgreSQL (`wardctl store migrate`): every table's rows as
//! they are stored (ids, sequence numbers, hashes, generation bytes and their format), read
//! in one SQLite read transaction, written in one PostgreSQL transaction into an empty
//! database, then checked there before the commit: the audit chain and every generation an
//! entry records verify, the last entry is the source's, and each table holds as many rows as
//! the source's.
//!
//! The copy is driven by the two schemas, not by a list kept by hand: every SQLite table and
//! column must have its PostgreSQL counterpart (or the move is refused, naming it), so a
//! migration added to one store and not the other cannot drop data silently. Values are typed
//! by the target column (BIGINT, BOOLEAN, TEXT, BYTEA). The one reshaped table is
//! `generations`: SQLite keeps a legacy JSON generation in `state_json`, PostgreSQL keeps
//! every generation's bytes in `bundle` with its `format`.

use std::{collections::BTreeMap, path::Path};

use rusqlite::{Connection, OpenFlags};

use super::{PgStore, SqliteStore, migrations::MIGRATIONS};
use crate::{audit, error::Error};

/// One stored value, as SQLite holds it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// One table's rows, columns named.
#[derive(Clone, Debug)]
pub struct TableDump {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// A whole store: its tables, and the last number each AUTOINCREMENT column handed out
/// (`sqlite_sequence`: an alert sequence number or change id is never reused, even when the
/// row holding the highest one was deleted).
#[derive(Clone, Debug, Default)]
pub struct Dump {
    pub tables: Vec<TableDump>,
    pub sequences: BTreeMap<String, i64>,
}

impl Dump {
    pub fn table(&self, name: &str) -> Option<&TableDump> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// What a move found and did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    /// Per table: rows in the source, rows in the target after the copy.
    pub tables: Vec<TableCount>,
    /// The source trail checked against its head file.
    pub source: audit::Report,
    /// Entries and generations verified on the target (chain and generations).
    pub target_entries: usize,
    pub target_generations: usize,
    /// The last entry's hash, the same on both sides.
    pub head_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TableCount {
    pub table: String,
    pub source: u64,
    pub target: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("reading the SQLite store {path}: {source}")]
    Source {
        path: String,
        #[source]
        source: Error,
    },
    #[error(
        "the SQLite store is at schema {found}, this release's is {want}: start this release's \
         controller on it once (it migrates the store), stop it, then move it"
    )]
    SourceSchema { found: u32, want: u32 },
    #[error("the SQLite store's audit trail does not verify, so it is not moved: {0}")]
    SourceTrail(String),
    #[error("the PostgreSQL target: {0}")]
    Target(#[source] Error),
    #[error(
        "the PostgreSQL target is not empty (table {table} holds {rows} rows): a store is moved \
         into an empty database only"
    )]
    NotEmpty { table: String, rows: u64 },
    #[error("the two stores' schemas differ, nothing was moved: {0}")]
    Schema(String),
    #[error("the copy did not check out on the target, so it was rolled back: {0}")]
    Check(String),
}

/// Reads every table of the SQLite store in `data_dir` (`wardgate.db`), read-only, in one read
/// transaction (a consistent snapshot even while a controller writes).
pub fn dump_sqlite(data_dir: &Path) -> Result<Dump, MigrateError> {
    let db = data_dir.join("wardgate.db");
    let source = |e: Error| MigrateError::Source {
        path: db.display().to_string(),
        source: e,
    };
    if !db.is_file() {
        return Err(source(Error::NotFound {
            what: "store",
            name: db.display().to_string(),
        }));
    }
    let c = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| source(e.into()))?;
    read_all(&c).map_err(source)?
}

fn read_all(c: &Connection) -> Result<Result<Dump, MigrateError>, Error> {
    c.execute_batch("BEGIN")?;
    let version: u32 = c.query_row("SELECT version FROM schema_version", [], |r| r.get(0))?;
    let want = MIGRATIONS.len() as u32;
    if version != want {
        return Ok(Err(MigrateError::SourceSchema {
            found: version,
            want,
        }));
    }
    let names: Vec<String> = c
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name <> 'schema_version' ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut dump = Dump::default();
    for name in names {
        let mut columns: Vec<String> = c
            .prepare(&format!(
                "SELECT name FROM pragma_table_info('{name}') ORDER BY cid"
            ))?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let select = if name == "generations" {
            // A legacy JSON generation's bytes are its text, as the audit hashed it.
            columns = [
                "gateway",
                "generation",
                "bundle",
                "reason",
                "created_ms",
                "format",
            ]
            .map(String::from)
            .to_vec();
            "SELECT gateway, generation, CASE WHEN format = 'json' THEN CAST(state_json AS BLOB) \
             ELSE bundle END, reason, created_ms, format FROM generations"
                .to_string()
        } else {
            let cols: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
            format!("SELECT {} FROM \"{name}\"", cols.join(", "))
        };
        let n = columns.len();
        let rows = c
            .prepare(&select)?
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Value::Null,
                            rusqlite::types::ValueRef::Integer(v) => Value::Int(v),
                            rusqlite::types::ValueRef::Real(v) => Value::Text(v.to_string()),
                            rusqlite::types::ValueRef::Text(t) => {
                                Value::Text(String::from_utf8_lossy(t).into_owned())
                            }
                            rusqlite::types::ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        dump.tables.push(TableDump {
            name,
            columns,
            rows,
        });
    }
    dump.sequences = c
        .prepare("SELECT name, seq FROM sqlite_sequence")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    c.execute_batch("COMMIT")?;
    Ok(Ok(dump))
}

/// Moves the SQLite store in `data_dir` (its audit head file at `head`, default
/// `DATA/audit-head.log`) into the empty PostgreSQL database at `url`: the source trail is
/// verified first, the copy checked on the target before it commits (see the module doc).
pub fn sqlite_to_postgres(
    data_dir: &Path,
    head: Option<&Path>,
    url: &str,
) -> Result<Summary, MigrateError> {
    let source_err = |e: Error| MigrateError::Source {
        path: data_dir.join("wardgate.db").display().to_string(),
        source: e,
    };
    let dump = dump_sqlite(data_dir)?;
    let sqlite = SqliteStore::open_read_only(data_dir).map_err(source_err)?;
    let head = head.map_or_else(|| data_dir.join(audit::head::FILE_NAME), Path::to_path_buf);
    let source = audit::verify_store(&sqlite, &head)
        .map_err(source_err)?
        .map_err(MigrateError::SourceTrail)?;
    drop(sqlite);
    let pg = PgStore::connect(url).map_err(MigrateError::Target)?;
    let loaded = pg.import(&dump)?;
    Ok(Summary {
        tables: loaded.tables,
        source,
        target_entries: loaded.entries,
        target_generations: loaded.generations,
        head_hash: loaded.head_hash,
    })
}

#[cfg(test)]
mod tests;
