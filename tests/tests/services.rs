//! Services end to end: a real daemon with pod networking, the real CNI plugins and `nft`, two
//! test-guest VMIs of the seed set, all inside a network namespace this test makes (no traffic
//! leaves it). `corral expose` and kubectl create Services; requests through the NodePort on
//! 127.0.0.1 and through the ClusterIP spread over the VMIs, follow scale-down, and nothing is
//! left in nftables when the Services go.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use corral_tests::daemon::{Daemon, wait_for};
use corral_tests::lab::{seed_set, testguest_registry};
use serde_json::{Value, json};

const RS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets";
const SET: &str = "lab05-cirros-replicaset";
const VMI: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
const SVC: &str = "/api/v1/namespaces/default/services";
const EP: &str = "/api/v1/namespaces/default/endpoints";
const BOOT: Duration = Duration::from_secs(90);

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One HTTP GET on a new connection; the answering VMI's name (from "hello from NAME").
fn hello(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    out.lines()
        .find_map(|l| l.strip_prefix("hello from "))
        .map(str::to_string)
        .ok_or_else(|| format!("no greeting in {out:?}"))
}

/// `n` requests (each its own connection) → answers per VMI; panics on a failed request.
fn spread(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    for i in 0..n {
        assert!(
            Instant::now() < deadline,
            "{n} requests to {addr} took over 240 s"
        );
        let name = hello(addr).unwrap_or_else(|e| {
            let rules = Command::new("nft")
                .args(["list", "ruleset"])
                .output()
                .unwrap();
            panic!(
                "request {i} to {addr}: {e}\n{}",
                String::from_utf8_lossy(&rules.stdout)
            )
        });
        *by.entry(name).or_default() += 1;
    }
    by
}

