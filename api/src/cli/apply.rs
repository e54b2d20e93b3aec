//! `corral apply -f FILE`: create or update objects from YAML/JSON files, as `kubectl apply`
//! (client-side, with the `last-applied-configuration` annotation and a three-way merge patch).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Map, Value, json};
use supervisor::kinds::Kind;

use super::common::{CmdError, Conn, check, collection_path, list_items, object_path};
use crate::client::{Client, Request};

/// kubectl's annotation holding the last applied configuration.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Arguments of `corral apply`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// File, directory (its *.yaml, *.yml and *.json files) or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespace for objects that do not name one.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub conn: Conn,
}

/// One object read from a file.
struct Doc {
    source: String,
    obj: Value,
}

fn file_err(path: &str, message: impl Into<String>) -> CmdError {
    CmdError::File {
        path: path.to_string(),
        message: message.into(),
    }
}

fn read_docs(path: &Path) -> Result<Vec<Doc>, CmdError> {
    let name = path.display().to_string();
    let text = if name == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| file_err("-", e.to_string()))?;
        s
    } else if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| file_err(&name, e.to_string()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        entries.sort();
        let mut out = Vec::new();
        for e in entries {
            out.extend(read_docs(&e)?);
        }
        return Ok(out);
    } else {
        std::fs::read_to_string(path).map_err(|e| file_err(&name, e.to_string()))?
    };
    let mut out = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let v: Value = serde::Deserialize::deserialize(de).map_err(|e| match e.location() {
            Some(l) => file_err(
                &name,
                format!("line {}, column {}: {e}", l.line(), l.column()),
            ),
            None => file_err(&name, e.to_string()),
        })?;
        if v.is_null() {
            continue;
        }
        let source = if i == 0 {
            name.clone()
        } else {
            format!("{name} (document {})", i + 1)
        };
        match v.get("kind").and_then(Value::as_str) {
            Some(k) if k.ends_with("List") => {
                for item in list_items(&v) {
                    out.push(Doc {
                        source: source.clone(),
                        obj: item.clone(),
                    });
                }
            }
            _ => out.push(Doc { source, obj: v }),
        }
    }
    if out.is_empty() {
        return Err(file_err(&name, "no objects found"));
    }
    Ok(out)
}

fn kind_of(doc: &Doc) -> Result<Kind, CmdError> {
    let k = doc
        .obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| file_err(&doc.source, "missing \"kind\""))?;
    let av = doc
        .obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| file_err(&doc.source, "missing \"apiVersion\""))?;
    Kind::ALL
        .into_iter()
        .find(|kind| {
            kind.info().kind == k
                && (av == kind.api_version()
                    || (*kind == Kind::Hpa && av.starts_with("autoscaling/")))
        })
        .ok_or_else(|| {
            file_err(
                &doc.source,
                format!("no matches for kind \"{k}\" in version \"{av}\""),
            )
        })
}

/// A JSON merge patch turning `current` into `modified`, deleting what `original` had and
/// `modified` dropped (kubectl's three-way merge for JSON merge patch).
pub fn three_way(original: &Value, modified: &Value, current: &Value) -> Value {
    let mut patch = Map::new();
    let (Some(m), Some(c)) = (modified.as_object(), current.as_object()) else {
        return modified.clone();
    };
    let o = original.as_object();
    for (k, mv) in m {
        let cv = c.get(k).unwrap_or(&Value::Null);
        if mv.is_object() && cv.is_object() {
            let ov = o.and_then(|o| o.get(k)).unwrap_or(&Value::Null);
            let sub = three_way(ov, mv, cv);
            if sub.as_object().is_some_and(|s| !s.is_empty()) {
                patch.insert(k.clone(), sub);
            }
        } else if cv != mv {
            patch.insert(k.clone(), mv.clone());
        }
    }
    if let Some(o) = o {
        for k in o.keys() {
            if !m.contains_key(k) && c.contains_key(k) {
                patch.insert(k.clone(), Value::Null);
            }
        }
    }
    Value::Object(patch)
}

