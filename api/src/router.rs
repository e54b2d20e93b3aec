//! The HTTP entry point: one handler that parses the path ([`crate::path`]) and dispatches, so
//! that Kubernetes' URL grammar (trailing slashes, optional namespaces, subresources) is handled
//! in one pure function instead of a route table.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::objects;
use crate::path::{self, Route};
use crate::state::AppState;
use crate::status::ApiError;

/// Largest accepted request body (also [`crate::server::Limits::max_body`]'s default).
const MAX_BODY: usize = 8 << 20;

fn parse_query(raw: Option<&str>) -> HashMap<String, String> {
    raw.map(url_decode_pairs).unwrap_or_default()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn url_decode_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

/// Every request but the console's: a watch asked for over a WebSocket goes to
/// [`crate::watch_ws`], which runs it through [`dispatch_http`]; the rest go there directly.
async fn dispatch(State(st): State<AppState>, req: Request) -> Response {
    if crate::watch_ws::wanted(&req) {
        return crate::watch_ws::serve(st, req).await;
    }
    let (parts, body) = req.into_parts();
    let raw = parts.uri.query().map(str::to_string);
    dispatch_http(st, parts.method, parts.uri, parts.headers, raw, body).await
}

/// Parses the path and runs the route: the API, the page, health and metrics.
pub(crate) async fn dispatch_http(
    st: AppState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Option<String>,
    body: axum::body::Body,
) -> Response {
    if let Some(page) = crate::ui::serve(&method, &uri) {
        return page;
    }
    let q = parse_query(raw.as_deref());
    let route = path::parse(uri.path());
    let metrics = st.metrics.is_some();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "the request body is too large",
            )
            .into_response();
        }
    };
    let res: Result<Response, ApiError> = match route {
        Route::Healthz | Route::Livez => Ok("ok".into_response()),
        Route::Readyz => {
            if st.ready.load(Ordering::Relaxed) {
                Ok("ok".into_response())
            } else {
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "corral is starting",
                ))
            }
        }
        Route::Version => Ok(crate::discovery::version()),
        Route::CoreVersions => Ok(crate::discovery::core_versions(&headers, metrics)),
        Route::CoreResources => Ok(crate::discovery::core_resources(metrics)),
        Route::Groups => Ok(crate::discovery::groups(&headers, metrics)),
        Route::Group(g) => crate::discovery::group(&g, metrics),
        Route::GroupResources(g, v) => crate::discovery::group_resources(&g, &v, metrics),
        Route::Metrics => Ok(crate::metrics_api::prometheus(&st)),
        Route::PodMetrics { namespace, name } => {
            crate::metrics_api::pods(&st, &headers, &q, namespace.as_deref(), name.as_deref())
        }
        Route::NodeMetrics { name } => crate::metrics_api::nodes(&st, &headers, name.as_deref()),
        Route::Resource {
            kind,
            version,
            namespace,
            name,
            sub,
        } => {
            objects::handle(
                &st, &method, &headers, &q, kind, &version, namespace, name, sub, bytes,
            )
            .await
        }
        Route::ConsoleLog { namespace, name } => crate::console::log(&st, &namespace, &name, &q),
        Route::OpenApi(rest) => crate::openapi::serve(&rest),
        _ => Err(ApiError::no_route(uri.path())),
    };
    res.unwrap_or_else(IntoResponse::into_response)
}

fn too_large(max: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        format!("the request body is too large: at most {max} bytes are accepted"),
    )
    .into_response()
}

