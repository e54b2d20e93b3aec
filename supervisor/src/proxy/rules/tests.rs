use super::*;
use serde_json::json;

fn service(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn endpoints(name: &str, subsets: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "default"}, "subsets": subsets})
}

fn plan_of(svcs: &[Value], eps: &[Value]) -> Vec<PortPlan> {
    let s: Vec<&Value> = svcs.iter().collect();
    let e: BTreeMap<String, &Value> = eps
        .iter()
        .map(|e| (format!("default/{}", meta::name(e)), e))
        .collect();
    plan(&s, &e)
}

#[test]
fn ports_match_endpoint_ports_by_name() {
    let s = service(
        "web",
        json!({"clusterIP": "10.96.0.10", "type": "NodePort",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "echo", "port": 7, "nodePort": 30007}]}),
    );
    let e = endpoints(
        "web",
        json!([
        {"addresses": [{"ip": "10.244.0.3"}, {"ip": "10.244.0.2"}], "notReadyAddresses": [{"ip": "10.244.0.9"}],
         "ports": [{"name": "http", "port": 8080}, {"name": "echo", "port": 7}]}]),
    );
    let p = plan_of(&[s], &[e]);
    assert_eq!(p.len(), 2);
    let http = p.iter().find(|p| p.port == 80).unwrap();
    assert_eq!(http.chain, "svc-default-web-80");
    assert_eq!(http.node_port, Some(30080));
    assert_eq!(
        http.endpoints,
        [
            ("10.244.0.2".parse().unwrap(), 8080),
            ("10.244.0.3".parse().unwrap(), 8080)
        ]
    );
    assert_eq!(http.affinity, None);
    assert!(!http.keep_source);
}

#[test]
fn the_script_dispatches_balances_and_rejects() {
    let s = service(
        "web",
        json!({"clusterIP": "10.96.0.10", "type": "NodePort",
        "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    let idle = service(
        "idle",
        json!({"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}),
    );
    let e = endpoints(
        "web",
        json!([{"addresses": [{"ip": "10.244.0.2"}, {"ip": "10.244.0.3"}], "ports": [{"port": 8080}]}]),
    );
    let text = script(&plan_of(&[s, idle], &[e]));
    for want in [
        "add table ip corral_services\ndelete table ip corral_services\ntable ip corral_services {",
        "type nat hook prerouting priority -100; policy accept;\n    jump services",
        "type nat hook output priority -100; policy accept;\n    jump services",
        "meta mark & 0x4000 == 0x4000 meta mark set meta mark xor 0x4000 masquerade fully-random",
        "ip daddr 10.96.0.10 tcp dport 80 goto svc-default-web-80",
        "fib daddr type local tcp dport 30080 goto ext-svc-default-web-80",
        "chain ext-svc-default-web-80 {\n    jump mark-for-masquerade\n    goto svc-default-web-80\n  }",
        "numgen inc mod 2 vmap { 0 : goto ep-svc-default-web-80-0, 1 : goto ep-svc-default-web-80-1 }",
        "chain ep-svc-default-web-80-1 {\n    ip saddr 10.244.0.3 jump mark-for-masquerade\n    meta l4proto tcp dnat to 10.244.0.3:8080\n  }",
        "ip daddr 10.96.0.11 tcp dport 80 reject with tcp reset",
        "type filter hook output priority -110; policy accept;\n    ct state new jump no-endpoints",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("svc-default-idle-80 {"), "{text}");
    // Nothing planned: an empty table replaces the old one.
    let empty = script(&[]);
    assert!(empty.contains("chain services {\n  }"), "{empty}");
}

#[test]
fn client_ip_affinity_remembers_the_endpoint_per_client() {
    let s = service(
        "web",
        json!({"clusterIP": "10.96.0.10", "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}, "type": "NodePort",
        "externalTrafficPolicy": "Local", "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    let e = endpoints(
        "web",
        json!([{"addresses": [{"ip": "10.244.0.2"}], "ports": [{"port": 80}]}]),
    );
    let text = script(&plan_of(&[s], &[e]));
    for want in [
        "set aff-svc-default-web-80-0 {\n    type ipv4_addr; flags dynamic,timeout; timeout 60s;\n  }",
        "ip saddr @aff-svc-default-web-80-0 goto ep-svc-default-web-80-0",
        "update @aff-svc-default-web-80-0 { ip saddr }\n    meta l4proto tcp dnat to 10.244.0.2:80",
        "chain ext-svc-default-web-80 {\n    ip saddr 127.0.0.0/8 jump mark-for-masquerade\n    goto",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

/// The scripts are valid for the real `nft` (loaded in a throwaway network namespace, so the
/// host's rules are untouched): every feature at once, and the empty plan.
#[test]
fn scripts_load_into_nft() {
    use std::io::Write;
    let s = service(
        "web",
        json!({"clusterIP": "10.96.0.10", "type": "NodePort", "sessionAffinity": "ClientIP",
        "externalTrafficPolicy": "Local", "ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30081}]}),
    );
    let plain = service(
        "plain",
        json!({"clusterIP": "10.96.0.12", "ports": [{"port": 80}]}),
    );
    let idle = service(
        "idle",
        json!({"clusterIP": "10.96.0.11", "type": "NodePort", "ports": [{"port": 80, "nodePort": 30082}]}),
    );
    let e = endpoints(
        "web",
        json!([{"addresses": [{"ip": "10.244.0.2"}, {"ip": "10.244.0.3"}],
        "ports": [{"name": "a", "port": 8080}, {"name": "b", "port": 8081}]}]),
    );
    let p = endpoints(
        "plain",
        json!([{"addresses": [{"ip": "10.244.0.4"}], "ports": [{"port": 80}]}]),
    );
    for text in [script(&plan_of(&[s, plain, idle], &[e, p])), script(&[])] {
        let mut child = std::process::Command::new("unshare")
            .args(["-n", "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("unshare and nft (apt nftables util-linux)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft refused:\n{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
