//! The endpoints controller's planning half: which VMIs back a Service, on which ports. Pure
//! functions of stored objects, table-tested below.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::kinds::Kind;
use crate::kinds::services::{ServicePort, TargetPort};
use crate::meta;

/// The pod IP of a VMI (its first interface's, as KubeVirt reports it), if it has one.
pub fn pod_ip(vmi: &Value) -> Option<&str> {
    vmi.pointer("/status/interfaces/0/ipAddress")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn ready(vmi: &Value) -> bool {
    crate::controller::status::condition(vmi, "Ready") == Some(true)
}

/// The VMI's named ports (`spec.domain.devices.interfaces[].ports[]` with a name).
fn named_port(vmi: &Value, name: &str) -> Option<u16> {
    vmi.pointer("/spec/domain/devices/interfaces")
        .and_then(Value::as_array)?
        .iter()
        .flat_map(|i| {
            i.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("port").and_then(Value::as_u64))
        .map(|p| p as u16)
}

/// A VMI selected by a Service.
struct Member<'a> {
    vmi: &'a Value,
    ip: &'a str,
    /// (port name, target port) of each service port the VMI resolves.
    ports: Vec<(String, u16)>,
    ready: bool,
    terminating: bool,
}

impl Member<'_> {
    fn target_ref(&self) -> Value {
        json!({
            "kind": Kind::Vmi.info().kind,
            "apiVersion": Kind::Vmi.api_version(),
            "namespace": meta::namespace(self.vmi),
            "name": meta::name(self.vmi),
            "uid": meta::uid(self.vmi),
        })
    }
}

/// The VMIs `service` selects that have a pod IP, with their resolved ports. `None` for a
/// Service without a selector (its endpoints belong to the user).
fn members<'a>(
    service: &Value,
    vmis: impl IntoIterator<Item = &'a Value>,
) -> Option<Vec<Member<'a>>> {
    let selector: BTreeMap<String, String> =
        serde_json::from_value(service.pointer("/spec/selector")?.clone()).ok()?;
    if selector.is_empty() {
        return None;
    }
    let ports: Vec<ServicePort> = service
        .pointer("/spec/ports")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default();
    let publish_all = service
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut out = Vec::new();
    for vmi in vmis {
        let labels = meta::labels(vmi);
        if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let Some(ip) = pod_ip(vmi) else { continue };
        let resolved: Vec<(String, u16)> = ports
            .iter()
            .filter_map(|p| {
                let n = match p.target() {
                    TargetPort::Number(n) => Some(n),
                    TargetPort::Name(name) => named_port(vmi, &name),
                }?;
                Some((p.name.clone().unwrap_or_default(), n))
            })
            .collect();
        if resolved.is_empty() && !ports.is_empty() {
            continue;
        }
        let terminating = meta::is_deleting(vmi);
        out.push(Member {
            vmi,
            ip,
            ports: resolved,
            ready: !terminating && (publish_all || ready(vmi)),
            terminating,
        });
    }
    out.sort_by(|a, b| a.ip.cmp(b.ip));
    Some(out)
}

/// Ports as Endpoints carry them (`name` omitted when empty) or, with `always_named`, as
/// EndpointSlices do (`name` always present, `""` for an unnamed port, as clients such as
/// `kubectl describe` dereference it).
fn port_list(ports: &[(String, u16)], always_named: bool) -> Value {
    json!(
        ports
            .iter()
            .map(|(name, port)| {
                let mut p = json!({"port": port, "protocol": "TCP"});
                if always_named || !name.is_empty() {
                    p["name"] = json!(name);
                }
                p
            })
            .collect::<Vec<_>>()
    )
}

/// The `subsets` of the Endpoints of `service` given the VMIs of its namespace: VMIs matching the
/// selector with a pod IP; Ready ones in `addresses`, others in `notReadyAddresses` (or all in
/// `addresses` with `publishNotReadyAddresses`); VMIs being deleted are left out. VMIs with the
/// same resolved ports share a subset. `None` for a Service without a selector.
pub fn subsets<'a>(service: &Value, vmis: impl IntoIterator<Item = &'a Value>) -> Option<Value> {
    // Resolved ports → (ready addresses, not-ready addresses).
    type Addresses = (Vec<Value>, Vec<Value>);
    let mut groups: BTreeMap<Vec<(String, u16)>, Addresses> = BTreeMap::new();
    for m in members(service, vmis)? {
        if m.terminating {
            continue;
        }
        let address =
            json!({"ip": m.ip, "nodeName": crate::host::node_name(), "targetRef": m.target_ref()});
        let g = groups.entry(m.ports.clone()).or_default();
        if m.ready {
            g.0.push(address);
        } else {
            g.1.push(address);
        }
    }
    let subsets: Vec<Value> = groups
        .into_iter()
        .map(|(ports, (ok, not))| {
            let mut s = serde_json::Map::new();
            if !ok.is_empty() {
                s.insert("addresses".into(), json!(ok));
            }
            if !not.is_empty() {
                s.insert("notReadyAddresses".into(), json!(not));
            }
            s.insert("ports".into(), port_list(&ports, false));
            Value::Object(s)
        })
        .collect();
    Some(json!(subsets))
}

/// Label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label naming a slice's manager.
pub const SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`SLICE_MANAGED_BY`].
pub const SLICE_MANAGER: &str = "corral-endpointslice-controller";

