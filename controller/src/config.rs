//! The controller's configuration file (`wardgate-controller --config PATH`): typed, with
//! documented defaults, unknown keys refused with their file, line and column (as the agent's).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Deserialize;

/// Where the packaged unit reads it.
pub const DEFAULT_PATH: &str = "/etc/wardgate/controller.yaml";

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// gRPC (mTLS) listen address. Default `127.0.0.1:7443`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Data directory: the SQLite store is `<data>/wardgate.db` (unless `store` names a
    /// PostgreSQL database). Default `/var/lib/wardgate-controller`.
    #[serde(default = "default_data")]
    pub data: PathBuf,
    /// Where the controller keeps its state: the embedded SQLite store in `data` (the
    /// default), or `store: { postgres: URL }`.
    #[serde(default)]
    pub store: StoreConfig,
    /// Directory with `ca.pem`, `server.pem` and `server.key` (as `wardctl certs init`
    /// writes them). Default `/etc/wardgate/certs`.
    #[serde(default = "default_certs")]
    pub certs: PathBuf,
    /// Prometheus metrics on `GET /metrics`. Without it the controller serves none.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// SOC sinks: each reads the alert store from its own cursor (see `sinks`). Default none.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Signed audit checkpoints sent to every sink (see `sinks::checkpoints`). On by default
    /// whenever there are sinks: a trail checked only against itself can be cut by whoever
    /// owns the controller's disk.
    #[serde(default)]
    pub audit_checkpoints: CheckpointConfig,
    /// The browser console on its own HTTPS listener (see `crate::console`). Off unless
    /// configured.
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
    /// The availability warning: a change that would block traffic seen in the last
    /// `window_days` (default 7) on more than `max_blocked_share` (default 0.2) of a class's
    /// devices on a ward needs an explicit acceptance (see `crate::impact`).
    #[serde(default)]
    pub availability: crate::impact::Availability,
}

/// The browser console: its HTTPS listener (the controller's server certificate from `certs`,
/// no client certificate), who may log in, and how long a session lasts.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// e.g. `0.0.0.0:9443` (a port of its own: agents keep the mTLS gRPC port).
    pub listen: SocketAddr,
    /// The local break-glass account (role engineer), for when the identity provider is out.
    #[serde(default)]
    pub admin: Option<LocalAdmin>,
    /// Login through an OpenID Connect provider (Pro Santé Connect or another). Without it and
    /// without `admin` nobody can log in.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// How many failed logins lock a source address or a break-glass name out, and for how
    /// long.
    #[serde(default)]
    pub login_limit: LoginLimit,
    /// A session without a request for this long is over (seconds). Default 900 (15 min).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    /// A session is over this long after its login, however active (seconds). Default 28800
    /// (8 h).
    #[serde(default = "default_absolute_timeout")]
    pub absolute_timeout_seconds: u64,
}

/// Login through an OpenID Connect provider: authorization code with PKCE and a nonce (see
/// `crate::console::oidc`). Its `Debug` leaves the client secret out.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer as its tokens name it, e.g.
    /// `https://auth.esante.gouv.fr/auth/realms/esante-wallet`. `https://`, or `http://` on a
    /// loopback address only (a test provider).
    pub issuer: String,
    /// Where the provider's metadata is, when not at `ISSUER/.well-known/openid-configuration`
    /// (Pro Santé Connect: `ISSUER/.well-known/wallet-openid-configuration`). Its `issuer`
    /// must be `issuer`.
    #[serde(default)]
    pub discovery_url: Option<String>,
    pub client_id: String,
    /// The client secret, or `client_secret_file` (its first line); one of the two.
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// This console's callback as registered with the provider:
    /// `https://HOST:PORT/login/oidc/callback`.
    pub redirect_url: String,
    /// The `acr` the ID token must carry (Pro Santé Connect: `eidas1`); asked for in the
    /// authorization request too. Default none (any).
    #[serde(default)]
    pub required_acr: Option<String>,
    /// Scopes asked for besides `openid`. Default none (Pro Santé Connect: `scope_all`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The claim naming the user in sessions and the audit trail (`user:VALUE`): `sub` (the
    /// ID token's subject) or a userinfo claim (Pro Santé Connect: `SubjectNameID`, the
    /// national identifier). Default `sub`. Never `preferred_username`.
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// Who gets which role; a user the mapping gives no role is refused.
    pub roles: RoleMapping,
}

