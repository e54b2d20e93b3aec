//! Handlers for collections and objects: list, get, create, replace, patch, delete, the status
//! and scale subresources. They parse, call [`supervisor::service::Service`], and map.

use std::collections::HashMap;

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use supervisor::kinds::{FieldValidation, Kind};
use supervisor::meta;
use supervisor::selector::Selector;
use supervisor::service::{DeleteOutcome, PatchType, Propagation};
use supervisor::store::ObjectKey;

use crate::body::{self, Encoding};
use crate::path::Sub;
use crate::state::AppState;
use crate::status::ApiError;

/// Query parameters of a request.
pub type Query = HashMap<String, String>;

/// Fields `?fieldSelector=` accepts (objects' `metadata.name`/`namespace`, VMIs' `status.phase`,
/// and the fields kubectl uses to find an object's events).
const SELECTABLE: [&str; 9] = [
    "metadata.name",
    "metadata.namespace",
    "status.phase",
    "involvedObject.kind",
    "involvedObject.name",
    "involvedObject.namespace",
    "involvedObject.uid",
    "reason",
    "type",
];

/// `?fieldSelector=` over [`SELECTABLE`] fields, with `=`, `==` or `!=`.
#[derive(Debug, Default, Clone)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses the selector.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector term {term:?}"
                )));
            };
            if !SELECTABLE.contains(&field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field} (supported: {})",
                    SELECTABLE.join(", ")
                )));
            }
            reqs.push((field.to_string(), eq, value.to_string()));
        }
        Ok(FieldSelector { reqs })
    }

    /// True when `obj` satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(f, eq, v)| {
            let actual = f
                .split('.')
                .try_fold(obj, |o, k| o.get(k))
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == v) == *eq
        })
    }
}

/// Label and field selectors of a list or watch.
pub struct Filter {
    pub labels: Selector,
    pub fields: FieldSelector,
}

impl Filter {
    /// From `labelSelector` and `fieldSelector`.
    pub fn from_query(q: &Query) -> Result<Self, ApiError> {
        let labels = match q.get("labelSelector") {
            Some(s) => Selector::parse(s)
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
            None => Selector::default(),
        };
        let fields = match q.get("fieldSelector") {
            Some(s) => FieldSelector::parse(s)?,
            None => FieldSelector::default(),
        };
        Ok(Filter { labels, fields })
    }

    /// True when `obj` passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&meta::labels(obj)) && self.fields.matches(obj)
    }
}

/// An integer query parameter: `None` when absent or empty, else parsed (400 naming the parameter
/// when it is not an integer) and within `min..=max` (else 400 too: it never reaches a handler).
pub fn int_param(q: &Query, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    let Some(raw) = q.get(name).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let v: i64 = raw
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_param(name, raw, "must be an integer"))?;
    if v < min {
        return Err(ApiError::bad_param(
            name,
            raw,
            &format!("must be greater than or equal to {min}"),
        ));
    }
    if v > max {
        return Err(ApiError::bad_param(
            name,
            raw,
            &format!("must be less than or equal to {max}"),
        ));
    }
    Ok(Some(v))
}

/// What a delete asks for: from its `DeleteOptions` body, else its query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteOptions {
    pub propagation: Propagation,
    /// `gracePeriodSeconds`, within `0..=MAX_GRACE_SECONDS`.
    pub grace: Option<i64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
}

