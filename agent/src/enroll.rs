//! `wardgate-agent enroll`: the gateway gets its certificate with a one-time token.
//!
//! The gateway has no CA file yet, only the SHA-256 fingerprint of the root CA (printed by
//! `wardctl gateways enroll`). The enrollment listener presents the root after its own chain:
//! the agent reads the chain without trusting it, keeps the certificate whose fingerprint is
//! the one it was given (none: refused, nothing sent), then connects again verifying the
//! controller against that root and its name, and only then sends the token with a CSR for a
//! key it made (written 0600, never sent).

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio_rustls::rustls::{
    self, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Uri};
use wardgate_proto::v1::{EnrollRequest, enroll_service_client::EnrollServiceClient};

use crate::identity::{self, Files, IdentityError};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("`{0}` is not a SHA-256 fingerprint (64 hex digits, colons allowed)")]
    BadFingerprint(String),
    #[error("`{url}` is not an https://HOST:PORT address: {why}")]
    BadUrl { url: String, why: String },
    #[error("connecting to {url}: {why}")]
    Connect { url: String, why: String },
    #[error(
        "the controller at {url} does not present the CA with fingerprint {expected} (it \
         presents {presented}): refusing to enroll (a wrong address, a wrong fingerprint, or \
         someone in between); nothing was sent"
    )]
    FingerprintMismatch {
        url: String,
        expected: String,
        presented: String,
    },
    #[error("the controller refused the enrollment: {0}")]
    Refused(String),
    #[error("the controller answered with a CA other than the one checked")]
    CaChanged,
    #[error(transparent)]
    Files(#[from] IdentityError),
}

/// SHA-256 (lowercase hex) of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(der))
}

/// A fingerprint as people write it (`AB:CD:..`, `sha256:..`), as lowercase hex.
pub fn normalize_fingerprint(s: &str) -> Result<String, EnrollError> {
    let t = s.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(EnrollError::BadFingerprint(s.to_string()))
    }
}

/// Where to enroll and what to write.
#[derive(Clone, Debug)]
pub struct Target {
    /// The controller's enrollment address, `https://HOST:PORT`.
    pub url: String,
    /// The name the controller's certificate must carry.
    pub server_name: String,
    pub gateway: String,
    /// Where the agent's config expects `ca.pem` and the gateway's pair.
    pub certs: PathBuf,
}

/// What an enrollment wrote.
#[derive(Clone, Debug)]
pub struct Enrolled {
    pub files: Files,
    pub serial: String,
    pub not_after_unix: i64,
}

