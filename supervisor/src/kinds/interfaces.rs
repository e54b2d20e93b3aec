//! A VMI's network interfaces (`spec.networks[]` + `domain.devices.interfaces[]`), checked and
//! resolved the way KubeVirt's admission does for what corral runs: one `pod` network, bound with
//! `masquerade`. Everything else KubeVirt knows (bridge, SR-IOV, passt, binding plugins, Multus)
//! is refused with a 422 naming the field, so a manifest never silently loses a NIC.
//!
//! Defaults as KubeVirt's: with no `interfaces` and no `networks`, a pod network named `default`
//! is attached unless `autoattachPodInterface: false`; its binding is masquerade (corral's
//! cluster-wide `defaultNetworkInterface`, a KubeVirt setting).

use serde_json::Value;

use super::validation::{FieldError, Invalid, check_dns1123_label, shown};
use super::vmi::{DomainSpec, Interface, Network, VmiSpec};
use crate::network::{Port, Protocol, parse_mac};

/// One NIC the VM gets, on the pod network with the masquerade binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedInterface {
    /// The interface (and network) name.
    pub name: String,
    /// `macAddress`, if given.
    pub mac: Option<[u8; 6]>,
    /// `ports`: the allow-list forwarded from the pod IP to the guest; empty = every port.
    pub ports: Vec<Port>,
}

/// The bindings KubeVirt has; only the first is implemented.
const BINDINGS: [&str; 5] = ["masquerade", "bridge", "sriov", "passt", "binding"];

/// Checks networks and interfaces, recording problems in `inv`; returns the NICs to create.
pub fn resolve(
    spec: &VmiSpec,
    domain: &DomainSpec,
    path: &str,
    inv: &mut Invalid,
) -> Vec<ResolvedInterface> {
    let nets: Vec<Network> = spec.networks.clone().unwrap_or_default();
    let devices = domain.devices.as_ref();
    let ifaces: Vec<Interface> = devices
        .and_then(|d| d.interfaces.clone())
        .unwrap_or_default();
    let autoattach = devices
        .and_then(|d| d.autoattach_pod_interface)
        .unwrap_or(true);
    if nets.is_empty() && ifaces.is_empty() {
        return if autoattach {
            vec![ResolvedInterface {
                name: "default".into(),
                mac: None,
                ports: Vec::new(),
            }]
        } else {
            Vec::new()
        };
    }
    let nets_path = format!("{path}.networks");
    let ifaces_path = format!("{path}.domain.devices.interfaces");
    let net_names: Vec<String> = nets.iter().map(|n| n.name.clone()).collect();
    let iface_names: Vec<String> = ifaces.iter().map(|i| i.name.clone()).collect();
    check_names(inv, &nets_path, &net_names);
    check_names(inv, &ifaces_path, &iface_names);
    let mut pods = 0;
    for (i, n) in nets.iter().enumerate() {
        let field = format!("{nets_path}[{i}]");
        match (n.pod.is_some(), n.multus.is_some()) {
            (true, false) => pods += 1,
            (_, true) => inv.push(FieldError::unsupported(
                format!("{field}.multus"),
                "corral has one network, the pod network: use \"pod: {}\"",
            )),
            (false, false) => inv.push(FieldError::required(
                field.clone(),
                "a network source (pod) is required",
            )),
        }
        if !iface_names.contains(&n.name) {
            inv.push(FieldError::invalid(
                format!("{field}.name"),
                shown(&n.name),
                "every network must be used by an interface of the same name",
            ));
        }
    }
    if pods > 1 {
        inv.push(FieldError::invalid(
            nets_path.clone(),
            pods,
            "more than one pod network is not allowed",
        ));
    }
    let mut out = Vec::new();
    for (i, iface) in ifaces.iter().enumerate() {
        let field = format!("{ifaces_path}[{i}]");
        if !net_names.contains(&iface.name) {
            inv.push(FieldError::invalid(
                format!("{field}.name"),
                shown(&iface.name),
                "interface must reference a network with the same name",
            ));
        }
        let set: Vec<&str> = BINDINGS
            .iter()
            .copied()
            .filter(|b| binding(iface, b).is_some())
            .collect();
        match set.as_slice() {
            [] | ["masquerade"] => {}
            [other] => inv.push(FieldError::unsupported(
                format!("{field}.{other}"),
                &format!(
                    "the {other} binding is not implemented by corral: use \"masquerade: {{}}\""
                ),
            )),
            _ => inv.push(FieldError::invalid(
                field.clone(),
                set.join(", "),
                "only one binding method may be set",
            )),
        }
        if let Some(m) = iface.model.as_deref().filter(|m| *m != "virtio") {
            inv.push(FieldError::unsupported(
                format!("{field}.model"),
                &format!("{m:?}: corral's NICs are virtio"),
            ));
        }
        let mac = match iface.mac_address.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let text = s.replace('-', ":");
                let multicast = text
                    .get(..2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
                    .is_some_and(|b| b & 1 == 1);
                match parse_mac(&text) {
                    Some(m) => Some(m),
                    None => {
                        inv.push(FieldError::invalid(
                            format!("{field}.macAddress"),
                            shown(s),
                            if multicast {
                                "a multicast address cannot be a NIC's"
                            } else {
                                "must be six hex octets, e.g. 02:00:00:00:00:01"
                            },
                        ));
                        None
                    }
                }
            }
        };
        let ports = ports(iface.ports.as_ref(), &format!("{field}.ports"), inv);
        out.push(ResolvedInterface {
            name: iface.name.clone(),
            mac,
            ports,
        });
    }
    out
}

