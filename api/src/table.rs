//! `meta.k8s.io/v1` Table responses (what `kubectl get` prints), with KubeVirt's and
//! Kubernetes' printer columns, and the plain object/list responses otherwise.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};
use supervisor::kinds::Kind;
use supervisor::meta::{self, human_duration};

use crate::body::{self, Encoding};
use crate::objects::list_object;
use crate::state::AppState;

/// Content type of Table responses.
pub const TABLE_CT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// True when the client asked for a Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn col(name: &str, type_: &str, format: &str, description: &str, priority: u8) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

/// Column definitions of a kind.
pub fn columns(kind: Kind) -> Value {
    let name = col(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    );
    let age = col("Age", "date", "", "", 0);
    match kind {
        Kind::ReplicaSet => json!([
            name,
            col(
                "Desired",
                "integer",
                "",
                "Number of desired VirtualMachineInstances",
                0
            ),
            col(
                "Current",
                "integer",
                "",
                "Number of managed and not final or deleted VirtualMachineInstances",
                0
            ),
            col(
                "Ready",
                "integer",
                "",
                "Number of managed VirtualMachineInstances which are ready to receive traffic",
                0
            ),
            age,
        ]),
        Kind::Vmi => json!([
            name,
            age,
            col("Phase", "string", "", "", 0),
            col("IP", "string", "", "", 0),
            col("NodeName", "string", "", "", 0),
            col("Ready", "string", "", "", 0),
            col("Live-Migratable", "string", "", "", 1),
            col("Paused", "string", "", "", 1),
        ]),
        Kind::Hpa => json!([
            name,
            col("Reference", "string", "", "", 0),
            col("Targets", "string", "", "", 0),
            col("MinPods", "string", "", "", 0),
            col("MaxPods", "integer", "", "", 0),
            col("Replicas", "integer", "", "", 0),
            age,
        ]),
        Kind::Event => json!([
            col("Last Seen", "string", "", "", 0),
            col("Type", "string", "", "", 0),
            col("Reason", "string", "", "", 0),
            col("Object", "string", "", "", 0),
            col("Message", "string", "", "", 0),
        ]),
        Kind::Service => json!([
            name,
            col("Type", "string", "", "The type of the service.", 0),
            col(
                "Cluster-IP",
                "string",
                "",
                "The cluster IP of the service.",
                0
            ),
            col(
                "External-IP",
                "string",
                "",
                "The external IP of the service.",
                0
            ),
            col("Port(s)", "string", "", "The ports of the service.", 0),
            age,
            col("Selector", "string", "", "The selector of the service.", 1),
        ]),
        Kind::Endpoints => json!([
            name,
            col("Endpoints", "string", "", "Endpoints of the service.", 0),
            age,
        ]),
        Kind::EndpointSlice => json!([
            name,
            col("AddressType", "string", "", "", 0),
            col("Ports", "string", "", "", 0),
            col("Endpoints", "string", "", "", 0),
            age,
        ]),
    }
}

