//! `wardctl certs init` and `revoke`: a CA, certificates and a revocation list for a demo or
//! a lab (not production PKI).
//!
//! Layout: `DIR` holds what the controller, gateways and people read (`ca.pem`, `crl.pem`,
//! `NAME.pem`/`NAME.key` per identity); the CA's key lives apart in `CA_DIR` (default the
//! sibling `DIR-ca`, mode 0700), so copying `DIR` (or a gateway's pair from it) never copies
//! the key that signs certificates. Every key file is 0600.
//!
//! The root CA key stays in `CA_DIR` (offline in production). The controller signs gateway
//! certificates at enrollment and renewal with an **issuing CA** (`issuing-ca.pem`/`.key` in
//! `DIR`, signed by the root, path length 0): the controller holds its key, never the root's.
//! Its own revocation list (`issuing-crl.pem`, signed by it) covers what it issues; `crl.pem`
//! (signed by the root) covers the rest, the issuing CA included. See `crate::issuing`.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// How long each kind of certificate is valid, in days.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
pub struct Lifetimes {
    /// Days the CA certificate is valid.
    #[arg(long, default_value_t = 3650)]
    pub ca_days: u32,
    /// Days the controller's certificate is valid.
    #[arg(long, default_value_t = 365)]
    pub server_days: u32,
    /// Days each gateway's certificate is valid.
    #[arg(long, default_value_t = 365)]
    pub gateway_days: u32,
    /// Days each person's certificate is valid.
    #[arg(long, default_value_t = 90)]
    pub user_days: u32,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            ca_days: 3650,
            server_days: 365,
            gateway_days: 365,
            user_days: 90,
        }
    }
}

/// The names the controller's certificate is issued for when none are given.
pub const DEFAULT_SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// What `init` writes.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Where the CA key goes; `None` = the sibling directory `DIR-ca`.
    pub ca_dir: Option<PathBuf>,
    /// DNS names or IP addresses of the controller (its certificate's subject alternative names).
    pub server_names: Vec<String>,
    pub lifetimes: Lifetimes,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            ca_dir: None,
            server_names: DEFAULT_SERVER_NAMES.iter().map(|s| s.to_string()).collect(),
            lifetimes: Lifetimes::default(),
        }
    }
}

/// A gateway or user name as it goes into a certificate subject and a file name: 1-64
/// characters, ASCII letters, digits, `.`, `_`, `-`, starting with a letter or digit (no
/// control characters, separators, spaces or `..`).
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 {
        return Err(format!(
            "{kind} name `{}` must be 1-64 characters",
            name.escape_debug()
        ));
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "{kind} name `{}` may hold only unaccented ASCII letters (a-z, A-Z), digits, `.`, `_` \
             and `-`, and must start with a letter or digit{}",
            name.escape_debug(),
            if name.is_ascii() {
                String::new()
            } else {
                format!(
                    " (`{}` would do)",
                    name.chars()
                        .map(|c| match c {
                            'à' | 'â' | 'ä' => 'a',
                            'é' | 'è' | 'ê' | 'ë' => 'e',
                            'î' | 'ï' => 'i',
                            'ô' | 'ö' => 'o',
                            'ù' | 'û' | 'ü' => 'u',
                            'ç' => 'c',
                            c if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') => c,
                            _ => '-',
                        })
                        .collect::<String>()
                )
            }
        ));
    }
    Ok(())
}

/// A name the controller is reached by: an IP address, or a DNS name (letters, digits, `-`,
/// dots between labels).
pub fn validate_server_name(name: &str) -> Result<(), String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "controller name `{}` is neither an IP address nor a DNS name",
            name.escape_debug()
        ))
    }
}

/// The CA key directory for a certificate directory: as given, or the sibling `DIR-ca`.
pub fn ca_dir_for(dir: &Path, ca_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(d) = ca_dir {
        return Ok(d.to_path_buf());
    }
    let name = dir
        .file_name()
        .with_context(|| format!("{} has no directory name; give --ca-dir", dir.display()))?;
    Ok(dir.with_file_name(format!("{}-ca", name.to_string_lossy())))
}

