//! `?watch=true`: a chunked stream of newline-delimited `WatchEvent`s (plain objects, or one-row
//! Tables for `kubectl get -w`), with bookmarks, `sendInitialEvents` and 410 Expired.
//!
//! Resuming from a resourceVersion behaves as the Kubernetes API server's watch cache does: a
//! version older than the history (dropped, or from before a restart) gets an `ERROR` event
//! with a 410 `Expired` Status, after which clients list again; a version newer than the store
//! is waited for briefly, then gets an `ERROR` event with a 504 "Too large resource version"
//! Status. Never silence.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use supervisor::kinds::Kind;
use supervisor::store::{EventType, Store, StoreError, WatchEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::objects::{Filter, Handled, Query};
use crate::state::AppState;
use crate::status::ApiError;
use crate::table;

/// How often a bookmark is sent when the client allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

/// The longest watch a client can ask for with `timeoutSeconds`; longer requests are clamped
/// (the API server's own watch timeouts are at most twice its 1800 s `--min-request-timeout`).
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;

/// How long a watch from a resourceVersion newer than the store's waits for it (the API
/// server's watch cache waits 3 s, then answers "Too large resource version").
const TOO_LARGE_WAIT: Duration = Duration::from_secs(3);

struct Encoder {
    kind: Kind,
    version: String,
    table: bool,
    sent_columns: bool,
}

impl Encoder {
    fn event(&mut self, type_: &str, obj: &Value, rv: u64) -> bytes::Bytes {
        let object = if self.table {
            let t = table::table(self.kind, &[obj], rv, !self.sent_columns);
            self.sent_columns = true;
            t
        } else {
            table::versioned(self.kind, &self.version, obj)
        };
        line(&json!({"type": type_, "object": object}))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> bytes::Bytes {
        let info = self.kind.info();
        let api_version = if info.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", info.group, self.version)
        };
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            &json!({"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": api_version, "metadata": md}}),
        )
    }
}

fn line(v: &Value) -> bytes::Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    bytes::Bytes::from(b)
}

fn error_event(e: &ApiError) -> bytes::Bytes {
    line(&json!({"type": "ERROR", "object": e.body()}))
}

fn expired(message: String) -> bytes::Bytes {
    error_event(&ApiError::new(StatusCode::GONE, "Expired", message))
}

/// The Status the API server sends for a resourceVersion it has not reached: client-go
/// recognizes it by its `ResourceVersionTooLarge` cause and retries after `retryAfterSeconds`.
fn too_large(requested: u64, current: u64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "Timeout",
        format!("Too large resource version: {requested}, current: {current}"),
    );
    e.details = Some(json!({
        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        "retryAfterSeconds": 1,
    }));
    e
}

/// `timeoutSeconds`: absent or 0 (as in Kubernetes) means no timeout; a negative or malformed
/// value is a 400 naming the parameter; values above [`MAX_TIMEOUT_SECONDS`] are clamped.
fn timeout_param(q: &Query) -> Result<Option<Duration>, ApiError> {
    let Some(v) = q.get("timeoutSeconds") else {
        return Ok(None);
    };
    let secs: i64 = v.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid value {v:?} for query parameter timeoutSeconds: not an integer"
        ))
    })?;
    let secs = u64::try_from(secs).map_err(|_| {
        ApiError::bad_request(format!(
            "invalid value {v:?} for query parameter timeoutSeconds: must not be negative"
        ))
    })?;
    Ok((secs > 0).then(|| Duration::from_secs(secs.min(MAX_TIMEOUT_SECONDS))))
}

/// `resourceVersion` of a watch: `None` for "" and "0" (start with the current objects).
fn resource_version_param(q: &Query) -> Result<Option<u64>, ApiError> {
    match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "invalid value {v:?} for query parameter resourceVersion: not a resource version"
            ))
        }),
    }
}

/// Waits up to `wait` for the store to reach `rv`; false if it did not.
async fn reached(store: &Store, rv: u64, wait: Duration) -> bool {
    // Subscribe before looking, so that a commit in between is not missed.
    let Ok((_, mut rx)) = store.watch(None) else {
        return false;
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if store.resource_version() >= rv {
            return true;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) | Err(_) => return store.resource_version() >= rv,
        }
    }
}