/// The Service `PORT(S)` cell (`80:30080/TCP,443/TCP`).
pub fn service_ports(obj: &Value) -> String {
    let ports: Vec<String> = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_u64() {
                Some(n) => format!("{}:{n}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

/// The Endpoints `ENDPOINTS` cell (`10.244.0.2:80,10.244.0.3:80`, at most three then
/// `+ N more...`, as kubectl prints it).
pub fn endpoint_list(obj: &Value) -> String {
    let mut all = Vec::new();
    for s in obj["subsets"].as_array().into_iter().flatten() {
        for a in s["addresses"].as_array().into_iter().flatten() {
            let ip = a["ip"].as_str().unwrap_or("");
            let ports = s["ports"].as_array().cloned().unwrap_or_default();
            if ports.is_empty() {
                all.push(ip.to_string());
            }
            for p in ports {
                all.push(format!("{ip}:{}", p["port"]));
            }
        }
    }
    match all.len() {
        0 => "<none>".into(),
        n if n > 3 => format!("{} + {} more...", all[..3].join(","), n - 3),
        _ => all.join(","),
    }
}

fn condition_status(obj: &Value, t: &str) -> Value {
    obj.get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
        })
        .and_then(|c| c.get("status").cloned())
        .unwrap_or(Value::Null)
}

/// The HPA `TARGETS` cell (`cpu: 2%/75%`, `cpu: <unknown>/75%`).
pub fn hpa_targets(obj: &Value) -> String {
    let spec = obj.get("spec");
    let status = obj.get("status");
    let target = spec
        .and_then(|s| s.get("targetCPUUtilizationPercentage"))
        .and_then(Value::as_i64)
        .or_else(|| {
            spec?.get("metrics")?.as_array()?.iter().find_map(|m| {
                m.get("resource")?
                    .get("target")?
                    .get("averageUtilization")?
                    .as_i64()
            })
        })
        .unwrap_or(80);
    let current = status
        .and_then(|s| s.get("currentCPUUtilizationPercentage"))
        .and_then(Value::as_i64)
        .or_else(|| {
            status?
                .get("currentMetrics")?
                .as_array()?
                .iter()
                .find_map(|m| {
                    m.get("resource")?
                        .get("current")?
                        .get("averageUtilization")?
                        .as_i64()
                })
        });
    match current {
        Some(c) => format!("cpu: {c}%/{target}%"),
        None => format!("cpu: <unknown>/{target}%"),
    }
}

/// One row's cells.
pub fn cells(kind: Kind, obj: &Value) -> Value {
    let age = human_duration(meta::age_seconds(obj, Utc::now()));
    let st = obj.get("status");
    match kind {
        Kind::ReplicaSet => json!([
            meta::name(obj),
            obj.get("spec")
                .and_then(|s| s.get("replicas"))
                .cloned()
                .unwrap_or(json!(1)),
            st.and_then(|s| s.get("replicas"))
                .cloned()
                .unwrap_or(Value::Null),
            st.and_then(|s| s.get("readyReplicas"))
                .cloned()
                .unwrap_or(Value::Null),
            age,
        ]),
        Kind::Vmi => json!([
            meta::name(obj),
            age,
            st.and_then(|s| s.get("phase"))
                .cloned()
                .unwrap_or(Value::Null),
            st.and_then(|s| s.get("interfaces"))
                .and_then(|i| i.get(0))
                .and_then(|i| i.get("ipAddress"))
                .cloned()
                .unwrap_or(Value::Null),
            st.and_then(|s| s.get("nodeName"))
                .cloned()
                .unwrap_or(Value::Null),
            condition_status(obj, "Ready"),
            condition_status(obj, "LiveMigratable"),
            condition_status(obj, "Paused"),
        ]),
        Kind::Hpa => {
            let spec = obj.get("spec");
            let r = spec.and_then(|s| s.get("scaleTargetRef"));
            let reference = format!(
                "{}/{}",
                r.and_then(|r| r.get("kind"))
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                r.and_then(|r| r.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
            );
            json!([
                meta::name(obj),
                reference,
                hpa_targets(obj),
                spec.and_then(|s| s.get("minReplicas"))
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
                    .to_string(),
                spec.and_then(|s| s.get("maxReplicas"))
                    .cloned()
                    .unwrap_or(Value::Null),
                st.and_then(|s| s.get("currentReplicas"))
                    .cloned()
                    .unwrap_or(json!(0)),
                age,
            ])
        }
        Kind::Event => {
            let last = obj
                .get("lastTimestamp")
                .and_then(Value::as_str)
                .and_then(meta::parse_time);
            let seen = last
                .map(|t| human_duration((Utc::now() - t).num_seconds()))
                .unwrap_or_default();
            let io = obj.get("involvedObject");
            json!([
                seen,
                obj.get("type").cloned().unwrap_or(Value::Null),
                obj.get("reason").cloned().unwrap_or(Value::Null),
                format!(
                    "{}/{}",
                    io.and_then(|o| o.get("kind"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_ascii_lowercase(),
                    io.and_then(|o| o.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ),
                obj.get("message").cloned().unwrap_or(Value::Null),
            ])
        }
        Kind::Service => {
            let selector = obj
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty())
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|| "<none>".into());
            json!([
                meta::name(obj),
                obj.pointer("/spec/type")
                    .cloned()
                    .unwrap_or(json!("ClusterIP")),
                obj.pointer("/spec/clusterIP")
                    .cloned()
                    .unwrap_or(Value::Null),
                "<none>",
                service_ports(obj),
                age,
                selector,
            ])
        }
        Kind::Endpoints => json!([meta::name(obj), endpoint_list(obj), age]),
        Kind::EndpointSlice => {
            let ports: Vec<String> = obj["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_u64().map(|p| p.to_string()))
                .collect();
            let ips: Vec<&str> = obj["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .collect();
            let shown = match ips.len() {
                0 => "<unset>".to_string(),
                n if n > 3 => format!("{} + {} more...", ips[..3].join(","), n - 3),
                _ => ips.join(","),
            };
            json!([
                meta::name(obj),
                obj["addressType"].clone(),
                if ports.is_empty() {
                    "<unset>".to_string()
                } else {
                    ports.join(",")
                },
                shown,
                age,
            ])
        }
    }
}

/// A row with its PartialObjectMetadata (so `-A`, `--show-labels` and `-L` work).
pub fn row(kind: Kind, obj: &Value) -> Value {
    let mut m = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(o) = m.as_object_mut() {
        o.remove("managedFields");
    }
    json!({
        "cells": cells(kind, obj),
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m},
    })
}

/// A Table of `items`.
pub fn table(kind: Kind, items: &[&Value], rv: u64, with_columns: bool) -> Value {
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "rows": items.iter().map(|o| row(kind, o)).collect::<Vec<_>>(),
    });
    t["columnDefinitions"] = if with_columns {
        columns(kind)
    } else {
        json!([])
    };
    t
}

fn table_response(code: StatusCode, t: &Value, warnings: &[String]) -> Response {
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, TABLE_CT)],
        serde_json::to_vec(t).unwrap_or_default(),
    )
        .into_response();
    for w in warnings {
        if let Ok(h) = header::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'")))
        {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

/// Responds with one object (or a one-row Table).
#[allow(clippy::too_many_arguments)]
pub fn respond_object(
    _st: &AppState,
    headers: &HeaderMap,
    code: StatusCode,
    kind: Kind,
    version: &str,
    obj: &Value,
    enc: Encoding,
    warnings: &[String],
) -> Response {
    if wants_table(headers) {
        let rv = meta::resource_version(obj);
        return table_response(code, &table(kind, &[obj], rv, true), warnings);
    }
    let out = versioned(kind, version, obj);
    body::respond(code, &out, enc, warnings)
}

/// Responds with a list (or a Table).
pub fn respond_list(
    _st: &AppState,
    headers: &HeaderMap,
    kind: Kind,
    version: &str,
    items: &[std::sync::Arc<Value>],
    rv: u64,
    enc: Encoding,
) -> Response {
    if wants_table(headers) {
        let refs: Vec<&Value> = items.iter().map(|v| &**v).collect();
        return table_response(StatusCode::OK, &table(kind, &refs, rv, true), &[]);
    }
    let list = list_object(
        kind,
        version,
        items.iter().map(|v| versioned(kind, version, v)).collect(),
        rv,
    );
    body::respond(StatusCode::OK, &list, enc, &[])
}

/// The object as served at `version` (HPAs are stored once and served as v1 or v2).
pub fn versioned(kind: Kind, version: &str, obj: &Value) -> Value {
    if kind == Kind::Hpa {
        return crate::hpa_versions::to_version(obj, version);
    }
    obj.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmirs_row_matches_the_lab() {
        let obj = json!({"metadata": {"name": "lab05-cirros-replicaset", "creationTimestamp": meta::now_rfc3339()},
            "spec": {"replicas": 2}, "status": {"replicas": 2, "readyReplicas": 2}});
        let c = cells(Kind::ReplicaSet, &obj);
        assert_eq!(c[0], "lab05-cirros-replicaset");
        assert_eq!(
            (c[1].clone(), c[2].clone(), c[3].clone()),
            (json!(2), json!(2), json!(2))
        );
        assert!(c[4].as_str().unwrap().ends_with('s'));
    }

    #[test]
    fn hpa_targets_cell() {
        let mut h = json!({"spec": {"targetCPUUtilizationPercentage": 75}});
        assert_eq!(hpa_targets(&h), "cpu: <unknown>/75%");
        h["status"] = json!({"currentCPUUtilizationPercentage": 283});
        assert_eq!(hpa_targets(&h), "cpu: 283%/75%");
    }

    #[test]
    fn vmi_row_has_ready_column() {
        let obj = json!({"metadata": {"name": "v"}, "status": {"phase": "Running", "nodeName": "n",
            "conditions": [{"type": "Ready", "status": "True"}]}});
        let c = cells(Kind::Vmi, &obj);
        assert_eq!(c[2], "Running");
        assert_eq!(c[4], "n");
        assert_eq!(c[5], "True");
    }
}