fn ready_vmis(d: &Daemon, n: usize) -> Vec<Value> {
    wait_for(BOOT, &format!("{n} ready VMIs"), || {
        let vs: Vec<Value> = d.get_json(VMI)["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["metadata"]["deletionTimestamp"].is_null())
            .cloned()
            .collect();
        let ready = |v: &Value| {
            v["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        };
        (vs.len() == n && vs.iter().all(ready)).then_some(vs)
    })
}

/// Ready endpoint IPs of Service `name`.
fn endpoint_ips(d: &Daemon, name: &str) -> Vec<String> {
    let r = d.req("GET", &format!("{EP}/{name}"), None, b"");
    if r.status != 200 {
        return Vec::new();
    }
    let ep: Value = serde_json::from_slice(&r.body).unwrap();
    let mut ips: Vec<String> = ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .map(|a| a["ip"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    ips
}

struct Kubectl {
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn new(d: &Daemon, addr: &str, token: &Path) -> Kubectl {
        let ca = d.state_dir.join("tls/ca.crt");
        let out = d.cli(&[
            "kubeconfig",
            "--server",
            addr,
            "--token-file",
            token.to_str().unwrap(),
            "--ca-file",
            ca.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kubeconfig = d.dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, &out.stdout).unwrap();
        Kubectl {
            kubeconfig,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let bin = corral_tests::bin::workspace().join(".venv/bin/kubectl");
        assert!(
            bin.exists(),
            "{} missing: run .ci/install-deps.sh",
            bin.display()
        );
        let o = Command::new(bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

#[test]
fn services_spread_connections_over_ready_vmis_and_leave_nothing_behind() {
    corral_tests::netns::enter_private().expect("a private network namespace (needs root)");
    let tmp = tempfile::tempdir().unwrap();
    let cni = corral_tests::netns::CniDir::new();
    let conf_dir = cni.conf_dir();
    let token = tmp.path().join("token");
    std::fs::write(&token, "services-test-token\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("127.0.0.1:{port}");
    let reg = testguest_registry();
    let d = Daemon::start_networked(&[
        "--insecure-registry",
        &reg.addr,
        "--cni-conf-dir",
        conf_dir.to_str().unwrap(),
        "--listen",
        &api,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    // No Service yet: no table of ours.
    assert!(!sh("nft", &["list", "tables"]).contains("corral_services"));
    let r = d.req(
        "POST",
        RS,
        Some("application/yaml"),
        seed_set(&reg).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let vs = ready_vmis(&d, 2);
    // Ready means the VM runs (KubeVirt's meaning without a probe): wait for each guest's HTTP
    // server at its pod IP (DHCP first).
    for v in &vs {
        let ip = v["status"]["interfaces"][0]["ipAddress"].as_str().unwrap();
        let addr: SocketAddr = format!("{ip}:80").parse().unwrap();
        wait_for(BOOT, &format!("the guest at {ip}"), || hello(addr).ok());
    }
    let mut names: Vec<String> = vs
        .iter()
        .map(|v| v["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();

    // virtctl's way: a NodePort Service selecting the set's matchLabels.
    let out = d.cli(&[
        "expose",
        "vmirs",
        SET,
        "--name",
        "lab",
        "--port",
        "80",
        "--target-port",
        "80",
        "--type",
        "NodePort",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Service lab successfully exposed for virtualmachineinstancereplicaset"
    );
    let svc = d.get_json(&format!("{SVC}/lab"));
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(cluster_ip.starts_with("10.9"), "{svc}");
    assert_eq!(
        svc["spec"]["selector"],
        json!({"kubevirt.io/domain": "lab05-cirros"}),
        "{svc}"
    );
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;
    assert!((30000..=32767).contains(&node_port), "{svc}");
    let t0 = Instant::now();
    wait_for(Duration::from_secs(5), "two endpoints", || {
        (endpoint_ips(&d, "lab").len() == 2).then_some(())
    });
    eprintln!("endpoints after {:?}", t0.elapsed());

    // ≥ 1000 connections through the node port on loopback: an even share each (round robin).
    let node: SocketAddr = format!("127.0.0.1:{node_port}").parse().unwrap();
    let t0 = Instant::now();
    let by = spread(node, 1000);
    eprintln!(
        "1000 requests via the node port in {:?}: {by:?}",
        t0.elapsed()
    );
    assert_eq!(by.keys().cloned().collect::<Vec<_>>(), names, "{by:?}");
    for (name, n) in &by {
        assert!((450..=550).contains(n), "{name} got {n} of 1000: {by:?}");
    }

    // Through the cluster IP (the host reaches it by its default route, as with kube-proxy).
    sh("ip", &["route", "add", "default", "dev", "corral0"]);
    let vip: SocketAddr = format!("{cluster_ip}:80").parse().unwrap();
    let by = spread(vip, 40);
    assert_eq!(by.keys().cloned().collect::<Vec<_>>(), names, "{by:?}");

    // corral's CLI prints the same columns as kubectl.
    let out = d.cli(&["get", "svc"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.contains(&format!("80:{node_port}/TCP")), "{text}");
    let out = d.cli(&["get", "svc", "lab", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["spec"]["ports"][0]["nodePort"], node_port);
    let out = d.cli(&["get", "endpoints", "lab"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(":80,"),
        "{out:?}"
    );

    // kubectl sees the Service and its endpoints; apply of a second Service works.
    let k = Kubectl::new(&d, &api, &token);
    let out = k.ok(&["get", "svc", "lab"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..5],
        [
            "lab",
            "NodePort",
            cluster_ip.as_str(),
            "<none>",
            &format!("80:{node_port}/TCP")
        ],
        "{out}"
    );
    let out = k.ok(&["get", "endpoints", "lab"]);
    let ips = endpoint_ips(&d, "lab");
    assert!(
        out.contains(&format!("{}:80,{}:80", ips[0], ips[1])),
        "{out}"
    );
    let out = k.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=lab",
    ]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert!(row[0].starts_with("lab-"), "{out}");
    assert_eq!(
        row[1..4],
        ["IPv4", "80", &format!("{},{}", ips[0], ips[1])],
        "{out}"
    );
    let described = k.ok(&["describe", "svc", "lab"]);
    for want in [
        "Type:                     NodePort".to_string(),
        format!("IP:                       {cluster_ip}"),
        format!("NodePort:                 <unset>  {node_port}/TCP"),
        format!("Endpoints:                {}:80,{}:80", ips[0], ips[1]),
        "Session Affinity:         None".to_string(),
    ] {
        assert!(
            described.contains(&want),
            "missing {want:?} in\n{described}"
        );
    }
    let manifest = tmp.path().join("svc.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: sticky\nspec:\n  selector:\n    kubevirt.io/domain: lab05-cirros\n  sessionAffinity: ClientIP\n  ports:\n  - name: http\n    port: 8080\n    targetPort: 80\n",
    )
    .unwrap();
    assert!(
        k.ok(&["apply", "-f", manifest.to_str().unwrap()])
            .contains("service/sticky created")
    );
    // A second apply with a changed port goes through kubectl's strategic merge patch.
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("port: 8080", "port: 8081");
    std::fs::write(&manifest, text).unwrap();
    assert!(
        k.ok(&["apply", "-f", manifest.to_str().unwrap()])
            .contains("service/sticky configured")
    );
    let sticky = d.get_json(&format!("{SVC}/sticky"));
    assert_eq!(
        sticky["spec"]["ports"],
        json!([{"name": "http", "port": 8081, "protocol": "TCP", "targetPort": 80}]),
        "{sticky}"
    );
    // ClientIP affinity: one client, one VMI.
    let sticky_ip = sticky["spec"]["clusterIP"].as_str().unwrap();
    wait_for(Duration::from_secs(5), "sticky's endpoints", || {
        (endpoint_ips(&d, "sticky").len() == 2).then_some(())
    });
    // The proxy loads the rules before it writes Endpoints, but the port change of the second
    // apply changes no endpoint: nothing in the API says when the proxy has seen it (as with
    // kube-proxy), so the first request may need another try (ARP for the bare VIP fails first).
    let sticky_addr: SocketAddr = format!("{sticky_ip}:8081").parse().unwrap();
    let t0 = Instant::now();
    wait_for(Duration::from_secs(10), "sticky's new port", || {
        hello(sticky_addr).ok()
    });
    eprintln!("first answer on the new port after {:?}", t0.elapsed());
    let by = spread(sticky_addr, 20);
    assert_eq!(by.len(), 1, "ClientIP affinity: {by:?}");

    // Refusals name the field.
    let r = d.req(
        "POST",
        SVC,
        Some("application/json"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("spec.type"), "{}", r.text());

    // Scale down: the remaining VMI takes every connection.
    let r = d.req(
        "PATCH",
        &format!("{RS}/{SET}/scale"),
        Some("application/merge-patch+json"),
        json!({"spec": {"replicas": 1}}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let left = ready_vmis(&d, 1);
    let survivor = left[0]["metadata"]["name"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(10), "one endpoint", || {
        (endpoint_ips(&d, "lab").len() == 1).then_some(())
    });
    let by = spread(node, 50);
    assert_eq!(by, BTreeMap::from([(survivor, 50)]));

    // The Services go (`corral delete svc --all`), and with them their endpoints and every rule.
    let out = d.cli(&["delete", "svc", "--all"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for name in ["lab", "sticky"] {
        assert!(
            text.contains(&format!(
                "service \"{name}\" deleted from default namespace"
            )),
            "{text}"
        );
    }
    let out = d.cli(&["delete", "svc", "--all"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "No resources found\n");
    wait_for(Duration::from_secs(5), "no table left", || {
        (!sh("nft", &["list", "tables"]).contains("corral_services")).then_some(())
    });
    wait_for(
        Duration::from_secs(5),
        "no endpoints or slices left",
        || {
            (d.get_json(EP)["items"] == json!([])
                && d.get_json("/apis/discovery.k8s.io/v1/endpointslices")["items"] == json!([]))
            .then_some(())
        },
    );
    assert!(hello(node).is_err(), "the node port must be closed");
}

/// A VMI of the seed template with `labels` and the given probes.
fn probed_vmi(reg: &corral_tests::registry::Registry, name: &str, probes: Value) -> Value {
    let set: Value = serde_norway::from_str(&seed_set(reg)).unwrap();
    let mut vmi = set["spec"]["template"].clone();
    vmi["apiVersion"] = json!("kubevirt.io/v1");
    vmi["kind"] = json!("VirtualMachineInstance");
    vmi["metadata"] = json!({"name": name, "namespace": "default", "labels": {"app": "probed"}});
    for (k, v) in probes.as_object().unwrap() {
        vmi["spec"][k] = v.clone();
    }
    vmi
}

fn condition(v: &Value, t: &str) -> Option<Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .cloned()
}

#[test]
fn readiness_probes_gate_endpoints_and_failed_liveness_probes_replace_vmis() {
    corral_tests::netns::enter_private().expect("a private network namespace (needs root)");
    let cni = corral_tests::netns::CniDir::new();
    let conf_dir = cni.conf_dir();
    let reg = testguest_registry();
    let d = Daemon::start_networked(&[
        "--insecure-registry",
        &reg.addr,
        "--cni-conf-dir",
        conf_dir.to_str().unwrap(),
    ]);
    // Two VMIs behind one Service: "good" answers its readiness probe, "bad" gets 404s.
    for (name, path) in [("good", "/"), ("bad", "/missing")] {
        let vmi = probed_vmi(
            &reg,
            name,
            json!({"readinessProbe": {"httpGet": {"port": 80, "path": path}, "periodSeconds": 1}}),
        );
        let r = d.req(
            "POST",
            VMI,
            Some("application/json"),
            vmi.to_string().as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = d.req(
        "POST",
        SVC,
        Some("application/json"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probed"},
            "spec": {"type": "NodePort", "selector": {"app": "probed"}, "ports": [{"port": 80}]}})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let node_port = d.get_json(&format!("{SVC}/probed"))["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap();
    let t0 = Instant::now();
    let settled = |good: &Value, bad: &Value| {
        let ready = |v: &Value| condition(v, "Ready").map(|c| c["status"] == "True");
        ready(good) == Some(true)
            && bad["status"]["phase"] == "Running"
            && condition(bad, "Ready").is_some_and(|c| {
                c["reason"] == "ReadinessProbeFailed"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("statuscode: 404"))
            })
    };
    loop {
        let good = d.get_json(&format!("{VMI}/good"));
        let bad = d.get_json(&format!("{VMI}/bad"));
        if settled(&good, &bad) {
            break;
        }
        assert!(
            t0.elapsed() < BOOT,
            "good Ready, bad not: good {}\nbad {}\n{}",
            good["status"],
            bad["status"],
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("good Ready {:?} after creation", t0.elapsed());
    // Endpoints: good ready, bad not; every connection goes to good.
    let ep = d.get_json(&format!("{EP}/probed"));
    let good_ip =
        d.get_json(&format!("{VMI}/good"))["status"]["interfaces"][0]["ipAddress"].clone();
    let bad_ip = d.get_json(&format!("{VMI}/bad"))["status"]["interfaces"][0]["ipAddress"].clone();
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], good_ip, "{ep}");
    assert_eq!(
        ep["subsets"][0]["notReadyAddresses"][0]["ip"], bad_ip,
        "{ep}"
    );
    let node: SocketAddr = format!("127.0.0.1:{node_port}").parse().unwrap();
    assert_eq!(
        spread(node, 100),
        BTreeMap::from([("good".to_string(), 100)])
    );
    // The kubelet's event for the failures.
    let events = d.get_json("/api/v1/namespaces/default/events");
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "Unhealthy"
                && e["involvedObject"]["name"] == "bad"
                && e["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Readiness probe failed: HTTP probe failed with statuscode: 404")),
        "{events}"
    );

    // A set whose VMIs fail their liveness probe (nothing listens on port 9): each is stopped,
    // Failed, and replaced.
    let mut set: Value = serde_norway::from_str(&seed_set(&reg)).unwrap();
    set["spec"]["replicas"] = json!(1);
    set["spec"]["template"]["spec"]["livenessProbe"] =
        json!({"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2});
    let r = d.req(
        "POST",
        RS,
        Some("application/json"),
        set.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let mine = |v: &&Value| v["metadata"]["labels"]["kubevirt.io/domain"] == "lab05-cirros";
    let first = wait_for(BOOT, "the set's first VMI", || {
        d.get_json(VMI)["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(mine)
            .map(|v| v["metadata"]["name"].as_str().unwrap().to_string())
    });
    wait_for(Duration::from_secs(60), "a replacement", || {
        let items = d.get_json(VMI)["items"].as_array().unwrap().clone();
        let failed = items.iter().any(|v| {
            v["metadata"]["name"] == first.as_str()
                && v["status"]["phase"] == "Failed"
                && v["status"]["reason"] == "LivenessProbeFailed"
        });
        let gone = !items
            .iter()
            .any(|v| v["metadata"]["name"] == first.as_str());
        let other = items
            .iter()
            .filter(mine)
            .any(|v| v["metadata"]["name"] != first.as_str());
        ((failed || gone) && other).then_some(())
    });
    let events = d.get_json("/api/v1/namespaces/default/events");
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "Unhealthy"
                && e["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Liveness probe failed: dial tcp")),
        "{events}"
    );
}
