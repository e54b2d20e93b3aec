//! The Service data plane as one nftables table, `ip corral_services`, replaced atomically in one
//! `nft -f -` batch (the layout follows kube-proxy's nftables mode): a `services` dispatch chain
//! hooked at prerouting and output (dstnat), a chain per service port choosing an endpoint per
//! connection (`numgen inc`: round robin, or the client's last endpoint with ClientIP affinity),
//! a chain per endpoint doing the DNAT, masquerade for loopback sources (127.0.0.1 cannot leave
//! the host), hairpin and node ports, and a reject for service ports without endpoints. Pure: planned from Services and
//! Endpoints, table-tested below.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use serde_json::Value;

use crate::meta;

/// The table's name.
pub const TABLE: &str = "corral_services";
/// Packet mark asking for masquerade (kube-proxy's bit).
const MASQ_MARK: &str = "0x4000";

/// One service port, ready to be written as rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    /// `svc-<namespace>-<name>-<port>`: names its chains and sets.
    pub chain: String,
    /// The cluster IP (none for a headless Service).
    pub cluster_ip: Option<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Ready endpoints, in a stable order.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    /// ClientIP affinity timeout in seconds.
    pub affinity: Option<u32>,
    /// `externalTrafficPolicy: Local`: node-port clients keep their address (except loopback
    /// ones, which must be masqueraded to leave the host).
    pub keep_source: bool,
}

