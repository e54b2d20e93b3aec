//! API discovery: `/api`, `/apis` (aggregated `apidiscovery.k8s.io/v2` when asked for, legacy
//! otherwise), `/api/v1`, `/apis/{group}[/{version}]`, and `/version`.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use supervisor::kinds::Kind;

use crate::status::ApiError;

/// Content type of aggregated discovery.
pub const AGGREGATED_CT: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource.
struct Res {
    kind: Kind,
    verbs: &'static [&'static str],
    subresources: &'static [(&'static str, &'static str, &'static str, &'static str)],
    categories: &'static [&'static str],
}

/// One served group-version.
struct GroupVersion {
    group: &'static str,
    version: &'static str,
    resources: Vec<Res>,
}

fn served(metrics: bool) -> Vec<GroupVersion> {
    let mut out = vec![
        GroupVersion {
            group: "",
            version: "v1",
            resources: vec![
                Res {
                    kind: Kind::Event,
                    verbs: &["get", "list", "watch"],
                    subresources: &[],
                    categories: &[],
                },
                Res {
                    kind: Kind::Service,
                    verbs: &VERBS,
                    subresources: &[("status", "", "v1", "Service")],
                    categories: &["all"],
                },
                Res {
                    kind: Kind::Endpoints,
                    verbs: &VERBS,
                    subresources: &[],
                    categories: &[],
                },
            ],
        },
        GroupVersion {
            group: "kubevirt.io",
            version: "v1",
            resources: vec![
                Res {
                    kind: Kind::ReplicaSet,
                    verbs: &VERBS,
                    subresources: &[
                        ("scale", "autoscaling", "v1", "Scale"),
                        (
                            "status",
                            "kubevirt.io",
                            "v1",
                            "VirtualMachineInstanceReplicaSet",
                        ),
                    ],
                    categories: &["all"],
                },
                Res {
                    kind: Kind::Vmi,
                    verbs: &VERBS,
                    subresources: &[("status", "kubevirt.io", "v1", "VirtualMachineInstance")],
                    categories: &["all"],
                },
            ],
        },
        GroupVersion {
            group: "subresources.kubevirt.io",
            version: "v1",
            resources: vec![],
        },
    ];
    out.push(GroupVersion {
        group: "discovery.k8s.io",
        version: "v1",
        resources: vec![Res {
            kind: Kind::EndpointSlice,
            verbs: &VERBS,
            subresources: &[],
            categories: &[],
        }],
    });
    for v in ["v2", "v1"] {
        out.push(GroupVersion {
            group: "autoscaling",
            version: v,
            resources: vec![Res {
                kind: Kind::Hpa,
                verbs: &VERBS,
                subresources: &[("status", "autoscaling", "", "HorizontalPodAutoscaler")],
                categories: &["all"],
            }],
        });
    }
    if metrics {
        out.push(GroupVersion {
            group: "metrics.k8s.io",
            version: "v1beta1",
            resources: vec![],
        });
    }
    out
}

