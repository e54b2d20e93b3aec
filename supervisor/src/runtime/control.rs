//! Client of a VMM's control socket: one JSON line out, one JSON line back, both of the `vmm`
//! crate's own types ([`vmm::control`]).

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
pub use vmm::control::Status as VmmStatus;
use vmm::control::{Reply, Request};

/// Errors talking to a VMM.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("connect to {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket i/o")]
    Io(#[from] std::io::Error),
    #[error("control socket timed out")]
    Timeout,
    #[error("bad reply from the VMM: {0}")]
    Reply(String),
}

/// Sends `req` and reads one reply line as `T` (an `{"error": ..}` reply is an error).
async fn request<T: DeserializeOwned>(
    path: &Path,
    req: Request,
) -> Result<(UnixStream, T), ControlError> {
    let mut s = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    s.write_all(req.line().as_bytes()).await?;
    // Read the reply byte by byte: after a console reply the stream carries serial bytes that
    // must stay in the socket for the caller.
    let mut reply = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b).await? == 0 || b[0] == b'\n' {
            break;
        }
        reply.push(b[0]);
        if reply.len() > 64 * 1024 {
            return Err(ControlError::Reply("reply too long".into()));
        }
    }
    let text = String::from_utf8_lossy(&reply);
    if let Ok(Reply::Error { error }) = serde_json::from_str::<Reply>(text.trim()) {
        return Err(ControlError::Reply(error));
    }
    match serde_json::from_str(text.trim()) {
        Ok(v) => Ok((s, v)),
        Err(_) => Err(ControlError::Reply(text.to_string())),
    }
}

/// An `{"ok": true}` reply.
fn ok(reply: Reply) -> Result<(), ControlError> {
    match reply {
        Reply::Ok { ok: true } => Ok(()),
        other => Err(ControlError::Reply(format!("{other:?}"))),
    }
}

/// Asks the VMM for its status.
pub async fn status(path: &Path) -> Result<VmmStatus, ControlError> {
    let fut = request(path, Request::Status);
    let (_, st) = tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| ControlError::Timeout)??;
    Ok(st)
}

/// Asks the VMM to stop the VM within `grace`.
pub async fn stop(path: &Path, grace: Duration) -> Result<(), ControlError> {
    let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    let fut = request(path, Request::Stop { grace_ms: ms });
    let (_, reply) = tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| ControlError::Timeout)??;
    ok(reply)
}

/// Opens a console session: after this, the stream carries the serial port both ways.
pub async fn console(path: &Path) -> Result<UnixStream, ControlError> {
    let fut = request(path, Request::Console);
    let (s, reply) = tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| ControlError::Timeout)??;
    ok(reply)?;
    Ok(s)
}
