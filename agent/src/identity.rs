//! The gateway's mTLS identity on disk: `<certs>/ca.pem`, `<certs>/gateway-NAME.pem` (the
//! certificate, then the issuing CA's) and `<certs>/gateway-NAME.key` (0600). Keys are made
//! here and never leave the gateway: the controller only ever sees a CSR.
//!
//! Replacing the pair is two renames, so it is made recoverable: both new files are written
//! and synced as `*.new` first (the certificate's appearing last, whole, by a rename), then
//! the key is renamed, then the certificate. A `.pem.new` left behind means a replacement
//! stopped half way; [`finish_pending`] completes it at start.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{CertificateParams, DnType, KeyPair};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making a key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("{path}: not a PEM certificate: {why}")]
    Cert { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a gateway's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Files {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Files {
    pub fn of(certs: &Path, gateway: &str) -> Files {
        Files {
            ca: certs.join("ca.pem"),
            cert: certs.join(format!("gateway-{gateway}.pem")),
            key: certs.join(format!("gateway-{gateway}.key")),
        }
    }
}

/// A new key (PEM) and a CSR for it (PEM) naming `gateway:NAME` (the controller sets the
/// subject anyway).
pub fn new_key_and_csr(gateway: &str) -> Result<(String, String), IdentityError> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, format!("gateway:{gateway}"));
    let csr = p.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

fn path_with(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `path` with `mode`, synced.
fn write_synced(path: &Path, text: &str, mode: u32) -> Result<(), IdentityError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), IdentityError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Installs a key, its certificate chain and (if given) the root CA certificate, replacing
/// what was there so that a reader sees the old pair or the new one (see the module notes).
pub fn install(
    files: &Files,
    key_pem: &str,
    chain_pem: &str,
    ca_pem: Option<&str>,
) -> Result<(), IdentityError> {
    let dir = files.cert.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if let Some(ca) = ca_pem {
        let tmp = path_with(&files.ca, ".new");
        write_synced(&tmp, ca, 0o644)?;
        std::fs::rename(&tmp, &files.ca).map_err(io(&files.ca))?;
    }
    let (key_new, cert_new) = (
        path_with(&files.key, ".new"),
        path_with(&files.cert, ".new"),
    );
    write_synced(&key_new, key_pem, 0o600)?;
    // `.pem.new` appears whole or not at all: it is the commit point of the replacement.
    let cert_tmp = path_with(&files.cert, ".new.tmp");
    write_synced(&cert_tmp, chain_pem, 0o644)?;
    std::fs::rename(&cert_tmp, &cert_new).map_err(io(&cert_new))?;
    sync_dir(dir)?;
    finish_pending(files)
}

/// Completes a replacement that stopped between its renames (no-op when none is pending).
pub fn finish_pending(files: &Files) -> Result<(), IdentityError> {
    let (key_new, cert_new) = (
        path_with(&files.key, ".new"),
        path_with(&files.cert, ".new"),
    );
    if !cert_new.exists() {
        // Nothing pending, or only a key written before a crash: the old pair is whole.
        return Ok(());
    }
    if key_new.exists() {
        std::fs::rename(&key_new, &files.key).map_err(io(&files.key))?;
    }
    std::fs::rename(&cert_new, &files.cert).map_err(io(&files.cert))?;
    sync_dir(files.cert.parent().unwrap_or(Path::new(".")))
}

/// The validity and serial (hex) of the first certificate in a PEM file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub serial: String,
}

impl Validity {
    /// When to renew: two thirds of the lifetime passed.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }

    /// Seconds since the Unix epoch of `not_after`.
    pub fn expiry_unix(&self) -> i64 {
        self.not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }
}

pub fn validity(path: &Path) -> Result<Validity, IdentityError> {
    let text = std::fs::read(path).map_err(io(path))?;
    let bad = |why: String| IdentityError::Cert {
        path: path.to_path_buf(),
        why,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok(Validity {
        not_before: at(cert.validity().not_before.timestamp()),
        not_after: at(cert.validity().not_after.timestamp()),
        serial: hex::encode(cert.raw_serial()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let v = Validity {
            not_before: t0,
            not_after: t0 + Duration::from_secs(30 * 86400),
            serial: String::new(),
        };
        assert_eq!(v.renew_at(), t0 + Duration::from_secs(20 * 86400));
    }

    #[test]
    fn an_install_stopped_between_its_renames_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        let f = Files::of(dir.path(), "gw");
        install(&f, "KEY1", "CERT1", Some("CA")).unwrap();
        let mode = std::fs::metadata(&f.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A crash after the key's rename, before the certificate's.
        std::fs::write(path_with(&f.cert, ".new"), "CERT2").unwrap();
        std::fs::write(&f.key, "KEY2").unwrap();
        finish_pending(&f).unwrap();
        assert_eq!(std::fs::read_to_string(&f.cert).unwrap(), "CERT2");
        assert_eq!(std::fs::read_to_string(&f.key).unwrap(), "KEY2");
        assert!(!path_with(&f.cert, ".new").exists());
        // A crash before any rename: the key.new alone is not installed.
        std::fs::write(path_with(&f.key, ".new"), "KEY3").unwrap();
        finish_pending(&f).unwrap();
        assert_eq!(std::fs::read_to_string(&f.key).unwrap(), "KEY2");
    }
}