fn default_name_claim() -> String {
    "sub".into()
}

/// Roles from one claim of the signed userinfo (or the ID token's `sub`): a user whose claim
/// value (a string, or any string of a list) is in a role's list has that role, the first of
/// engineer, soc, viewer that matches. Never `preferred_username` (a display name the user or
/// the provider may change).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    /// e.g. `sub`, `SubjectNameID` (Pro Santé Connect's national identifier) or a group claim.
    pub claim: String,
    #[serde(default)]
    pub engineer: Vec<String>,
    #[serde(default)]
    pub soc: Vec<String>,
    #[serde(default)]
    pub viewer: Vec<String>,
}

/// Failed logins allowed before a lockout (counted over `window_seconds`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LoginLimit {
    /// Failures from one source address. Default 20.
    #[serde(default = "default_per_address")]
    pub per_address: u32,
    /// Failures for one break-glass name, from anywhere. Default 5.
    #[serde(default = "default_per_name")]
    pub per_name: u32,
    /// Failures older than this are forgotten; a locked-out key waits until its oldest
    /// failure is this old (seconds). Default 900.
    #[serde(default = "default_limit_window")]
    pub window_seconds: u64,
}

fn default_per_address() -> u32 {
    20
}
fn default_per_name() -> u32 {
    5
}
fn default_limit_window() -> u64 {
    15 * 60
}

impl Default for LoginLimit {
    fn default() -> Self {
        LoginLimit {
            per_address: default_per_address(),
            per_name: default_per_name(),
            window_seconds: default_limit_window(),
        }
    }
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("discovery_url", &self.discovery_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "(redacted)"),
            )
            .field("client_secret_file", &self.client_secret_file)
            .field("redirect_url", &self.redirect_url)
            .field("required_acr", &self.required_acr)
            .field("scopes", &self.scopes)
            .field("name_claim", &self.name_claim)
            .field("roles", &self.roles)
            .finish()
    }
}

impl OidcConfig {
    fn check(&self) -> Result<(), String> {
        for (key, value) in [
            ("issuer", Some(&self.issuer)),
            ("discovery_url", self.discovery_url.as_ref()),
            ("redirect_url", Some(&self.redirect_url)),
        ] {
            let Some(value) = value else { continue };
            let url = url::Url::parse(value).map_err(|e| format!("oidc.{key}: {e}"))?;
            let loopback = match url.host() {
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                return Err(format!(
                    "oidc.{key}: `{value}` is not https (http only on loopback)"
                ));
            }
        }
        if self.client_secret.is_some() == self.client_secret_file.is_some() {
            return Err("oidc: one of `client_secret` and `client_secret_file`".into());
        }
        for (key, claim) in [
            ("roles.claim", &self.roles.claim),
            ("name_claim", &self.name_claim),
        ] {
            if claim == "preferred_username" {
                return Err(format!(
                    "oidc.{key}: not `preferred_username` (a display name, not an identifier)"
                ));
            }
        }
        Ok(())
    }

    /// The client secret, from the config or its file's first line.
    pub fn secret(&self) -> anyhow::Result<String> {
        match (&self.client_secret, &self.client_secret_file) {
            (Some(s), _) => Ok(s.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok(text.lines().next().unwrap_or("").trim().to_string())
            }
            (None, None) => anyhow::bail!("oidc: no client secret"),
        }
    }
}

