//! The serial console: KubeVirt's `.../virtualmachineinstances/{name}/console` WebSocket
//! subresource (bytes both ways, subprotocol `plain.kubevirt.io`) and corral's recent-output
//! endpoint `.../{name}/consolelog?tailBytes=N`.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use supervisor::kinds::Kind;
use supervisor::meta;
use supervisor::store::ObjectKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::objects::Query;
use crate::state::AppState;
use crate::status::ApiError;

/// Default and largest tail returned by the log endpoint.
const DEFAULT_TAIL: u64 = 64 * 1024;
const MAX_TAIL: u64 = 8 << 20;

fn vmi_uid(st: &AppState, ns: &str, name: &str) -> Result<String, ApiError> {
    let obj = st
        .store
        .get_or_404(&ObjectKey::new(Kind::Vmi, ns, name))
        .map_err(|e| ApiError::from_op(e.into(), Kind::Vmi, name))?;
    Ok(meta::uid(&obj).to_string())
}

/// Recent serial output of a VMI (the last `tailBytes`, default 64 KiB).
pub fn log(st: &AppState, ns: &str, name: &str, q: &Query) -> Result<Response, ApiError> {
    let uid = vmi_uid(st, ns, name)?;
    let tail = q
        .get("tailBytes")
        .and_then(|t| t.parse().ok())
        .unwrap_or(DEFAULT_TAIL)
        .min(MAX_TAIL);
    let path = st.runtime.console_log(&uid).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("VMI \"{name}\" has no console log (not started yet)"),
        )
    })?;
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(ApiError::internal(format!("read {}: {e}", path.display()))),
    };
    let start = data
        .len()
        .saturating_sub(usize::try_from(tail).unwrap_or(usize::MAX));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        data[start..].to_vec(),
    )
        .into_response())
}

/// Upgrades to a WebSocket bridged to the VM's serial port.
pub async fn websocket(
    State(st): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    ws: WebSocketUpgrade,
) -> Response {
    let uid = match vmi_uid(&st, &ns, &name) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let Some(sock) = st.runtime.control_socket(&uid) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("VMI \"{name}\" is not running"),
        )
        .into_response();
    };
    let serial = match supervisor::runtime::control::console(&sock).await {
        Ok(s) => s,
        Err(e) => {
            return ApiError::internal(format!(
                "attach to the console of {name}: {}",
                supervisor::error_chain(&e)
            ))
            .into_response();
        }
    };
    ws.protocols(["plain.kubevirt.io"])
        .on_upgrade(move |socket| bridge(socket, serial))
}

async fn bridge(ws: WebSocket, serial: tokio::net::UnixStream) {
    use futures_util::{SinkExt, StreamExt};
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut rd, mut wr) = serial.into_split();
    let to_guest = async {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
    };
    let from_guest = async {
        let mut buf = vec![0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    tokio::select! {
        _ = to_guest => {}
        _ = from_guest => {}
    }
}