/// Plans every port of every Service from the stored Services and Endpoints
/// (`namespace/name` → Endpoints).
pub fn plan(services: &[&Value], endpoints: &BTreeMap<String, &Value>) -> Vec<PortPlan> {
    let mut out = Vec::new();
    for s in services {
        let (ns, name) = (meta::namespace(s), meta::name(s));
        let spec = &s["spec"];
        let cluster_ip = spec["clusterIP"].as_str().and_then(|ip| ip.parse().ok());
        let affinity = (spec["sessionAffinity"].as_str() == Some("ClientIP")).then(|| {
            spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(crate::kinds::services::AFFINITY_TIMEOUT as u64) as u32
        });
        let keep_source = spec["externalTrafficPolicy"].as_str() == Some("Local");
        let ep = endpoints.get(&format!("{ns}/{name}"));
        for p in spec["ports"].as_array().into_iter().flatten() {
            let Some(port) = p["port"].as_u64().map(|p| p as u16) else {
                continue;
            };
            let pname = p["name"].as_str().unwrap_or("");
            let mut eps: Vec<(Ipv4Addr, u16)> = Vec::new();
            for subset in ep
                .and_then(|e| e["subsets"].as_array())
                .into_iter()
                .flatten()
            {
                let Some(target) = subset["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|ep| ep["name"].as_str().unwrap_or("") == pname)
                    .and_then(|ep| ep["port"].as_u64())
                else {
                    continue;
                };
                for a in subset["addresses"].as_array().into_iter().flatten() {
                    if let Some(ip) = a["ip"].as_str().and_then(|ip| ip.parse().ok()) {
                        eps.push((ip, target as u16));
                    }
                }
            }
            eps.sort();
            eps.dedup();
            out.push(PortPlan {
                chain: format!("svc-{ns}-{name}-{port}"),
                cluster_ip,
                port,
                node_port: p["nodePort"].as_u64().map(|n| n as u16),
                endpoints: eps,
                affinity,
                keep_source,
            });
        }
    }
    out.sort_by(|a, b| a.chain.cmp(&b.chain));
    out
}

/// The `nft -f -` script replacing the table with `ports`' rules (an empty table when there are
/// none, so stale rules never outlive their Service).
pub fn script(ports: &[PortPlan]) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{"
    );
    let hook = |w: &mut String, name: &str, kind: &str, hook: &str, prio: &str, body: &str| {
        let _ = writeln!(
            w,
            "  chain {name} {{\n    type {kind} hook {hook} priority {prio}; policy accept;\n{body}  }}"
        );
    };
    hook(
        w,
        "nat-prerouting",
        "nat",
        "prerouting",
        "-100",
        "    jump services\n",
    );
    hook(
        w,
        "nat-output",
        "nat",
        "output",
        "-100",
        "    jump services\n",
    );
    hook(
        w,
        "nat-postrouting",
        "nat",
        "postrouting",
        "100",
        &format!(
            "    meta mark & {MASQ_MARK} == {MASQ_MARK} meta mark set meta mark xor {MASQ_MARK} masquerade fully-random\n"
        ),
    );
    let check = "    ct state new jump no-endpoints\n";
    hook(w, "filter-input", "filter", "input", "-110", check);
    hook(w, "filter-forward", "filter", "forward", "-110", check);
    hook(w, "filter-output", "filter", "output", "-110", check);
    let _ = writeln!(
        w,
        "  chain mark-for-masquerade {{\n    meta mark set meta mark | {MASQ_MARK}\n  }}"
    );
    let mut dispatch = String::new();
    let mut reject = String::new();
    let mut chains = String::new();
    let mut sets = String::new();
    for p in ports {
        let c = &p.chain;
        let matches: Vec<String> = p
            .cluster_ip
            .map(|ip| format!("ip daddr {ip} tcp dport {}", p.port))
            .into_iter()
            .chain(
                p.node_port
                    .map(|n| format!("fib daddr type local tcp dport {n}")),
            )
            .collect();
        if p.endpoints.is_empty() {
            for m in &matches {
                let _ = writeln!(reject, "    {m} reject with tcp reset");
            }
            continue;
        }
        if let Some(ip) = p.cluster_ip {
            let _ = writeln!(dispatch, "    ip daddr {ip} tcp dport {} goto {c}", p.port);
        }
        if let Some(n) = p.node_port {
            let _ = writeln!(
                dispatch,
                "    fib daddr type local tcp dport {n} goto ext-{c}"
            );
            let _ = writeln!(chains, "  chain ext-{c} {{");
            if p.keep_source {
                let _ = writeln!(chains, "    ip saddr 127.0.0.0/8 jump mark-for-masquerade");
            } else {
                let _ = writeln!(chains, "    jump mark-for-masquerade");
            }
            let _ = writeln!(chains, "    goto {c}\n  }}");
        }
        let _ = writeln!(chains, "  chain {c} {{");
        let _ = writeln!(chains, "    ip saddr 127.0.0.0/8 jump mark-for-masquerade");
        if p.affinity.is_some() {
            for i in 0..p.endpoints.len() {
                let _ = writeln!(chains, "    ip saddr @aff-{c}-{i} goto ep-{c}-{i}");
            }
        }
        let targets: Vec<String> = (0..p.endpoints.len())
            .map(|i| format!("{i} : goto ep-{c}-{i}"))
            .collect();
        let _ = writeln!(
            chains,
            "    numgen inc mod {} vmap {{ {} }}\n  }}",
            p.endpoints.len(),
            targets.join(", ")
        );
        for (i, (ip, port)) in p.endpoints.iter().enumerate() {
            let _ = writeln!(chains, "  chain ep-{c}-{i} {{");
            // Hairpin: an endpoint reaching itself through the service.
            let _ = writeln!(chains, "    ip saddr {ip} jump mark-for-masquerade");
            if let Some(t) = p.affinity {
                let _ = writeln!(chains, "    update @aff-{c}-{i} {{ ip saddr }}");
                let _ = writeln!(
                    sets,
                    "  set aff-{c}-{i} {{\n    type ipv4_addr; flags dynamic,timeout; timeout {t}s;\n  }}"
                );
            }
            let _ = writeln!(chains, "    meta l4proto tcp dnat to {ip}:{port}\n  }}");
        }
    }
    let _ = writeln!(w, "  chain services {{\n{dispatch}  }}");
    let _ = writeln!(w, "  chain no-endpoints {{\n{reject}  }}");
    w.push_str(&sets);
    w.push_str(&chains);
    w.push_str("}\n");
    s
}

#[cfg(test)]
mod tests;