/// Accepts any server certificate: only to read the chain the enrollment listener presents,
/// which is trusted only through the fingerprint check that follows. Handshake signatures are
/// still checked (the server holds the key of the certificate it sent).
#[derive(Debug)]
struct ReadChainOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for ReadChainOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn host_port(url: &str) -> Result<(String, u16), EnrollError> {
    let bad = |why: &str| EnrollError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| bad(&e.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("the scheme must be https"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

/// The certificates the server at `url` presents (not verified).
async fn presented_chain(
    url: &str,
    server_name: &str,
) -> Result<Vec<CertificateDer<'static>>, EnrollError> {
    let (host, port) = host_port(url)?;
    let connect = |why: String| EnrollError::Connect {
        url: url.to_string(),
        why,
    };
    let provider = Arc::new(ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| connect(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReadChainOnly(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| connect(e.to_string()))?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| connect("timed out".into()))?
    .map_err(|e| connect(e.to_string()))?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| connect("TLS handshake timed out".into()))?
    .map_err(|e| connect(format!("TLS handshake: {e}")))?;
    Ok(tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect())
}

fn to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Enrolls `target.gateway` with `token` at a controller whose root CA has fingerprint
/// `ca_fingerprint`; writes `ca.pem` and the gateway's pair under `target.certs`.
pub async fn enroll(
    target: &Target,
    token: &str,
    ca_fingerprint: &str,
) -> Result<Enrolled, EnrollError> {
    let want = normalize_fingerprint(ca_fingerprint)?;
    let chain = presented_chain(&target.url, &target.server_name).await?;
    let root = chain
        .iter()
        .find(|c| fingerprint(c) == want)
        .ok_or_else(|| EnrollError::FingerprintMismatch {
            url: target.url.clone(),
            expected: want.clone(),
            presented: chain
                .last()
                .map_or_else(|| "no certificate".into(), |c| fingerprint(c)),
        })?;
    let root_pem = to_pem(root);
    let connect = |why: String| EnrollError::Connect {
        url: target.url.clone(),
        why,
    };
    // From here the controller is verified like any TLS server: against the root, by name.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&root_pem))
        .domain_name(target.server_name.clone());
    let channel: Channel = Channel::from_shared(target.url.clone())
        .map_err(|e| connect(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| connect(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| connect(format!("{e:?}")))?;
    let (key_pem, csr_pem) = identity::new_key_and_csr(&target.gateway)?;
    let r = EnrollServiceClient::new(channel)
        .enroll(EnrollRequest {
            gateway: target.gateway.clone(),
            token: token.trim().to_string(),
            csr_pem,
        })
        .await
        .map_err(|s| EnrollError::Refused(s.message().to_string()))?
        .into_inner();
    let answered = x509_parser::pem::parse_x509_pem(r.ca_pem.as_bytes())
        .map(|(_, p)| fingerprint(&p.contents))
        .unwrap_or_default();
    if answered != want {
        return Err(EnrollError::CaChanged);
    }
    let files = Files::of(&target.certs, &target.gateway);
    identity::install(&files, &key_pem, &r.certificate_chain_pem, Some(&r.ca_pem))?;
    let v = identity::validity(&files.cert)?;
    tracing::info!(
        gateway = target.gateway,
        serial = v.serial,
        cert = %files.cert.display(),
        "enrolled"
    );
    Ok(Enrolled {
        files,
        serial: v.serial,
        not_after_unix: r.not_after_unix,
    })
}

/// `wardgate-agent enroll` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct EnrollArgs {
    /// The controller's enrollment address (`wardgate-controller --enroll-listen`),
    /// e.g. `https://controller.example:7444`.
    #[arg(long)]
    pub controller: String,
    /// The one-time token from `wardctl gateways enroll NAME`.
    #[arg(long, env = "WARDGATE_ENROLL_TOKEN")]
    pub token: String,
    /// SHA-256 fingerprint of the controller's root CA (printed with the token).
    #[arg(long)]
    pub ca_fingerprint: String,
    /// The agent's config: gateway name, certificate directory and server name come from its
    /// `controller:` section.
    #[arg(long, default_value = crate::paths::CONFIG)]
    pub config: PathBuf,
    /// Instead of the config's gateway name.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Instead of the config's certificate directory.
    #[arg(long)]
    pub certs: Option<PathBuf>,
    /// Instead of the config's server name.
    #[arg(long)]
    pub server_name: Option<String>,
}

impl EnrollArgs {
    /// The target from the flags and, for what they leave out, the config file.
    pub fn target(&self) -> anyhow::Result<Target> {
        use anyhow::Context as _;
        let from_config = match (&self.gateway, &self.certs) {
            (Some(_), Some(_)) => None,
            _ => {
                let cfg = crate::config::AgentConfig::load(&self.config)?;
                Some(cfg.controller.with_context(|| {
                    format!(
                        "{} has no `controller:` section: give --gateway and --certs",
                        self.config.display()
                    )
                })?)
            }
        };
        let pick =
            |flag: &Option<String>, cfg: Option<&String>| flag.clone().or_else(|| cfg.cloned());
        Ok(Target {
            url: self.controller.clone(),
            server_name: pick(
                &self.server_name,
                from_config.as_ref().map(|c| &c.server_name),
            )
            .unwrap_or_else(|| "localhost".into()),
            gateway: pick(&self.gateway, from_config.as_ref().map(|c| &c.gateway))
                .context("no gateway name")?,
            certs: self
                .certs
                .clone()
                .or_else(|| from_config.as_ref().map(|c| c.certs.clone()))
                .context("no certificate directory")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_and_urls_are_checked_before_anything_is_sent() {
        let hex = "AB".repeat(32);
        assert_eq!(normalize_fingerprint(&hex).unwrap(), "ab".repeat(32));
        assert!(normalize_fingerprint("abcd").is_err());
        assert_eq!(
            host_port("https://localhost:7444").unwrap(),
            ("localhost".into(), 7444)
        );
        assert!(host_port("http://localhost:7444").is_err());
    }
}
