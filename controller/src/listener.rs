//! Accepting connections: mTLS against the site CA and its revocation list, a handshake
//! timeout, a connection limit, and revoked clients cut from live connections.
//!
//! tonic's own TLS acceptor takes neither a revocation list nor a connection limit, so the
//! controller runs the rustls handshake itself (each in its own task, so a client that opens
//! TCP and never speaks holds only its own slot until the timeout) and hands tonic finished
//! TLS streams. The revocation list is re-read when its file changes, and it fails closed: a
//! list that is gone, unreadable or not a CRL refuses every new connection (logged) until a
//! good one is back; it is never taken for an empty list.

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch},
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        RootCertStore, ServerConfig,
        crypto::ring,
        pki_types::{
            CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject as _,
        },
        server::WebPkiClientVerifier,
    },
    server::TlsStream,
};
use tokio_stream::{Stream as _, wrappers::WatchStream};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use crate::server::TlsFiles;

/// One load of the certificate files: the rustls configuration and the revoked serials.
pub struct TlsState {
    config: Arc<ServerConfig>,
    revoked: HashSet<Vec<u8>>,
    /// Why new connections are refused: the revocation list (or another file) stopped loading
    /// after this state was loaded. Open connections are still checked against `revoked`.
    refusing: Option<String>,
}

/// A serial number without the leading zero bytes DER may add.
fn serial_key(raw: &[u8]) -> Vec<u8> {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    raw[start..].to_vec()
}

/// The serial of a DER certificate, or `None` if it does not parse.
fn cert_serial(der: &[u8]) -> Option<Vec<u8>> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, c)| serial_key(c.raw_serial()))
}

impl TlsState {
    /// Reads the server identity, the client CA and the revocation list. A list that is
    /// missing, unreadable, not a CRL or holds none is an error (never an empty list).
    pub fn load(files: &TlsFiles, crl_files: &[PathBuf]) -> anyhow::Result<TlsState> {
        let certs = CertificateDer::pem_file_iter(&files.cert)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .with_context(|| format!("reading {}", files.cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .with_context(|| format!("reading {}", files.key.display()))?;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&files.ca)
            .with_context(|| format!("reading {}", files.ca.display()))?
        {
            roots
                .add(c.with_context(|| format!("reading {}", files.ca.display()))?)
                .with_context(|| format!("{}: not a CA certificate", files.ca.display()))?;
        }
        let mut crls = Vec::new();
        let mut revoked = HashSet::new();
        // The root's list, and the issuing CA's when there is one: each CA in a chain needs
        // its list, or webpki refuses the chain (unknown status is not good status).
        for path in crl_files {
            let before = crls.len();
            for c in CertificateRevocationListDer::pem_file_iter(path).with_context(|| {
                format!(
                    "reading the revocation list {} (`wardctl certs init` writes an empty one)",
                    path.display()
                )
            })? {
                let c = c.with_context(|| format!("reading {}", path.display()))?;
                let (_, parsed) = x509_parser::parse_x509_crl(c.as_ref())
                    .map_err(|e| anyhow::anyhow!("{}: not a CRL: {e}", path.display()))?;
                revoked.extend(
                    parsed
                        .iter_revoked_certificates()
                        .map(|r| serial_key(r.raw_serial())),
                );
                crls.push(c);
            }
            if crls.len() == before {
                anyhow::bail!(
                    "{}: no revocation list in it (an empty list is a signed CRL without entries)",
                    path.display()
                );
            }
        }
        let provider = Arc::new(ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .with_crls(crls)
                .build()
                .context(
                    "client certificate verifier (is the revocation list signed by the CA?)",
                )?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .with_context(|| format!("{} and {}", files.cert.display(), files.key.display()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsState {
            config: Arc::new(config),
            revoked,
            refusing: None,
        })
    }

    /// The enrollment listener's state: the server's chain with the root CA appended (the agent
    /// checks the root against the fingerprint it was given before trusting anything), and no
    /// client certificate asked for.
    pub fn load_enroll(files: &TlsFiles) -> anyhow::Result<TlsState> {
        let read = |p: &Path| {
            CertificateDer::pem_file_iter(p)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .with_context(|| format!("reading {}", p.display()))
        };
        let mut chain = read(&files.cert)?;
        chain.extend(read(&files.ca)?);
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .with_context(|| format!("reading {}", files.key.display()))?;
        let provider = Arc::new(ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .with_context(|| format!("{} and {}", files.cert.display(), files.key.display()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsState {
            config: Arc::new(config),
            revoked: HashSet::new(),
            refusing: None,
        })
    }

    /// This state, refusing new connections for `why`.
    fn refusing(&self, why: String) -> TlsState {
        TlsState {
            config: self.config.clone(),
            revoked: self.revoked.clone(),
            refusing: Some(why),
        }
    }

    pub fn revoked_count(&self) -> usize {
        self.revoked.len()
    }
}

/// What identifies a version of the revocation list file (a rename gives a new inode).
fn file_stamp(path: &Path) -> Option<(i64, i64, u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.ino(), m.size()))
}

/// How often the revocation list file is looked at.
const CRL_POLL: Duration = Duration::from_millis(500);

/// Accepting settings.
#[derive(Clone, Debug)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub max_connections: usize,
}

/// A finished mTLS connection. It holds its slot under the connection limit until dropped, and
/// fails its next read or write once its client certificate is revoked.
pub struct Conn {
    tls: TlsStream<TcpStream>,
    _slot: OwnedSemaphorePermit,
    serial: Vec<u8>,
    updates: WatchStream<Arc<TlsState>>,
    revoked: bool,
}

impl Conn {
    /// Takes revocation list updates; true once this connection's certificate is revoked.
    fn check(&mut self, cx: &mut Context<'_>) -> bool {
        while let Poll::Ready(Some(state)) = Pin::new(&mut self.updates).poll_next(cx) {
            if state.revoked.contains(&self.serial) {
                if !self.revoked {
                    tracing::warn!("client certificate revoked: closing its connection");
                }
                self.revoked = true;
            }
        }
        self.revoked
    }
}

fn revoked_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        "client certificate revoked",
    )
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.check(cx) {
            return Poll::Ready(Err(revoked_error()));
        }
        Pin::new(&mut this.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.check(cx) {
            return Poll::Ready(Err(revoked_error()));
        }
        Pin::new(&mut this.tls).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tls.connect_info()
    }
}

