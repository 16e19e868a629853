//! wardctl's own configuration file: where the controller is and which certificate to use, so
//! a person types them once. Read from `--config` / `WARDCTL_CONFIG`, else
//! `$XDG_CONFIG_HOME/wardgate/wardctl.yaml`, else `~/.config/wardgate/wardctl.yaml`; a file
//! that is not there is no error unless it was named explicitly. Flags and their environment
//! variables override the file; the file overrides the defaults.
//!
//! ```yaml
//! controller: https://controller.example:7443   # default https://localhost:7443
//! certs: /etc/wardgate/certs   # ca.pem and USER.pem / USER.key; default /etc/wardgate/certs
//! ca: /etc/wardgate/certs/ca.pem   # default CERTS/ca.pem
//! identity: user-alice         # default: the one user-*.pem in CERTS
//! server_name: controller.example  # the name in the controller's certificate; default localhost
//! ```
//!
//! Relative paths in the file are relative to the file's directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Defaults when neither a flag nor the file says.
pub const DEFAULT_CONTROLLER: &str = "https://localhost:7443";
pub const DEFAULT_CERTS: &str = "/etc/wardgate/certs";
pub const DEFAULT_SERVER_NAME: &str = "localhost";
/// Where the file is, below the user's configuration directory.
pub const FILE_IN_CONFIG_DIR: &str = "wardgate/wardctl.yaml";

/// The file's keys; every one optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WardctlConfig {
    pub controller: Option<String>,
    pub certs: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub identity: Option<String>,
    pub server_name: Option<String>,
}

/// What went wrong reading the file or choosing a certificate, with the flag that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading wardctl config {path} (chosen by --config / WARDCTL_CONFIG)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "in wardctl config {at}: {message} (keys: controller, certs, ca, identity, server_name)"
    )]
    Parse { at: String, message: String },
    #[error(
        "reading certificate directory {dir} (chosen by --certs / WARDGATE_CERTS or `certs:` in \
         the wardctl config)"
    )]
    CertsDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no user certificate (user-NAME.pem) in {dir}: make one with `wardctl certs init --dir \
         {dir} --user NAME:ROLE`, or point --certs at the directory that has yours"
    )]
    NoUser { dir: PathBuf },
    #[error(
        "{} user certificates in {dir} ({}): choose one with --as (WARDGATE_AS) or `identity:` \
         in the wardctl config", names.len(), names.join(", ")
    )]
    SeveralUsers { dir: PathBuf, names: Vec<String> },
}

impl WardctlConfig {
    pub fn parse(text: &str) -> Result<Self, serde_saphyr::Error> {
        serde_saphyr::from_str(text)
    }

    /// Reads `path`; relative paths in it become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(&text).map_err(|e| ConfigError::Parse {
            at: match e.location() {
                Some(l) => format!("{}:{}:{}", path.display(), l.line(), l.column()),
                None => path.display().to_string(),
            },
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.certs, &mut cfg.ca].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }

    /// The file named by `explicit` (which must exist), else the default one if it exists,
    /// else an empty configuration.
    pub fn find(explicit: Option<&Path>, default: Option<&Path>) -> Result<Self, ConfigError> {
        match (explicit, default) {
            (Some(p), _) => Self::load(p),
            (None, Some(p)) if p.exists() => Self::load(p),
            _ => Ok(Self::default()),
        }
    }
}

/// `$XDG_CONFIG_HOME/wardgate/wardctl.yaml`, else `$HOME/.config/wardgate/wardctl.yaml`.
pub fn default_path() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_CONFIG_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".config")))
        .map(|d| d.join(FILE_IN_CONFIG_DIR))
}

/// The identity to use when none is chosen: the one `user-*.pem` in `dir`.
pub fn default_identity(dir: &Path) -> Result<String, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::CertsDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|f| {
            f.strip_suffix(".pem")
                .filter(|n| n.starts_with("user-"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    match names.len() {
        0 => Err(ConfigError::NoUser {
            dir: dir.to_path_buf(),
        }),
        1 => Ok(names.remove(0)),
        _ => Err(ConfigError::SeveralUsers {
            dir: dir.to_path_buf(),
            names,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_reads_and_unknown_keys_are_refused() {
        let c = WardctlConfig::parse(
            "controller: https://c.example:7443\ncerts: /x\nca: /x/ca.pem\nidentity: user-a\n\
             server_name: c.example\n",
        )
        .unwrap();
        assert_eq!(c.controller.as_deref(), Some("https://c.example:7443"));
        assert_eq!(c.identity.as_deref(), Some("user-a"));
        assert_eq!(c.ca.as_deref(), Some(Path::new("/x/ca.pem")));
        assert!(WardctlConfig::parse("controler: x\n").is_err());
        assert_eq!(WardctlConfig::parse("").unwrap(), WardctlConfig::default());
    }

    #[test]
    fn relative_paths_are_relative_to_the_file_and_errors_give_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wardctl.yaml");
        std::fs::write(&path, "certs: certs\nca: /abs/ca.pem\n").unwrap();
        let c = WardctlConfig::load(&path).unwrap();
        assert_eq!(c.certs.unwrap(), dir.path().join("certs"));
        assert_eq!(c.ca.unwrap(), PathBuf::from("/abs/ca.pem"));
        std::fs::write(&path, "controller: x\ncertz: y\n").unwrap();
        let e = WardctlConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("wardctl.yaml:2:"), "{e}");
        assert!(e.contains("keys: controller"), "{e}");
    }

    #[test]
    fn a_missing_default_file_is_no_error_but_a_named_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("nope.yaml");
        assert_eq!(
            WardctlConfig::find(None, Some(&none)).unwrap(),
            WardctlConfig::default()
        );
        let e = WardctlConfig::find(Some(&none), None).unwrap_err();
        assert!(e.to_string().contains("--config"), "{e}");
    }

    #[test]
    fn the_identity_defaults_to_the_one_user_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let e = default_identity(dir.path()).unwrap_err().to_string();
        assert!(e.contains("certs init") && e.contains("--user"), "{e}");
        for f in ["ca.pem", "server.pem", "gateway-gw-1.pem", "user-alice.pem"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        std::fs::write(dir.path().join("user-alice.key"), "").unwrap();
        assert_eq!(default_identity(dir.path()).unwrap(), "user-alice");
        std::fs::write(dir.path().join("user-bob.pem"), "").unwrap();
        let e = default_identity(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("user-alice, user-bob") && e.contains("--as"),
            "{e}"
        );
        let e = default_identity(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--certs"), "{e}");
    }
}
