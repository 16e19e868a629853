//! The controller's issuing CA: it signs gateway certificates from CSRs made on the gateways
//! (enrollment, renewal) and keeps the revocation list of what it issued. Its key lives with
//! the controller (`DIR/issuing-ca.key`, 0600); the root's stays offline (`certs.rs`).
//!
//! A certificate takes nothing from its CSR but the public key (the CSR's signature proves the
//! gateway holds the key): subject `CN=gateway:NAME`, client-auth usage, lifetime and serial are
//! the controller's.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rcgen::{
    CertificateRevocationListParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

/// The issuing CA's certificate, key and revocation list, in the certificate directory.
pub const ISSUING_CERT: &str = "issuing-ca.pem";
pub const ISSUING_KEY: &str = "issuing-ca.key";
pub const ISSUING_CRL: &str = "issuing-crl.pem";

/// Default lifetime of the certificates the controller issues: short, since agents renew on
/// their own at two thirds of it.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum IssuingError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: not a PEM certificate: {message}")]
    Root { path: PathBuf, message: String },
    #[error("no randomness for a serial number: {0}")]
    Random(String),
    #[error("the certificate signing request: {0}")]
    Csr(#[source] rcgen::Error),
    #[error("signing: {0}")]
    Sign(#[source] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: anyhow::Error,
    },
}

/// SHA-256 (lowercase hex) of a certificate's DER: what `wardgate-agent enroll
/// --ca-fingerprint` checks the root against.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// A fingerprint as people write it (`AB:CD:..`, `sha256:abcd..`, any case), normalized to
/// lowercase hex, or `None` if it is not 32 bytes of hex.
pub fn normalize_fingerprint(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s
        .strip_prefix("sha256:")
        .or_else(|| s.strip_prefix("SHA256:"))
        .unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// A certificate the controller issued.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate then the issuing CA's (PEM).
    pub chain_pem: String,
    /// Serial number (hex, as the revocation list and `gateway_certs` hold it).
    pub serial: String,
    pub not_after: OffsetDateTime,
}

/// The issuing CA as the controller holds it.
pub struct IssuingCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    root_pem: String,
    root_fingerprint: String,
    dir: PathBuf,
}

impl std::fmt::Debug for IssuingCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuingCa")
            .field("dir", &self.dir)
            .field("root_fingerprint", &self.root_fingerprint)
            .finish_non_exhaustive()
    }
}

fn read(path: PathBuf) -> Result<String, IssuingError> {
    std::fs::read_to_string(&path).map_err(|source| IssuingError::Read { path, source })
}

impl IssuingCa {
    /// The issuing CA of the certificate directory `dir` (`ca.pem` is the root), or `None`
    /// when `dir` holds none (certificates from before issuing CAs: enrollment and renewal are
    /// then refused, everything else works).
    pub fn load(dir: &Path) -> Result<Option<IssuingCa>, IssuingError> {
        if !dir.join(ISSUING_KEY).exists() {
            return Ok(None);
        }
        let key_path = dir.join(ISSUING_KEY);
        let key =
            KeyPair::from_pem(&read(key_path.clone())?).map_err(|source| IssuingError::Parse {
                path: key_path,
                source,
            })?;
        let cert_path = dir.join(ISSUING_CERT);
        let cert_pem = read(cert_path.clone())?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|source| IssuingError::Parse {
                path: cert_path,
                source,
            })?;
        let root_path = dir.join("ca.pem");
        let root_pem = read(root_path.clone())?;
        let root = pem::parse(&root_pem).map_err(|e| IssuingError::Root {
            path: root_path,
            message: e.to_string(),
        })?;
        Ok(Some(IssuingCa {
            issuer,
            cert_pem,
            root_fingerprint: fingerprint(root.contents()),
            root_pem,
            dir: dir.to_path_buf(),
        }))
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn root_fingerprint(&self) -> &str {
        &self.root_fingerprint
    }

    /// Signs the public key of `csr_pem` (its signature checked) as `gateway:NAME` for
    /// `lifetime`, backdated by a tenth of it (at most 5 minutes) for clocks a little behind.
    pub fn sign(
        &self,
        gateway: &str,
        csr_pem: &str,
        lifetime: Duration,
    ) -> Result<Issued, IssuingError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(IssuingError::Csr)?;
        let p = &mut csr.params;
        p.subject_alt_names.clear();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, format!("gateway:{gateway}"));
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.custom_extensions.clear();
        p.use_authority_key_identifier_extension = true;
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(|e| IssuingError::Random(e.to_string()))?;
        serial[0] &= 0x7f; // positive
        serial[0] |= 0x01; // no leading zero byte to strip
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = OffsetDateTime::now_utc();
        let life = time::Duration::try_from(lifetime).unwrap_or(time::Duration::days(36500));
        p.not_before = now - (life / 10_i32).min(time::Duration::minutes(5));
        p.not_after = now + life;
        let not_after = p.not_after;
        let cert = csr.signed_by(&self.issuer).map_err(IssuingError::Sign)?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            serial: hex::encode(serial),
            not_after,
        })
    }

    /// Rewrites the issuing CA's revocation list with `serials` (hex), numbered `number`.
    pub fn revoke(&self, serials: &[String], number: u64) -> Result<(), IssuingError> {
        let serials: Vec<Vec<u8>> = serials.iter().filter_map(|s| hex::decode(s).ok()).collect();
        write_crl(&self.dir, &self.issuer, &serials, number).map_err(|source| IssuingError::Write {
            path: self.dir.join(ISSUING_CRL),
            source,
        })
    }
}

/// Writes `DIR/issuing-crl.pem` signed by `issuer` with `revoked` serials (beside, then
/// renamed: the listener never reads half a list).
pub fn write_crl(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    revoked: &[Vec<u8>],
    number: u64,
) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(365),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)?;
    let tmp = dir.join(format!("{ISSUING_CRL}.tmp"));
    crate::certs::write_mode(&tmp, &crl.pem()?, 0o644)?;
    std::fs::rename(&tmp, dir.join(ISSUING_CRL))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalized() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(normalize_fingerprint(&colons), Some(hex.clone()));
        assert_eq!(
            normalize_fingerprint(&format!("sha256:{hex}")),
            Some(hex.clone())
        );
        assert_eq!(normalize_fingerprint(&hex[2..]), None);
        assert_eq!(normalize_fingerprint(&format!("{}zz", &hex[2..])), None);
    }

    #[test]
    fn a_signed_certificate_takes_only_the_key_from_its_csr() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        crate::certs::init(&certs, &[], &[], &crate::certs::InitOptions::default()).unwrap();
        let ca = IssuingCa::load(&certs)
            .unwrap()
            .expect("init writes an issuing CA");
        let key = KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "user:eve");
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let csr = p.serialize_request(&key).unwrap().pem().unwrap();
        let issued = ca.sign("gw-1", &csr, Duration::from_secs(60)).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(issued.chain_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(
            crate::auth::from_der(&pem.contents).unwrap(),
            crate::auth::Identity::Gateway("gw-1".into())
        );
        assert!(!cert.is_ca());
        assert!(cert.subject_alternative_name().unwrap().is_none());
        assert_eq!(
            cert.public_key().raw,
            rcgen::PublicKeyData::subject_public_key_info(&key)
        );
        assert_eq!(hex::encode(cert.raw_serial()), issued.serial);
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert!((60..=66).contains(&life), "{life}");
        assert!(
            ca.sign("gw-1", "not a csr", Duration::from_secs(60))
                .is_err()
        );
    }
}