/// Watches the revocation list file and publishes a new state when it changes. A list that
/// is gone or does not load fails closed: the published state refuses new connections (open
/// ones keep being checked against the last list that loaded) and the list is tried again at
/// every poll until it loads.
async fn watch_crl(files: TlsFiles, crls: Vec<PathBuf>, tx: watch::Sender<Arc<TlsState>>) {
    let stamps = |crls: &[PathBuf]| crls.iter().map(|c| file_stamp(c)).collect::<Vec<_>>();
    let mut stamp = stamps(&crls);
    let crl = crls.first().cloned().unwrap_or_default();
    loop {
        tokio::time::sleep(CRL_POLL).await;
        if tx.is_closed() {
            return;
        }
        let now = stamps(&crls);
        let refusing = tx.borrow().refusing.is_some();
        if now == stamp && !refusing {
            continue;
        }
        stamp = now;
        match TlsState::load(&files, &crls) {
            Ok(state) => {
                if refusing {
                    tracing::warn!(revoked = state.revoked.len(), crl = %crl.display(), "revocation list loads again: accepting new connections");
                } else {
                    tracing::info!(revoked = state.revoked.len(), crl = %crl.display(), "revocation list reloaded");
                }
                let _ = tx.send(Arc::new(state));
            }
            Err(e) => {
                let why = format!("{e:#}");
                if !refusing {
                    tracing::error!(crl = %crl.display(), "revocation list does not load: refusing new connections until it does: {why}");
                }
                let next = tx.borrow().refusing(why);
                // Only a change wakes the open connections' revocation checks.
                tx.send_if_modified(|s| {
                    if s.refusing == next.refusing {
                        false
                    } else {
                        *s = Arc::new(next);
                        true
                    }
                });
            }
        }
    }
}

/// Accepts on `listener` until the returned stream is dropped: each connection gets a slot
/// (over `max_connections` it is closed at once), then a TLS handshake bounded by
/// `handshake_timeout`; finished connections come out of the stream.
pub fn incoming(
    listener: TcpListener,
    files: TlsFiles,
    crls: Vec<PathBuf>,
    limits: Limits,
) -> anyhow::Result<tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>>> {
    let state = Arc::new(TlsState::load(&files, &crls)?);
    let (state_tx, state_rx) = watch::channel(state);
    tokio::spawn(watch_crl(files, crls, state_tx));
    Ok(accept(listener, state_rx, limits))
}

/// The enrollment listener: TLS without client certificates, the same handshake timeout and
/// connection limit (its own slots: a flood of enrollments never takes the agents').
pub fn incoming_enroll(
    listener: TcpListener,
    files: &TlsFiles,
    limits: Limits,
) -> anyhow::Result<tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>>> {
    let (state_tx, state_rx) = watch::channel(Arc::new(TlsState::load_enroll(files)?));
    // Kept open so connections' update streams stay pending instead of ending.
    tokio::spawn(async move { state_tx.closed().await });
    Ok(accept(listener, state_rx, limits))
}

fn accept(
    listener: TcpListener,
    state_rx: watch::Receiver<Arc<TlsState>>,
    limits: Limits,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let state = state_rx.borrow().clone();
            if let Some(why) = &state.refusing {
                tracing::warn!(%peer, "connection refused: the revocation list does not load ({why})");
                drop(tcp);
                continue;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, limit = limits.max_connections, "connection limit reached: connection refused");
                drop(tcp);
                continue;
            };
            // Nagle off: a response written in pieces must not wait for the client's delayed
            // ACK (measured: 40 ms per admin call with it on).
            let _ = tcp.set_nodelay(true);
            let updates = WatchStream::from_changes(state_rx.clone());
            let tx = tx.clone();
            let timeout = limits.handshake_timeout;
            tokio::spawn(async move {
                let acceptor = TlsAcceptor::from(state.config.clone());
                let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Err(_) => {
                        tracing::info!(%peer, ?timeout, "TLS handshake timed out: connection closed");
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Ok(Ok(tls)) => tls,
                };
                let serial = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| cert_serial(c.as_ref()))
                    .unwrap_or_default();
                let conn = Conn {
                    tls,
                    _slot: slot,
                    serial,
                    updates,
                    revoked: false,
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
