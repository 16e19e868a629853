//! Gateways' certificates without a person: one-time enrollment tokens, enrollment (the one
//! call without a client certificate), renewal over mTLS, revocation by gateway name. Every
//! step is an audited write (`store::Change`); the services only check who calls.
//!
//! An enrollment refusal tells the caller nothing about why (unknown token, used, expired,
//! another gateway's, revoked name: one message), so the unauthenticated call cannot be used
//! to learn which names exist; the reason goes to the audit trail and the log.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use sha2::{Digest as _, Sha256};

use crate::{
    audit::now_ms,
    error::{Error, Result},
    issuing::{Issued, IssuingCa},
    service::Ctx,
    store::{CertRequest, Change, IssuedCert},
};

/// What a refused enrollment answers, whatever the reason.
pub const ENROLL_REFUSED: &str = "enrollment refused: the token is not valid for this gateway \
     (unknown, already used, expired, issued for another name, or the gateway is revoked); \
     ask an engineer for a new one (`wardctl gateways enroll NAME`)";

/// Default lifetime of an enrollment token.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime a token may be given.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// SHA-256 (hex) of a token: what the store keeps.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new token: 32 random bytes, hex, with a prefix that says what it is.
pub fn new_token() -> Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(format!("wgt_{}", hex::encode(b)))
}

/// Tokens left in a bucket, and when it was last refilled.
type Bucket = (f64, Instant);

/// A token bucket per client address, and one for all of them together.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<(HashMap<IpAddr, Bucket>, Bucket)>,
}

impl RateLimiter {
    /// `burst` attempts at once per address, refilled at `per_minute`; all addresses together
    /// get ten times that.
    pub fn new(burst: u32, per_minute: u32) -> RateLimiter {
        let now = Instant::now();
        RateLimiter {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_minute) / 60.0,
            buckets: Mutex::new((HashMap::new(), (f64::from(burst.max(1)) * 10.0, now))),
        }
    }

    /// Takes one attempt for `peer`; false when it or everyone is over the limit.
    pub fn allow(&self, peer: IpAddr) -> bool {
        let now = Instant::now();
        let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (per_peer, all) = &mut *guard;
        let refill = |(tokens, at): &mut Bucket, cap: f64, rate: f64| {
            *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(cap);
            *at = now;
        };
        refill(all, self.burst * 10.0, self.per_sec * 10.0);
        // Bounded memory: full buckets carry no state worth keeping.
        if per_peer.len() > 10_000 {
            let (burst, rate) = (self.burst, self.per_sec);
            per_peer.retain(|_, b| {
                refill(b, burst, rate);
                b.0 < burst
            });
        }
        let mine = per_peer.entry(peer).or_insert((self.burst, now));
        refill(mine, self.burst, self.per_sec);
        if mine.0 < 1.0 || all.0 < 1.0 {
            return false;
        }
        mine.0 -= 1.0;
        all.0 -= 1.0;
        true
    }
}

/// The controller's fleet settings and its issuing CA.
#[derive(Debug)]
pub struct Fleet {
    /// `None`: the certificate directory holds no issuing CA; enrollment and renewal are
    /// refused (FailedPrecondition).
    pub issuing: Option<IssuingCa>,
    /// Lifetime of the certificates issued at enrollment and renewal.
    pub lifetime: Duration,
    pub limiter: RateLimiter,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            issuing: None,
            lifetime: crate::issuing::DEFAULT_LIFETIME,
            limiter: RateLimiter::new(5, 6),
        }
    }
}

fn cert_row(issued: &Issued) -> IssuedCert {
    IssuedCert {
        serial: issued.serial.clone(),
        not_after_ms: (issued.not_after.unix_timestamp_nanos() / 1_000_000) as i64,
    }
}

impl Fleet {
    fn issuing(&self) -> Result<&IssuingCa> {
        self.issuing.as_ref().ok_or_else(|| {
            Error::Precondition(
                "this controller holds no issuing CA (issuing-ca.pem and issuing-ca.key in its \
                 certificate directory, written by `wardctl certs init`)"
                    .into(),
            )
        })
    }

    /// `wardctl gateways enroll`: a token for `gateway`, valid for `valid_for` (default 24 h).
    /// Returns the token, its expiry (ms) and the root CA's fingerprint.
    pub fn create_token(
        &self,
        ctx: &Ctx,
        actor: &str,
        reason: &str,
        gateway: &str,
        valid_for: Option<Duration>,
    ) -> Result<(String, i64, String, u64)> {
        crate::certs::validate_name("gateway", gateway).map_err(Error::Invalid)?;
        let fingerprint = self.issuing()?.root_fingerprint().to_string();
        let valid_for = valid_for.unwrap_or(DEFAULT_TOKEN_LIFETIME);
        if valid_for.is_zero() || valid_for > MAX_TOKEN_LIFETIME {
            return Err(Error::Invalid(format!(
                "a token is valid for at most {} (asked: {})",
                humantime::format_duration(MAX_TOKEN_LIFETIME),
                humantime::format_duration(valid_for)
            )));
        }
        let token = new_token()?;
        let expires_ms = now_ms() + valid_for.as_millis() as i64;
        let out = ctx.write(
            actor,
            reason,
            Change::IssueEnrollmentToken {
                gateway: gateway.to_string(),
                token_hash: token_hash(&token),
                expires_ms,
            },
        )?;
        Ok((token, expires_ms, fingerprint, out.audit_seq))
    }

