//! The round trips a write transaction makes around the write lock: each one under the lock is
//! paid by every write queued behind it (500 assignments in flight wait one after the other),
//! so the beginning and the end are one round trip each.

use tokio_postgres::SimpleQueryMessage;

use super::{Db, listen, lost, unsigned, wait};
use crate::{
    audit::{self, AuditEntry},
    error::{Error, Result},
    store::{DeviceRow, GenerationContent, GenerationRow},
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
    devices: &[DeviceRow],
    generations: &[Held],
    entries: &[AuditEntry],
) -> (Result<()>, bool) {
    // Prepared before anything is sent (once per connection).
    let statements = (|| -> Result<_> {
        Ok((
            c.statement(GENERATIONS)?,
            c.statement(super::site::INSERT_AUDIT)?,
            c.statement(UPDATE_DEVICES)?,
        ))
    })();
    let (insert_generations, insert_audit, update) = match statements {
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
    let updated = UpdatedColumns::of(devices);
    let (d, g, a, commit) = wait(async {
        tokio::join!(
            async {
                if devices.is_empty() {
                    return Ok(0);
                }
                c.execute(&update, &updated.params()).await
            },
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
    let result = updated
        .check(d)
        .and(g.map_err(Error::from))
        .and(a.map_err(Error::from))
        .and(commit.map(|()| 0).map_err(Error::from))
        .map(|_| ());
    let ended = !result.as_ref().is_err_and(lost);
    (result, ended)
}

/// Every generation row and one NOTIFY each, in one statement (a WITH's INSERT runs whether or
/// not the query reads it).
const GENERATIONS: &str = "WITH stored AS (INSERT INTO generations (gateway, generation, \
     bundle, reason, created_ms) SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BYTEA[], \
     $4::TEXT[], $5::BIGINT[])) SELECT pg_notify($6, n) FROM UNNEST($7::TEXT[]) AS n";

/// Sets profile, mode and location of each named device (the rows a transaction held back
/// its updates of: `PgTx::db`), in one statement.
const UPDATE_DEVICES: &str = "UPDATE devices AS d SET profile = u.profile, mode = u.mode, \
     location = u.location FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[]) \
     AS u (name, profile, mode, location) WHERE d.name = u.name";

/// [`UPDATE_DEVICES`]'s columns.
struct UpdatedColumns<'a> {
    name: Vec<&'a str>,
    profile: Vec<&'a str>,
    mode: Vec<&'static str>,
    location: Vec<&'a str>,
}

impl<'a> UpdatedColumns<'a> {
    fn of(devices: &'a [DeviceRow]) -> Self {
        UpdatedColumns {
            name: devices.iter().map(|d| d.name.as_str()).collect(),
            profile: devices.iter().map(|d| d.profile.as_str()).collect(),
            mode: devices.iter().map(|d| d.mode.as_str()).collect(),
            location: devices.iter().map(|d| d.location.as_str()).collect(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 4] {
        [&self.name, &self.profile, &self.mode, &self.location]
    }

    /// Every row was there to update (the transaction read each; the lock kept them).
    fn check(&self, updated: std::result::Result<u64, tokio_postgres::Error>) -> Result<u64> {
        let n = updated?;
        if n != self.name.len() as u64 {
            return Err(Error::Internal(format!(
                "{n} of {} held-back device updates found their row",
                self.name.len()
            )));
        }
        Ok(n)
    }
}

/// Writes the device updates a transaction held back (one round trip).
pub(super) fn update_devices(c: &Db, devices: &[DeviceRow]) -> Result<()> {
    let updated = UpdatedColumns::of(devices);
    let statement = c.statement(UPDATE_DEVICES)?;
    updated.check(wait(c.execute(&statement, &updated.params())))?;
    Ok(())
}
