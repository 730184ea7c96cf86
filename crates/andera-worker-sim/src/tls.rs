//! TLS for a simulated Worker: `https://` and `wss://` listeners, and a
//! helper that makes a private CA and a server certificate for tests.
//!
//! Everything here uses rustls with the `ring` provider passed explicitly, so
//! no process-wide default crypto provider has to be installed.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::net::{TrackedListener, TrackedStream};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server certificate and its private key, both PEM-encoded.
///
/// Used by [`SimConfig::tls`](super::SimConfig::tls): when set, both the HTTP
/// and the WebSocket listener speak TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct SimTls {
    /// The server certificate first, then any intermediates (PEM).
    pub cert_chain_pem: String,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl fmt::Debug for SimTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimTls")
            .field("cert_chain_pem", &self.cert_chain_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl SimTls {
    /// Reads the certificate chain and key from PEM files.
    pub fn from_pem_files(cert_chain: &Path, key: &Path) -> io::Result<SimTls> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        let tls = SimTls {
            cert_chain_pem: read(cert_chain)?,
            key_pem: read(key)?,
        };
        // Fail early (with the file names) rather than at start.
        server_config(&tls).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{} / {}: {e}", cert_chain.display(), key.display()),
            )
        })?;
        Ok(tls)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The rustls server configuration for `tls` (`ring` provider, TLS 1.2 and
/// 1.3, ALPN `http/1.1`).
pub(crate) fn server_config(tls: &SimTls) -> io::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(tls.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("invalid TLS certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no certificate in the TLS certificate PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
        .map_err(|e| invalid(format!("invalid TLS private key PEM: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(format!("TLS certificate and key rejected: {e}")))?;
    // The servers speak HTTP/1.1 only (WebSocket upgrades need it).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A [`TrackedListener`] whose connections complete a TLS handshake before
/// they are handed to the server. Handshakes run concurrently, so a slow or
/// silent client does not hold up the others; they are cancelled when the
/// listener is dropped.
pub(crate) struct TlsListener {
    inner: TrackedListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TrackedStream>, SocketAddr)>>,
}

impl TlsListener {
    pub(crate) fn new(inner: TrackedListener, config: Arc<rustls::ServerConfig>) -> Self {
        TlsListener {
            inner,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TrackedStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Both branches are cancel-safe.
            tokio::select! {
                (stream, addr) = self.inner.accept() => {
                    let acceptor = self.acceptor.clone();
                    self.handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => Some((tls, addr)),
                            Ok(Err(e)) => {
                                log::debug!("sim: TLS handshake with {addr} failed: {e}");
                                None
                            }
                            Err(_) => {
                                log::debug!("sim: TLS handshake with {addr} timed out");
                                None
                            }
                        }
                    });
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Makes a private CA and a server certificate for `host` signed by it, for
/// tests. `host` is a DNS name (e.g. `localhost`) or an IP address literal
/// (e.g. `127.0.0.1`); it becomes the certificate's only subject alternative
/// name. Returns the CA certificate (PEM), which clients should trust, and the
/// server's [`SimTls`] (chain = the server certificate alone).
///
/// # Panics
///
/// If `host` is not a valid DNS name or IP address, or key generation fails.
pub fn test_ca_and_cert(host: &str) -> (String, SimTls) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    let ca_key = KeyPair::generate().expect("generate the CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "andera-worker-sim test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().expect("generate the server key");
    let mut params = CertificateParams::new(vec![host.to_string()])
        .unwrap_or_else(|e| panic!("invalid certificate host {host:?}: {e}"));
    params.distinguished_name.push(DnType::CommonName, host);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &issuer)
        .expect("sign the server certificate");
    (
        ca_pem,
        SimTls {
            cert_chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
    )
}