/// The break-glass account of the console.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocalAdmin {
    /// The login name (the audit trail records `user:NAME`). Default `admin`.
    #[serde(default = "default_admin_name")]
    pub name: String,
    /// The password's argon2 hash in PHC form (`$argon2id$v=19$...`), as
    /// `wardgate-controller console hash-password` prints it; never the password.
    pub password_hash: String,
}

fn default_idle_timeout() -> u64 {
    15 * 60
}
fn default_absolute_timeout() -> u64 {
    8 * 3600
}
fn default_admin_name() -> String {
    "admin".into()
}

impl ConsoleConfig {
    /// A console on `listen` with the default timeouts and no local account.
    pub fn new(listen: SocketAddr) -> Self {
        ConsoleConfig {
            listen,
            admin: None,
            oidc: None,
            login_limit: LoginLimit::default(),
            idle_timeout_seconds: default_idle_timeout(),
            absolute_timeout_seconds: default_absolute_timeout(),
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.idle_timeout_seconds == 0 || self.absolute_timeout_seconds == 0 {
            return Err(
                "`idle_timeout_seconds` and `absolute_timeout_seconds` must be at least 1".into(),
            );
        }
        if let Some(a) = &self.admin {
            crate::certs::validate_name("user", &a.name).map_err(|e| format!("admin.name: {e}"))?;
            argon2::PasswordHash::new(&a.password_hash).map_err(|e| {
                format!("admin.password_hash is not a PHC hash string ({e}): run `wardgate-controller console hash-password`")
            })?;
        }
        if let Some(o) = &self.oidc {
            o.check()?;
        }
        if self.login_limit.per_address == 0
            || self.login_limit.per_name == 0
            || self.login_limit.window_seconds == 0
        {
            return Err("login_limit: every value must be at least 1".into());
        }
        Ok(())
    }
}

/// Signed audit checkpoints: the chain head, signed, to every SOC sink.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// `false` turns checkpoints off (logged as a warning when there are sinks). Default on.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The Ed25519 signing key (PKCS#8 PEM), created on first start with its public key at
    /// `KEY.pub` (give that to the SOC). Default `<data>/audit-checkpoint.key`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// A checkpoint once the trail has grown by this many entries. Default 100.
    #[serde(default = "default_every_entries")]
    pub every_entries: u64,
    /// And at least this often while the trail grows (seconds). Default 60.
    #[serde(default = "default_every_seconds")]
    pub every_seconds: u64,
}

fn default_enabled() -> bool {
    true
}
fn default_every_entries() -> u64 {
    100
}
fn default_every_seconds() -> u64 {
    60
}

impl CheckpointConfig {
    /// The key file for the store in `data`.
    pub fn key_path(&self, data: &Path) -> PathBuf {
        self.key
            .clone()
            .unwrap_or_else(|| data.join("audit-checkpoint.key"))
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            enabled: true,
            key: None,
            every_entries: default_every_entries(),
            every_seconds: default_every_seconds(),
        }
    }
}

