//! `corral describe TYPE NAME`: the object in kubectl's describe layout, then its events.

use std::process::ExitCode;

use chrono::Utc;
use serde_json::Value;

use super::common::{
    self, CmdError, Conn, cell_text, check, collection_path, enc, list_items, object_path,
    print_table,
};
use supervisor::kinds::Kind;
use supervisor::meta::{human_duration, parse_time};

/// Arguments of `corral describe`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Resource type (vmirs, vmi, hpa) or TYPE/NAME.
    pub resource: String,
    /// Name of the object.
    pub name: Option<String>,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub conn: Conn,
}

/// `creationTimestamp` → `Creation Timestamp` (kubectl's describe of custom resources).
fn title(key: &str) -> String {
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
        } else if c.is_uppercase()
            && !key[..key.char_indices().nth(i).map(|(b, _)| b).unwrap_or(0)]
                .ends_with(|p: char| p.is_uppercase())
        {
            out.push(' ');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

fn render(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                match val {
                    Value::Object(o) if o.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n", title(k)));
                    }
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("{pad}{}:\n", title(k)));
                        render(val, indent + 2, out);
                    }
                    other => out.push_str(&format!("{pad}{}:  {}\n", title(k), cell_text(other))),
                }
            }
        }
        Value::Array(a) => {
            for item in a {
                match item {
                    Value::Object(_) => render(item, indent, out),
                    other => out.push_str(&format!("{pad}{}\n", cell_text(other))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", cell_text(other))),
    }
}

fn map_line(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", cell_text(v)))
            .collect::<Vec<_>>()
            .join("\n              "),
        _ => "<none>".into(),
    }
}

fn run_inner(a: &Args) -> Result<(), CmdError> {
    let (kind, name) = common::type_and_name(&a.resource, a.name.as_deref())?;
    let name = name.ok_or_else(|| CmdError::Usage("the object's name is required".into()))?;
    let client = a.conn.client()?;
    let obj = check(client.get(&object_path(kind, &a.namespace, &name))?)?.json()?;
    let md = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let mut out = String::new();
    out.push_str(&format!(
        "Name:         {}\n",
        md.get("name").map(cell_text).unwrap_or_default()
    ));
    out.push_str(&format!(
        "Namespace:    {}\n",
        md.get("namespace").map(cell_text).unwrap_or_default()
    ));
    out.push_str(&format!("Labels:       {}\n", map_line(md.get("labels"))));
    let mut ann = md.get("annotations").cloned();
    if let Some(a) = ann.as_mut().and_then(Value::as_object_mut) {
        a.remove(super::apply::LAST_APPLIED);
    }
    out.push_str(&format!("Annotations:  {}\n", map_line(ann.as_ref())));
    out.push_str(&format!(
        "API Version:  {}\n",
        obj.get("apiVersion").map(cell_text).unwrap_or_default()
    ));
    out.push_str(&format!(
        "Kind:         {}\n",
        obj.get("kind").map(cell_text).unwrap_or_default()
    ));
    let mut rest_md = md.clone();
    if let Some(m) = rest_md.as_object_mut() {
        for k in [
            "name",
            "namespace",
            "labels",
            "annotations",
            "managedFields",
        ] {
            m.remove(k);
        }
    }
    out.push_str("Metadata:\n");
    render(&rest_md, 2, &mut out);
    for section in ["spec", "status"] {
        if let Some(v) = obj.get(section) {
            out.push_str(&format!("{}:\n", title(section)));
            render(v, 2, &mut out);
        }
    }
    crate::out!("{out}");
    let uid = md.get("uid").and_then(Value::as_str).unwrap_or("");
    let epath = format!(
        "{}?fieldSelector={}",
        collection_path(Kind::Event, Some(&a.namespace)),
        enc(&format!("involvedObject.uid={uid}"))
    );
    let evs = check(client.get(&epath)?)?.json()?;
    let items = list_items(&evs);
    if items.is_empty() {
        crate::outln!("Events:       <none>");
        return Ok(());
    }
    crate::outln!("Events:");
    let now = Utc::now();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|e| {
            let age = e
                .get("lastTimestamp")
                .and_then(Value::as_str)
                .and_then(parse_time)
                .map(|t| human_duration((now - t).num_seconds()))
                .unwrap_or_default();
            let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
            let age = if count > 1 {
                format!("{age} (x{count})")
            } else {
                age
            };
            vec![
                format!("  {}", e.get("type").map(cell_text).unwrap_or_default()),
                e.get("reason").map(cell_text).unwrap_or_default(),
                age,
                e.get("source")
                    .and_then(|s| s.get("component"))
                    .map(cell_text)
                    .unwrap_or_default(),
                e.get("message").map(cell_text).unwrap_or_default(),
            ]
        })
        .collect();
    let mut all = vec![vec![
        "  ----".into(),
        "------".into(),
        "----".into(),
        "----".into(),
        "-------".into(),
    ]];
    all.extend(rows);
    print_table(
        &[
            "  Type".into(),
            "Reason".into(),
            "Age".into(),
            "From".into(),
            "Message".into(),
        ],
        &all,
    );
    Ok(())
}

/// Runs `corral describe`.
pub fn run(a: Args) -> ExitCode {
    match run_inner(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_like_kubectl() {
        assert_eq!(title("creationTimestamp"), "Creation Timestamp");
        assert_eq!(title("readyReplicas"), "Ready Replicas");
        assert_eq!(title("spec"), "Spec");
        assert_eq!(title("qosClass"), "Qos Class");
    }
}
