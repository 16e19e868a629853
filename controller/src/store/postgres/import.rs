//! Loading a whole store into an empty database (`super::super::migrate`): one transaction
//! under the write lock, checked before it commits.

use tokio_postgres::types::ToSql;

use super::{PgStore, Sql, site, tx::PgTx};
use crate::{
    audit,
    store::{
        GenerationContent,
        migrate::{Dump, MigrateError, TableCount, Value},
    },
};

/// Parameters a statement may carry (PostgreSQL's protocol limit), and rows an INSERT takes.
const MAX_PARAMS: usize = 65_535;
const MAX_BATCH: usize = 1_000;

/// What the load wrote and checked.
pub(in crate::store) struct Loaded {
    pub tables: Vec<TableCount>,
    pub entries: usize,
    pub generations: usize,
    pub head_hash: String,
}

/// Columns named otherwise here than in SQLite (a reserved word in PostgreSQL): table, SQLite
/// name, PostgreSQL name.
const RENAMED: &[(&str, &str, &str)] = &[("console_sessions", "user", "user_name")];

/// The PostgreSQL name of SQLite's column `column` of `table`.
fn pg_column<'a>(table: &str, column: &'a str) -> &'a str {
    RENAMED
        .iter()
        .find(|(t, c, _)| *t == table && *c == column)
        .map_or(column, |(_, _, pg)| pg)
}

/// PostgreSQL's own tables, with no SQLite counterpart: not copied (they hold what replicas
/// coordinate with), but a row in one still makes the target not empty.
const PG_ONLY: &[&str] = &["sink_leases"];

/// A dumped value as the target column's type (`data_type` in information_schema), or why not.
fn typed(v: &Value, data_type: &str) -> Result<Box<dyn ToSql + Sync>, String> {
    Ok(match (data_type, v) {
        ("bigint", Value::Null) => Box::new(None::<i64>),
        ("bigint", Value::Int(i)) => Box::new(*i),
        ("boolean", Value::Null) => Box::new(None::<bool>),
        ("boolean", Value::Int(i)) => Box::new(*i != 0),
        ("text", Value::Null) => Box::new(None::<String>),
        ("text", Value::Text(t)) => Box::new(t.clone()),
        ("text", Value::Int(i)) => Box::new(i.to_string()),
        ("bytea", Value::Null) => Box::new(None::<Vec<u8>>),
        ("bytea", Value::Blob(b)) => Box::new(b.clone()),
        (t, v) => return Err(format!("a {v:?} for a {t} column")),
    })
}

impl PgStore {
    /// Writes `dump` into this (empty) database and checks it before committing; refused
    /// (nothing written) if any table holds a row, or the schemas differ.
    pub(in crate::store) fn import(&self, dump: &Dump) -> Result<Loaded, MigrateError> {
        let target = MigrateError::Target;
        let tx = PgTx::begin(self.conn().map_err(target)?).map_err(target)?;
        let c = &*tx.conn;
        let loaded = load(c, dump)?;
        tx.finish().map_err(target)?;
        Ok(loaded)
    }
}