/// The EndpointSlices of `service` (discovery.k8s.io/v1, as Kubernetes' EndpointSlice controller
/// writes them): one per set of resolved ports, named `<service>-<hash>` (stable), with each
/// VMI's `ready`/`serving`/`terminating` conditions. `None` for a Service without a selector.
pub fn slices<'a>(
    service: &Value,
    vmis: impl IntoIterator<Item = &'a Value>,
) -> Option<Vec<Value>> {
    let mut groups: BTreeMap<Vec<(String, u16)>, Vec<Value>> = BTreeMap::new();
    for m in members(service, vmis)? {
        groups.entry(m.ports.clone()).or_default().push(json!({
            "addresses": [m.ip],
            "conditions": {"ready": m.ready, "serving": !m.terminating || ready(m.vmi), "terminating": m.terminating},
            "nodeName": crate::host::node_name(),
            "targetRef": m.target_ref(),
        }));
    }
    if groups.is_empty() {
        groups.insert(Vec::new(), Vec::new());
    }
    let (ns, name) = (meta::namespace(service), meta::name(service));
    let mut labels = meta::labels(service);
    labels.insert(SERVICE_NAME.into(), name.into());
    labels.insert(SLICE_MANAGED_BY.into(), SLICE_MANAGER.into());
    Some(
        groups
            .into_iter()
            .map(|(ports, endpoints)| {
                let h = crate::names::short_hash(&format!("{ns}/{name}/{ports:?}"));
                json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {"name": format!("{name}-{h}"), "namespace": ns, "labels": labels},
                    "addressType": "IPv4",
                    "endpoints": endpoints,
                    "ports": port_list(&ports, true),
                })
            })
            .collect(),
    )
}

/// The Endpoints object for `service` with `subsets` (same name and namespace, the Service's
/// labels, as the Kubernetes endpoints controller writes it).
pub fn endpoints_object(service: &Value, subsets: Value) -> Value {
    let mut labels = meta::labels(service);
    labels.insert(
        "endpoints.kubernetes.io/managed-by".into(),
        "corral-endpoints-controller".into(),
    );
    let mut o = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": meta::name(service),
            "namespace": meta::namespace(service),
            "labels": labels,
        },
    });
    if subsets.as_array().is_some_and(|a| !a.is_empty()) {
        o["subsets"] = subsets;
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi(name: &str, ip: Option<&str>, ready: bool, labels: Value) -> Value {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"), "labels": labels},
            "spec": {"domain": {"devices": {"interfaces": [
                {"name": "default", "masquerade": {}, "ports": [{"name": "web", "port": 8080}]}]}}},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        if let Some(ip) = ip {
            v["status"]["interfaces"] = json!([{"name": "default", "ipAddress": ip}]);
        }
        v
    }

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "labels": {"team": "a"}}, "spec": spec})
    }

    fn ips(s: &Value, list: &str) -> Vec<String> {
        s[list]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a["ip"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn ready_vmis_with_an_ip_are_addresses_and_others_are_not() {
        let app = json!({"app": "lab"});
        let mut deleting = vmi("d", Some("10.244.0.9"), true, app.clone());
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-05T00:00:00Z");
        let vmis = [
            vmi("b", Some("10.244.0.3"), true, app.clone()),
            vmi("a", Some("10.244.0.2"), true, app.clone()),
            vmi("c", Some("10.244.0.4"), false, app.clone()),
            vmi("no-ip", None, true, app.clone()),
            vmi("other", Some("10.244.0.5"), true, json!({"app": "x"})),
            deleting,
        ];
        let s =
            svc(json!({"selector": {"app": "lab"}, "ports": [{"port": 80, "targetPort": 8080}]}));
        let subsets = subsets(&s, vmis.iter()).unwrap();
        assert_eq!(subsets.as_array().unwrap().len(), 1, "{subsets}");
        assert_eq!(ips(&subsets[0], "addresses"), ["10.244.0.2", "10.244.0.3"]);
        assert_eq!(ips(&subsets[0], "notReadyAddresses"), ["10.244.0.4"]);
        assert_eq!(
            subsets[0]["ports"],
            json!([{"port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(subsets[0]["addresses"][0]["targetRef"]["name"], "a");

        let mut publish = s.clone();
        publish["spec"]["publishNotReadyAddresses"] = json!(true);
        let p = super::subsets(&publish, vmis.iter()).unwrap();
        assert_eq!(ips(&p[0], "addresses").len(), 3);
    }

    #[test]
    fn named_target_ports_resolve_per_vmi_and_selectorless_services_are_the_users() {
        let app = json!({"app": "lab"});
        let mut plain = vmi("p", Some("10.244.0.7"), true, app.clone());
        plain["spec"]["domain"]["devices"]["interfaces"][0]["ports"] = json!([]);
        let vmis = [vmi("n", Some("10.244.0.6"), true, app), plain];
        let s = svc(json!({"selector": {"app": "lab"},
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}));
        let subsets = subsets(&s, vmis.iter()).unwrap();
        assert_eq!(subsets.as_array().unwrap().len(), 1, "{subsets}");
        assert_eq!(ips(&subsets[0], "addresses"), ["10.244.0.6"]);
        assert_eq!(
            subsets[0]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert!(super::subsets(&svc(json!({"ports": [{"port": 80}]})), vmis.iter()).is_none());
        let e = endpoints_object(&s, json!([]));
        assert_eq!(e["metadata"]["name"], "web");
        assert_eq!(e["metadata"]["labels"]["team"], "a");
        assert!(e.get("subsets").is_none());
    }
}
