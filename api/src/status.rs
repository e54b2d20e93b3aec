//! API errors as Kubernetes `Status` objects (`kind: Status`, `reason`, `code`, `details`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use supervisor::kinds::{AdmitError, Kind};
use supervisor::service::OpError;
use supervisor::store::StoreError;

/// One error response.
#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    /// A bare error.
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 400 BadRequest for a query parameter that does not parse, with a cause naming it.
    pub fn bad_param(name: &str, value: &str, detail: &str) -> Self {
        let shown: String = value.chars().take(64).collect();
        let message = format!("Invalid value: {shown:?}: {detail}");
        ApiError {
            code: StatusCode::BAD_REQUEST,
            reason: "BadRequest",
            message: format!("invalid query parameter {name}: {message}"),
            details: Some(json!({"causes": [
                {"reason": "FieldValueInvalid", "message": message, "field": name}
            ]})),
        }
    }

    /// 422 Invalid for request options (`DeleteOptions`, ...) that parse but are out of bounds,
    /// worded as the API server does (`DeleteOptions.meta.k8s.io "" is invalid: ...`).
    pub fn invalid_options(
        kind: &str,
        causes: &[supervisor::kinds::validation::FieldError],
    ) -> Self {
        let inv = supervisor::kinds::validation::Invalid {
            causes: causes.to_vec(),
        };
        let list: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        ApiError {
            code: StatusCode::UNPROCESSABLE_ENTITY,
            reason: "Invalid",
            message: format!("{kind}.meta.k8s.io \"\" is invalid: {inv}"),
            details: Some(json!({"group": "meta.k8s.io", "kind": kind, "causes": list})),
        }
    }

    /// 404 NotFound for a path the server does not serve.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            message,
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The `Status` body.
    pub fn body(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }

    /// Converts a supervisor error, naming the object the request was about.
    pub fn from_op(e: OpError, kind: Kind, name: &str) -> Self {
        let details = |causes: Option<Value>| {
            let mut d =
                json!({"name": name, "group": kind.info().group, "kind": kind.info().plural});
            if let Some(c) = causes {
                d["causes"] = c;
            }
            Some(d)
        };
        match e {
            OpError::Store(StoreError::NotFound { kind, name }) => ApiError {
                code: StatusCode::NOT_FOUND,
                reason: "NotFound",
                message: format!("{} \"{name}\" not found", kind.qualified_plural()),
                details: details(None),
            },
            OpError::Store(e @ StoreError::AlreadyExists { .. }) => ApiError {
                code: StatusCode::CONFLICT,
                reason: "AlreadyExists",
                message: e.to_string(),
                details: details(None),
            },
            OpError::Store(e @ StoreError::Conflict { .. }) => ApiError {
                code: StatusCode::CONFLICT,
                reason: "Conflict",
                message: e.to_string(),
                details: details(None),
            },
            OpError::Store(e @ StoreError::Gone { .. }) => {
                ApiError::new(StatusCode::GONE, "Expired", e.to_string())
            }
            OpError::Store(StoreError::BadRequest(m)) | OpError::BadRequest(m) => {
                ApiError::bad_request(m)
            }
            OpError::Store(e @ StoreError::Db(_)) => {
                ApiError::internal(supervisor::error_chain(&e))
            }
            OpError::Admit(AdmitError::Invalid(inv)) => {
                let causes: Vec<Value> = inv
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                ApiError {
                    code: StatusCode::UNPROCESSABLE_ENTITY,
                    reason: "Invalid",
                    message: format!(
                        "{}.{} \"{name}\" is invalid: {inv}",
                        kind.info().kind,
                        kind.info().group
                    ),
                    details: details(Some(Value::from(causes))),
                }
            }
            OpError::Admit(e @ AdmitError::UnknownFields(_)) => ApiError::bad_request(format!(
                "{}.{} \"{name}\" {e}",
                kind.info().kind,
                kind.info().group
            )),
            OpError::UnsupportedMediaType(m) => ApiError::unsupported_media(m),
            OpError::MethodNotAllowed(m) => ApiError::method_not_allowed(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        (
            self.code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

/// A `Status` with `status: Success` (some deletes answer with it).
pub fn success(kind: Kind, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": kind.info().group, "kind": kind.info().plural, "uid": uid},
    })
}