/// One SOC sink.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub kind: SinkKind,
    /// Names the sink's cursor in the store. Default `KIND:ADDRESS` or `ocsf:PATH`. A sink
    /// with a new name starts with the oldest stored alert.
    #[serde(default)]
    pub name: Option<String>,
    /// syslog: the collector, `HOST:PORT` (TCP, RFC 6587 octet-counting framing).
    #[serde(default)]
    pub address: Option<String>,
    /// syslog: TLS to the collector (RFC 5425), checked against this CA.
    #[serde(default)]
    pub tls: Option<SinkTls>,
    /// ocsf: the file JSON lines are appended to; absent or `-` = standard output.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// ocsf: a file this large is rotated (`PATH.1`, `PATH.2`, ...) before the next write.
    /// Default 64 MiB.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// ocsf: rotated files kept. Default 5.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// RFC 5424 lines with a CEF payload, over TCP or TLS.
    Syslog,
    /// OCSF 1.x JSON lines (Detection Finding 2004; Network Activity 4001 for denies).
    Ocsf,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SinkTls {
    /// PEM file of the CA(s) the collector's certificate must chain to.
    pub ca: PathBuf,
    /// The name the collector's certificate must carry. Default: the host of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM certificate (chain) and key the sink presents to a collector that requires client
    /// certificates (rsyslog `StreamDriver.AuthMode="x509/certvalid"`); both or neither.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

fn default_rotate_bytes() -> u64 {
    64 << 20
}
fn default_keep() -> u32 {
    5
}

impl SinkConfig {
    /// The cursor's name.
    pub fn name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match self.kind {
            SinkKind::Syslog => format!("syslog:{}", self.address.as_deref().unwrap_or("")),
            SinkKind::Ocsf => format!(
                "ocsf:{}",
                self.path
                    .as_deref()
                    .map_or("-".into(), |p| p.display().to_string())
            ),
        }
    }

    /// Checks the keys fit the kind.
    fn check(&self) -> Result<(), String> {
        match self.kind {
            SinkKind::Syslog => {
                let Some(a) = &self.address else {
                    return Err("a syslog sink needs `address` (HOST:PORT)".into());
                };
                if a.rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                {
                    return Err(format!("address `{a}` is not HOST:PORT"));
                }
                if self.path.is_some() {
                    return Err("`path` is for ocsf sinks".into());
                }
                if let Some(t) = &self.tls
                    && t.client_cert.is_some() != t.client_key.is_some()
                {
                    return Err("`tls.client_cert` and `tls.client_key` go together".into());
                }
            }
            SinkKind::Ocsf => {
                if self.address.is_some() || self.tls.is_some() {
                    return Err("`address` and `tls` are for syslog sinks".into());
                }
                if self.keep == 0 || self.rotate_bytes == 0 {
                    return Err("`keep` and `rotate_bytes` must be at least 1".into());
                }
            }
        }
        Ok(())
    }
}

/// The store setting: none is the embedded SQLite store in the data directory.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A PostgreSQL connection string (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`, or
    /// `host=a,b port=5432 user=wardgate dbname=wardgate target_session_attrs=read-write`):
    /// the controller keeps everything in that database instead (`store::PgStore`).
    #[serde(default)]
    pub postgres: Option<String>,
}

/// Never prints the URL: it may hold a password.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let store = if self.postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        };
        f.debug_struct("StoreConfig")
            .field("store", &store)
            .finish()
    }
}

/// The metrics endpoint (plain HTTP: bind it to loopback or a management address).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// e.g. `127.0.0.1:9465`
    pub listen: SocketAddr,
}

/// Command-line flags that override the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub certs: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7443))
}
fn default_data() -> PathBuf {
    PathBuf::from("/var/lib/wardgate-controller")
}
fn default_certs() -> PathBuf {
    PathBuf::from("/etc/wardgate/certs")
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            listen: default_listen(),
            data: default_data(),
            store: StoreConfig::default(),
            certs: default_certs(),
            metrics: None,
            sinks: Vec::new(),
            audit_checkpoints: CheckpointConfig::default(),
            console: None,
            availability: Default::default(),
        }
    }
}

