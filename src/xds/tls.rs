//! mTLS on the ADS port (`serve --ads-tls-cert/--ads-tls-key/--ads-client-ca`), for Envoys
//! outside attache's pod: attache presents its certificate, and an Envoy must present one signed
//! by the client CA. The handshake runs here, on each accepted connection, in its own task with a
//! time limit (a slow or bad client never holds the others up); the established connections go
//! to the gRPC server, and refused ones are counted (`attache_ads_tls_handshake_failures_total`)
//! and logged. Knows nothing of xDS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::state::Shared;

/// Where the ADS server's TLS material is.
#[derive(Clone, Debug)]
pub struct Files {
    /// attache's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that signs the Envoys' client certificates (PEM).
    pub client_ca: PathBuf,
}

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("{what} {}: cannot read it as PEM", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{what} {}: not a PEM certificate", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{what} {}: no certificate in it", path.display());
    Ok(certs)
}

/// The server's TLS configuration: its certificate, and client certificates required and
/// checked against the client CA. HTTP/2 only (gRPC).
///
/// # Errors
/// A file that cannot be read or does not hold what it should, naming it.
pub fn server_config(files: &Files) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&files.cert, "--ads-tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("--ads-tls-key {}: not a PEM private key", files.key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(&files.client_ca, "--ads-client-ca")? {
        roots.add(ca).with_context(|| {
            format!(
                "--ads-client-ca {}: not a usable CA certificate",
                files.client_ca.display()
            )
        })?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .context("--ads-client-ca: cannot verify client certificates with it")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("--ads-tls-cert and --ads-tls-key do not make a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// An established TLS connection, as the gRPC server takes it.
pub struct Conn {
    inner: TlsStream<TcpStream>,
    remote: Option<SocketAddr>,
    local: Option<SocketAddr>,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local,
            remote_addr: self.remote,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts connections on `listener` and hands the ones whose handshake succeeds to the
/// returned stream; counts and logs the others.
pub fn incoming(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "ADS: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let local = stream.local_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(inner)) => {
                        let _ = tx
                            .send(Ok(Conn {
                                inner,
                                remote: Some(peer),
                                local,
                            }))
                            .await;
                    }
                    failed => {
                        shared.metrics.ads_tls_failures.fetch_add(1, Ordering::Relaxed);
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
                        };
                        tracing::warn!(%peer, error = %why, "ADS: TLS handshake refused (an Envoy needs a client certificate signed by --ads-client-ca)");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
