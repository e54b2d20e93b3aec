use super::*;
use crate::kinds::{AdmitError, FieldValidation, Kind, admit};

fn svc(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": spec})
}

fn causes(obj: &Value) -> Vec<String> {
    match admit(Kind::Service, obj, FieldValidation::Strict) {
        Ok(_) => Vec::new(),
        Err(AdmitError::Invalid(i)) => i.causes.iter().map(ToString::to_string).collect(),
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn what_virtctl_expose_writes_is_admitted() {
    let s = svc(
        json!({"type": "NodePort", "selector": {"kubevirt.io/vmReplicaSet": "lab"},
        "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}),
    );
    assert_eq!(causes(&s), Vec::<String>::new());
}

#[test]
fn unsupported_fields_and_values_are_refused_by_name() {
    let table: &[(Value, &str)] = &[
        (
            json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
            "spec.type: Unsupported value: \"LoadBalancer\"",
        ),
        (
            json!({"type": "ExternalName", "externalName": "x.example"}),
            "spec.externalName: Forbidden",
        ),
        (
            json!({"ports": [{"port": 53, "protocol": "UDP"}]}),
            "spec.ports[0].protocol: Unsupported value: \"UDP\"",
        ),
        (
            json!({"ports": [{"port": 0}]}),
            "spec.ports[0].port: Invalid value: 0",
        ),
        (
            json!({"ports": [{"port": 80}, {"port": 81}]}),
            "spec.ports[0].name: Required value",
        ),
        (
            json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}),
            "spec.ports[1].name: Duplicate value",
        ),
        (
            json!({"ports": [{"port": 80, "targetPort": "Not_A_Name"}]}),
            "spec.ports[0].targetPort: Invalid value",
        ),
        (
            json!({"ports": [{"port": 80, "nodePort": 30080}]}),
            "spec.ports[0].nodePort: Forbidden",
        ),
        (json!({"ports": []}), "spec.ports: Required value"),
        (
            json!({"externalIPs": ["192.0.2.7"], "ports": [{"port": 80}]}),
            "spec.externalIPs: Forbidden",
        ),
        (
            json!({"sessionAffinity": "Sticky", "ports": [{"port": 80}]}),
            "spec.sessionAffinity: Unsupported value",
        ),
        (
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}, "ports": [{"port": 80}]}),
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0",
        ),
        (
            json!({"clusterIP": "None", "type": "NodePort", "ports": [{"port": 80}]}),
            "spec.clusterIP: Invalid value: \"None\"",
        ),
        (
            json!({"clusterIP": "10.96.0.300", "ports": [{"port": 80}]}),
            "spec.clusterIP: Invalid value",
        ),
        (
            json!({"ipFamilies": ["IPv6"], "ports": [{"port": 80}]}),
            "spec.ipFamilies[0]: Unsupported value: \"IPv6\"",
        ),
        (
            json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
            "spec.externalTrafficPolicy: Invalid value",
        ),
    ];
    for (spec, want) in table {
        let got = causes(&svc(spec.clone()));
        assert!(
            got.iter().any(|c| c.starts_with(want)),
            "{spec}: want {want:?}, got {got:?}"
        );
    }
    let mut bad_name = svc(json!({"ports": [{"port": 80}]}));
    bad_name["metadata"]["name"] = json!("a.b");
    assert!(causes(&bad_name)[0].starts_with("metadata.name"));
    // Headless services need no ports.
    assert!(causes(&svc(json!({"clusterIP": "None", "selector": {"a": "b"}}))).is_empty());
}

fn range() -> Cidr {
    Cidr::parse("10.96.0.0/28").unwrap()
}

#[test]
fn cidrs_parse_and_hold_their_hosts() {
    assert!(
        Cidr::parse("10.96.0.1/12")
            .unwrap_err()
            .contains("host bits")
    );
    assert!(Cidr::parse("10.96.0.0").is_err());
    assert!(Cidr::parse("10.96.0.0/31").is_err());
    let r = range();
    assert!(r.holds("10.96.0.1".parse().unwrap()));
    assert!(!r.holds("10.96.0.0".parse().unwrap()));
    assert!(!r.holds("10.96.0.15".parse().unwrap()));
    assert!(!r.holds("10.96.0.16".parse().unwrap()));
    assert_eq!(r.hosts().count(), 14);
}

