//! TLS for the TCP listener. Kubernetes clients send bearer tokens only over TLS, so the TCP API
//! is HTTPS: a private CA is created once under `<state-dir>/tls/` (`ca.crt`, `ca.key`, mode
//! 0600), and every start issues a fresh server certificate for localhost, the host's name, the
//! listen address and any `--tls-san`. `corral kubeconfig` embeds `ca.crt`.
//!
//! Handshakes run on their own tasks, so a slow client never delays other connections; at most
//! `max_handshakes` run at once (more connections are closed at once) and each has
//! `handshake_timeout` to finish ([`crate::server::Limits`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// File names under `<state-dir>/tls/`.
pub const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generate certificates")]
    Generate(#[from] rcgen::Error),
    #[error("load {path}: not a PEM certificate or key")]
    Pem { path: String },
    #[error("TLS configuration")]
    Config(#[from] rustls::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "corral CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    p
}

fn write_private(path: &Path, data: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(data.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The CA (created on first use) and a server certificate for `sans`.
pub fn server_config(
    tls_dir: &Path,
    sans: &[String],
) -> Result<(Arc<rustls::ServerConfig>, PathBuf), TlsError> {
    std::fs::create_dir_all(tls_dir).map_err(io(tls_dir))?;
    let (ca_cert, ca_key) = (tls_dir.join(CA_CERT), tls_dir.join(CA_KEY));
    let ca_keypair = if ca_key.exists() && ca_cert.exists() {
        let pem = std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
        KeyPair::from_pem(&pem).map_err(|_| TlsError::Pem {
            path: ca_key.display().to_string(),
        })?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        write_private(&ca_key, &key.serialize_pem())?;
        write_private(&ca_cert, &cert.pem())?;
        key
    };
    let issuer = Issuer::new(ca_params(), ca_keypair);
    let mut params = CertificateParams::new(sans.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "corral");
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let ca_pem = std::fs::read(&ca_cert).map_err(io(&ca_cert))?;
    let ca_der = CertificateDer::from_pem_slice(&ca_pem).map_err(|_| TlsError::Pem {
        path: ca_cert.display().to_string(),
    })?;
    let chain = vec![cert.der().clone(), ca_der];
    let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).map_err(|_| {
        TlsError::Pem {
            path: "server key".into(),
        }
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), ca_cert))
}

/// Names the server certificate covers: localhost, loopback, the host name, the listen address.
pub fn default_sans(listen: &str, extra: &[String]) -> Vec<String> {
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        supervisor::host::node_name().to_string(),
    ];
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        if !addr.ip().is_unspecified() {
            sans.push(addr.ip().to_string());
        }
    } else if let Some((host, _)) = listen.rsplit_once(':') {
        sans.push(host.trim_matches(['[', ']']).to_string());
    }
    sans.extend(extra.iter().cloned());
    sans.sort();
    sans.dedup();
    sans
}

/// A TLS listener for `axum::serve`.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts TCP connections on `tcp` and completes TLS handshakes in the background.
    pub fn new(
        tcp: TcpListener,
        cfg: Arc<rustls::ServerConfig>,
        limits: &crate::server::Limits,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(cfg);
        let (tx, rx) = mpsc::channel(64);
        let max = limits.max_handshakes.clamp(1, Semaphore::MAX_PERMITS);
        let handshakes = Arc::new(Semaphore::new(max));
        let timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let mut logged_full = false;
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    if !logged_full {
                        tracing::warn!(max, "TLS handshake limit reached; closing new connections");
                        logged_full = true;
                    }
                    drop(stream);
                    continue;
                };
                logged_full = false;
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let done = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
                    drop(permit);
                    match done {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A rustls client configuration trusting exactly the CA in `ca_file`.
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let pem = std::fs::read(ca_file).map_err(io(ca_file))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|_| TlsError::Pem {
            path: ca_file.display().to_string(),
        })?;
        roots.add(c)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem {
            path: ca_file.display().to_string(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The TLS server name for a `host:port` address (`[v6]:port` too), or `None` if the host is
/// not a valid DNS name or IP address.
pub fn server_name(addr: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_matches(['[', ']']);
    rustls::pki_types::ServerName::try_from(host.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, ca1) = server_config(dir.path(), &default_sans("127.0.0.1:6443", &[])).unwrap();
        let first = std::fs::read(&ca1).unwrap();
        let (_, ca2) = server_config(
            dir.path(),
            &default_sans("127.0.0.1:6443", &["corral.example".into()]),
        )
        .unwrap();
        assert_eq!(first, std::fs::read(ca2).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(client_config(&ca1).is_ok());
    }

    #[test]
    fn sans_cover_loopback_and_listen_address() {
        let s = default_sans("10.1.2.3:6443", &["x.example".into()]);
        for want in ["localhost", "127.0.0.1", "10.1.2.3", "x.example"] {
            assert!(s.iter().any(|n| n == want), "{s:?}");
        }
        assert!(
            !default_sans("0.0.0.0:6443", &[])
                .iter()
                .any(|n| n == "0.0.0.0")
        );
    }
}
