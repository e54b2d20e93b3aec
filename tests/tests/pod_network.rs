//! Pod networks end to end: a real daemon with the real CNI plugins (bridge + host-local), `ip`,
//! `nft` and test-guest VMs, all inside a network namespace this test makes (the daemon, the
//! registry and every client inherit it; nothing touches the host's network).
//!
//! The seed lab's set: each VMI gets its own pod (namespace, pod IP on the node bridge, KubeVirt's
//! masquerade layout inside), `status.interfaces` shows the pod IP before the guest runs, IPs are
//! distinct and survive a daemon `kill -9`, and scale cycles leave no namespace, veth, tap or
//! IPAM lease behind.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use corral_tests::daemon::{Daemon, wait_for};
use corral_tests::lab::{seed_set, testguest_registry};
use serde_json::{Value, json};

const RS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets";
const SET: &str = "lab05-cirros-replicaset";
const VMI: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
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

/// `cmd args` run inside the network namespace bound at `netns`.
fn sh_in(netns: &Path, cmd: &str, args: &[&str]) -> String {
    let mut all = vec![format!("--net={}", netns.display()), cmd.to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    sh("nsenter", &all)
}

/// `curl` from the test's namespace, bounded in time and retries (the guest may still be
/// getting its lease).
fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "--retry",
            "20",
            "--retry-connrefused",
            "--retry-delay",
            "1",
            "--retry-max-time",
            "60",
            url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Complete console lines of VM `uid` that contain `needle`.
fn console_lines(d: &Daemon, uid: &str, needle: &str) -> Vec<String> {
    let log = std::fs::read_to_string(d.run_dir.join("vms").join(uid).join("console.log"))
        .unwrap_or_default();
    // Complete lines only: the guest may be in the middle of one.
    log[..log.rfind('\n').map_or(0, |i| i + 1)]
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Types `net get TARGET` on the VMI's serial console and returns the guest's answer line.
fn net_get(d: &Daemon, name: &str, uid: &str, target: &str) -> String {
    const ANSWER: &str = "testguest: net get ";
    let before = console_lines(d, uid, ANSWER).len();
    let r = d.req(
        "POST",
        &format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/{name}/consoleinput?waitMillis=0"
        ),
        Some("text/plain"),
        format!("net get {target}\n").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for(
        Duration::from_secs(30),
        &format!("{name}: net get {target}"),
        || {
            let lines = console_lines(d, uid, ANSWER);
            (lines.len() > before).then(|| lines[before].clone())
        },
    )
}

/// A round trip through the guest's TCP echo port; None if the connection fails.
fn echo(ip: &str) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::new(ip.parse().unwrap(), 7);
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"corral").ok()?;
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).ok()?;
    Some(buf.to_vec())
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
            v["status"]["phase"] == "Running"
                && v["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        };
        (vs.len() == n && vs.iter().all(ready)).then_some(vs)
    })
}

