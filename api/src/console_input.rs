//! `POST .../virtualmachineinstances/{name}/consoleinput`: writes the request body to the VM's
//! serial console and returns what the guest printed in reply, so that plain `curl` can drive a
//! console (the WebSocket `console` subresource needs a WebSocket client). `?waitMillis=N`
//! (default 300, at most 10000) is how long to collect the guest's output; `?until=TEXT` stops
//! as soon as the output contains TEXT.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use supervisor::kinds::Kind;
use supervisor::meta;
use supervisor::store::ObjectKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::state::AppState;
use crate::status::ApiError;

const DEFAULT_WAIT: u64 = 300;
const MAX_WAIT: u64 = 10_000;

async fn run(
    st: &AppState,
    ns: &str,
    name: &str,
    q: &std::collections::HashMap<String, String>,
    input: &[u8],
) -> Result<Response, ApiError> {
    let obj = st
        .store
        .get_or_404(&ObjectKey::new(Kind::Vmi, ns, name))
        .map_err(|e| ApiError::from_op(e.into(), Kind::Vmi, name))?;
    let sock = st.runtime.control_socket(meta::uid(&obj)).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("VMI \"{name}\" is not running"),
        )
    })?;
    // Longer waits are cut to MAX_WAIT (documented); garbage or negative values are a 400.
    let wait = crate::objects::int_param(q, "waitMillis", 0, i64::MAX)?
        .map_or(DEFAULT_WAIT, |w| u64::try_from(w).unwrap_or(MAX_WAIT))
        .min(MAX_WAIT);
    let until = q.get("until").cloned().filter(|u| !u.is_empty());
    let mut serial = supervisor::runtime::control::console(&sock)
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "attach to the console of {name}: {}",
                supervisor::error_chain(&e)
            ))
        })?;
    serial
        .write_all(input)
        .await
        .map_err(|e| ApiError::internal(format!("write to the console of {name}: {e}")))?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
    let mut buf = [0u8; 4096];
    loop {
        if until
            .as_deref()
            .is_some_and(|u| String::from_utf8_lossy(&out).contains(u))
        {
            break;
        }
        match tokio::time::timeout_at(deadline, serial.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        out,
    )
        .into_response())
}

/// The handler.
pub async fn post(
    State(st): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> Response {
    run(&st, &ns, &name, &q, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}
