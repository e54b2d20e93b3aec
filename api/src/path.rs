//! Request paths → what they address (pure; trailing slashes tolerated).

use supervisor::kinds::Kind;

/// A subresource of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Status,
    Scale,
}

/// What a path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    Livez,
    Version,
    Metrics,
    /// `/api`
    CoreVersions,
    /// `/api/v1`
    CoreResources,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/apis/{group}/{version}`
    GroupResources(String, String),
    /// `/openapi/v3` and `/openapi/v3/...`
    OpenApi(String),
    /// A collection or an object.
    Resource {
        kind: Kind,
        /// The version in the path (HPAs are served as autoscaling/v1 and v2).
        version: String,
        namespace: Option<String>,
        name: Option<String>,
        sub: Option<Sub>,
    },
    /// `metrics.k8s.io/v1beta1` pods or nodes.
    PodMetrics {
        namespace: Option<String>,
        name: Option<String>,
    },
    NodeMetrics {
        name: Option<String>,
    },
    /// KubeVirt's console subresource (WebSocket).
    Console {
        namespace: String,
        name: String,
    },
    /// corral's recent serial output of a VMI.
    ConsoleLog {
        namespace: String,
        name: String,
    },
    /// corral's `describe`-style events of an object are plain event lists (core v1 events).
    Unknown,
}

fn kind_for(group: &str, version: &str, plural: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| {
        let i = k.info();
        i.group == group
            && i.plural == plural
            && (i.version == version || (*k == Kind::Hpa && version == "v2"))
    })
}

fn resource(group: &str, version: &str, namespace: Option<&str>, rest: &[&str]) -> Route {
    let Some((plural, rest)) = rest.split_first() else {
        return Route::Unknown;
    };
    if group == "metrics.k8s.io" && version == "v1beta1" {
        return match (*plural, rest) {
            ("pods", []) => Route::PodMetrics {
                namespace: namespace.map(str::to_string),
                name: None,
            },
            ("pods", [n]) if namespace.is_some() => Route::PodMetrics {
                namespace: namespace.map(str::to_string),
                name: Some(n.to_string()),
            },
            ("nodes", []) if namespace.is_none() => Route::NodeMetrics { name: None },
            ("nodes", [n]) if namespace.is_none() => Route::NodeMetrics {
                name: Some(n.to_string()),
            },
            _ => Route::Unknown,
        };
    }
    if group == "subresources.kubevirt.io" {
        return match (namespace, *plural, rest) {
            (Some(ns), "virtualmachineinstances", [name, "console"]) => Route::Console {
                namespace: ns.into(),
                name: name.to_string(),
            },
            (Some(ns), "virtualmachineinstances", [name, "consolelog"]) => Route::ConsoleLog {
                namespace: ns.into(),
                name: name.to_string(),
            },
            _ => Route::Unknown,
        };
    }
    let Some(kind) = kind_for(group, version, plural) else {
        return Route::Unknown;
    };
    let (name, sub) = match rest {
        [] => (None, None),
        [n] => (Some(n.to_string()), None),
        [n, "status"] => (Some(n.to_string()), Some(Sub::Status)),
        [n, "scale"] if kind == Kind::ReplicaSet => (Some(n.to_string()), Some(Sub::Scale)),
        _ => return Route::Unknown,
    };
    if namespace.is_none() && name.is_some() {
        return Route::Unknown; // all our kinds are namespaced
    }
    Route::Resource {
        kind,
        version: version.to_string(),
        namespace: namespace.map(str::to_string),
        name,
        sub,
    }
}

/// Parses a request path.
pub fn parse(path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["healthz", ..] => Route::Healthz,
        ["readyz", ..] => Route::Readyz,
        ["livez", ..] => Route::Livez,
        ["version"] => Route::Version,
        ["metrics"] => Route::Metrics,
        ["api"] => Route::CoreVersions,
        ["api", "v1"] => Route::CoreResources,
        ["api", "v1", "namespaces", ns, rest @ ..] => resource("", "v1", Some(ns), rest),
        ["api", "v1", rest @ ..] => resource("", "v1", None, rest),
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group(g.to_string()),
        ["apis", g, v] => Route::GroupResources(g.to_string(), v.to_string()),
        ["apis", g, v, "namespaces", ns, rest @ ..] => resource(g, v, Some(ns), rest),
        ["apis", g, v, rest @ ..] => resource(g, v, None, rest),
        ["openapi", "v3", rest @ ..] => Route::OpenApi(rest.join("/")),
        _ => Route::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(kind: Kind, ns: Option<&str>, name: Option<&str>, sub: Option<Sub>) -> Route {
        Route::Resource {
            kind,
            version: kind.info().version.to_string(),
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
            sub,
        }
    }

    #[test]
    fn paths_table() {
        let rs = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets";
        let cases = vec![
            ("/healthz", Route::Healthz),
            ("/version/", Route::Version),
            ("/api/v1/", Route::CoreResources),
            ("/apis", Route::Groups),
            (rs, res(Kind::ReplicaSet, Some("default"), None, None)),
            (
                &*Box::leak(format!("{rs}/x").into_boxed_str()),
                res(Kind::ReplicaSet, Some("default"), Some("x"), None),
            ),
            (
                &*Box::leak(format!("{rs}/x/scale").into_boxed_str()),
                res(
                    Kind::ReplicaSet,
                    Some("default"),
                    Some("x"),
                    Some(Sub::Scale),
                ),
            ),
            (
                &*Box::leak(format!("{rs}/x/status/").into_boxed_str()),
                res(
                    Kind::ReplicaSet,
                    Some("default"),
                    Some("x"),
                    Some(Sub::Status),
                ),
            ),
            (
                "/apis/kubevirt.io/v1/virtualmachineinstances",
                res(Kind::Vmi, None, None, None),
            ),
            (
                "/apis/kubevirt.io/v1/namespaces/a/virtualmachineinstances/v/scale",
                Route::Unknown,
            ),
            (
                "/api/v1/namespaces/a/events",
                res(Kind::Event, Some("a"), None, None),
            ),
            (
                "/apis/autoscaling/v1/namespaces/a/horizontalpodautoscalers/h",
                res(Kind::Hpa, Some("a"), Some("h"), None),
            ),
            (
                "/apis/subresources.kubevirt.io/v1/namespaces/a/virtualmachineinstances/v/console",
                Route::Console {
                    namespace: "a".into(),
                    name: "v".into(),
                },
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/namespaces/a/pods",
                Route::PodMetrics {
                    namespace: Some("a".into()),
                    name: None,
                },
            ),
            ("/apis/nope/v1/namespaces/a/things", Route::Unknown),
        ];
        for (p, want) in cases {
            assert_eq!(parse(p), want, "{p}");
        }
        match parse("/apis/autoscaling/v2/namespaces/a/horizontalpodautoscalers") {
            Route::Resource {
                kind: Kind::Hpa,
                version,
                ..
            } => assert_eq!(version, "v2"),
            other => panic!("{other:?}"),
        }
    }
}
