//! `corral expose vmirs|vmi NAME --port P`: a Service in front of a replica set or a VMI, with
//! virtctl's semantics (the selector is the set's `matchLabels`, or the VMI's labels).

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::{Value, json};
use supervisor::kinds::Kind;

use super::common::{self, CmdError, Conn, check, collection_path, object_path};
use crate::client::Request;

/// Arguments of `corral expose`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// vmirs, vmi, or TYPE/NAME.
    pub resource: String,
    /// Name of the replica set or VMI.
    pub name: Option<String>,
    /// Name of the Service (default: the exposed object's).
    #[arg(long = "name")]
    pub service_name: Option<String>,
    /// The Service's port.
    #[arg(long)]
    pub port: u16,
    /// The port on the VMs (default: --port).
    #[arg(long)]
    pub target_port: Option<String>,
    /// ClusterIP or NodePort.
    #[arg(long = "type", default_value = "ClusterIP")]
    pub service_type: String,
    /// TCP (the only protocol corral's Services carry).
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    /// Name of the port.
    #[arg(long)]
    pub port_name: Option<String>,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub conn: Conn,
}

/// The selector virtctl derives: a set's `spec.selector.matchLabels` (matchExpressions cannot
/// become a Service selector), a VMI's labels.
pub fn selector_of(kind: Kind, obj: &Value) -> Result<BTreeMap<String, String>, String> {
    let labels = match kind {
        Kind::ReplicaSet => {
            if obj
                .pointer("/spec/selector/matchExpressions")
                .and_then(Value::as_array)
                .is_some_and(|e| !e.is_empty())
            {
                return Err(
                    "cannot expose a replica set with matchExpressions in its selector".into(),
                );
            }
            obj.pointer("/spec/selector/matchLabels")
        }
        Kind::Vmi => obj.pointer("/metadata/labels"),
        _ => None,
    };
    let labels: BTreeMap<String, String> = labels
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    if labels.is_empty() {
        return Err("it has no labels to select it by".into());
    }
    Ok(labels)
}

fn run_inner(a: &Args) -> Result<(), CmdError> {
    let (kind, name) = common::type_and_name(&a.resource, a.name.as_deref())?;
    if !matches!(kind, Kind::ReplicaSet | Kind::Vmi) {
        return Err(CmdError::Usage(format!(
            "cannot expose {}: only vmirs and vmi",
            kind.qualified_plural()
        )));
    }
    let name =
        name.ok_or_else(|| CmdError::Usage("the name of what to expose is required".into()))?;
    let client = a.conn.client()?;
    let resp = check(client.send(&Request::new(
        "GET",
        &object_path(kind, &a.namespace, &name),
    ))?)?;
    let obj: Value = serde_json::from_slice(&resp.body)
        .map_err(|e| CmdError::Usage(format!("the server's answer is not JSON: {e}")))?;
    let selector = selector_of(kind, &obj).map_err(|m| {
        CmdError::Usage(format!(
            "cannot expose {}/{name}: {m}",
            kind.info().singular
        ))
    })?;
    let target: Value = match &a.target_port {
        None => json!(a.port),
        Some(t) => t
            .parse::<u16>()
            .map(|n| json!(n))
            .unwrap_or_else(|_| json!(t)),
    };
    let svc_name = a.service_name.clone().unwrap_or_else(|| name.clone());
    let mut port = json!({"port": a.port, "targetPort": target, "protocol": a.protocol});
    if let Some(n) = &a.port_name {
        port["name"] = json!(n);
    }
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc_name, "namespace": a.namespace},
        "spec": {"type": a.service_type, "selector": selector, "ports": [port]},
    });
    let body = serde_json::to_vec(&svc).unwrap_or_default();
    let path = collection_path(Kind::Service, Some(&a.namespace));
    let mut req = Request::new("POST", &path);
    req.content_type = Some("application/json");
    req.body = &body;
    check(client.send(&req)?)?;
    crate::outln!(
        "Service {svc_name} successfully exposed for {}",
        kind.info().singular
    );
    Ok(())
}

/// Runs `corral expose`.
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
    fn selectors_follow_virtctl() {
        let set = json!({"spec": {"selector": {"matchLabels": {"app": "lab"}}}});
        assert_eq!(selector_of(Kind::ReplicaSet, &set).unwrap()["app"], "lab");
        let expr = json!({"spec": {"selector": {"matchLabels": {"a": "b"},
            "matchExpressions": [{"key": "x", "operator": "Exists"}]}}});
        assert!(
            selector_of(Kind::ReplicaSet, &expr)
                .unwrap_err()
                .contains("matchExpressions")
        );
        let vmi = json!({"metadata": {"labels": {"special": "key"}}});
        assert_eq!(selector_of(Kind::Vmi, &vmi).unwrap()["special"], "key");
        assert!(selector_of(Kind::Vmi, &json!({"metadata": {}})).is_err());
    }
}