/// Serves a watch on `kind` (in `ns`, or all namespaces).
pub async fn serve(
    st: &AppState,
    headers: &HeaderMap,
    q: &Query,
    kind: Kind,
    version: &str,
    ns: Option<String>,
) -> Handled {
    let filter = Filter::from_query(q)?;
    let timeout = timeout_param(q)?;
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let rv_param = resource_version_param(q)?;
    let mut enc = Encoder {
        kind,
        version: version.to_string(),
        table: table::wants_table(headers),
        sent_columns: false,
    };
    let store = Arc::clone(&st.store);
    let in_scope = move |ev_kind: Kind, obj: &Value, ns: &Option<String>, f: &Filter| {
        ev_kind == kind
            && ns
                .as_deref()
                .is_none_or(|n| supervisor::meta::namespace(obj) == n)
            && f.matches(obj)
    };

    let (tx, rx) = mpsc::channel::<bytes::Bytes>(256);
    // Where to start: an explicit version resumes from history; otherwise (or with
    // sendInitialEvents) the current objects are sent as ADDED first.
    let explicit = rv_param.filter(|_| !send_initial);
    let (initial, start_rv) = match explicit {
        Some(rv) => (Vec::new(), rv),
        None => {
            let (items, rv) = store.list(kind, ns.as_deref(), |o| filter.matches(o));
            (items, rv)
        }
    };
    tokio::spawn(async move {
        if explicit.is_some() && !reached(&store, start_rv, TOO_LARGE_WAIT).await {
            let e = too_large(start_rv, store.resource_version());
            let _ = tx.send(error_event(&e)).await;
            return;
        }
        let (past, mut live) = match store.watch(Some(start_rv)) {
            Ok(w) => w,
            Err(StoreError::Gone { requested, oldest }) => {
                let _ = tx
                    .send(expired(format!(
                        "too old resource version: {requested} ({oldest})"
                    )))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx.send(expired(e.to_string())).await;
                return;
            }
        };
        let mut last_rv = start_rv;
        for obj in &initial {
            let rv = supervisor::meta::resource_version(obj);
            if tx.send(enc.event("ADDED", obj, rv)).await.is_err() {
                return;
            }
        }
        if send_initial && tx.send(enc.bookmark(start_rv, true)).await.is_err() {
            return;
        }
        let send_ev = |enc: &mut Encoder, ev: &WatchEvent| -> Option<bytes::Bytes> {
            if !in_scope(ev.key.kind, &ev.object, &ns, &filter) {
                return None;
            }
            let t = match ev.event_type {
                EventType::Added => "ADDED",
                EventType::Modified => "MODIFIED",
                EventType::Deleted => "DELETED",
            };
            Some(enc.event(t, &ev.object, ev.resource_version))
        };
        for ev in past {
            last_rv = ev.resource_version;
            if let Some(b) = send_ev(&mut enc, &ev) {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
        }
        let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        let mut bm = tokio::time::interval(BOOKMARK_EVERY);
        bm.tick().await;
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => return,
                _ = tx.closed() => return,
                _ = bm.tick(), if bookmarks => {
                    if tx.send(enc.bookmark(last_rv, false)).await.is_err() { return; }
                }
                r = live.recv() => match r {
                    Ok(ev) => {
                        if ev.resource_version <= last_rv { continue; }
                        last_rv = ev.resource_version;
                        if let Some(b) = send_ev(&mut enc, &ev) {
                            if tx.send(b).await.is_err() { return; }
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let _ = tx.send(expired(format!("the watch fell behind at resource version {last_rv}"))).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let ct = if table::wants_table(headers) {
        table::TABLE_CT
    } else {
        "application/json"
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, ct)],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn timeout_seconds_is_bounded() {
        let t = |v: &str| timeout_param(&q(&[("timeoutSeconds", v)]));
        assert_eq!(timeout_param(&q(&[])).unwrap(), None);
        assert_eq!(t("0").unwrap(), None);
        assert_eq!(t("5").unwrap(), Some(Duration::from_secs(5)));
        let max = Duration::from_secs(MAX_TIMEOUT_SECONDS);
        for big in ["3601", "9223372036854775807"] {
            assert_eq!(t(big).unwrap(), Some(max), "{big}");
        }
        // u64::MAX used to overflow an Instant and abort the daemon.
        for bad in ["18446744073709551615", "-1", "1.5", "", "ten"] {
            let e = t(bad).unwrap_err();
            assert_eq!(e.code, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.message.contains("timeoutSeconds"), "{}", e.message);
        }
        // Every accepted value leaves room for a deadline.
        let far = tokio::time::Instant::now().checked_add(max);
        assert!(far.is_some());
    }

    #[test]
    fn resource_version_param_is_a_number_or_empty() {
        let rv = |v: &str| resource_version_param(&q(&[("resourceVersion", v)]));
        assert_eq!(resource_version_param(&q(&[])).unwrap(), None);
        assert_eq!(rv("").unwrap(), None);
        assert_eq!(rv("0").unwrap(), None);
        assert_eq!(rv("42").unwrap(), Some(42));
        for bad in ["-1", "x", "18446744073709551616"] {
            let e = rv(bad).unwrap_err();
            assert_eq!(e.code, StatusCode::BAD_REQUEST);
            assert!(e.message.contains("resourceVersion"), "{}", e.message);
        }
    }

    #[test]
    fn too_large_is_a_504_client_go_recognizes() {
        let b = too_large(10, 7).body();
        assert_eq!(b["code"], 504);
        assert_eq!(b["reason"], "Timeout");
        assert_eq!(b["message"], "Too large resource version: 10, current: 7");
        assert_eq!(
            b["details"]["causes"][0]["reason"],
            "ResourceVersionTooLarge"
        );
    }

    #[tokio::test]
    async fn a_future_version_is_waited_for_briefly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        assert!(reached(&store, 0, Duration::ZERO).await);
        let start = tokio::time::Instant::now();
        assert!(!reached(&store, 1, Duration::from_millis(100)).await);
        assert!(start.elapsed() >= Duration::from_millis(100));
        let s = Arc::clone(&store);
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.create(Kind::Vmi, "ns", json!({"metadata": {"name": "v"}}), false)
                .unwrap();
        });
        assert!(reached(&store, 1, Duration::from_secs(10)).await);
        writer.await.unwrap();
    }
}
