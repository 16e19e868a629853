//! Renewal without a person: once two thirds of the gateway certificate's lifetime have
//! passed, a new key and CSR go to the controller over mTLS with the current certificate
//! (`RenewCertificate`), the new pair replaces the old one on disk (see `identity`), and the
//! policy link is told to reconnect with it. Failures are retried with exponential backoff
//! and jitter; a revoked gateway is refused (PermissionDenied) and keeps being refused.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use wardgate_proto::v1::RenewRequest;

use crate::{
    config::ControllerConfig,
    identity::{self, Files, IdentityError, Validity},
    metrics::Live,
};

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("connecting to the controller: {0:#}")]
    Connect(anyhow::Error),
    #[error("the controller refused the renewal: {0}")]
    Refused(tonic::Status),
    #[error(transparent)]
    Files(#[from] IdentityError),
}

impl RenewError {
    /// The controller said no for who we are (revoked), not for being unreachable.
    pub fn denied(&self) -> bool {
        matches!(self, RenewError::Refused(s) if s.code() == tonic::Code::PermissionDenied)
    }
}

/// One renewal now: a new key and certificate installed, or nothing changed.
pub async fn renew_once(cfg: &ControllerConfig) -> Result<Validity, RenewError> {
    let files = Files::of(&cfg.certs, &cfg.gateway);
    let mut client = crate::sync::connect(cfg)
        .await
        .map_err(RenewError::Connect)?;
    let (key_pem, csr_pem) = identity::new_key_and_csr(&cfg.gateway)?;
    let r = client
        .renew_certificate(RenewRequest {
            gateway: cfg.gateway.clone(),
            csr_pem,
        })
        .await
        .map_err(RenewError::Refused)?
        .into_inner();
    identity::install(&files, &key_pem, &r.certificate_chain_pem, Some(&r.ca_pem))?;
    Ok(identity::validity(&files.cert)?)
}

/// How long before expiry a certificate not yet renewed is warned about: `warn_days`, or a
/// third of its lifetime if shorter (when renewal is due anyway).
pub fn warn_window(v: &Validity, warn_days: u32) -> Duration {
    let life = v.not_after.duration_since(v.not_before).unwrap_or_default();
    (life / 3).min(Duration::from_secs(u64::from(warn_days) * 86_400))
}

/// The delay before retry number `attempt` (0-based): `min` doubled each time up to `max`,
/// then a random half taken off (jitter), so gateways that failed together do not retry
/// together.
pub fn backoff(attempt: u32, min: Duration, max: Duration, random: u32) -> Duration {
    let full = min
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(max)
        .max(min);
    let half = full / 2;
    half + half.mul_f64(f64::from(random) / f64::from(u32::MAX))
}

/// Longest sleep between two looks at the certificate file.
const RECHECK: Duration = Duration::from_secs(3600);

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_ne_bytes(b)
}

/// Runs forever: keeps `metrics.cert_expiry` current, renews when due, and bumps `renewed`
/// after each renewal (the policy link reconnects with the new certificate).
pub async fn run(cfg: ControllerConfig, metrics: Live, renewed: watch::Sender<u64>) {
    let files = Files::of(&cfg.certs, &cfg.gateway);
    let (min, max) = (
        Duration::from_millis(cfg.renewal.retry_min_ms.max(10)),
        Duration::from_millis(
            cfg.renewal
                .retry_max_ms
                .max(cfg.renewal.retry_min_ms.max(10)),
        ),
    );
    let mut failures = 0u32;
    loop {
        if let Err(e) = identity::finish_pending(&files) {
            tracing::error!(error = %e, "completing a certificate replacement");
        }
        let v = match identity::validity(&files.cert) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "gateway certificate unreadable: renewal waits");
                tokio::time::sleep(backoff(failures, min, max, random_u32())).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        metrics.cert_expiry.set(v.expiry_unix());
        let now = SystemTime::now();
        let left = v.not_after.duration_since(now).unwrap_or_default();
        if left <= warn_window(&v, cfg.renewal.warn_days) {
            tracing::warn!(
                gateway = cfg.gateway,
                serial = v.serial,
                expires_in = %humantime::format_duration(Duration::from_secs(left.as_secs())),
                "gateway certificate expires soon and is not renewed yet"
            );
        }
        if let Ok(wait) = v.renew_at().duration_since(now)
            && !wait.is_zero()
        {
            // Looked at again at least hourly: files replaced by hand (a new enrollment), a
            // clock stepped or a suspended machine are noticed, and the metric stays current.
            tokio::time::sleep(wait.min(RECHECK)).await;
            continue;
        }
        match renew_once(&cfg).await {
            Ok(new) => {
                failures = 0;
                metrics.cert_renewals.inc();
                metrics.cert_expiry.set(new.expiry_unix());
                tracing::info!(
                    gateway = cfg.gateway,
                    old_serial = v.serial,
                    serial = new.serial,
                    "gateway certificate renewed"
                );
                renewed.send_modify(|n| *n += 1);
            }
            Err(e) => {
                metrics.cert_renewal_failures.inc();
                let retry_in = backoff(failures, min, max, random_u32());
                failures = failures.saturating_add(1);
                if e.denied() {
                    tracing::error!(gateway = cfg.gateway, error = %e, ?retry_in, "certificate renewal refused");
                } else {
                    tracing::warn!(gateway = cfg.gateway, error = %e, ?retry_in, "certificate renewal failed; retrying");
                }
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_half_taken_off() {
        let (min, max) = (Duration::from_secs(5), Duration::from_secs(60));
        assert_eq!(backoff(0, min, max, u32::MAX), min);
        assert_eq!(backoff(0, min, max, 0), min / 2);
        assert_eq!(backoff(2, min, max, u32::MAX), Duration::from_secs(20));
        assert_eq!(backoff(10, min, max, u32::MAX), max);
        assert_eq!(backoff(40, min, max, 0), max / 2);
    }

    #[test]
    fn the_warning_starts_when_renewal_is_overdue_for_short_certificates() {
        let t0 = SystemTime::UNIX_EPOCH;
        let v = |days: u64| Validity {
            not_before: t0,
            not_after: t0 + Duration::from_secs(days * 86_400),
            serial: String::new(),
        };
        assert_eq!(warn_window(&v(365), 30), Duration::from_secs(30 * 86_400));
        assert_eq!(warn_window(&v(30), 30), Duration::from_secs(10 * 86_400));
    }
}
