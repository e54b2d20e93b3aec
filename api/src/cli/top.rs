//! `corral top`: CPU and memory of VMIs from the metrics API (as `kubectl top pod`).

use std::process::ExitCode;

use super::common::{CmdError, Conn, cell_text, check, list_items, print_table};

/// Arguments of `corral top`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `pod` or `vmi` (the same list: one entry per VMI).
    #[arg(default_value = "vmi")]
    pub what: String,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub conn: Conn,
}

fn run_inner(a: &Args) -> Result<(), CmdError> {
    if !matches!(a.what.as_str(), "pod" | "pods" | "po" | "vmi" | "vmis") {
        return Err(CmdError::Usage(format!(
            "top {}: only pod (or vmi) is supported",
            a.what
        )));
    }
    let client = a.conn.client()?;
    let path = if a.all_namespaces {
        "/apis/metrics.k8s.io/v1beta1/pods".to_string()
    } else {
        format!(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods",
            a.namespace
        )
    };
    let v = check(client.get(&path)?)?.json()?;
    let items = list_items(&v);
    if items.is_empty() {
        eprintln!("No resources found in {} namespace.", a.namespace);
        return Ok(());
    }
    let mut rows = Vec::new();
    for i in items {
        let c = i
            .get("containers")
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("usage"));
        let mut row = Vec::new();
        if a.all_namespaces {
            row.push(
                i.get("metadata")
                    .and_then(|m| m.get("namespace"))
                    .map(cell_text)
                    .unwrap_or_default(),
            );
        }
        row.push(
            i.get("metadata")
                .and_then(|m| m.get("name"))
                .map(cell_text)
                .unwrap_or_default(),
        );
        row.push(
            c.and_then(|c| c.get("cpu"))
                .map(cell_text)
                .unwrap_or_default(),
        );
        row.push(
            c.and_then(|c| c.get("memory"))
                .map(cell_text)
                .unwrap_or_default(),
        );
        rows.push(row);
    }
    let mut headers: Vec<String> = Vec::new();
    if a.all_namespaces {
        headers.push("NAMESPACE".into());
    }
    headers.extend([
        "NAME".to_string(),
        "CPU(cores)".to_string(),
        "MEMORY(bytes)".to_string(),
    ]);
    print_table(&headers, &rows);
    Ok(())
}

/// Runs `corral top`.
pub fn run(a: Args) -> ExitCode {
    match run_inner(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}
