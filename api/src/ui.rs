//! The web console: the page built from `ui/` at build time (`build.rs` runs its esbuild script
//! into `OUT_DIR/ui`) and embedded in the binary, served at `/ui/` with a strict
//! Content-Security-Policy. The assets are public (they hold no data); every API call the page
//! makes goes through the API's own authentication (`crate::router`).

use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

static INDEX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui/index.html"));
static APP_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui/app.js"));
static APP_CSS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui/app.css"));

/// The page's policy: scripts only from the bundle (no inline script, no eval), connections
/// (fetch, the console WebSocket) only to this origin, never framed. Styles allow inline
/// attributes because xterm.js and uPlot size their elements from script.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

/// Whether `path` is one of the page's public paths (served without a token).
pub fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && asset(path).is_some()
}

/// The embedded file and its content type for a request path, or a redirect target.
enum Asset {
    File(&'static [u8], &'static str),
    Redirect(&'static str),
}

fn asset(path: &str) -> Option<Asset> {
    Some(match path {
        "/" | "/ui" => Asset::Redirect("/ui/"),
        "/ui/" | "/ui/index.html" => Asset::File(INDEX, "text/html; charset=utf-8"),
        "/ui/app.js" => Asset::File(APP_JS, "text/javascript; charset=utf-8"),
        "/ui/app.css" => Asset::File(APP_CSS, "text/css; charset=utf-8"),
        _ => return None,
    })
}

/// Serves a page asset (GET and HEAD), or `None` for any other path.
pub fn serve(method: &Method, uri: &Uri) -> Option<Response> {
    if !is_public(method, uri.path()) {
        return None;
    }
    let mut r = match asset(uri.path())? {
        Asset::Redirect(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
        Asset::File(body, ctype) => {
            let mut r = if method == Method::HEAD {
                ().into_response()
            } else {
                body.into_response()
            };
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            r
        }
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The binary is the version: a new daemon must not be served a stale bundle.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Option<Response> {
        serve(&Method::GET, &path.parse().unwrap())
    }

    #[test]
    fn assets_and_headers() {
        let r = get("/ui/").unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let html = std::str::from_utf8(INDEX).unwrap();
        assert!(html.contains("/ui/app.js") && html.contains("/ui/app.css"));
        // No inline script: every <script> element loads the bundle.
        for tag in html.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(open.contains("src="), "inline script in index.html: {open}");
        }
        assert_eq!(get("/ui/app.js").unwrap().status(), StatusCode::OK);
        assert_eq!(get("/ui/app.css").unwrap().status(), StatusCode::OK);
        let r = get("/").unwrap();
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()[header::LOCATION], "/ui/");
    }

    #[test]
    fn only_page_paths_are_public() {
        for p in [
            "/ui/x.js",
            "/ui/../api/v1",
            "/api/v1/namespaces",
            "/uix",
            "/version",
        ] {
            assert!(get(p).is_none(), "{p}");
            assert!(!is_public(&Method::GET, p), "{p}");
        }
        assert!(!is_public(&Method::POST, "/ui/"));
        assert!(is_public(&Method::HEAD, "/ui/app.js"));
    }
}