impl ControllerConfig {
    /// What the controller runs with: the file at `path` if given (it must exist), else the
    /// file at `DEFAULT_PATH` if there is one, else the defaults; then command-line flags over
    /// it.
    pub fn resolve(path: Option<&Path>, flags: Overrides) -> anyhow::Result<Self> {
        let mut cfg = match path {
            Some(p) => Self::load(p)?,
            None if Path::new(DEFAULT_PATH).exists() => Self::load(Path::new(DEFAULT_PATH))?,
            None => Self::default(),
        };
        if let Some(l) = flags.listen {
            cfg.listen = l;
        }
        if let Some(d) = flags.data {
            cfg.data = d;
        }
        if let Some(c) = flags.certs {
            cfg.certs = c;
        }
        Ok(cfg)
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let cfg: Self = serde_saphyr::from_str(text)?;
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in cfg.sinks.iter().enumerate() {
            s.check()
                .map_err(|e| anyhow::anyhow!("sinks[{i}] ({}): {e}", s.name()))?;
            if !names.insert(s.name()) {
                anyhow::bail!("sinks[{i}]: two sinks are named `{}`", s.name());
            }
        }
        let c = &cfg.audit_checkpoints;
        if c.every_entries == 0 || c.every_seconds == 0 {
            anyhow::bail!(
                "audit_checkpoints: `every_entries` and `every_seconds` must be at least 1"
            );
        }
        if let Some(c) = &cfg.console {
            c.check().map_err(|e| anyhow::anyhow!("console: {e}"))?;
        }
        cfg.availability
            .check()
            .map_err(|e| anyhow::anyhow!("availability: {e}"))?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading controller config {}", path.display()))?;
        Self::parse(&text).map_err(|e| {
            let at = located(path, &e);
            e.context(format!("in controller config {at}"))
        })
    }
}

