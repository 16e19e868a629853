//! Fleet rows: enrollment tokens (hashed), issued gateway certificates, revoked gateways. The
//! checks that must be atomic with spending a token (unused, unexpired, its gateway, not
//! revoked) run here, inside the write's transaction, so two agents racing with one token
//! cannot both win.

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{Applied, Change};
use crate::error::{Error, Result};

pub(super) fn revoked(c: &Connection, gateway: &str) -> Result<bool> {
    Ok(
        c.prepare_cached("SELECT 1 FROM revoked_gateways WHERE name = ?1")?
            .query_row([gateway], |_| Ok(()))
            .optional()?
            .is_some(),
    )
}

pub(super) fn revoked_serials(c: &Connection) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(
        "SELECT serial FROM gateway_certs WHERE gateway IN (SELECT name FROM revoked_gateways) \
         ORDER BY serial",
    )?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn cert_expiry(c: &Connection) -> Result<std::collections::BTreeMap<String, i64>> {
    let mut st =
        c.prepare_cached("SELECT gateway, MAX(not_after_ms) FROM gateway_certs GROUP BY gateway")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn insert_cert(c: &Connection, gateway: &str, cert: &super::IssuedCert) -> Result<()> {
    c.execute(
        "INSERT INTO gateway_certs (serial, gateway, not_after_ms) VALUES (?1, ?2, ?3)",
        params![cert.serial, gateway, cert.not_after_ms],
    )?;
    Ok(())
}

fn refuse_revoked(c: &Connection, gateway: &str) -> Result<()> {
    if revoked(c, gateway)? {
        return Err(Error::Denied(format!("gateway {gateway} is revoked")));
    }
    Ok(())
}

pub(super) fn apply(c: &Connection, change: &Change) -> Result<Applied> {
    match change {
        Change::IssueEnrollmentToken {
            gateway,
            token_hash,
            expires_ms,
        } => {
            if revoked(c, gateway)? {
                return Err(Error::Precondition(format!(
                    "gateway {gateway} is revoked: it cannot enroll again under that name"
                )));
            }
            c.execute(
                "INSERT INTO enrollment_tokens (token_hash, gateway, expires_ms) VALUES (?1, ?2, ?3)",
                params![token_hash, gateway, expires_ms],
            )?;
        }
        Change::Enroll {
            gateway,
            token_hash,
            cert,
            now_ms,
        } => {
            let row: Option<(String, i64, Option<i64>)> = c
                .query_row(
                    "SELECT gateway, expires_ms, used_ms FROM enrollment_tokens WHERE token_hash = ?1",
                    [token_hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let why = match row {
                None => Some("unknown token".to_string()),
                Some((g, _, _)) if g != *gateway => {
                    Some(format!("token issued for gateway {g}, not {gateway}"))
                }
                Some((_, _, Some(used))) => Some(format!("token already used (at {used} ms)")),
                Some((_, expires, None)) if expires <= *now_ms => {
                    Some(format!("token expired (at {expires} ms)"))
                }
                Some(_) if revoked(c, gateway)? => Some(format!("gateway {gateway} is revoked")),
                Some(_) => None,
            };
            if let Some(why) = why {
                return Err(Error::Denied(why));
            }
            c.execute(
                "UPDATE enrollment_tokens SET used_ms = ?2 WHERE token_hash = ?1",
                params![token_hash, now_ms],
            )?;
            insert_cert(c, gateway, cert)?;
        }
        Change::RenewCertificate { gateway, cert } => {
            refuse_revoked(c, gateway)?;
            insert_cert(c, gateway, cert)?;
        }
        Change::RefuseCertificate { .. } => {}
        Change::RevokeGateway { gateway } => {
            c.execute(
                "INSERT OR IGNORE INTO revoked_gateways (name, revoked_ms) VALUES (?1, ?2)",
                params![gateway, crate::audit::now_ms()],
            )?;
        }
        other => {
            return Err(Error::Internal(format!(
                "not a fleet change: {:?}",
                std::mem::discriminant(other)
            )));
        }
    }
    Ok(Applied::Recorded)
}