fn gv_string(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn metrics_resources_legacy() -> Vec<Value> {
    vec![
        json!({"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}),
        json!({"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]}),
    ]
}

fn legacy_resources(gv: &GroupVersion) -> Vec<Value> {
    if gv.group == "metrics.k8s.io" {
        return metrics_resources_legacy();
    }
    if gv.group == "subresources.kubevirt.io" {
        return vec![
            json!({"name": "virtualmachineinstances/console", "singularName": "", "namespaced": true, "kind": "VirtualMachineInstance", "verbs": ["get"]}),
        ];
    }
    let mut out = Vec::new();
    for r in &gv.resources {
        let i = r.kind.info();
        out.push(json!({
            "name": i.plural, "singularName": i.singular, "namespaced": true, "kind": i.kind,
            "verbs": r.verbs, "shortNames": i.short_names, "categories": r.categories,
        }));
        for (sub, g, v, k) in r.subresources {
            let mut e = json!({"name": format!("{}/{sub}", i.plural), "singularName": "", "namespaced": true, "kind": k, "verbs": ["get", "patch", "update"]});
            if *g != gv.group {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            out.push(e);
        }
    }
    out
}

fn aggregated_resources(gv: &GroupVersion) -> Vec<Value> {
    if gv.group == "metrics.k8s.io" {
        return vec![
            json!({"resource": "pods", "responseKind": {"group": "metrics.k8s.io", "version": "v1beta1", "kind": "PodMetrics"}, "scope": "Namespaced", "singularResource": "", "verbs": ["get", "list"]}),
            json!({"resource": "nodes", "responseKind": {"group": "metrics.k8s.io", "version": "v1beta1", "kind": "NodeMetrics"}, "scope": "Cluster", "singularResource": "", "verbs": ["get", "list"]}),
        ];
    }
    if gv.group == "subresources.kubevirt.io" {
        return vec![
            json!({"resource": "virtualmachineinstances", "responseKind": {"group": "", "version": "", "kind": ""}, "scope": "Namespaced", "singularResource": "virtualmachineinstance", "verbs": [],
            "subresources": [{"subresource": "console", "responseKind": {"group": "", "version": "", "kind": ""}, "verbs": ["get"]}]}),
        ];
    }
    gv.resources
        .iter()
        .map(|r| {
            let i = r.kind.info();
            let subs: Vec<Value> = r
                .subresources
                .iter()
                .map(|(sub, g, v, k)| {
                    let v = if v.is_empty() { gv.version } else { v };
                    json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": ["get", "patch", "update"]})
                })
                .collect();
            let mut e = json!({
                "resource": i.plural,
                "responseKind": {"group": i.group, "version": gv.version, "kind": i.kind},
                "scope": "Namespaced",
                "singularResource": i.singular,
                "shortNames": i.short_names,
                "verbs": r.verbs,
            });
            if !r.categories.is_empty() {
                e["categories"] = json!(r.categories);
            }
            if !subs.is_empty() {
                e["subresources"] = json!(subs);
            }
            e
        })
        .collect()
}

fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=APIGroupDiscoveryList") && a.contains("v=v2"))
}

fn json_response(v: &Value, ct: &'static str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, ct)],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

fn aggregated(groups: &[GroupVersion], core: bool) -> Value {
    let mut items: Vec<Value> = Vec::new();
    let mut by_group: Vec<(&str, Vec<&GroupVersion>)> = Vec::new();
    for gv in groups.iter().filter(|g| g.group.is_empty() == core) {
        match by_group.iter_mut().find(|(g, _)| *g == gv.group) {
            Some((_, list)) => list.push(gv),
            None => by_group.push((gv.group, vec![gv])),
        }
    }
    for (g, gvs) in by_group {
        let versions: Vec<Value> = gvs
            .iter()
            .map(|gv| json!({"version": gv.version, "freshness": "Current", "resources": aggregated_resources(gv)}))
            .collect();
        let mut md = json!({"creationTimestamp": null});
        if !g.is_empty() {
            md["name"] = json!(g);
        }
        items.push(json!({"metadata": md, "versions": versions}));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// `/api`.
pub fn core_versions(headers: &HeaderMap, metrics: bool) -> Response {
    if wants_aggregated(headers) {
        return json_response(&aggregated(&served(metrics), true), AGGREGATED_CT);
    }
    json_response(
        &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        "application/json",
    )
}

/// `/api/v1`.
pub fn core_resources(metrics: bool) -> Response {
    let all = served(metrics);
    let gv = all
        .iter()
        .find(|g| g.group.is_empty())
        .expect("core group is served");
    json_response(
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": legacy_resources(gv)}),
        "application/json",
    )
}

fn group_entry(g: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": gv_string(g, v), "version": v}))
        .collect();
    json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
}

fn groups_legacy(metrics: bool) -> Vec<Value> {
    let mut names: Vec<(&str, Vec<&str>)> = Vec::new();
    for gv in served(metrics).into_iter().filter(|g| !g.group.is_empty()) {
        match names.iter_mut().find(|(g, _)| *g == gv.group) {
            Some((_, vs)) => vs.push(gv.version),
            None => names.push((gv.group, vec![gv.version])),
        }
    }
    names.iter().map(|(g, vs)| group_entry(g, vs)).collect()
}

/// `/apis`.
pub fn groups(headers: &HeaderMap, metrics: bool) -> Response {
    if wants_aggregated(headers) {
        return json_response(&aggregated(&served(metrics), false), AGGREGATED_CT);
    }
    json_response(
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups_legacy(metrics)}),
        "application/json",
    )
}

/// `/apis/{group}`.
pub fn group(g: &str, metrics: bool) -> Result<Response, ApiError> {
    let mut e = groups_legacy(metrics)
        .into_iter()
        .find(|e| e["name"] == g)
        .ok_or_else(|| ApiError::no_route(&format!("/apis/{g}")))?;
    e["kind"] = json!("APIGroup");
    e["apiVersion"] = json!("v1");
    Ok(json_response(&e, "application/json"))
}

/// `/apis/{group}/{version}`.
pub fn group_resources(g: &str, v: &str, metrics: bool) -> Result<Response, ApiError> {
    let all = served(metrics);
    let gv = all
        .iter()
        .find(|x| x.group == g && x.version == v)
        .ok_or_else(|| ApiError::no_route(&format!("/apis/{g}/{v}")))?;
    Ok(json_response(
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv_string(g, v), "resources": legacy_resources(gv)}),
        "application/json",
    ))
}

/// `/version`: a recent Kubernetes minor so that kubectl does not warn about skew.
pub fn version() -> Response {
    json_response(
        &json!({
            "major": "1", "minor": "37", "gitVersion": format!("v1.37.0-corral.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "rustc",
            "platform": "linux/amd64", "corralVersion": env!("CARGO_PKG_VERSION"),
        }),
        "application/json",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_lists_short_names_and_scale() {
        let v = aggregated(&served(true), false);
        let kv = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "kubevirt.io")
            .unwrap();
        let rs = &kv["versions"][0]["resources"][0];
        assert_eq!(rs["resource"], "virtualmachineinstancereplicasets");
        assert_eq!(rs["shortNames"][0], "vmirs");
        assert_eq!(rs["subresources"][0]["subresource"], "scale");
        assert_eq!(rs["subresources"][0]["responseKind"]["kind"], "Scale");
        let hpa = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "autoscaling")
            .unwrap();
        assert_eq!(hpa["versions"][0]["version"], "v2");
    }

    #[test]
    fn legacy_lists_subresources() {
        let all = served(false);
        let kv = all.iter().find(|g| g.group == "kubevirt.io").unwrap();
        let names: Vec<String> = legacy_resources(kv)
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        assert!(names.contains(&"virtualmachineinstancereplicasets/scale".to_string()));
        assert!(
            !groups_legacy(false)
                .iter()
                .any(|g| g["name"] == "metrics.k8s.io")
        );
    }
}