fn binding<'a>(iface: &'a Interface, name: &str) -> Option<&'a Value> {
    match name {
        "masquerade" => iface.masquerade.as_ref(),
        "bridge" => iface.bridge.as_ref(),
        "sriov" => iface.sriov.as_ref(),
        "passt" => iface.passt.as_ref(),
        _ => iface.binding.as_ref(),
    }
}

/// `ports[]`: `{name?, protocol? (TCP|UDP, default TCP), port (1..=65535)}`.
fn ports(v: Option<&Value>, path: &str, inv: &mut Invalid) -> Vec<Port> {
    let Some(v) = v else { return Vec::new() };
    let Some(list) = v.as_array() else {
        inv.push(FieldError::invalid(path, "", "must be a list"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let field = format!("{path}[{i}]");
        let protocol = match p.get("protocol").and_then(Value::as_str) {
            None | Some("TCP") => Protocol::Tcp,
            Some("UDP") => Protocol::Udp,
            Some(other) => {
                inv.push(FieldError::unsupported(
                    format!("{field}.protocol"),
                    &format!("{}: supported values: \"TCP\", \"UDP\"", shown(other)),
                ));
                continue;
            }
        };
        match p.get("port").and_then(Value::as_i64) {
            Some(n @ 1..=65535) => out.push(Port {
                port: n as u16,
                protocol,
            }),
            Some(n) => inv.push(FieldError::invalid(
                format!("{field}.port"),
                n,
                "must be between 1 and 65535, inclusive",
            )),
            None => inv.push(FieldError::required(
                format!("{field}.port"),
                "port is required",
            )),
        }
    }
    out
}

/// Names of a list (`networks`, `interfaces`): required, DNS-1123 labels, unique.
fn check_names(inv: &mut Invalid, list: &str, names: &[String]) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, n) in names.iter().enumerate() {
        let field = format!("{list}[{i}].name");
        if n.is_empty() {
            inv.push(FieldError::required(field, "name is required"));
        } else if check_dns1123_label(inv, &field, n) && !seen.insert(n.as_str()) {
            inv.push(FieldError {
                reason: "FieldValueDuplicate",
                field,
                message: format!("Duplicate value: \"{n}\""),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(spec: Value) -> Result<Vec<ResolvedInterface>, Vec<String>> {
        let spec: VmiSpec = serde_json::from_value(spec).unwrap();
        let mut inv = Invalid::default();
        let domain = spec.domain.clone().unwrap_or_default();
        let out = resolve(&spec, &domain, "spec", &mut inv);
        match inv.into_result() {
            Ok(()) => Ok(out),
            Err(e) => Err(e.causes.iter().map(|c| c.to_string()).collect()),
        }
    }

    fn with(iface: Value, net: Value) -> Value {
        json!({"domain": {"devices": {"interfaces": [iface]}}, "networks": [net]})
    }

    #[test]
    fn the_seed_and_the_defaults() {
        let seed = run(with(
            json!({"name": "default", "masquerade": {}}),
            json!({"name": "default", "pod": {}}),
        ))
        .unwrap();
        assert_eq!(
            seed,
            vec![ResolvedInterface {
                name: "default".into(),
                mac: None,
                ports: vec![]
            }]
        );
        // Nothing given: KubeVirt attaches the pod network.
        assert_eq!(run(json!({"domain": {}})).unwrap(), seed);
        assert_eq!(
            run(json!({"domain": {"devices": {"autoattachPodInterface": false}}})).unwrap(),
            vec![]
        );
        // No binding named: the cluster default (masquerade).
        assert_eq!(
            run(with(
                json!({"name": "default"}),
                json!({"name": "default", "pod": {}})
            ))
            .unwrap(),
            seed
        );
    }

    #[test]
    fn macs_and_ports() {
        let got = run(with(
            json!({"name": "n", "masquerade": {}, "macAddress": "02-AA-00-00-00-01",
                   "ports": [{"port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
            json!({"name": "n", "pod": {}}),
        ))
        .unwrap();
        assert_eq!(got[0].mac, Some([2, 0xaa, 0, 0, 0, 1]));
        assert_eq!(
            got[0].ports,
            vec![
                Port {
                    port: 80,
                    protocol: Protocol::Tcp
                },
                Port {
                    port: 53,
                    protocol: Protocol::Udp
                }
            ]
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                with(
                    json!({"name": "d", "bridge": {}}),
                    json!({"name": "d", "pod": {}}),
                ),
                "spec.domain.devices.interfaces[0].bridge",
            ),
            (
                with(
                    json!({"name": "d", "sriov": {}}),
                    json!({"name": "d", "pod": {}}),
                ),
                "interfaces[0].sriov",
            ),
            (
                with(
                    json!({"name": "d", "masquerade": {}, "bridge": {}}),
                    json!({"name": "d", "pod": {}}),
                ),
                "only one binding",
            ),
            (
                with(
                    json!({"name": "d", "masquerade": {}}),
                    json!({"name": "d", "multus": {"networkName": "x"}}),
                ),
                "spec.networks[0].multus",
            ),
            (
                with(
                    json!({"name": "d", "masquerade": {}, "macAddress": "zz"}),
                    json!({"name": "d", "pod": {}}),
                ),
                "macAddress",
            ),
            (
                with(
                    json!({"name": "d", "masquerade": {}, "macAddress": "01:00:00:00:00:01"}),
                    json!({"name": "d", "pod": {}}),
                ),
                "multicast",
            ),
            (
                with(
                    json!({"name": "d", "masquerade": {}, "ports": [{"port": 0}]}),
                    json!({"name": "d", "pod": {}}),
                ),
                "ports[0].port",
            ),
            (
                with(
                    json!({"name": "d", "masquerade": {}, "ports": [{"port": 1, "protocol": "SCTP"}]}),
                    json!({"name": "d", "pod": {}}),
                ),
                "ports[0].protocol",
            ),
            (
                with(
                    json!({"name": "d", "masquerade": {}, "model": "e1000"}),
                    json!({"name": "d", "pod": {}}),
                ),
                "model",
            ),
            (
                with(
                    json!({"name": "a", "masquerade": {}}),
                    json!({"name": "b", "pod": {}}),
                ),
                "must reference a network",
            ),
            (
                json!({"domain": {"devices": {"interfaces": [
                        {"name": "a", "masquerade": {}}, {"name": "b", "masquerade": {}}]}},
                       "networks": [{"name": "a", "pod": {}}, {"name": "b", "pod": {}}]}),
                "more than one pod network",
            ),
        ];
        for (spec, needle) in cases {
            let errs = run(spec.clone()).expect_err(needle);
            assert!(
                errs.iter().any(|e| e.contains(needle)),
                "{needle}: {errs:?}"
            );
        }
    }
}
