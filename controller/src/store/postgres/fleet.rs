//! Fleet rows in PostgreSQL: enrollment tokens (hashed), issued gateway certificates, revoked
//! gateways. Spending a token and its checks run inside the write transaction (under the
//! write lock), so two agents racing with one token cannot both win.

use std::collections::BTreeMap;

use super::Db;

use super::Sql;
use crate::{
    audit::now_ms,
    error::{Error, Result},
    store::{Applied, Change, IssuedCert},
};

pub(super) fn revoked(c: &Db, gateway: &str) -> Result<bool> {
    Ok(c.opt(
        "SELECT 1 FROM revoked_gateways WHERE name = $1",
        &[&gateway],
    )?
    .is_some())
}

pub(super) fn revoked_serials(c: &Db) -> Result<Vec<String>> {
    c.rows(
        "SELECT serial FROM gateway_certs WHERE gateway IN (SELECT name FROM revoked_gateways) \
         ORDER BY serial",
        &[],
    )?
    .iter()
    .map(|r| Ok(r.try_get(0)?))
    .collect()
}

pub(super) fn cert_expiry(c: &Db) -> Result<BTreeMap<String, i64>> {
    c.rows(
        "SELECT gateway, MAX(not_after_ms) FROM gateway_certs GROUP BY gateway",
        &[],
    )?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect()
}

fn insert_cert(c: &Db, gateway: &str, cert: &IssuedCert) -> Result<()> {
    c.exec(
        "INSERT INTO gateway_certs (serial, gateway, not_after_ms) VALUES ($1, $2, $3)",
        &[&cert.serial, &gateway, &cert.not_after_ms],
    )?;
    Ok(())
}

pub(super) fn apply(c: &Db, change: &Change) -> Result<Applied> {
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
            c.exec(
                "INSERT INTO enrollment_tokens (token_hash, gateway, expires_ms) \
                 VALUES ($1, $2, $3)",
                &[token_hash, gateway, expires_ms],
            )?;
        }
        Change::Enroll {
            gateway,
            token_hash,
            cert,
            now_ms,
        } => {
            let row = c.opt(
                "SELECT gateway, expires_ms, used_ms FROM enrollment_tokens \
                 WHERE token_hash = $1 FOR UPDATE",
                &[token_hash],
            )?;
            let row: Option<(String, i64, Option<i64>)> = row
                .map(|r| -> Result<_> { Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)) })
                .transpose()?;
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
            c.exec(
                "UPDATE enrollment_tokens SET used_ms = $2 WHERE token_hash = $1",
                &[token_hash, now_ms],
            )?;
            insert_cert(c, gateway, cert)?;
        }
        Change::RenewCertificate { gateway, cert } => {
            if revoked(c, gateway)? {
                return Err(Error::Denied(format!("gateway {gateway} is revoked")));
            }
            insert_cert(c, gateway, cert)?;
        }
        Change::RefuseCertificate { .. } => {}
        Change::RevokeGateway { gateway } => {
            c.exec(
                "INSERT INTO revoked_gateways (name, revoked_ms) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[gateway, &now_ms()],
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