/// Parses and bounds a delete's options (the body, a `DeleteOptions`, wins over the query).
pub fn delete_options(q: &Query, raw: &[u8]) -> Result<DeleteOptions, ApiError> {
    use supervisor::kinds::validation::FieldError;
    use supervisor::kinds::vmi::MAX_GRACE_SECONDS;
    let opts: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        body::decode(raw, body::BodyFormat::Sniff)?
    };
    if !opts.is_object() {
        return Err(ApiError::bad_request(
            "the request body is not a DeleteOptions object",
        ));
    }
    let policy = match opts.get("propagationPolicy") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ApiError::invalid_options(
                "DeleteOptions",
                &[FieldError::invalid(
                    "propagationPolicy",
                    other,
                    "must be a string",
                )],
            ));
        }
    };
    let policy = policy
        .or_else(|| q.get("propagationPolicy").cloned())
        .or_else(|| {
            let orphan = opts
                .get("orphanDependents")
                .and_then(Value::as_bool)
                .or_else(|| q.get("orphanDependents").map(|v| v == "true"));
            orphan.map(|o| {
                if o {
                    "Orphan".to_string()
                } else {
                    "Background".to_string()
                }
            })
        });
    let propagation = match policy.as_deref() {
        None | Some("Background") => Propagation::Background,
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "invalid propagationPolicy {o:?}: must be Background, Foreground or Orphan"
            )));
        }
    };
    let grace = match opts.get("gracePeriodSeconds") {
        None | Some(Value::Null) => int_param(q, "gracePeriodSeconds", i64::MIN, i64::MAX)?,
        Some(v) => match v.as_i64() {
            Some(g) => Some(g),
            None => {
                return Err(ApiError::invalid_options(
                    "DeleteOptions",
                    &[FieldError::invalid(
                        "gracePeriodSeconds",
                        v,
                        &format!("must be an integer between 0 and {MAX_GRACE_SECONDS}"),
                    )],
                ));
            }
        },
    };
    if let Some(g) = grace {
        if !(0..=MAX_GRACE_SECONDS).contains(&g) {
            let detail = if g < 0 {
                "must be greater than or equal to 0".to_string()
            } else {
                format!("must be less than or equal to {MAX_GRACE_SECONDS}")
            };
            return Err(ApiError::invalid_options(
                "DeleteOptions",
                &[FieldError::invalid("gracePeriodSeconds", g, &detail)],
            ));
        }
    }
    let uid = match opts.get("preconditions").and_then(|p| p.get("uid")) {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(other) => {
            return Err(ApiError::invalid_options(
                "DeleteOptions",
                &[FieldError::invalid(
                    "preconditions.uid",
                    other,
                    "must be a string",
                )],
            ));
        }
    };
    Ok(DeleteOptions {
        propagation,
        grace,
        uid,
    })
}

fn field_validation(q: &Query) -> Result<FieldValidation, ApiError> {
    match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(o) => Err(ApiError::bad_request(format!(
            "invalid fieldValidation {o:?}: must be Ignore, Warn or Strict"
        ))),
    }
}

fn reject_dry_run(q: &Query) -> Result<(), ApiError> {
    if q.get("dryRun").is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::bad_request("dryRun is not supported by corral"));
    }
    Ok(())
}