fn apply_one(client: &Client, doc: &Doc, default_ns: &str) -> Result<String, CmdError> {
    let kind = kind_of(doc)?;
    let mut obj = doc.obj.clone();
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| file_err(&doc.source, "metadata.name is required for apply"))?
        .to_string();
    let ns = obj
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or(default_ns)
        .to_string();
    // The annotation holds the object as written, without the annotation itself.
    let last_applied = serde_json::to_string(&obj).unwrap_or_default();
    let md = supervisor::meta::meta_mut(&mut obj);
    let ann = md.entry("annotations").or_insert_with(|| json!({}));
    if let Some(a) = ann.as_object_mut() {
        a.insert(LAST_APPLIED.into(), json!(last_applied));
    }
    let info = kind.info();
    let label = if info.group.is_empty() {
        format!("{}/{name}", info.singular)
    } else {
        format!("{}.{}/{name}", info.singular, info.group)
    };
    let path = object_path(kind, &ns, &name);
    let cur = client.get(&path)?;
    let ctx = |e: CmdError, verb: &str| match e {
        CmdError::Server { reason, message } => CmdError::Server {
            reason,
            message: format!("error when {verb} \"{}\": {message}", doc.source),
        },
        other => other,
    };
    if cur.status == 404 {
        let body = serde_json::to_vec(&obj).unwrap_or_default();
        let p = format!(
            "{}?fieldValidation=Strict",
            collection_path(kind, Some(&ns))
        );
        let mut req = Request::new("POST", &p);
        req.content_type = Some("application/json");
        req.body = &body;
        check(client.send(&req)?).map_err(|e| ctx(e, "creating"))?;
        return Ok(format!("{label} created"));
    }
    let current = check(cur)?.json()?;
    let original: Value = current
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let patch = three_way(&original, &obj, &current);
    if patch.as_object().is_none_or(Map::is_empty) {
        return Ok(format!("{label} unchanged"));
    }
    let body = serde_json::to_vec(&patch).unwrap_or_default();
    let p = format!("{path}?fieldValidation=Strict");
    let mut req = Request::new("PATCH", &p);
    req.content_type = Some("application/merge-patch+json");
    req.body = &body;
    check(client.send(&req)?).map_err(|e| ctx(e, "patching"))?;
    Ok(format!("{label} configured"))
}

/// Runs `corral apply`.
pub fn run(a: Args) -> ExitCode {
    let client = match a.conn.client() {
        Ok(c) => c,
        Err(e) => return super::fail(&e),
    };
    let mut docs = Vec::new();
    for f in &a.files {
        match read_docs(f) {
            Ok(d) => docs.extend(d),
            Err(e) => return super::fail(&e),
        }
    }
    let mut failed = false;
    for d in &docs {
        match apply_one(&client, d, &a.namespace) {
            Ok(msg) => crate::outln!("{msg}"),
            Err(e) => {
                failed = true;
                super::fail(&e);
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_way_merge_table() {
        let cases = [
            // original, modified, current, patch
            (json!(null), json!({"a": 1}), json!({"a": 1}), json!({})),
            (
                json!(null),
                json!({"a": 2}),
                json!({"a": 1}),
                json!({"a": 2}),
            ),
            (
                json!({"a": 1, "b": 2}),
                json!({"a": 1}),
                json!({"a": 1, "b": 2, "c": 3}),
                json!({"b": null}),
            ),
            (
                json!({"s": {"x": 1, "y": 2}}),
                json!({"s": {"x": 1}}),
                json!({"s": {"x": 1, "y": 2}, "status": {}}),
                json!({"s": {"y": null}}),
            ),
            (
                json!(null),
                json!({"l": [1, 2]}),
                json!({"l": [1]}),
                json!({"l": [1, 2]}),
            ),
        ];
        for (o, m, c, want) in cases {
            assert_eq!(three_way(&o, &m, &c), want, "{o} {m} {c}");
        }
    }

    #[test]
    fn reads_multi_document_yaml_and_reports_positions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.yaml");
        std::fs::write(
            &p,
            "kind: A\napiVersion: v1\n---\nkind: B\napiVersion: v1\n",
        )
        .unwrap();
        let docs = read_docs(&p).unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[1].source.ends_with("(document 2)"));
        std::fs::write(&p, "kind: A\n  bad: [\n").unwrap();
        let e = read_docs(&p).err().unwrap().to_string();
        assert!(e.contains("x.yaml") && e.contains("line"), "{e}");
    }
}
