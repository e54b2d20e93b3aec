//! Client of a VMM's control socket: one JSON line out, one JSON line back.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

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

/// `{"op":"status"}` reply.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct VmmStatus {
    pub pid: u32,
    pub state: String,
    #[serde(default)]
    pub vcpus_entered: bool,
    #[serde(default)]
    pub boots: u64,
}

async fn request(path: &Path, req: Value) -> Result<(UnixStream, Value), ControlError> {
    let mut s = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    let mut line = req.to_string();
    line.push('\n');
    s.write_all(line.as_bytes()).await?;
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
    let text = String::from_utf8_lossy(&reply).to_string();
    let v: Value =
        serde_json::from_str(text.trim()).map_err(|_| ControlError::Reply(text.clone()))?;
    if let Some(e) = v.get("error") {
        return Err(ControlError::Reply(e.to_string()));
    }
    Ok((s, v))
}

/// Asks the VMM for its status.
pub async fn status(path: &Path) -> Result<VmmStatus, ControlError> {
    let fut = request(path, json!({"op": "status"}));
    let (_, v) = tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| ControlError::Timeout)??;
    serde_json::from_value(v.clone()).map_err(|_| ControlError::Reply(v.to_string()))
}

/// Asks the VMM to stop the VM within `grace`.
pub async fn stop(path: &Path, grace: Duration) -> Result<(), ControlError> {
    let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    let fut = request(path, json!({"op": "stop", "grace_ms": ms}));
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| ControlError::Timeout)??;
    Ok(())
}

/// Opens a console session: after this, the stream carries the serial port both ways.
pub async fn console(path: &Path) -> Result<UnixStream, ControlError> {
    let fut = request(path, json!({"op": "console"}));
    let (s, _) = tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| ControlError::Timeout)??;
    Ok(s)
}
