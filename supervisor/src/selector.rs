//! Label selectors: `metav1.LabelSelector` (matchLabels + matchExpressions) and the string
//! syntax of `?labelSelector=` (`a=b,c!=d,e in (x,y),!f`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// Why a selector is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unknown operator {0:?}")]
    Operator(String),
    #[error("operator {op} needs at least one value for key {key:?}")]
    MissingValues { key: String, op: String },
    #[error("operator {op} takes no values for key {key:?}")]
    UnexpectedValues { key: String, op: String },
    #[error("invalid label key {0:?}")]
    Key(String),
    #[error("invalid label value {0:?}")]
    Value(String),
    #[error("cannot parse selector {0:?}")]
    Syntax(String),
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Requirement {
    /// `key=value` / `key in (v1,v2)`.
    In(String, Vec<String>),
    /// `key!=value` / `key notin (v1,v2)`: true when the label is absent too.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

impl Requirement {
    fn key(&self) -> &str {
        match self {
            Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k,
        }
    }

    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::In(k, vs) if vs.len() == 1 => write!(f, "{k}={}", vs[0]),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Requirement::NotIn(k, vs) if vs.len() == 1 => write!(f, "{k}!={}", vs[0]),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

/// A parsed selector: the AND of its requirements. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<Requirement>,
}

impl Selector {
    /// True when every requirement holds for `labels`.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }

    /// True when the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Parses the query-string syntax (`a=b,c!=d,e in (x,y),f notin (z),g,!h`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(parse_term(term)?);
        }
        reqs.sort_by(|a, b| a.key().cmp(b.key()));
        Ok(Selector { reqs })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.reqs.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Splits on commas that are not inside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Syntax(whole.to_string()))?;
    let mut vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for v in &vals {
        validate_value(v)?;
    }
    vals.sort();
    vals.dedup();
    Ok(vals)
}

fn parse_term(term: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        validate_key(key)?;
        return Ok(Requirement::DoesNotExist(key.to_string()));
    }
    if let Some((k, v)) = term.split_once("!=") {
        let (k, v) = (k.trim(), v.trim());
        validate_key(k)?;
        validate_value(v)?;
        return Ok(Requirement::NotIn(k.to_string(), vec![v.to_string()]));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        let (k, v) = (k.trim(), v.trim());
        validate_key(k)?;
        validate_value(v)?;
        return Ok(Requirement::In(k.to_string(), vec![v.to_string()]));
    }
    let mut words = term.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    let rest = words.next().unwrap_or_default().trim();
    validate_key(key)?;
    if rest.is_empty() {
        return Ok(Requirement::Exists(key.to_string()));
    }
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement::NotIn(key.to_string(), parse_set(set, term)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement::In(key.to_string(), parse_set(set, term)?));
    }
    Err(SelectorError::Syntax(term.to_string()))
}

/// `metav1.LabelSelectorRequirement`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// `metav1.LabelSelector` as found in `spec.selector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

impl LabelSelector {
    /// Converts to a [`Selector`], validating keys, values and operators.
    pub fn to_selector(&self) -> Result<Selector, SelectorError> {
        let mut reqs = Vec::new();
        for (k, v) in self.match_labels.iter().flatten() {
            validate_key(k)?;
            validate_value(v)?;
            reqs.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for e in self.match_expressions.iter().flatten() {
            validate_key(&e.key)?;
            let mut values = e.values.clone();
            for v in &values {
                validate_value(v)?;
            }
            values.sort();
            values.dedup();
            let need_values = matches!(e.operator.as_str(), "In" | "NotIn");
            if need_values && values.is_empty() {
                return Err(SelectorError::MissingValues {
                    key: e.key.clone(),
                    op: e.operator.clone(),
                });
            }
            if !need_values && !values.is_empty() {
                return Err(SelectorError::UnexpectedValues {
                    key: e.key.clone(),
                    op: e.operator.clone(),
                });
            }
            reqs.push(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => return Err(SelectorError::Operator(other.to_string())),
            });
        }
        reqs.sort_by(|a, b| a.key().cmp(b.key()));
        Ok(Selector { reqs })
    }
}

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// True for a DNS-1123 subdomain (lower case, `-` and `.`, ≤ 253).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Validates a label key: `[prefix/]name`.
pub fn validate_key(k: &str) -> Result<(), SelectorError> {
    let ok = match k.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(k),
    };
    if ok {
        Ok(())
    } else {
        Err(SelectorError::Key(k.to_string()))
    }
}

/// Validates a label value: empty, or a name part.
pub fn validate_value(v: &str) -> Result<(), SelectorError> {
    if v.is_empty() || is_name_part(v) {
        Ok(())
    } else {
        Err(SelectorError::Value(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parse_and_match_table() {
        let l = labels(&[("kubevirt.io/domain", "lab05-cirros"), ("tier", "web")]);
        let cases = [
            ("", true),
            ("kubevirt.io/domain=lab05-cirros", true),
            ("kubevirt.io/domain==lab05-cirros", true),
            ("kubevirt.io/domain!=lab05-cirros", false),
            ("tier in (web,db)", true),
            ("tier notin (web)", false),
            ("tier,!missing", true),
            ("missing", false),
            ("missing!=x", true),
            ("tier=web,kubevirt.io/domain=other", false),
        ];
        for (s, want) in cases {
            let sel = Selector::parse(s).unwrap();
            assert_eq!(sel.matches(&l), want, "{s}");
        }
    }

    #[test]
    fn rejects_bad_syntax() {
        for s in ["a in b", "a in (b", "bad key=x", "a=b c", "-a=b", "a=-b"] {
            assert!(Selector::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn label_selector_string_form_is_sorted() {
        let ls = LabelSelector {
            match_labels: Some(labels(&[("z", "1"), ("a", "2")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "m".into(),
                operator: "In".into(),
                values: vec!["y".into(), "x".into()],
            }]),
        };
        assert_eq!(ls.to_selector().unwrap().to_string(), "a=2,m in (x,y),z=1");
    }

    #[test]
    fn label_selector_validation() {
        let bad_op = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Like".into(),
                values: vec!["x".into()],
            }]),
        };
        assert!(bad_op.to_selector().is_err());
        let no_vals = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "In".into(),
                values: vec![],
            }]),
        };
        assert!(no_vals.to_selector().is_err());
    }
}