#[test]
fn creation_defaults_and_allocates_the_lowest_free_address_and_port() {
    let mut taken = Taken::default();
    taken.ips.insert("10.96.0.1".parse().unwrap());
    taken.node_ports.insert(30000);
    let mut s = svc(
        json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81, "targetPort": "web"}]}),
    );
    default_and_allocate(&mut s, None, range(), &taken).unwrap();
    let spec = &s["spec"];
    assert_eq!(spec["clusterIP"], "10.96.0.2");
    assert_eq!(spec["clusterIPs"], json!(["10.96.0.2"]));
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["externalTrafficPolicy"], "Cluster");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(
        spec["ports"][0],
        json!({"name": "a", "port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": 30001})
    );
    assert_eq!(spec["ports"][1]["nodePort"], 30002);
    assert_eq!(spec["ports"][1]["targetPort"], "web");
    assert_eq!(s["status"], json!({"loadBalancer": {}}));

    let mut aff = svc(json!({"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}));
    default_and_allocate(&mut aff, None, range(), &taken).unwrap();
    assert_eq!(
        aff["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );
    assert!(aff["spec"]["ports"][0].get("nodePort").is_none());
}

#[test]
fn asked_addresses_and_ports_must_be_free_and_in_range() {
    let mut taken = Taken::default();
    taken.ips.insert("10.96.0.5".parse().unwrap());
    taken.node_ports.insert(30080);
    let err = |spec: Value| {
        let mut s = svc(spec);
        default_and_allocate(&mut s, None, range(), &taken)
            .unwrap_err()
            .to_string()
    };
    assert!(
        err(json!({"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}))
            .contains("provided IP is already allocated")
    );
    assert!(
        err(json!({"clusterIP": "10.97.0.5", "ports": [{"port": 80}]}))
            .contains("The range of valid IPs is 10.96.0.0/28")
    );
    assert!(
        err(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))
            .contains("provided port is already allocated")
    );
    assert!(
        err(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]}))
            .contains("The range of valid ports is 30000-32767")
    );
    let mut ok = svc(
        json!({"clusterIP": "10.96.0.9", "type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}),
    );
    default_and_allocate(&mut ok, None, range(), &taken).unwrap();
    assert_eq!(ok["spec"]["clusterIP"], "10.96.0.9");
    assert_eq!(ok["spec"]["ports"][0]["nodePort"], 31000);
    let full = Taken {
        ips: range().hosts().collect(),
        ..Default::default()
    };
    let mut s = svc(json!({"ports": [{"port": 80}]}));
    assert!(
        default_and_allocate(&mut s, None, range(), &full)
            .unwrap_err()
            .to_string()
            .contains("is full")
    );
}

#[test]
fn updates_keep_the_address_and_node_ports_and_clear_them_for_cluster_ip() {
    let taken = Taken::default();
    let mut old = svc(json!({"type": "NodePort", "ports": [{"port": 80}]}));
    default_and_allocate(&mut old, None, range(), &taken).unwrap();
    let mut new = svc(json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}));
    new["spec"]["ports"][0]["name"] = json!("http");
    new["spec"]["ports"][1]["name"] = json!("https");
    default_and_allocate(&mut new, Some(&old), range(), &taken).unwrap();
    assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
    assert_eq!(
        new["spec"]["ports"][0]["nodePort"],
        old["spec"]["ports"][0]["nodePort"]
    );
    assert_ne!(
        new["spec"]["ports"][1]["nodePort"],
        old["spec"]["ports"][0]["nodePort"]
    );
    let mut moved = svc(json!({"clusterIP": "10.96.0.7", "ports": [{"port": 80}]}));
    let e = default_and_allocate(&mut moved, Some(&old), range(), &taken).unwrap_err();
    assert!(e.to_string().contains("field is immutable"), "{e}");
    let mut to_cluster_ip = svc(json!({"type": "ClusterIP", "ports": [{"port": 80}]}));
    default_and_allocate(&mut to_cluster_ip, Some(&old), range(), &taken).unwrap();
    assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
}

#[test]
fn endpoints_are_checked() {
    let ep = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "nope"}], "ports": [{"port": 0, "protocol": "UDP"}]}]});
    let err = admit(Kind::Endpoints, &ep, FieldValidation::Strict)
        .unwrap_err()
        .to_string();
    for want in [
        "subsets[0].addresses[0].ip",
        "subsets[0].ports[0].port",
        "subsets[0].ports[0].protocol",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    let ok = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.244.0.2"}], "ports": [{"port": 80}]}]});
    admit(Kind::Endpoints, &ok, FieldValidation::Strict).unwrap();
}