/// The list object for `items`.
pub fn list_object(kind: Kind, version: &str, items: Vec<Value>, rv: u64) -> Value {
    let info = kind.info();
    let api_version = if info.group.is_empty() {
        version.to_string()
    } else {
        format!("{}/{version}", info.group)
    };
    json!({
        "kind": info.list_kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

/// A handled request: the response.
pub type Handled = Result<Response, ApiError>;

#[allow(clippy::too_many_arguments)]
/// Dispatches a resource request by method and shape.
pub async fn handle(
    st: &AppState,
    method: &Method,
    headers: &HeaderMap,
    q: &Query,
    kind: Kind,
    version: &str,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<Sub>,
    body: bytes::Bytes,
) -> Handled {
    let enc = body::encoding(headers);
    let nsr = ns.as_deref();
    match (method, name.as_deref(), sub) {
        (&Method::GET, None, None) => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return crate::watch::serve(st, headers, q, kind, version, ns).await;
            }
            list(st, headers, q, kind, version, nsr, enc)
        }
        (&Method::POST, None, None) => {
            let ns = nsr.ok_or_else(|| {
                ApiError::method_not_allowed("create needs a namespace in the path")
            })?;
            reject_dry_run(q)?;
            let fv = field_validation(q)?;
            let obj = body::decode(&body, body::format_of(headers))?;
            let name = meta::name(&obj).to_string();
            let (obj, mut warnings, fv) =
                crate::hpa_versions::incoming(kind, obj, version, fv, true)?;
            let svc = st.service.clone();
            let kind_ = kind;
            let ns_ = ns.to_string();
            let (created, more) = blocking(move || svc.create(kind_, &ns_, obj, fv))
                .await?
                .map_err(|e| ApiError::from_op(e, kind, &name))?;
            warnings.extend(more);
            Ok(crate::table::respond_object(
                st,
                headers,
                StatusCode::CREATED,
                kind,
                version,
                &created,
                enc,
                &warnings,
            ))
        }
        (&Method::GET, Some(name), None) | (&Method::GET, Some(name), Some(Sub::Status)) => {
            let ns = nsr.unwrap_or_default();
            let obj = st
                .store
                .get_or_404(&ObjectKey::new(kind, ns, name))
                .map_err(|e| ApiError::from_op(e.into(), kind, name))?;
            Ok(crate::table::respond_object(
                st,
                headers,
                StatusCode::OK,
                kind,
                version,
                &obj,
                enc,
                &[],
            ))
        }
        (&Method::PUT, Some(name), None) | (&Method::PUT, Some(name), Some(Sub::Status)) => {
            reject_dry_run(q)?;
            let fv = field_validation(q)?;
            let obj = body::decode(&body, body::format_of(headers))?;
            let (obj, mut warnings, fv) = if sub == Some(Sub::Status) {
                let o = crate::hpa_versions::incoming_status(kind, obj, version);
                (o, Vec::new(), fv)
            } else {
                crate::hpa_versions::incoming(kind, obj, version, fv, false)?
            };
            let (svc, ns_, name_) = (
                st.service.clone(),
                nsr.unwrap_or_default().to_string(),
                name.to_string(),
            );
            let res = blocking(move || {
                if sub == Some(Sub::Status) {
                    svc.replace_status(kind, &ns_, &name_, obj)
                        .map(|o| (o, Vec::new()))
                } else {
                    svc.replace(kind, &ns_, &name_, obj, fv)
                }
            })
            .await?
            .map_err(|e| ApiError::from_op(e, kind, name))?;
            warnings.extend(res.1);
            let out = crate::table::versioned(kind, version, &res.0);
            Ok(body::respond(StatusCode::OK, &out, enc, &warnings))
        }
        (&Method::PATCH, Some(name), None) | (&Method::PATCH, Some(name), Some(Sub::Status)) => {
            reject_dry_run(q)?;
            let fv = field_validation(q)?;
            let pt = patch_type(headers, kind)?;
            let fmt = if pt == PatchType::Apply {
                body::BodyFormat::Sniff
            } else {
                body::BodyFormat::Json
            };
            let patch = body::decode(&body, fmt)?;
            let key = ObjectKey::new(kind, nsr.unwrap_or_default(), name);
            let status_only = sub == Some(Sub::Status);
            let (patch, pt, mut warnings, fv) =
                crate::hpa_versions::incoming_patch(st, &key, patch, pt, version, fv, status_only)?;
            let (svc, ns_, name_) = (
                st.service.clone(),
                nsr.unwrap_or_default().to_string(),
                name.to_string(),
            );
            let (obj, more) = blocking(move || {
                svc.patch(
                    &ObjectKey::new(kind, &ns_, &name_),
                    &patch,
                    pt,
                    sub == Some(Sub::Status),
                    fv,
                )
            })
            .await?
            .map_err(|e| ApiError::from_op(e, kind, name))?;
            warnings.extend(more);
            let out = crate::table::versioned(kind, version, &obj);
            Ok(body::respond(StatusCode::OK, &out, enc, &warnings))
        }
        (&Method::DELETE, Some(name), None) => {
            delete(
                st,
                headers,
                q,
                kind,
                nsr.unwrap_or_default(),
                name,
                &body,
                enc,
            )
            .await
        }
        (&Method::GET, Some(name), Some(Sub::Scale)) => {
            let s = st
                .service
                .scale(nsr.unwrap_or_default(), name)
                .map_err(|e| ApiError::from_op(e, kind, name))?;
            Ok(body::respond(StatusCode::OK, &s, enc, &[]))
        }
        (&Method::PUT, Some(name), Some(Sub::Scale)) => {
            let obj = body::decode(&body, body::format_of(headers))?;
            let (svc, ns_, name_) = (
                st.service.clone(),
                nsr.unwrap_or_default().to_string(),
                name.to_string(),
            );
            let s = blocking(move || svc.set_scale(&ns_, &name_, &obj))
                .await?
                .map_err(|e| ApiError::from_op(e, kind, name))?;
            Ok(body::respond(StatusCode::OK, &s, enc, &[]))
        }
        (&Method::PATCH, Some(name), Some(Sub::Scale)) => {
            let pt = patch_type(headers, Kind::Hpa)?;
            let patch = body::decode(&body, body::BodyFormat::Json)?;
            let (svc, ns_, name_) = (
                st.service.clone(),
                nsr.unwrap_or_default().to_string(),
                name.to_string(),
            );
            let s = blocking(move || svc.patch_scale(&ns_, &name_, &patch, pt))
                .await?
                .map_err(|e| ApiError::from_op(e, kind, name))?;
            Ok(body::respond(StatusCode::OK, &s, enc, &[]))
        }
        (m, _, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m} {})",
            kind.qualified_plural()
        ))),
    }
}

/// Runs a store operation (it may fsync) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("request task failed: {e}")))
}

fn patch_type(headers: &HeaderMap, kind: Kind) -> Result<PatchType, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let base = ct.split(';').next().unwrap_or("").trim();
    match base {
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
        "application/strategic-merge-patch+json"
            if matches!(
                kind,
                Kind::Hpa | Kind::Event | Kind::Service | Kind::Endpoints | Kind::EndpointSlice
            ) =>
        {
            Ok(PatchType::Strategic)
        }
        "application/strategic-merge-patch+json" => Err(ApiError::unsupported_media(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        )),
        _ => Err(ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format ({base:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        ))),
    }
}