/// Writes `path` with `mode` (also when it already existed with another mode).
pub(crate) fn write_mode(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> anyhow::Result<()> {
    write_mode(&dir.join(format!("{name}.pem")), cert, 0o644)?;
    write_mode(&dir.join(format!("{name}.key")), key, 0o600)
}

fn validity(p: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks behind the issuer's.
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(i64::from(days));
}

/// Writes `ca.pem` and an empty `crl.pem` into `dir`, `ca.pem`/`ca.key` into the CA directory,
/// `server.pem/key` (for `opts.server_names`), one pair per gateway (`gateway-NAME`, CN
/// `gateway:NAME`) and per user (`user-NAME`, CN `user:NAME`, role in OU).
pub fn init(
    dir: &Path,
    gateways: &[String],
    users: &[(String, String)],
    opts: &InitOptions,
) -> anyhow::Result<()> {
    for g in gateways {
        validate_name("gateway", g).map_err(anyhow::Error::msg)?;
    }
    for (u, _) in users {
        validate_name("user", u).map_err(anyhow::Error::msg)?;
    }
    if opts.server_names.is_empty() {
        anyhow::bail!("the controller needs at least one name");
    }
    for s in &opts.server_names {
        validate_server_name(s).map_err(anyhow::Error::msg)?;
    }
    let ca_dir = ca_dir_for(dir, opts.ca_dir.as_deref())?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir_all(&ca_dir).with_context(|| format!("creating {}", ca_dir.display()))?;
    std::fs::set_permissions(&ca_dir, std::fs::Permissions::from_mode(0o700))?;
    if std::fs::canonicalize(dir)? == std::fs::canonicalize(&ca_dir)? {
        anyhow::bail!("the CA directory must not be the certificate directory");
    }
    let life = opts.lifetimes;

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "wardgate lab CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca, life.ca_days);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    write_mode(&ca_dir.join("ca.key"), &ca_key.serialize_pem(), 0o600)?;
    write_mode(&ca_dir.join("ca.pem"), &ca_cert.pem(), 0o644)?;
    write_mode(&dir.join("ca.pem"), &ca_cert.pem(), 0o644)?;
    let issuer = Issuer::new(ca, ca_key);
    write_crl(dir, &issuer, Vec::new(), 1)?;
    issuing_ca(dir, &issuer, life.ca_days)?;

    let leaf = |name: &str, sans: Vec<String>, cn: &str, ou: Option<&str>, days: u32| {
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        if let Some(ou) = ou {
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, ou);
        }
        validity(&mut p, days);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        write_pair(dir, name, &cert.pem(), &key.serialize_pem())
    };
    leaf(
        "server",
        opts.server_names.clone(),
        "wardgate-controller",
        None,
        life.server_days,
    )?;
    for g in gateways {
        leaf(
            &format!("gateway-{g}"),
            vec![],
            &format!("gateway:{g}"),
            None,
            life.gateway_days,
        )?;
    }
    for (name, role) in users {
        leaf(
            &format!("user-{name}"),
            vec![],
            &format!("user:{name}"),
            Some(role),
            life.user_days,
        )?;
    }
    Ok(())
}

/// Adds an issuing CA to a certificate directory from before issuing CAs (or replaces it),
/// signed with the root key from the CA directory; certificates it issued before are no longer
/// trusted once replaced.
pub fn add_issuing_ca(dir: &Path, ca_dir: Option<&Path>, days: u32) -> anyhow::Result<()> {
    let ca_dir = ca_dir_for(dir, ca_dir)?;
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let key = KeyPair::from_pem(&read(ca_dir.join("ca.key"))?).context("the CA key")?;
    let root = Issuer::from_ca_cert_pem(&read(ca_dir.join("ca.pem"))?, key)
        .context("the CA certificate")?;
    issuing_ca(dir, &root, days)
}

/// The controller's issuing CA under `issuer` (the root): `DIR/issuing-ca.pem`, its key
/// (0600) and its empty revocation list.
fn issuing_ca(dir: &Path, root: &Issuer<'_, KeyPair>, days: u32) -> anyhow::Result<()> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, "wardgate issuing CA");
    // It signs gateway certificates only, never another CA.
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut p, days);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, root)?;
    write_mode(
        &dir.join(crate::issuing::ISSUING_KEY),
        &key.serialize_pem(),
        0o600,
    )?;
    write_mode(&dir.join(crate::issuing::ISSUING_CERT), &cert.pem(), 0o644)?;
    crate::issuing::write_crl(dir, &Issuer::new(p, key), &[], 1)?;
    Ok(())
}

