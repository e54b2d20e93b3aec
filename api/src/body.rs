//! Request bodies (JSON or YAML, errors with line and column) and response encoding (JSON, or
//! YAML when the client asks for it).

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::status::ApiError;

/// The media type of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
    /// Not declared (or a form type, as curl sends with `--data-binary`): JSON, else YAML.
    Sniff,
}

/// The body format from the `Content-Type` header.
pub fn format_of(headers: &HeaderMap) -> BodyFormat {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.contains("yaml") {
        BodyFormat::Yaml
    } else if ct.contains("json") {
        BodyFormat::Json
    } else {
        BodyFormat::Sniff
    }
}

fn yaml_error(e: &serde_norway::Error) -> ApiError {
    let msg = match e.location() {
        Some(loc) => format!(
            "error converting YAML to JSON: yaml: line {}, column {}: {}",
            loc.line(),
            loc.column(),
            e
        ),
        None => format!("error converting YAML to JSON: {e}"),
    };
    ApiError::bad_request(msg)
}

fn json_error(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request(format!(
        "error decoding JSON: line {}, column {}: {e}",
        e.line(),
        e.column()
    ))
}

/// Decodes a request body into a JSON value.
pub fn decode(bytes: &[u8], fmt: BodyFormat) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
    match fmt {
        BodyFormat::Json => serde_json::from_str(text).map_err(|e| json_error(&e)),
        BodyFormat::Yaml => from_yaml(text),
        BodyFormat::Sniff => match serde_json::from_str(text) {
            Ok(v) => Ok(v),
            Err(je) => {
                if text.trim_start().starts_with(['{', '[']) {
                    Err(json_error(&je))
                } else {
                    from_yaml(text)
                }
            }
        },
    }
}

fn from_yaml(text: &str) -> Result<Value, ApiError> {
    let mut docs = serde_norway::Deserializer::from_str(text);
    let first = docs
        .next()
        .ok_or_else(|| ApiError::bad_request("the YAML body holds no document"))?;
    let v: Value = serde::Deserialize::deserialize(first).map_err(|e| yaml_error(&e))?;
    if docs.next().is_some() {
        return Err(ApiError::bad_request(
            "the YAML body holds several documents; send one object per request",
        ));
    }
    Ok(v)
}

/// How to encode the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Yaml,
}

/// Picks the response encoding from `Accept`.
pub fn encoding(headers: &HeaderMap) -> Encoding {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if accept.starts_with("application/yaml")
        || accept.starts_with("application/x-yaml")
        || accept.starts_with("text/yaml")
    {
        Encoding::Yaml
    } else {
        Encoding::Json
    }
}

/// An encoded response with extra headers (e.g. `Warning`).
pub fn respond(code: StatusCode, v: &Value, enc: Encoding, warnings: &[String]) -> Response {
    let (ct, body) = match enc {
        Encoding::Json => (
            "application/json",
            serde_json::to_vec(v).unwrap_or_default(),
        ),
        Encoding::Yaml => (
            "application/yaml",
            serde_norway::to_string(v).unwrap_or_default().into_bytes(),
        ),
    };
    let mut resp = (code, [(header::CONTENT_TYPE, ct)], body).into_response();
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(h) = header::HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_json_yaml_and_sniffs() {
        assert_eq!(decode(b"{\"a\":1}", BodyFormat::Json).unwrap()["a"], 1);
        assert_eq!(decode(b"a: 1\n", BodyFormat::Yaml).unwrap()["a"], 1);
        assert_eq!(decode(b"a: 1\n", BodyFormat::Sniff).unwrap()["a"], 1);
        assert_eq!(decode(b"{\"a\":1}", BodyFormat::Sniff).unwrap()["a"], 1);
    }

    #[test]
    fn yaml_errors_carry_line_and_column() {
        let bad = "apiVersion: kubevirt.io/v1\nkind: X\nmetadata:\n  name: a\n   bad: indent\n";
        let e = decode(bad.as_bytes(), BodyFormat::Yaml).unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("line 5"), "{}", e.message);
        let e = decode(b"{\"a\": }", BodyFormat::Json).unwrap_err();
        assert!(e.message.contains("line 1, column"), "{}", e.message);
        assert!(decode(b"  ", BodyFormat::Json).is_err());
        assert!(decode(b"a: 1\n---\nb: 2\n", BodyFormat::Yaml).is_err());
    }
}
