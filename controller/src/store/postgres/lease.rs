//! SOC sink leases: with several controllers on one database, each sink's alerts are
//! delivered by the one controller holding its lease (a `sink_leases` row: holder and
//! expiry). Taking and renewing is one statement (a free, expired or own lease becomes ours);
//! the cursor advances only in a statement that checks the lease is still ours and unexpired.
//! Expiry is the server's clock, so the controllers' clocks need not agree.

use std::time::Duration;

use super::Db;

use super::Sql;
use crate::{
    audit::now_ms,
    error::{Error, Result},
};

/// A random name for this store as a lease holder.
pub(super) fn holder() -> Result<String> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b)
        .map_err(|e| Error::Internal(format!("no randomness for the lease holder: {e}")))?;
    Ok(hex::encode(b))
}

/// Takes or renews `sink`'s lease for `ttl`; true if `holder` has it now.
pub(super) fn hold(c: &Db, sink: &str, holder: &str, ttl: Duration) -> Result<bool> {
    let ms = ttl.as_secs_f64() * 1000.0;
    let row = c.opt(
        "INSERT INTO sink_leases (sink, holder, expires) \
         VALUES ($1, $2, clock_timestamp() + $3::float8 * INTERVAL '1 millisecond') \
         ON CONFLICT (sink) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires \
         WHERE sink_leases.holder = EXCLUDED.holder OR sink_leases.expires < clock_timestamp() \
         RETURNING holder",
        &[&sink, &holder, &ms],
    )?;
    Ok(row.is_some())
}

/// Advances `sink`'s cursor to `seq` (never back) if `holder` still holds its lease.
pub(super) fn advance(c: &Db, sink: &str, holder: &str, seq: i64) -> Result<bool> {
    let n = c.exec(
        "INSERT INTO sink_cursors (sink, delivered, updated_ms) \
         SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM sink_leases WHERE sink = $1 \
         AND holder = $4 AND expires > clock_timestamp()) \
         ON CONFLICT (sink) DO UPDATE \
         SET delivered = GREATEST(sink_cursors.delivered, EXCLUDED.delivered), \
         updated_ms = EXCLUDED.updated_ms",
        &[&sink, &seq, &now_ms(), &holder],
    )?;
    Ok(n == 1)
}