fn list(
    st: &AppState,
    headers: &HeaderMap,
    q: &Query,
    kind: Kind,
    version: &str,
    ns: Option<&str>,
    enc: Encoding,
) -> Handled {
    let filter = Filter::from_query(q)?;
    let (items, rv) = st.store.list(kind, ns, |o| filter.matches(o));
    Ok(crate::table::respond_list(
        st, headers, kind, version, &items, rv, enc,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn delete(
    st: &AppState,
    _headers: &HeaderMap,
    q: &Query,
    kind: Kind,
    ns: &str,
    name: &str,
    raw: &[u8],
    enc: Encoding,
) -> Handled {
    reject_dry_run(q)?;
    let DeleteOptions {
        propagation,
        grace,
        uid,
    } = delete_options(q, raw)?;
    let (svc, ns_, name_) = (st.service.clone(), ns.to_string(), name.to_string());
    let out = blocking(move || svc.delete(kind, &ns_, &name_, propagation, grace, uid.as_deref()))
        .await?
        .map_err(|e| ApiError::from_op(e, kind, name))?;
    let obj = match out {
        DeleteOutcome::Gone(o) | DeleteOutcome::Pending(o) => o,
    };
    Ok(body::respond(StatusCode::OK, &obj, enc, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selectors() {
        let obj =
            json!({"metadata": {"name": "a", "namespace": "ns"}, "status": {"phase": "Running"}});
        let cases = [
            ("metadata.name=a", true),
            ("metadata.name==a", true),
            ("metadata.name!=a", false),
            ("metadata.namespace=ns,status.phase=Running", true),
            ("status.phase=Pending", false),
        ];
        for (s, want) in cases {
            assert_eq!(FieldSelector::parse(s).unwrap().matches(&obj), want, "{s}");
        }
        assert!(FieldSelector::parse("spec.x=1").is_err());
        assert!(FieldSelector::parse("garbage").is_err());
    }

    fn query(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn int_params_are_bounded_and_named() {
        let q = query(&[("n", "12"), ("bad", "1x"), ("big", "99999999999999999999")]);
        assert_eq!(int_param(&q, "n", 0, 100).unwrap(), Some(12));
        assert_eq!(int_param(&q, "absent", 0, 100).unwrap(), None);
        for (name, min, max) in [
            ("n", 0, 10),
            ("n", 13, 100),
            ("bad", 0, 100),
            ("big", 0, i64::MAX),
        ] {
            let e = int_param(&q, name, min, max).unwrap_err();
            assert_eq!(e.code, StatusCode::BAD_REQUEST);
            assert_eq!(
                e.body()["details"]["causes"][0]["field"],
                name,
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn delete_grace_periods_are_bounded() {
        use supervisor::kinds::vmi::MAX_GRACE_SECONDS;
        // issue 12: `?gracePeriodSeconds=<i64 max>` overflowed an Instant and aborted the daemon.
        for g in [
            i64::MAX.to_string(),
            (MAX_GRACE_SECONDS + 1).to_string(),
            "-1".into(),
        ] {
            let e = delete_options(&query(&[("gracePeriodSeconds", &g)]), b"").unwrap_err();
            assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY, "{g}");
            assert_eq!(
                e.body()["details"]["causes"][0]["field"],
                "gracePeriodSeconds"
            );
            let body = format!("{{\"gracePeriodSeconds\": {g}}}");
            let e = delete_options(&Query::new(), body.as_bytes()).unwrap_err();
            assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY, "{g}");
        }
        for body in [
            &b"{\"gracePeriodSeconds\": 18446744073709551615}"[..],
            b"{\"gracePeriodSeconds\": 1.5}",
            b"{\"gracePeriodSeconds\": \"5\"}",
            b"{\"preconditions\": {\"uid\": 5}}",
            b"{\"propagationPolicy\": []}",
        ] {
            let e = delete_options(&Query::new(), body).unwrap_err();
            assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY);
        }
        let e = delete_options(&query(&[("gracePeriodSeconds", "soon")]), b"").unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert!(delete_options(&Query::new(), b"[1]").is_err());
        let ok = delete_options(
            &query(&[
                ("gracePeriodSeconds", "30"),
                ("propagationPolicy", "Foreground"),
            ]),
            b"",
        )
        .unwrap();
        assert_eq!(ok.grace, Some(30));
        assert_eq!(ok.propagation, Propagation::Foreground);
        let ok = delete_options(
            &query(&[("gracePeriodSeconds", "30")]),
            br#"{"gracePeriodSeconds": 0, "preconditions": {"uid": "u"}}"#,
        )
        .unwrap();
        assert_eq!((ok.grace, ok.uid.as_deref()), (Some(0), Some("u")));
        let max = MAX_GRACE_SECONDS.to_string();
        let ok = delete_options(&query(&[("gracePeriodSeconds", &max)]), b"").unwrap();
        assert_eq!(ok.grace, Some(MAX_GRACE_SECONDS));
    }
}