fn write_crl(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    revoked: Vec<RevokedCertParams>,
    number: u64,
) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
        this_update: now - Duration::hours(1),
        next_update: now + Duration::days(365),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)?;
    // Written beside, then renamed: the controller never reads half a list.
    let tmp = dir.join("crl.pem.tmp");
    write_mode(&tmp, &crl.pem()?, 0o644)?;
    std::fs::rename(&tmp, dir.join("crl.pem"))?;
    Ok(())
}

/// What `revoke` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// Serial numbers newly revoked (hex).
    pub added: Vec<String>,
    /// Certificates the list now holds.
    pub total: usize,
}

/// Adds the certificates `DIR/NAME.pem` of `names` (`gateway-X`, `user-Y`) to `DIR/crl.pem`,
/// signed again with the CA key from the CA directory. Revoking twice is harmless.
pub fn revoke(dir: &Path, ca_dir: Option<&Path>, names: &[String]) -> anyhow::Result<Revoked> {
    let ca_dir = ca_dir_for(dir, ca_dir)?;
    let read = |p: PathBuf| std::fs::read(&p).with_context(|| format!("reading {}", p.display()));
    let ca_key = KeyPair::from_pem(&String::from_utf8(read(ca_dir.join("ca.key"))?)?)
        .context("the CA key")?;
    let ca_pem = String::from_utf8(read(ca_dir.join("ca.pem"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("the CA certificate")?;

    let mut revoked: Vec<RevokedCertParams> = Vec::new();
    let mut number = 1u64;
    let crl_path = dir.join("crl.pem");
    if crl_path.exists() {
        let text = read(crl_path.clone())?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&text)
            .map_err(|e| anyhow::anyhow!("{}: not PEM: {e}", crl_path.display()))?;
        let (_, crl) = x509_parser::parse_x509_crl(&pem.contents)
            .map_err(|e| anyhow::anyhow!("{}: not a CRL: {e}", crl_path.display()))?;
        number = crl
            .crl_number()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
            + 1;
        for r in crl.iter_revoked_certificates() {
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(r.raw_serial()),
                revocation_time: OffsetDateTime::from_unix_timestamp(
                    r.revocation_date.timestamp(),
                )?,
                reason_code: None,
                invalidity_date: None,
            });
        }
    }
    let mut added = Vec::new();
    for name in names {
        let path = dir.join(format!("{name}.pem"));
        let text = read(path.clone())?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&text)
            .map_err(|e| anyhow::anyhow!("{}: not PEM: {e}", path.display()))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| anyhow::anyhow!("{}: not a certificate: {e}", path.display()))?;
        let serial = cert.raw_serial().to_vec();
        if revoked.iter().any(|r| r.serial_number.as_ref() == serial) {
            continue;
        }
        added.push(hex::encode(&serial));
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: OffsetDateTime::now_utc(),
            reason_code: None,
            invalidity_date: None,
        });
    }
    let total = revoked.len();
    write_crl(dir, &issuer, revoked, number)?;
    Ok(Revoked { added, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issuing_ca_can_be_added_to_a_directory_from_before() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        init(&certs, &[], &[], &InitOptions::default()).unwrap();
        for f in [
            crate::issuing::ISSUING_CERT,
            crate::issuing::ISSUING_KEY,
            crate::issuing::ISSUING_CRL,
        ] {
            std::fs::remove_file(certs.join(f)).unwrap();
        }
        assert!(crate::issuing::IssuingCa::load(&certs).unwrap().is_none());
        add_issuing_ca(&certs, None, 30).unwrap();
        let ca = crate::issuing::IssuingCa::load(&certs).unwrap().unwrap();
        // Signed by the root: its issuer is the root's subject, and it may sign only leaves.
        let pem = std::fs::read(certs.join(crate::issuing::ISSUING_CERT)).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(cert.issuer().to_string(), "CN=wardgate lab CA");
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca && bc.path_len_constraint == Some(0));
        assert!(certs.join(crate::issuing::ISSUING_CRL).exists());
        let root = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
        assert_eq!(ca.root_pem(), root);
        // Without the root key (kept offline elsewhere) it says where it looked.
        let e = add_issuing_ca(&certs, Some(&dir.path().join("nowhere")), 30).unwrap_err();
        assert!(format!("{e:#}").contains("nowhere/ca.key"), "{e:#}");
    }
}
