//! `corral get TYPE [NAME]`: kubectl-style listing from the server's Table responses.

use std::io::BufRead;
use std::process::ExitCode;

use serde_json::Value;
use supervisor::kinds::Kind;

use super::common::{
    self, CmdError, Conn, cell_text, check, collection_path, enc, object_path, print_table,
};
use crate::client::Request;
use crate::table::TABLE_CT;

/// Arguments of `corral get`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Resource type (vmirs, vmi, hpa, events) or TYPE/NAME.
    pub resource: String,
    /// Object name.
    pub name: Option<String>,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output: wide, yaml, json or name.
    #[arg(short, long)]
    pub output: Option<String>,
    /// Label selector, e.g. kubevirt.io/domain=lab05-cirros.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Watch for changes after listing.
    #[arg(short, long)]
    pub watch: bool,
    /// Show labels as the last column.
    #[arg(long)]
    pub show_labels: bool,
    #[command(flatten)]
    pub conn: Conn,
}

fn query(a: &Args) -> String {
    match &a.selector {
        Some(s) => format!("?labelSelector={}", enc(s)),
        None => String::new(),
    }
}

fn path(a: &Args, kind: Kind, name: Option<&str>) -> String {
    match name {
        Some(n) => object_path(kind, &a.namespace, n),
        None => {
            let ns = (!a.all_namespaces).then_some(a.namespace.as_str());
            format!("{}{}", collection_path(kind, ns), query(a))
        }
    }
}

struct Printer {
    headers: Vec<String>,
    indices: Vec<usize>,
    namespaces: bool,
    labels: bool,
}

impl Printer {
    fn new(table: &Value, wide: bool, namespaces: bool, labels: bool) -> Self {
        let cols = table
            .get("columnDefinitions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut headers = Vec::new();
        let mut indices = Vec::new();
        if namespaces {
            headers.push("NAMESPACE".to_string());
        }
        for (i, c) in cols.iter().enumerate() {
            if wide || c.get("priority").and_then(Value::as_i64).unwrap_or(0) == 0 {
                headers.push(
                    c.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_ascii_uppercase(),
                );
                indices.push(i);
            }
        }
        if labels {
            headers.push("LABELS".to_string());
        }
        Printer {
            headers,
            indices,
            namespaces,
            labels,
        }
    }

    fn rows(&self, table: &Value) -> Vec<Vec<String>> {
        let rows = table
            .get("rows")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        rows.iter()
            .map(|r| {
                let md = r.get("object").and_then(|o| o.get("metadata"));
                let cells = r
                    .get("cells")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut out = Vec::new();
                if self.namespaces {
                    out.push(
                        md.and_then(|m| m.get("namespace"))
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    );
                }
                for &i in &self.indices {
                    out.push(cells.get(i).map(cell_text).unwrap_or_default());
                }
                if self.labels {
                    let l = md.and_then(|m| m.get("labels")).and_then(Value::as_object);
                    out.push(match l {
                        Some(l) if !l.is_empty() => l
                            .iter()
                            .map(|(k, v)| format!("{k}={}", cell_text(v)))
                            .collect::<Vec<_>>()
                            .join(","),
                        _ => "<none>".into(),
                    });
                }
                out
            })
            .collect()
    }
}

fn run_inner(a: &Args) -> Result<(), CmdError> {
    let (kind, name) = common::type_and_name(&a.resource, a.name.as_deref())?;
    let client = a.conn.client()?;
    let p = path(a, kind, name.as_deref());
    match a.output.as_deref() {
        Some("yaml") | Some("json") => {
            let v = check(client.get(&p)?)?.json()?;
            if a.output.as_deref() == Some("json") {
                crate::outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                crate::out!("{}", serde_norway::to_string(&v).unwrap_or_default());
            }
            return Ok(());
        }
        Some("name") => {
            let v = check(client.get(&p)?)?.json()?;
            let items = match v.get("items").and_then(Value::as_array) {
                Some(i) => i.clone(),
                None => vec![v],
            };
            let i = kind.info();
            let prefix = if i.group.is_empty() {
                i.singular.to_string()
            } else {
                format!("{}.{}", i.singular, i.group)
            };
            for o in items {
                crate::outln!("{prefix}/{}", supervisor::meta::name(&o));
            }
            return Ok(());
        }
        None | Some("wide") => {}
        Some(o) => {
            return Err(CmdError::Usage(format!(
                "unable to match a printer suitable for the output format {o:?}, allowed formats are: json,name,wide,yaml"
            )));
        }
    }
    let mut req = Request::new("GET", &p);
    req.accept = Some(TABLE_CT);
    let table = check(client.send(&req)?)?.json()?;
    let printer = Printer::new(
        &table,
        a.output.as_deref() == Some("wide"),
        a.all_namespaces && name.is_none(),
        a.show_labels,
    );
    let rows = printer.rows(&table);
    if rows.is_empty() && !a.watch {
        if a.all_namespaces {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {} namespace.", a.namespace);
        }
        return Ok(());
    }
    print_table(&printer.headers, &rows);
    if !a.watch {
        return Ok(());
    }
    let rv = table
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
        .unwrap_or("0");
    let ns = (!a.all_namespaces).then_some(a.namespace.as_str());
    let mut wpath = format!(
        "{}?watch=true&resourceVersion={rv}",
        collection_path(kind, ns)
    );
    if let Some(n) = &name {
        wpath.push_str(&format!("&fieldSelector=metadata.name%3D{}", enc(n)));
    }
    if let Some(s) = &a.selector {
        wpath.push_str(&format!("&labelSelector={}", enc(s)));
    }
    let mut wclient = client.clone();
    wclient.timeout = None;
    let mut wreq = Request::new("GET", &wpath);
    wreq.accept = Some(TABLE_CT);
    let ((status, _), body) = wclient.open(&wreq)?;
    if status != 200 {
        return Err(CmdError::Other(format!("watch failed with HTTP {status}")));
    }
    for line in std::io::BufReader::new(body).lines() {
        let line = line.map_err(crate::client::ClientError::Io)?;
        if line.trim().is_empty() {
            continue;
        }
        let ev: Value = serde_json::from_str(&line)
            .map_err(|e| CmdError::Other(format!("bad watch event: {e}")))?;
        match ev.get("type").and_then(Value::as_str) {
            Some("ERROR") => {
                let msg = ev
                    .get("object")
                    .and_then(|o| o.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("watch error");
                return Err(CmdError::Other(msg.to_string()));
            }
            Some("BOOKMARK") => continue,
            _ => {}
        }
        if let Some(obj) = ev.get("object") {
            let widths_rows = printer.rows(obj);
            for r in widths_rows {
                crate::outln!("{}", r.join("   "));
            }
        }
    }
    Ok(())
}

/// Runs `corral get`.
pub fn run(a: Args) -> ExitCode {
    match run_inner(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}
