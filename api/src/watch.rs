//! `?watch=true`: a chunked stream of newline-delimited `WatchEvent`s (plain objects, or one-row
//! Tables for `kubectl get -w`), with bookmarks, `sendInitialEvents` and 410 Expired.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use supervisor::kinds::Kind;
use supervisor::store::{EventType, StoreError, WatchEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::objects::{Filter, Handled, Query};
use crate::state::AppState;
use crate::status::ApiError;
use crate::table;

/// How often a bookmark is sent when the client allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

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

fn expired(message: String) -> bytes::Bytes {
    let status = ApiError::new(StatusCode::GONE, "Expired", message).body();
    line(&json!({"type": "ERROR", "object": status}))
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
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
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
    let explicit: Option<u64> =
        if send_initial || rv_param.is_empty() || rv_param == "0" {
            None
        } else {
            Some(rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv_param:?}"))
            })?)
        };
    let (initial, start_rv) = match explicit {
        Some(rv) => (Vec::new(), rv),
        None => {
            let (items, rv) = store.list(kind, ns.as_deref(), |o| filter.matches(o));
            (items, rv)
        }
    };
    let watch = store.watch(Some(start_rv));
    tokio::spawn(async move {
        let (past, mut live) = match watch {
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
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
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