    /// Enrollment from `peer`: the token spent and a certificate signed, or refused with
    /// [`ENROLL_REFUSED`] (the reason audited).
    pub fn enroll(
        &self,
        ctx: &Ctx,
        peer: Option<IpAddr>,
        gateway: &str,
        token: &str,
        csr_pem: &str,
    ) -> Result<(Issued, &IssuingCa)> {
        let from = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        if let Some(p) = peer
            && !self.limiter.allow(p)
        {
            // Not audited: a flood must not fill the audit trail.
            tracing::warn!(peer = %p, "enrollment rate limit reached: refused");
            return Err(Error::RateLimited(
                "too many enrollment attempts from this address; retry in a minute".into(),
            ));
        }
        crate::certs::validate_name("gateway", gateway).map_err(Error::Invalid)?;
        let ca = self.issuing()?;
        let issued = ca
            .sign(gateway, csr_pem, self.lifetime)
            .map_err(|e| Error::Invalid(format!("{e}")))?;
        let reason = format!("enrollment from {from}");
        let change = Change::Enroll {
            gateway: gateway.to_string(),
            token_hash: token_hash(token),
            cert: cert_row(&issued),
            now_ms: now_ms(),
        };
        match ctx.write(&format!("gateway:{gateway}"), &reason, change) {
            Ok(_) => {
                tracing::info!(
                    gateway,
                    peer = from,
                    serial = issued.serial,
                    "gateway enrolled"
                );
                Ok((issued, ca))
            }
            Err(Error::Denied(why)) => {
                tracing::warn!(gateway, peer = from, why, "enrollment refused");
                ctx.write(
                    &format!("unauthenticated:{from}"),
                    &reason,
                    Change::RefuseCertificate {
                        gateway: gateway.to_string(),
                        kind: CertRequest::Enroll,
                        why,
                    },
                )?;
                Err(Error::Denied(ENROLL_REFUSED.into()))
            }
            Err(e) => Err(e),
        }
    }

    /// Renewal by the agent of `gateway` (already authenticated as it): a new certificate for
    /// the key of `csr_pem`, refused (PermissionDenied, audited) once the gateway is revoked.
    pub fn renew(&self, ctx: &Ctx, gateway: &str, csr_pem: &str) -> Result<(Issued, &IssuingCa)> {
        let ca = self.issuing()?;
        let issued = ca
            .sign(gateway, csr_pem, self.lifetime)
            .map_err(|e| Error::Invalid(format!("{e}")))?;
        let actor = format!("gateway:{gateway}");
        let change = Change::RenewCertificate {
            gateway: gateway.to_string(),
            cert: cert_row(&issued),
        };
        match ctx.write(&actor, "certificate renewal", change) {
            Ok(_) => {
                tracing::info!(gateway, serial = issued.serial, "certificate renewed");
                Ok((issued, ca))
            }
            Err(Error::Denied(why)) => {
                tracing::warn!(gateway, why, "renewal refused");
                ctx.write(
                    &actor,
                    "certificate renewal",
                    Change::RefuseCertificate {
                        gateway: gateway.to_string(),
                        kind: CertRequest::Renew,
                        why: why.clone(),
                    },
                )?;
                Err(Error::Denied(format!("renewal refused: {why}")))
            }
            Err(e) => Err(e),
        }
    }

    /// `wardctl gateways revoke`: the name revoked (audited), its policy streams ended, then
    /// every certificate issued to a revoked gateway on the issuing CA's revocation list, which
    /// the listener reloads and so closes the gateway's open connections.
    pub fn revoke(
        &self,
        ctx: &Ctx,
        actor: &str,
        reason: &str,
        gateway: &str,
    ) -> Result<wardgate_proto::v1::WriteResponse> {
        crate::certs::validate_name("gateway", gateway).map_err(Error::Invalid)?;
        let out = ctx.write(
            actor,
            reason,
            Change::RevokeGateway {
                gateway: gateway.to_string(),
            },
        )?;
        // Its open policy streams end now; reconnecting is refused at `Register`.
        ctx.push.disconnect(gateway);
        if let Some(ca) = &self.issuing {
            let serials = ctx.store.revoked_serials()?;
            // The list's number only has to grow: the time does.
            ca.revoke(&serials, now_ms().max(1) as u64)
                .map_err(|e| Error::Internal(format!("{e}")))?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_refuses_past_the_burst_per_address() {
        let l = RateLimiter::new(3, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!((0..3).all(|_| l.allow(a)));
        assert!(!l.allow(a));
        assert!(l.allow(b), "another address has its own bucket");
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (t1, t2) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(t1, t2);
        assert!(t1.starts_with("wgt_") && t1.len() == 68);
        assert_eq!(token_hash(&t1).len(), 64);
        assert_ne!(token_hash(&t1), t1);
    }
}
