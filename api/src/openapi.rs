//! A minimal OpenAPI v3: the index and one document per group-version whose object paths carry
//! `x-kubernetes-group-version-kind` and a `fieldValidation` parameter. That is what lets plain
//! `kubectl apply -f` (default `--validate=strict`) hand validation to the server, which honours
//! `fieldValidation=Strict|Warn|Ignore`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use supervisor::kinds::Kind;

use crate::status::ApiError;

/// Served group-versions and the kinds in each.
fn group_versions() -> Vec<(&'static str, &'static str, Vec<Kind>)> {
    vec![
        ("", "v1", vec![Kind::Event, Kind::Service, Kind::Endpoints]),
        ("kubevirt.io", "v1", vec![Kind::ReplicaSet, Kind::Vmi]),
        ("discovery.k8s.io", "v1", vec![Kind::EndpointSlice]),
        ("autoscaling", "v1", vec![Kind::Hpa]),
        ("autoscaling", "v2", vec![Kind::Hpa]),
    ]
}

fn gv_path(g: &str, v: &str) -> String {
    if g.is_empty() {
        format!("api/{v}")
    } else {
        format!("apis/{g}/{v}")
    }
}

/// Changes whenever what is served changes (clients cache documents by this hash).
const HASH: &str = concat!("corral-", env!("CARGO_PKG_VERSION"));

fn json_ok(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

/// `/openapi/v3` and `/openapi/v3/{api/v1|apis/g/v}`.
pub fn serve(rest: &str) -> Result<Response, ApiError> {
    if rest.is_empty() {
        let mut paths = Map::new();
        for (g, v, _) in group_versions() {
            let p = gv_path(g, v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={HASH}")}),
            );
        }
        return Ok(json_ok(&json!({"paths": paths})));
    }
    let (g, v, kinds) = group_versions()
        .into_iter()
        .find(|(g, v, _)| gv_path(g, v) == rest)
        .ok_or_else(|| ApiError::no_route(&format!("/openapi/v3/{rest}")))?;
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for k in kinds {
        let i = k.info();
        let gvk = json!({"group": g, "version": v, "kind": i.kind});
        let param = json!([{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}]);
        let base = format!("/{}/namespaces/{{namespace}}/{}", gv_path(g, v), i.plural);
        let op = |action: &str| json!({"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": action, "parameters": param, "responses": {}});
        paths.insert(base.clone(), json!({"post": op("post")}));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"put": op("put"), "patch": op("patch")}),
        );
        let schema_name = format!(
            "{}.{}.{}",
            if g.is_empty() { "io.k8s.api.core" } else { g },
            v,
            i.kind
        );
        schemas.insert(
            schema_name,
            json!({"type": "object", "x-kubernetes-group-version-kind": [gvk], "x-kubernetes-preserve-unknown-fields": true}),
        );
    }
    Ok(json_ok(&json!({
        "openapi": "3.0.0",
        "info": {"title": "corral", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_group_documents() {
        assert!(serve("").is_ok());
        assert!(serve("apis/kubevirt.io/v1").is_ok());
        assert!(serve("apis/autoscaling/v1").is_ok());
        assert!(serve("apis/nope/v1").is_err());
    }
}