fn scale(d: &Daemon, n: i64) {
    let r = d.req(
        "PATCH",
        &format!("{RS}/{SET}/scale"),
        Some("application/merge-patch+json"),
        json!({"spec": {"replicas": n}}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// (uid, pod IP, MAC) of each VMI, from `status.interfaces`.
fn addresses(vs: &[Value]) -> Vec<(String, String, String)> {
    vs.iter()
        .map(|v| {
            let i = &v["status"]["interfaces"][0];
            assert_eq!(i["name"], "default", "{v}");
            assert_eq!(i["ipAddresses"][0], i["ipAddress"], "{v}");
            (
                v["metadata"]["uid"].as_str().unwrap().to_string(),
                i["ipAddress"].as_str().expect("an IP").to_string(),
                i["mac"].as_str().expect("a MAC").to_string(),
            )
        })
        .collect()
}

/// What a leak would leave: pod namespaces, links of the node, host-local leases.
#[derive(Debug, PartialEq, Eq)]
struct Leftovers {
    netns: usize,
    links: BTreeSet<String>,
    leases: usize,
}

fn leftovers(d: &Daemon, ipam: &Path) -> Leftovers {
    let netns = std::fs::read_dir(d.run_dir.join("netns"))
        .map(|r| r.count())
        .unwrap_or(0);
    let links = sh("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect();
    // host-local keeps one file per leased IP, plus its lock and last-reserved bookkeeping.
    let leases = std::fs::read_dir(ipam.join("corral"))
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count()
        })
        .unwrap_or(0);
    Leftovers {
        netns,
        links,
        leases,
    }
}

#[test]
fn every_vmi_gets_a_pod_ip_kept_across_restarts_and_nothing_leaks() {
    corral_tests::netns::enter_private().expect("a private network namespace (needs root)");
    let cni = corral_tests::netns::CniDir::new();
    let conf_dir = cni.conf_dir();
    let ipam = cni.ipam_dir();
    let reg = testguest_registry();
    let mut d = Daemon::start_networked(&[
        "--insecure-registry",
        &reg.addr,
        "--cni-conf-dir",
        conf_dir.to_str().unwrap(),
    ]);
    let before = leftovers(&d, &ipam);

    let r = d.req(
        "POST",
        RS,
        Some("application/yaml"),
        seed_set(&reg).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let vs = ready_vmis(&d, 2);
    let addrs = addresses(&vs);
    let ips: BTreeSet<&str> = addrs.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(ips.len(), 2, "distinct pod IPs: {addrs:?}");
    for (uid, ip, mac) in &addrs {
        assert!(ip.starts_with("10.244.0."), "{ip}");
        assert!(mac.starts_with("02:"), "{mac}");
        // KubeVirt's masquerade layout inside the pod.
        let pod = d.run_dir.join("netns").join(uid);
        let addr = sh_in(&pod, "ip", &["-o", "-4", "addr", "show"]);
        assert!(addr.contains(&format!("eth0    inet {ip}/24")), "{addr}");
        assert!(addr.contains("k6t-eth0    inet 10.0.2.1/24"), "{addr}");
        let tap = sh_in(&pod, "ip", &["-o", "link", "show", "tap0"]);
        assert!(tap.contains("master k6t-eth0"), "{tap}");
        let nat = sh_in(&pod, "nft", &["list", "table", "ip", "nat"]);
        assert!(
            nat.contains("dnat to 10.0.2.2") && nat.contains("masquerade"),
            "{nat}"
        );
    }
    // The guests: DHCP from the pod's server, then the host reaches each guest's HTTP server at
    // its pod IP (through the pod's dnat).
    for (v, (uid, ip, _)) in vs.iter().zip(&addrs) {
        let name = v["metadata"]["name"].as_str().unwrap();
        let lease = wait_for(BOOT, &format!("{name}'s DHCP lease"), || {
            console_lines(&d, uid, "testguest: net dhcp ").pop()
        });
        assert!(
            lease.contains("ip=10.0.2.2/24 gw=10.0.2.1"),
            "{name}: {lease}"
        );
        let body = curl(&format!("http://{ip}/"));
        assert_eq!(body.trim(), format!("hello from {name}"), "{name} via {ip}");
        assert_eq!(echo(ip).as_deref(), Some(&b"corral"[..]), "echo via {ip}");
    }
    // Guest-initiated traffic: each guest fetches from a server on the node (the test's
    // namespace, at the node bridge's gateway address, through the pod's masquerade) and from the
    // other VMI's pod IP.
    let node = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = node.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut peers = BTreeSet::new();
        for _ in 0..2 {
            let (mut c, peer) = node.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 512];
            let _ = c.read(&mut buf);
            c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nfrom the node")
                .unwrap();
            peers.insert(peer.ip().to_string());
        }
        peers
    });
    for (i, v) in vs.iter().enumerate() {
        let name = v["metadata"]["name"].as_str().unwrap();
        let uid = &addrs[i].0;
        let reply = net_get(&d, name, uid, &format!("10.244.0.1:{port}/x"));
        assert!(
            reply.contains("status=200") && reply.contains("body=from the node"),
            "{name} -> node: {reply}"
        );
        let (other, other_ip) = (
            vs[1 - i]["metadata"]["name"].as_str().unwrap(),
            &addrs[1 - i].1,
        );
        let reply = net_get(&d, name, uid, other_ip);
        assert!(
            reply.contains(&format!("body=hello from {other}")),
            "{name} -> {other} at {other_ip}: {reply}"
        );
    }
    // The node saw the guests as their pod IPs (masqueraded from 10.0.2.2).
    let peers = server.join().unwrap();
    assert_eq!(
        peers,
        ips.iter().map(|s| s.to_string()).collect(),
        "sources seen by the node"
    );
    let pids = d.vmm_pids();

    // kill -9 of the daemon: the VMs and their pods stay, the IPs do not change.
    d.kill9();
    d.restart();
    let vs = ready_vmis(&d, 2);
    let mut again = addresses(&vs);
    let mut addrs_sorted = addrs.clone();
    again.sort();
    addrs_sorted.sort();
    assert_eq!(again, addrs_sorted, "pod IPs after a daemon restart");
    assert_eq!(d.vmm_pids(), pids, "re-adopted, not restarted");
    for (_, ip, _) in &addrs {
        assert!(curl(&format!("http://{ip}/")).starts_with("hello from "));
    }

    // Scale cycles: every pod is torn down again (CNI DEL frees its IP).
    let t0 = Instant::now();
    let mut made = 2;
    for _ in 0..8 {
        scale(&d, 0);
        wait_for(BOOT, "no VMIs", || {
            d.get_json(VMI)["items"]
                .as_array()
                .unwrap()
                .is_empty()
                .then_some(())
        });
        scale(&d, 6);
        ready_vmis(&d, 6);
        made += 6;
    }
    scale(&d, 0);
    let after = wait_for(BOOT, "every pod torn down", || {
        let l = leftovers(&d, &ipam);
        (d.get_json(VMI)["items"].as_array().unwrap().is_empty() && l.netns == 0 && l.leases == 0)
            .then_some(l)
    });
    eprintln!(
        "pod_network: {made} VMIs with pods created and deleted in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // The node bridge made by the first ADD stays (as with any CNI bridge network).
    let mut links = after.links.clone();
    links.remove("corral0");
    assert_eq!(
        (after.netns, links, after.leases),
        (0, before.links.clone(), 0),
        "leftovers after {made} pods"
    );
}

/// `ports` is an allow-list: only the listed ports of the pod IP reach the guest.
#[test]
fn only_listed_ports_reach_the_guest() {
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
    // The seed set's VMI template, as a VMI whose interface lists port 80 only.
    let set: Value = serde_norway::from_str(&seed_set(&reg)).unwrap();
    let mut vmi = set["spec"]["template"].clone();
    vmi["apiVersion"] = json!("kubevirt.io/v1");
    vmi["kind"] = json!("VirtualMachineInstance");
    vmi["metadata"] = json!({"name": "web", "namespace": "default"});
    vmi["spec"]["domain"]["devices"]["interfaces"][0]["ports"] =
        json!([{"name": "http", "port": 80}]);
    let r = d.req(
        "POST",
        VMI,
        Some("application/json"),
        vmi.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let vs = ready_vmis(&d, 1);
    let (_, ip, _) = addresses(&vs).remove(0);
    assert_eq!(curl(&format!("http://{ip}/")).trim(), "hello from web");
    assert_eq!(
        echo(&ip),
        None,
        "port 7 is not listed, so it must not reach the guest"
    );
}
