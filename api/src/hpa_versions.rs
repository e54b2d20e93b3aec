//! HorizontalPodAutoscaler objects are stored once and served as `autoscaling/v1` or `v2`.

use serde_json::{Value, json};

/// The stored HPA as served at `version`.
pub fn to_version(obj: &Value, version: &str) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(format!("autoscaling/{version}"));
    o
}
