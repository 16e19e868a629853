//! The controller's configuration file (`wardgate-controller --config PATH`): typed, with
//! documented defaults, unknown keys refused with their file, line and column (as the agent's).
//! SOC sinks are added here by the detection work.

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
    /// Data directory: the SQLite store is `<data>/wardgate.db`. Default
    /// `/var/lib/wardgate-controller`.
    #[serde(default = "default_data")]
    pub data: PathBuf,
    /// Directory with `ca.pem`, `server.pem` and `server.key` (as `wardctl certs init`
    /// writes them). Default `/etc/wardgate/certs`.
    #[serde(default = "default_certs")]
    pub certs: PathBuf,
    /// Prometheus metrics on `GET /metrics`. Without it the controller serves none.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
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
            certs: default_certs(),
            metrics: None,
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
        Ok(serde_saphyr::from_str(text)?)
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
        std::fs::write(&path, "sinks: []\n").unwrap();
        let msg = format!("{:#}", ControllerConfig::load(&path).unwrap_err());
        assert!(msg.contains("sinks") && msg.contains("line 1"), "{msg}");
        std::fs::write(&path, "listen: localhost\n").unwrap();
        let msg = format!("{:#}", ControllerConfig::load(&path).unwrap_err());
        assert!(msg.contains("line 1"), "{msg}");
        assert!(ControllerConfig::load(&dir.path().join("missing.yaml")).is_err());
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
