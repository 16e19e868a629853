//! The round trips a write transaction makes around the write lock: each one under the lock is
//! paid by every write queued behind it (500 assignments in flight wait one after the other),
//! so the beginning and the end are one round trip each.

use tokio_postgres::SimpleQueryMessage;

use super::{Db, listen, lost, unsigned, wait};
use crate::{
    audit::{self, AuditEntry},
    error::{Error, Result},
    store::{GenerationContent, GenerationRow},
};

/// A generation held for the commit: PostgreSQL stores bundle bytes only.
pub(super) struct Held {
    gateway: String,
    generation: u32,
    bundle: Vec<u8>,
    reason: String,
}

impl Held {
    pub(super) fn of(row: &GenerationRow) -> Result<Held> {
        let GenerationContent::Bundle(bundle) = &row.content else {
            return Err(Error::Internal(
                "a PostgreSQL store holds generations as bundle bytes only".into(),
            ));
        };
        Ok(Held {
            gateway: row.gateway.clone(),
            generation: row.generation,
            bundle: bundle.clone(),
            reason: row.reason.clone(),
        })
    }

    pub(super) fn gateway(&self) -> &str {
        &self.gateway
    }

    pub(super) fn generation(&self) -> u32 {
        self.generation
    }

    pub(super) fn row(&self) -> GenerationRow {
        GenerationRow {
            gateway: self.gateway.clone(),
            generation: self.generation,
            content: GenerationContent::Bundle(self.bundle.clone()),
            reason: self.reason.clone(),
        }
    }
}

/// The audit chain head (sequence number and hash).
pub(super) type Head = (u64, String);

/// BEGIN, the write lock `lock`, the audit chain head and the store's epoch (None: none yet), in
/// one round trip. On an error the transaction is rolled back here (a connection that was lost is the
/// caller's to retry).
pub(super) fn begin(c: &Db, lock: i64) -> Result<(Head, Option<String>)> {
    let sent = wait(c.simple_query(&format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({lock}); \
         SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1; \
         SELECT value FROM store_meta WHERE key = 'epoch'"
    )))
    .map_err(Error::from)
    .and_then(|messages| read_begin(&messages));
    if let Err(e) = &sent
        && !lost(e)
    {
        // Nothing to keep; an error here leaves the connection as it was (already ended).
        let _ = wait(c.batch_execute("ROLLBACK"));
    }
    sent
}

/// The head and the epoch out of `begin`'s replies: statements 2 and 3 (0-based).
fn read_begin(messages: &[SimpleQueryMessage]) -> Result<(Head, Option<String>)> {
    let mut statement = 0;
    let mut head = None;
    let mut epoch = None;
    for m in messages {
        match m {
            SimpleQueryMessage::CommandComplete(_) => statement += 1,
            SimpleQueryMessage::Row(r) if statement == 2 => {
                let seq: i64 = r
                    .get(0)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Error::Internal("the audit head's seq does not read".into()))?;
                let hash = r.get(1).unwrap_or_default().to_string();
                head = Some((unsigned(seq), hash));
            }
            SimpleQueryMessage::Row(r) if statement == 3 => {
                epoch = r.get(0).map(str::to_string);
            }
            _ => {}
        }
    }
    Ok((
        head.unwrap_or_else(|| (0, audit::GENESIS.to_string())),
        epoch,
    ))
}

/// The generations (each with the NOTIFY that tells the other controllers), the audit entries
/// and the COMMIT, sent without waiting in between: one round trip. A failed insert aborts the
/// transaction and its COMMIT then ends it as a rollback, so the write fails with that insert's
/// error and nothing of it stays. Returns the outcome and whether the transaction has ended
/// (false: nothing was sent, or the connection was lost, and the caller rolls back).
pub(super) fn insert_and_commit(
    c: &Db,
    generations: &[Held],
    entries: &[AuditEntry],
) -> (Result<()>, bool) {
    // Prepared before anything is sent (once per connection).
    let statements = (|| -> Result<_> {
        Ok((
            c.statement(GENERATIONS)?,
            c.statement(super::site::INSERT_AUDIT)?,
        ))
    })();
    let (insert_generations, insert_audit) = match statements {
        Ok(s) => s,
        Err(e) => return (Err(e), false),
    };
    let gateway: Vec<&str> = generations.iter().map(|g| g.gateway.as_str()).collect();
    let number: Vec<i64> = generations
        .iter()
        .map(|g| i64::from(g.generation))
        .collect();
    let bundle: Vec<&[u8]> = generations.iter().map(|g| g.bundle.as_slice()).collect();
    let reason: Vec<&str> = generations.iter().map(|g| g.reason.as_str()).collect();
    let notify: Vec<String> = generations
        .iter()
        .map(|g| listen::generation(&g.gateway, g.generation))
        .collect();
    let created = vec![audit::now_ms(); generations.len()];
    let audit_columns = super::site::AuditColumns::of(entries);
    let (g, a, commit) = wait(async {
        tokio::join!(
            async {
                if generations.is_empty() {
                    return Ok(0);
                }
                c.execute(
                    &insert_generations,
                    &[
                        &gateway,
                        &number,
                        &bundle,
                        &reason,
                        &created,
                        &listen::CHANNEL,
                        &notify,
                    ],
                )
                .await
            },
            async {
                if entries.is_empty() {
                    return Ok(0);
                }
                c.execute(&insert_audit, &audit_columns.params()).await
            },
            c.batch_execute("COMMIT"),
        )
    });
    let result = g
        .and(a)
        .and(commit.map(|()| 0))
        .map(|_| ())
        .map_err(Error::from);
    let ended = !result.as_ref().is_err_and(lost);
    (result, ended)
}

/// Every generation row and one NOTIFY each, in one statement (a WITH's INSERT runs whether or
/// not the query reads it).
const GENERATIONS: &str = "WITH stored AS (INSERT INTO generations (gateway, generation, \
     bundle, reason, created_ms) SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BYTEA[], \
     $4::TEXT[], $5::BIGINT[])) SELECT pg_notify($6, n) FROM UNNEST($7::TEXT[]) AS n";
