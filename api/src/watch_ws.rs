//! Watches over a WebSocket, as the Kubernetes API server serves them: a `?watch=true` request
//! that asks to upgrade gets the same watch ([`crate::watch`], through the router), each event
//! one WebSocket message. Browsers need this: they open at most six HTTP/1.1 connections to one
//! host, so a page with a watch per list would starve its own requests; WebSockets do not count.
//! Subprotocols: none (text messages) or `binary.k8s.io` (binary messages). The stream ends
//! when the watch does (a close frame) or when the client goes (the watch is dropped).

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};

use crate::state::AppState;

/// The subprotocol for binary messages (`k8s.io/apimachinery`'s wsstream name).
const BINARY: &str = "binary.k8s.io";
/// Longest event line relayed; a longer one ends the stream with an error close.
const MAX_LINE: usize = 16 << 20;

/// Whether `req` is a watch asking for a WebSocket.
pub fn wanted(req: &Request) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
}

/// Upgrades and relays the watch, or answers with the watch's own error (a `Status`).
pub async fn serve(st: AppState, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let binary = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == BINARY));
    let mut headers = parts.headers.clone();
    for h in [
        header::UPGRADE,
        header::CONNECTION,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ] {
        headers.remove(h);
    }
    let raw = parts.uri.query().map(str::to_string);
    let resp =
        crate::router::dispatch_http(st, Method::GET, parts.uri, headers, raw, Body::empty()).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let body = resp.into_body();
    let ws = if binary { ws.protocols([BINARY]) } else { ws };
    ws.on_upgrade(move |socket| relay(socket, body, binary))
}

/// One message per event line until the watch ends or the client closes.
async fn relay(ws: WebSocket, body: Body, binary: bool) {
    let (mut tx, mut rx) = ws.split();
    let mut frames = body.into_data_stream();
    let mut line: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {} // pings are answered by axum; input is ignored
            },
            f = frames.next() => {
                let Some(Ok(chunk)) = f else { break };
                line.extend_from_slice(&chunk);
                while let Some(nl) = line.iter().position(|&b| b == b'\n') {
                    let rest = line.split_off(nl + 1);
                    line.truncate(nl);
                    let ev = std::mem::replace(&mut line, rest);
                    if ev.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let msg = if binary {
                        Message::Binary(ev.into())
                    } else {
                        match String::from_utf8(ev) {
                            Ok(t) => Message::Text(t.into()),
                            Err(_) => break,
                        }
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                if line.len() > MAX_LINE {
                    break;
                }
            }
        }
    }
    let _ = tx.send(Message::Close(None)).await;
}
