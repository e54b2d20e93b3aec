//! Listeners: the unix socket (always; mode 0660) and TCP (only with a bearer token), and the
//! accept loop both share, with the API's limits ([`Limits`]): a cap on connections (more wait in
//! the kernel's backlog), a timeout for request headers that also closes idle keep-alive
//! connections (a slowloris client holds a connection at most that long), and, in
//! [`crate::router`], a size cap and a timeout for every request body.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

/// The API's limits (flags `--api-*` of `corral daemon`; defaults from [`Limits::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most connections served at once on one listener; more wait to be accepted.
    pub max_connections: usize,
    /// Most TLS handshakes in progress on the TCP listener; more are closed at once.
    pub max_handshakes: usize,
    /// Time a client has to finish its TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a client has to send a request's headers, counted from the end of the previous
    /// response on a kept-alive connection (so it is also the idle timeout).
    pub header_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_timeout: Duration,
    /// Largest request body.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_handshakes: 64,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_body: 8 << 20,
        }
    }
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("socket {path} is in use by another running daemon")]
    InUse { path: String },
    #[error("bind unix socket {path}")]
    BindUnix {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bind TCP address {addr}")]
    BindTcp {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the unix socket at `path`, replacing a stale socket file but never a live one.
pub async fn bind_unix(path: &Path) -> Result<UnixListener, ListenError> {
    let p = path.display().to_string();
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ListenError::InUse { path: p });
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ListenError::BindUnix {
            path: p.clone(),
            source,
        })?;
    }
    let l = UnixListener::bind(path).map_err(|source| ListenError::BindUnix {
        path: p.clone(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|source| ListenError::BindUnix { path: p, source })?;
    Ok(l)
}

/// Binds TCP.
pub async fn bind_tcp(addr: &str) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::BindTcp {
            addr: addr.to_string(),
            source,
        })
}

/// Serves `router` on `l` with `limits` until `shutdown` resolves, then lets open connections
/// finish their current request (the caller bounds that wait).
pub async fn serve<L>(
    mut l: L,
    router: Router,
    limits: &Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener,
{
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let conns = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut logged_full = false;
    loop {
        let permit = match conns.clone().try_acquire_owned() {
            Ok(p) => {
                logged_full = false;
                p
            }
            Err(_) => {
                if !logged_full {
                    tracing::warn!(max, "API connection limit reached; new connections wait");
                    logged_full = true;
                }
                tokio::select! {
                    p = conns.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (io, _peer) = tokio::select! {
            c = l.accept() => c,
            () = &mut shutdown => break,
        };
        let svc = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = b
                .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "API connection ended");
                    }
                    return;
                }
                _ = stop.wait_for(|s| *s) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(l);
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = conns.acquire_many(all).await;
}

/// Serves `router` on the unix listener until `shutdown` resolves.
pub async fn serve_unix(
    l: UnixListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    serve(l, router, &limits, shutdown).await;
}

/// Serves `router` over TLS on the TCP listener until `shutdown` resolves.
pub async fn serve_tcp(
    l: crate::tls::TlsListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    serve(l, router, &limits, shutdown).await;
}

/// The default socket path under a run directory.
pub fn default_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("corral.sock")
}
