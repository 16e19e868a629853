//! Syslog sink: RFC 5424 lines with a CEF payload (analysis `format::cef`), over TCP with
//! RFC 6587 octet-counting framing (`LEN SP MSG`), or over TLS (RFC 5425, rustls, the
//! collector's certificate checked against the configured CA and name; the sink presents its
//! own certificate when `client_cert` and `client_key` are configured).
//!
//! Plain TCP syslog has no acknowledgement: bytes written just before the collector dies can
//! be lost. Before each batch the sink checks whether the collector closed the connection
//! (a stopped collector sends FIN) and reconnects if so, which covers restarts; a collector
//! host that vanishes without a FIN can still cost the batch in flight (RELP would close that
//! gap).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::{io::AsyncWriteExt as _, net::TcpStream};
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{
        ClientConfig, RootCertStore,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    },
};
use wardgate_analysis::detect::{Finding, format::cef};

use crate::{audit::checkpoint::Signed, config::SinkConfig};

/// The HOSTNAME of a line whose finding names no gateway.
const HOST: &str = "wardgate-controller";

enum Conn {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Tcp(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the collector closed its side (a read would return end of file now).
    async fn closed(&self) -> bool {
        let mut b = [0u8; 1];
        // Polled once: data or end of file already there answers at once.
        matches!(
            tokio::time::timeout(std::time::Duration::ZERO, self.tcp().peek(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }
}

pub struct SyslogSink {
    address: String,
    /// With TLS: the connector and the name checked.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    conn: Option<Conn>,
}

impl SyslogSink {
    pub fn new(cfg: &SinkConfig) -> anyhow::Result<SyslogSink> {
        let address = cfg
            .address
            .clone()
            .context("a syslog sink needs an address")?;
        let tls = match &cfg.tls {
            None => None,
            Some(t) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(&t.ca)
                    .with_context(|| format!("reading the syslog CA {}", t.ca.display()))?
                {
                    roots
                        .add(c.with_context(|| format!("reading {}", t.ca.display()))?)
                        .with_context(|| format!("{}: not a CA certificate", t.ca.display()))?;
                }
                let builder =
                    ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                        .with_safe_default_protocol_versions()?
                        .with_root_certificates(roots);
                let config = match (&t.client_cert, &t.client_key) {
                    (Some(cert), Some(key)) => {
                        let chain = CertificateDer::pem_file_iter(cert)
                            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                            .with_context(|| {
                                format!("reading the client certificate {}", cert.display())
                            })?;
                        if chain.is_empty() {
                            anyhow::bail!("{}: no certificate in it", cert.display());
                        }
                        let key = PrivateKeyDer::from_pem_file(key)
                            .with_context(|| format!("reading the client key {}", key.display()))?;
                        builder.with_client_auth_cert(chain, key).with_context(|| {
                            format!("client certificate {} and its key", cert.display())
                        })?
                    }
                    _ => builder.with_no_client_auth(),
                };
                let host = match &t.server_name {
                    Some(n) => n.clone(),
                    None => address
                        .rsplit_once(':')
                        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                        .unwrap_or_default(),
                };
                let name = ServerName::try_from(host.clone())
                    .with_context(|| format!("`{host}` is not a TLS server name"))?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(SyslogSink {
            address,
            tls,
            conn: None,
        })
    }

    async fn connect(&self) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .with_context(|| format!("connecting to {}", self.address))?;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            None => Conn::Tcp(tcp),
            Some((connector, name)) => Conn::Tls(Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", self.address))?,
            )),
        })
    }

    pub async fn deliver(&mut self, alerts: &[super::Outgoing]) -> anyhow::Result<()> {
        self.send(&frames(alerts.iter().map(|o| &o.finding))).await
    }

    /// One RFC 5424 line (MSGID `audit_checkpoint`) whose message is the signed checkpoint.
    pub async fn deliver_checkpoint(&mut self, checkpoint: &Signed) -> anyhow::Result<()> {
        let line = checkpoint_line(checkpoint);
        self.send(format!("{} {line}", line.len()).as_bytes()).await
    }

    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        if let Some(c) = &self.conn
            && c.closed().await
        {
            tracing::info!(address = %self.address, "syslog collector closed the connection; reconnecting");
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        conn.write_all(bytes)
            .await
            .with_context(|| format!("writing to {}", self.address))
    }

    pub fn reset(&mut self) {
        self.conn = None;
    }
}

/// A checkpoint as an RFC 5424 line: facility security, severity notice, from the controller.
pub fn checkpoint_line(checkpoint: &Signed) -> String {
    let pri = u16::from(cef::FACILITY_SECURITY) * 8 + 5;
    let ts = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(checkpoint.checkpoint.unix_ms.max(0) as u64);
    format!(
        "<{pri}>1 {} {HOST} wardgate - audit_checkpoint - {}",
        humantime::format_rfc3339_millis(ts),
        checkpoint.message()
    )
}

/// The batch as octet-counted frames (RFC 6587 3.4.1): `LEN SP MSG`, LEN in bytes. An update
/// is a line like the first, its `cnt` higher.
pub fn frames<'a>(alerts: impl IntoIterator<Item = &'a Finding>) -> Vec<u8> {
    let mut out = Vec::new();
    for f in alerts {
        let line = cef::syslog_line(f, cef::FACILITY_SECURITY, HOST);
        out.extend_from_slice(format!("{} ", line.len()).as_bytes());
        out.extend_from_slice(line.as_bytes());
    }
    out
}