/// `file:line:column` of a YAML error (the first place it names), or the file alone.
fn located(path: &Path, e: &anyhow::Error) -> String {
    match e
        .downcast_ref::<serde_saphyr::Error>()
        .and_then(serde_saphyr::Error::location)
    {
        Some(l) => format!("{}:{}:{}", path.display(), l.line(), l.column()),
        None => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        let cfg = ControllerConfig::parse("{}\n").unwrap();
        assert_eq!(cfg, ControllerConfig::default());
        assert_eq!(cfg.listen, "127.0.0.1:7443".parse().unwrap());
        assert_eq!(cfg.metrics, None);
        assert_eq!(cfg.store.postgres, None, "SQLite by default");
    }

    #[test]
    fn a_postgres_store_is_a_url_and_is_never_printed() {
        let cfg = ControllerConfig::parse(
            "store:\n  postgres: postgres://wardgate:s3cret@db.example:5432/wardgate\n",
        )
        .unwrap();
        assert_eq!(
            cfg.store.postgres.as_deref(),
            Some("postgres://wardgate:s3cret@db.example:5432/wardgate")
        );
        assert!(!format!("{cfg:?}").contains("s3cret"));
        assert!(ControllerConfig::parse("store:\n  mysql: x\n").is_err());
    }

    #[test]
    fn every_key_parses() {
        let cfg = ControllerConfig::parse(
            "listen: 0.0.0.0:8443\ndata: /srv/wg\ncerts: /srv/certs\nmetrics:\n  listen: 127.0.0.1:9465\n",
        )
        .unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(cfg.data, PathBuf::from("/srv/wg"));
        assert_eq!(cfg.certs, PathBuf::from("/srv/certs"));
        assert_eq!(
            cfg.metrics.unwrap().listen,
            "127.0.0.1:9465".parse().unwrap()
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.yaml");
        std::fs::write(
            &path,
            "listen: 127.0.0.1:7443\ndata: /srv\nmetrics:\n  lisen: x\n",
        )
        .unwrap();
        let msg = format!("{:#}", ControllerConfig::load(&path).unwrap_err());
        assert!(
            msg.contains(&format!("{}:4:3", path.display())) && msg.contains("lisen"),
            "{msg}"
        );
        std::fs::write(&path, "sinks:\n  - kind: syslog\n    adress: x\n").unwrap();
        let msg = format!("{:#}", ControllerConfig::load(&path).unwrap_err());
        assert!(
            msg.contains(&format!("{}:3:5", path.display())) && msg.contains("adress"),
            "{msg}"
        );
        std::fs::write(&path, "listen: localhost\n").unwrap();
        let msg = format!("{:#}", ControllerConfig::load(&path).unwrap_err());
        assert!(msg.contains("line 1"), "{msg}");
        assert!(ControllerConfig::load(&dir.path().join("missing.yaml")).is_err());
    }

    #[test]
    fn sinks_parse_and_keys_must_fit_their_kind() {
        let cfg = ControllerConfig::parse(
            "sinks:\n  - {kind: syslog, address: 'siem.example:6514', tls: {ca: /etc/ca.pem}}\n  \
             - {kind: ocsf, path: /var/log/wardgate/ocsf.jsonl, rotate_bytes: 1000, keep: 2}\n  \
             - {kind: ocsf}\n",
        )
        .unwrap();
        let names: Vec<String> = cfg.sinks.iter().map(SinkConfig::name).collect();
        assert_eq!(
            names,
            [
                "syslog:siem.example:6514",
                "ocsf:/var/log/wardgate/ocsf.jsonl",
                "ocsf:-"
            ]
        );
        assert_eq!(
            cfg.sinks[0].tls.as_ref().unwrap().ca,
            PathBuf::from("/etc/ca.pem")
        );
        assert_eq!((cfg.sinks[1].rotate_bytes, cfg.sinks[1].keep), (1000, 2));
        assert_eq!(
            (cfg.sinks[2].rotate_bytes, cfg.sinks[2].keep),
            (64 << 20, 5)
        );
        for (text, expect) in [
            ("sinks: [{kind: syslog}]", "needs `address`"),
            ("sinks: [{kind: syslog, address: nohost}]", "not HOST:PORT"),
            ("sinks: [{kind: ocsf, address: 'a:1'}]", "for syslog sinks"),
            ("sinks: [{kind: ocsf, keep: 0}]", "at least 1"),
            (
                "sinks: [{kind: syslog, address: 'a:1', tls: {ca: /ca.pem, client_cert: /c.pem}}]",
                "go together",
            ),
            (
                "sinks: [{kind: ocsf}, {kind: ocsf}]",
                "two sinks are named `ocsf:-`",
            ),
            ("sinks: [{kind: kafka}]", "kafka"),
        ] {
            let e = format!("{:#}", ControllerConfig::parse(text).unwrap_err());
            assert!(e.contains(expect), "{text}: {e}");
        }
    }

    #[test]
    fn the_console_is_off_unless_configured_and_its_keys_parse() {
        assert_eq!(ControllerConfig::parse("{}\n").unwrap().console, None);
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    YmFkaGFzaGJhZGhhc2hiYWRoYXNoYmFkaGFzaGJhZA";
        let cfg = ControllerConfig::parse(&format!(
            "console:\n  listen: 0.0.0.0:9443\n  admin:\n    password_hash: '{hash}'\n  idle_timeout_seconds: 60\n"
        ))
        .unwrap();
        let c = cfg.console.unwrap();
        assert_eq!(c.listen, "0.0.0.0:9443".parse().unwrap());
        assert_eq!(c.idle_timeout_seconds, 60);
        assert_eq!(c.absolute_timeout_seconds, 8 * 3600);
        let admin = c.admin.unwrap();
        assert_eq!(admin.name, "admin");
        assert_eq!(admin.password_hash, hash);
        let e = ControllerConfig::parse(
            "console:\n  listen: 0.0.0.0:9443\n  admin:\n    password_hash: hunter2\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("hash-password"), "{e}");
        let e = ControllerConfig::parse(
            "console:\n  listen: 0.0.0.0:9443\n  idle_timeout_seconds: 0\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
    }

    #[test]
    fn the_oidc_keys_parse_and_refuse_what_they_must() {
        let base = "console:\n  listen: 0.0.0.0:9443\n  oidc:\n    issuer: https://auth.esante.gouv.fr/auth/realms/esante-wallet\n    discovery_url: https://auth.esante.gouv.fr/auth/realms/esante-wallet/.well-known/wallet-openid-configuration\n    client_id: wardgate\n    client_secret: s3cret\n    redirect_url: https://console.example/login/oidc/callback\n    required_acr: eidas1\n    scopes: [scope_all]\n";
        let c = ControllerConfig::parse(&format!(
            "{base}    roles: {{claim: SubjectNameID, engineer: ['899700000001']}}\n"
        ))
        .unwrap()
        .console
        .unwrap();
        let o = c.oidc.unwrap();
        assert_eq!(o.required_acr.as_deref(), Some("eidas1"));
        assert_eq!(o.roles.engineer, ["899700000001"]);
        assert_eq!(o.secret().unwrap(), "s3cret");
        assert!(
            !format!("{o:?}").contains("s3cret"),
            "the secret stays out of Debug"
        );
        assert_eq!(c.login_limit, LoginLimit::default());
        for (text, expect) in [
            (
                format!("{base}    roles: {{claim: preferred_username}}\n"),
                "preferred_username",
            ),
            (
                format!("{base}    roles: {{claim: sub}}\n")
                    .replace("https://console", "http://console"),
                "not https",
            ),
            (
                format!("{base}    client_secret_file: /x\n    roles: {{claim: sub}}\n"),
                "one of",
            ),
        ] {
            let e = format!("{:#}", ControllerConfig::parse(&text).unwrap_err());
            assert!(e.contains(expect), "{text}: {e}");
        }
        // A test provider on loopback may be plain http.
        let local = format!("{base}    roles: {{claim: sub}}\n")
            .replace("https://auth.esante.gouv.fr", "http://127.0.0.1:8080");
        assert!(ControllerConfig::parse(&local).is_ok());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.yaml");
        std::fs::write(&path, "listen: 0.0.0.0:8443\ndata: /srv/wg\n").unwrap();
        let cfg = ControllerConfig::resolve(
            Some(&path),
            Overrides {
                data: Some("/tmp/wg".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(cfg.data, PathBuf::from("/tmp/wg"));
        assert_eq!(cfg.certs, default_certs());
        assert!(
            ControllerConfig::resolve(Some(&dir.path().join("nope.yaml")), Overrides::default())
                .is_err(),
            "a file named explicitly must exist"
        );
    }

    #[test]
    fn audit_checkpoints_are_on_by_default_and_refuse_zero() {
        // Nothing said: on, with the defaults.
        let cfg = ControllerConfig::parse("listen: 127.0.0.1:7443\n").unwrap();
        assert_eq!(cfg.audit_checkpoints, CheckpointConfig::default());
        let c = &cfg.audit_checkpoints;
        assert!(c.enabled);
        assert_eq!((c.every_entries, c.every_seconds), (100, 60));
        assert_eq!(
            c.key_path(Path::new("/d")),
            PathBuf::from("/d/audit-checkpoint.key")
        );
        assert_eq!(
            ControllerConfig::parse("audit_checkpoints: {}\n")
                .unwrap()
                .audit_checkpoints,
            CheckpointConfig::default()
        );
        let cfg = ControllerConfig::parse(
            "audit_checkpoints:\n  key: /k\n  every_entries: 5\n  every_seconds: 2\n",
        )
        .unwrap();
        assert_eq!(
            cfg.audit_checkpoints,
            CheckpointConfig {
                enabled: true,
                key: Some(PathBuf::from("/k")),
                every_entries: 5,
                every_seconds: 2
            }
        );
        let off = ControllerConfig::parse("audit_checkpoints: {enabled: false}\n").unwrap();
        assert!(!off.audit_checkpoints.enabled);
        assert!(ControllerConfig::parse("audit_checkpoints: {every_entries: 0}\n").is_err());
        assert!(ControllerConfig::parse("audit_checkpoints: {every: 1}\n").is_err());
    }

    #[test]
    fn the_packaged_example_loads() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples/controller.yaml");
        let cfg = ControllerConfig::load(&path).unwrap();
        assert_eq!(cfg.data, default_data());
        assert_eq!(cfg.certs, default_certs());
        assert_eq!(
            cfg.metrics.unwrap().listen,
            "127.0.0.1:9465".parse().unwrap()
        );
    }
}