/// Reads every request's body, within the size and time limits, before any handler runs: over
/// the size a 413 `Status`, too slow a 408 `Status` (the connection is then closed).
async fn limit_body(
    State(limits): State<std::sync::Arc<crate::server::Limits>>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return too_large(limits.max_body);
    }
    let read = axum::body::to_bytes(body, limits.max_body);
    let bytes = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                return too_large(limits.max_body);
            }
            return ApiError::bad_request(format!("read the request body: {e}")).into_response();
        }
        Err(_) => {
            let mut r = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "Timeout",
                format!(
                    "the request body was not received within {}s",
                    limits.body_timeout.as_secs()
                ),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// The WebSocket subprotocol prefix that carries a bearer token (browsers cannot set headers on
/// a WebSocket): `base64url.bearer.authorization.k8s.io.<base64url(token)>`, as the Kubernetes
/// API server accepts it.
const WS_TOKEN_PROTOCOL: &str = "base64url.bearer.authorization.k8s.io.";

/// The token of a request: the `Authorization: Bearer` header, else a WebSocket subprotocol
/// entry (which is then removed from the header, so the token goes no further).
fn request_token(headers: &mut HeaderMap) -> Option<String> {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(t.trim().to_string());
    }
    use base64::Engine;
    let protos = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .to_string();
    let mut token = None;
    let mut rest = Vec::new();
    for p in protos.split(',').map(str::trim) {
        match p.strip_prefix(WS_TOKEN_PROTOCOL) {
            Some(enc) if token.is_none() => {
                token = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(enc.trim_end_matches('='))
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
            }
            _ => rest.push(p),
        }
    }
    if token.is_some() {
        match header::HeaderValue::from_str(&rest.join(", ")) {
            Ok(v) if !rest.is_empty() => {
                headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
            }
            _ => {
                headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
            }
        }
    }
    token
}

/// Rejects requests without the bearer token (TCP listener only); the web console's static
/// assets ([`crate::ui`]) are public.
async fn require_token(
    State(token): State<std::sync::Arc<String>>,
    req: Request,
    next: Next,
) -> Response {
    if crate::ui::is_public(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let ok = request_token(&mut parts.headers)
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
    if ok {
        next.run(Request::from_parts(parts, body)).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The router; with `token`, every request must carry `Authorization: Bearer <token>` (checked
/// before the body is read). Every route's body is bounded by `limits`.
pub fn router(st: AppState, token: Option<String>, limits: &crate::server::Limits) -> Router {
    let r = Router::new()
        .route(
            "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{name}/console",
            axum::routing::get(crate::console::websocket),
        )
        .route(
            "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{name}/consoleinput",
            axum::routing::post(crate::console_input::post),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods",
            axum::routing::get(crate::metrics_api::empty_pods),
        )
        .route(
            "/api/v1/nodes",
            axum::routing::get(crate::metrics_api::node_list),
        )
        .fallback(dispatch)
        .with_state(st)
        // limit_body has read the body within its limit: extractors need no other limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            std::sync::Arc::new(limits.clone()),
            limit_body,
        ));
    match token {
        Some(t) => r.layer(middleware::from_fn_with_state(
            std::sync::Arc::new(t),
            require_token,
        )),
        None => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q =
            url_decode_pairs("labelSelector=kubevirt.io%2Fdomain%3Dlab05&watch=true&x=a+b&y=%zz");
        assert_eq!(q["labelSelector"], "kubevirt.io/domain=lab05");
        assert_eq!(q["watch"], "true");
        assert_eq!(q["x"], "a b");
        assert_eq!(q["y"], "%zz");
    }

    #[test]
    fn token_from_header_or_websocket_protocol() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc ".parse().unwrap());
        assert_eq!(request_token(&mut h).as_deref(), Some("abc"));
        // "s3cret" in base64url without padding, next to the console's protocol.
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "plain.kubevirt.io, base64url.bearer.authorization.k8s.io.czNjcmV0"
                .parse()
                .unwrap(),
        );
        assert_eq!(request_token(&mut h).as_deref(), Some("s3cret"));
        assert_eq!(h[header::SEC_WEBSOCKET_PROTOCOL], "plain.kubevirt.io");
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "base64url.bearer.authorization.k8s.io.!!!".parse().unwrap(),
        );
        assert_eq!(request_token(&mut h), None);
        assert_eq!(request_token(&mut HeaderMap::new()), None);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
