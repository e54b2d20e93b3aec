//! Field-level validation errors and typed decoding of stored JSON with unknown-field detection.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// One invalid field, as in a Kubernetes `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, `FieldValueForbidden`,
    /// `FieldValueTypeInvalid` or `FieldValueDuplicate` (Kubernetes' cause types).
    pub reason: &'static str,
    /// Dotted path, e.g. `spec.replicas` or `spec.template.spec.volumes[0].name`.
    pub field: String,
    /// Human message, e.g. `Invalid value: -1: must be greater than or equal to 0`.
    pub message: String,
}

impl FieldError {
    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(field: impl Into<String>, value: impl fmt::Display, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }

    /// `Required value: <detail>`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueRequired",
            field: field.into(),
            message: format!("Required value: {detail}"),
        }
    }

    /// `Unsupported value: <detail>`.
    pub fn unsupported(field: impl Into<String>, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: {detail}"),
        }
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A rejected object: every invalid field (HTTP 422 `Invalid`).
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
pub struct Invalid {
    pub causes: Vec<FieldError>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.causes.iter().map(ToString::to_string).collect();
        if parts.len() == 1 {
            f.write_str(&parts[0])
        } else {
            write!(f, "[{}]", parts.join(", "))
        }
    }
}

impl Invalid {
    /// Adds a cause.
    pub fn push(&mut self, e: FieldError) {
        self.causes.push(e);
    }

    /// `Ok(())` when no cause was recorded.
    pub fn into_result(self) -> Result<(), Invalid> {
        if self.causes.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl From<FieldError> for Invalid {
    fn from(e: FieldError) -> Self {
        Invalid { causes: vec![e] }
    }
}

/// The most characters in a DNS-1123 label.
pub const DNS1123_LABEL_MAX: usize = 63;

const DNS1123_LABEL_FMT: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// `value` quoted for a message: escaped, and cut after 64 characters.
pub fn shown(value: &str) -> String {
    let cut: String = value.chars().take(64).collect();
    let more = if cut.len() < value.len() { "..." } else { "" };
    format!("\"{}{more}\"", cut.escape_debug())
}

/// True when `s` matches `[a-z0-9]([-a-z0-9]*[a-z0-9])?` (any length).
fn label_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// True for a DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= DNS1123_LABEL_MAX && label_chars_ok(s)
}

/// Records why `value` (at `field`) is not a DNS-1123 label, as Kubernetes words it
/// (`ValidateDNS1123Label`). Returns whether it is one.
pub fn check_dns1123_label(inv: &mut Invalid, field: &str, value: &str) -> bool {
    let shown = shown(value);
    let mut ok = true;
    if value.len() > DNS1123_LABEL_MAX {
        inv.push(FieldError::invalid(
            field,
            &shown,
            "must be no more than 63 characters",
        ));
        ok = false;
    }
    if !label_chars_ok(value) {
        inv.push(FieldError::invalid(field, &shown, DNS1123_LABEL_FMT));
        ok = false;
    }
    ok
}

/// Records an error unless `min <= v <= max`. Returns whether `v` is in range.
pub fn check_range(inv: &mut Invalid, field: &str, v: i64, min: i64, max: i64) -> bool {
    if v < min {
        inv.push(FieldError::invalid(
            field,
            v,
            &format!("must be greater than or equal to {min}"),
        ));
        false
    } else if v > max {
        inv.push(FieldError::invalid(
            field,
            v,
            &format!("must be less than or equal to {max}"),
        ));
        false
    } else {
        true
    }
}

/// A typed decode: the struct, plus the paths of fields the schema does not know.
pub struct Decoded<T> {
    pub value: T,
    pub unknown: Vec<String>,
}

fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

fn format_ignored(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", format_ignored(parent)),
        Path::Map { parent, key } => join_path(&format_ignored(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_ignored(parent),
    }
}

fn format_track(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => out = join_path(&out, key),
            Segment::Enum { variant } => out = join_path(&out, variant),
            Segment::Unknown => {}
        }
    }
    out
}

/// Decodes `value` (found at `prefix`) into `T`, collecting unknown fields instead of failing on them.
/// A type mismatch becomes a `FieldValueTypeInvalid` error naming the full path.
pub fn decode<T: DeserializeOwned>(value: &Value, prefix: &str) -> Result<Decoded<T>, FieldError> {
    let mut unknown = Vec::new();
    let mut record = |p: serde_ignored::Path<'_>| {
        unknown.push(join_path(prefix, &format_ignored(&p)));
    };
    let de = serde_ignored::Deserializer::new(value, &mut record);
    let res: Result<T, _> = serde_path_to_error::deserialize(de);
    match res {
        Ok(v) => Ok(Decoded { value: v, unknown }),
        Err(e) => {
            let field = join_path(prefix, &format_track(e.path()));
            let inner = e.into_inner().to_string();
            Err(FieldError {
                reason: "FieldValueTypeInvalid",
                field,
                message: format!("Invalid value: {inner}"),
            })
        }
    }
}

/// Converts unknown fields into errors (strict field validation, as `fieldValidation=Strict`).
pub fn unknown_fields_error(unknown: &[String]) -> Invalid {
    Invalid {
        causes: unknown
            .iter()
            .map(|f| FieldError {
                reason: "FieldValueInvalid",
                field: f.clone(),
                message: format!("unknown field \"{f}\""),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        a: Option<i32>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }

    #[test]
    fn unknown_fields_are_reported_with_paths() {
        let v = json!({"items": [{"a": 1}, {"a": 2, "b": 3}], "extra": true});
        let d: Decoded<Outer> = decode(&v, "spec").unwrap();
        let mut u = d.unknown.clone();
        u.sort();
        assert_eq!(
            u,
            vec!["spec.extra".to_string(), "spec.items[1].b".to_string()]
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let v = json!({"items": [{"a": "x"}]});
        let e = decode::<Outer>(&v, "spec").err().unwrap();
        assert_eq!(e.field, "spec.items[0].a");
        assert_eq!(e.reason, "FieldValueTypeInvalid");
    }
}
