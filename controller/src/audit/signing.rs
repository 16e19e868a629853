//! The controller's audit checkpoint key: Ed25519 (ring), kept as a PKCS#8 PEM file the
//! controller creates on first start (mode 0600), its public half beside it as an SPKI PEM file
//! (`KEY.pub`, what `openssl pkey -pubout` writes). The SOC or the auditor keeps a copy of the
//! public key taken at install: one read back from the controller's disk proves nothing once
//! that disk is the attacker's.

use std::{
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use ring::{
    rand::SystemRandom,
    signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey},
};
use sha2::{Digest as _, Sha256};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not PEM: {source}")]
    Pem {
        path: PathBuf,
        source: pem::PemError,
    },
    #[error("{path}: expected a PEM `{want}`, found `{found}`")]
    Tag {
        path: PathBuf,
        want: &'static str,
        found: String,
    },
    #[error("{path}: not an Ed25519 {what}")]
    NotEd25519 { path: PathBuf, what: &'static str },
    #[error("generating an Ed25519 key: {0}")]
    Generate(String),
}

/// The public key checkpoints are verified with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Reads an SPKI PEM (`-----BEGIN PUBLIC KEY-----`) Ed25519 public key.
    pub fn from_pem_file(path: &Path) -> Result<PublicKey, KeyError> {
        let text = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.into(),
            source,
        })?;
        let p = pem::parse(text).map_err(|source| KeyError::Pem {
            path: path.into(),
            source,
        })?;
        if p.tag() != "PUBLIC KEY" {
            return Err(KeyError::Tag {
                path: path.into(),
                want: "PUBLIC KEY",
                found: p.tag().into(),
            });
        }
        p.contents()
            .strip_prefix(&SPKI_PREFIX[..])
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .map(PublicKey)
            .ok_or_else(|| KeyError::NotEd25519 {
                path: path.into(),
                what: "public key",
            })
    }

    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem::encode(&pem::Pem::new("PUBLIC KEY", der))
    }

    /// Names the key in each checkpoint: the first 16 hex digits of its SHA-256.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }

    /// Whether `signature` is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.0)
            .verify(message, signature)
            .is_ok()
    }
}

/// The controller's signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public.id())
    }
}

/// Where the public half of the key at `key` is written.
pub fn public_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

impl SigningKey {
    /// Reads the PKCS#8 PEM key at `path`, or creates one there (0600) when there is no file,
    /// with its public key at `PATH.pub`.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.into(),
            source,
        };
        let der = match std::fs::read(path) {
            Ok(text) => {
                let p = pem::parse(text).map_err(|source| KeyError::Pem {
                    path: path.into(),
                    source,
                })?;
                if p.tag() != "PRIVATE KEY" {
                    return Err(KeyError::Tag {
                        path: path.into(),
                        want: "PRIVATE KEY",
                        found: p.tag().into(),
                    });
                }
                p.into_contents()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref())).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io)?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        // v1 documents (openssl genpkey) as well as the v2 ring writes.
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| KeyError::NotEd25519 {
                path: path.into(),
                what: "PKCS#8 private key",
            })?;
        let public = PublicKey(
            pair.public_key()
                .as_ref()
                .try_into()
                .expect("Ed25519 public keys are 32 bytes"),
        );
        let pub_path = public_path(path);
        if std::fs::read(&pub_path).ok() != Some(public.to_pem().into_bytes()) {
            std::fs::write(&pub_path, public.to_pem()).map_err(|source| KeyError::Io {
                path: pub_path,
                source,
            })?;
        }
        Ok(SigningKey { pair, public })
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_reloads_and_its_public_key_verifies_only_its_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/audit-checkpoint.key");
        let key = SigningKey::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(key.public(), again.public());
        let public = PublicKey::from_pem_file(&public_path(&path)).unwrap();
        assert_eq!(&public, key.public());
        let sig = key.sign(b"seq=1");
        assert!(public.verifies(b"seq=1", &sig));
        assert!(!public.verifies(b"seq=2", &sig));
        let other = SigningKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(!other.public().verifies(b"seq=1", &sig));
        assert!(matches!(
            PublicKey::from_pem_file(&path),
            Err(KeyError::Tag { .. })
        ));
    }
}