fn load(c: &super::Db, dump: &Dump) -> Result<Loaded, MigrateError> {
    let target = MigrateError::Target;
    // The target's tables and their columns' types.
    let mut schema: std::collections::BTreeMap<String, Vec<(String, String, bool)>> =
        Default::default();
    for r in c
        .rows(
            "SELECT c.table_name::text, c.column_name::text, c.data_type::text, \
             c.is_identity::text = 'YES' \
             FROM information_schema.columns c JOIN information_schema.tables t \
             ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
             WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' \
             AND c.table_name <> 'schema_version' ORDER BY c.table_name, c.ordinal_position",
            &[],
        )
        .map_err(target)?
    {
        schema
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2), r.get(3)));
    }
    let source: Vec<&str> = dump.tables.iter().map(|t| t.name.as_str()).collect();
    let missing: Vec<&&str> = source
        .iter()
        .filter(|t| !schema.contains_key(**t))
        .collect();
    let extra: Vec<&String> = schema
        .keys()
        .filter(|t| !source.contains(&t.as_str()) && !PG_ONLY.contains(&t.as_str()))
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(MigrateError::Schema(format!(
            "tables only in SQLite: {missing:?}; only in PostgreSQL: {extra:?}"
        )));
    }
    // Empty: no row in any table but store_meta (the epoch a fresh store makes itself).
    for name in schema.keys().filter(|t| *t != "store_meta") {
        let rows: i64 = c
            .one(&format!("SELECT count(*) FROM \"{name}\""), &[])
            .map_err(target)?
            .get(0);
        if rows > 0 {
            return Err(MigrateError::NotEmpty {
                table: name.clone(),
                rows: rows as u64,
            });
        }
    }
    c.exec("DELETE FROM store_meta", &[]).map_err(target)?;

    let mut tables = Vec::new();
    for t in &dump.tables {
        let cols = &schema[&t.name];
        let columns: Vec<&str> = t.columns.iter().map(|c| pg_column(&t.name, c)).collect();
        let mut types = Vec::new();
        for name in &columns {
            let Some((_, ty, _)) = cols.iter().find(|(n, _, _)| n == name) else {
                return Err(MigrateError::Schema(format!(
                    "column {}.{name} has no PostgreSQL column",
                    t.name
                )));
            };
            types.push(ty.as_str());
        }
        if let Some((n, _, _)) = cols.iter().find(|(n, _, _)| !columns.contains(&n.as_str())) {
            return Err(MigrateError::Schema(format!(
                "column {}.{n} has no SQLite column",
                t.name
            )));
        }
        let overriding = if cols.iter().any(|(_, _, identity)| *identity) {
            "OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let names: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
        // Rows go in batches of one multi-row INSERT each (far fewer round trips than a row
        // at a time), within PostgreSQL's 65535 parameters a statement.
        let batch = (MAX_PARAMS / columns.len().max(1)).clamp(1, MAX_BATCH);
        let insert = |rows: usize| {
            let tuples: Vec<String> = (0..rows)
                .map(|r| {
                    let p: Vec<String> = (1..=columns.len())
                        .map(|i| format!("${}", r * columns.len() + i))
                        .collect();
                    format!("({})", p.join(", "))
                })
                .collect();
            format!(
                "INSERT INTO \"{}\" ({}) {overriding} VALUES {}",
                t.name,
                names.join(", "),
                tuples.join(", ")
            )
        };
        let full = super::wait(c.prepare(&insert(batch))).map_err(|e| target(e.into()))?;
        for (n, chunk) in t.rows.chunks(batch).enumerate() {
            let mut values = Vec::with_capacity(chunk.len() * columns.len());
            for (i, row) in chunk.iter().enumerate() {
                for (v, ty) in row.iter().zip(&types) {
                    values.push(typed(v, ty).map_err(|e| {
                        MigrateError::Schema(format!("{} row {}: {e}", t.name, n * batch + i + 1))
                    })?);
                }
            }
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|b| &**b).collect();
            let done = if chunk.len() == batch {
                super::wait(c.execute(&full, &refs))
            } else {
                super::wait(c.execute(insert(chunk.len()).as_str(), &refs))
            };
            done.map_err(|e| target(e.into()))?;
        }
        let rows: i64 = c
            .one(&format!("SELECT count(*) FROM \"{}\"", t.name), &[])
            .map_err(target)?
            .get(0);
        tables.push(TableCount {
            table: t.name.clone(),
            source: t.rows.len() as u64,
            target: rows as u64,
        });
    }
    // Numbers handed out go on from the source's last (never reused), not from 1.
    let max = |table: &str, col: &str| -> Result<i64, MigrateError> {
        Ok(
            c.one(&format!("SELECT COALESCE(MAX({col}), 0) FROM {table}"), &[])
                .map_err(target)?
                .get(0),
        )
    };
    for (table, col, seq) in [
        ("alerts", "seq", "'alert_seq'".to_string()),
        (
            "pending_changes",
            "id",
            "pg_get_serial_sequence('pending_changes', 'id')".into(),
        ),
        (
            "quarantine_requests",
            "id",
            "pg_get_serial_sequence('quarantine_requests', 'id')".into(),
        ),
    ] {
        let last = max(table, col)?.max(dump.sequences.get(table).copied().unwrap_or(0));
        if last > 0 {
            c.exec(&format!("SELECT setval({seq}, $1)"), &[&last])
                .map_err(target)?;
        }
    }

    // The checks, on what this transaction wrote.
    if let Some(bad) = tables.iter().find(|t| t.source != t.target) {
        return Err(MigrateError::Check(format!(
            "table {} holds {} rows, the source {}",
            bad.table, bad.target, bad.source
        )));
    }
    let entries = site::audit_rows(c).map_err(target)?;
    audit::verify(&entries).map_err(MigrateError::Check)?;
    let lookup = |gateway: &str, g: u32| -> Result<Option<GenerationContent>, String> {
        Ok(site::generations_where(
            c,
            "WHERE gateway = $1 AND generation = $2",
            &[&gateway, &i64::from(g)],
        )
        .map_err(|e| format!("reading generation {g} of {gateway}: {e}"))?
        .pop()
        .map(|row| row.content))
    };
    let generations = audit::verify_generations(&entries, &lookup).map_err(MigrateError::Check)?;
    let head_hash = entries
        .last()
        .map_or(audit::GENESIS.to_string(), |e| e.hash.clone());
    let source_head = dump
        .table("audit")
        .and_then(|t| {
            let i = t.columns.iter().position(|c| c == "hash")?;
            let seq = t.columns.iter().position(|c| c == "seq")?;
            t.rows
                .iter()
                .max_by_key(|r| match r[seq] {
                    Value::Int(s) => s,
                    _ => 0,
                })
                .map(|r| r[i].clone())
        })
        .map_or(audit::GENESIS.to_string(), |v| match v {
            Value::Text(h) => h,
            other => format!("{other:?}"),
        });
    if head_hash != source_head {
        return Err(MigrateError::Check(format!(
            "the target's last audit hash {head_hash} is not the source's {source_head}"
        )));
    }
    Ok(Loaded {
        tables,
        entries: entries.len(),
        generations,
        head_hash,
    })
}
