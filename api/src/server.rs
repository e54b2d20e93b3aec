//! Listeners: the unix socket (always; mode 0660) and TCP (only with a bearer token).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use axum::Router;
use tokio::net::{TcpListener, UnixListener};

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

/// Serves `router` on the unix listener until `shutdown` resolves.
pub async fn serve_unix(
    l: UnixListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(l, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "unix socket server failed");
    }
}

/// Serves `router` over TLS on the TCP listener until `shutdown` resolves.
pub async fn serve_tcp(
    l: crate::tls::TlsListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(l, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "TCP server failed");
    }
}

/// The default socket path under a run directory.
pub fn default_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("corral.sock")
}
