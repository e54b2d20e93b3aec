//! KubeVirt's masquerade NAT table, as an `nft -f -` script (loaded atomically in one batch).

use super::{Port, Protocol};
use std::fmt::Write;

/// The guest's address behind the masquerade (always the same, as in KubeVirt).
pub const GUEST_IP: &str = "10.0.2.2";
/// The gateway on `k6t-eth0`.
pub const GATEWAY_IP: &str = "10.0.2.1";

/// The script replacing `table ip nat` with KubeVirt's layout. `ports` empty: every port of the
/// pod IP goes to the guest; otherwise only those (1:1, no translation).
pub fn masquerade_script(pod_if: &str, bridge: &str, ports: &[Port]) -> String {
    let mut s = String::new();
    // "add + delete" makes the script replace a previous table in the same atomic batch.
    let _ = writeln!(s, "add table ip nat\ndelete table ip nat\ntable ip nat {{");
    let chain = |s: &mut String, name: &str, hook: Option<(&str, i32)>, rules: &[String]| {
        let _ = writeln!(s, "  chain {name} {{");
        if let Some((hook, prio)) = hook {
            let _ = writeln!(
                s,
                "    type nat hook {hook} priority {prio}; policy accept;"
            );
        }
        for r in rules {
            let _ = writeln!(s, "    {r}");
        }
        let _ = writeln!(s, "  }}");
    };
    let matches: Vec<String> = if ports.is_empty() {
        vec![String::new()]
    } else {
        ports
            .iter()
            .map(|p| format!("{} dport {} ", p.protocol.nft_name(), p.port))
            .collect()
    };
    chain(
        &mut s,
        "prerouting",
        Some(("prerouting", -100)),
        &[format!(
            "iifname \"{pod_if}\" counter jump KUBEVIRT_PREINBOUND"
        )],
    );
    chain(&mut s, "input", Some(("input", 100)), &[]);
    let output: Vec<String> = matches
        .iter()
        .map(|m| format!("ip daddr 127.0.0.1 {m}counter dnat to {GUEST_IP}"))
        .collect();
    chain(&mut s, "output", Some(("output", -100)), &output);
    chain(
        &mut s,
        "postrouting",
        Some(("postrouting", 100)),
        &[
            format!("ip saddr {GUEST_IP} counter masquerade"),
            format!("oifname \"{bridge}\" counter jump KUBEVIRT_POSTINBOUND"),
        ],
    );
    let pre: Vec<String> = matches
        .iter()
        .map(|m| format!("{m}counter dnat to {GUEST_IP}"))
        .collect();
    chain(&mut s, "KUBEVIRT_PREINBOUND", None, &pre);
    let post: Vec<String> = matches
        .iter()
        .map(|m| format!("{m}ip saddr 127.0.0.1 counter snat to {GATEWAY_IP}"))
        .collect();
    chain(&mut s, "KUBEVIRT_POSTINBOUND", None, &post);
    s.push_str("}\n");
    s
}

impl Protocol {
    fn nft_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ports_and_allow_list() {
        let all = masquerade_script("eth0", "k6t-eth0", &[]);
        for want in [
            "add table ip nat\ndelete table ip nat\ntable ip nat {",
            "type nat hook prerouting priority -100; policy accept;",
            "iifname \"eth0\" counter jump KUBEVIRT_PREINBOUND",
            "type nat hook input priority 100;",
            "ip daddr 127.0.0.1 counter dnat to 10.0.2.2",
            "ip saddr 10.0.2.2 counter masquerade",
            "oifname \"k6t-eth0\" counter jump KUBEVIRT_POSTINBOUND",
            "chain KUBEVIRT_PREINBOUND {\n    counter dnat to 10.0.2.2\n  }",
            "ip saddr 127.0.0.1 counter snat to 10.0.2.1",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let some = masquerade_script(
            "eth0",
            "k6t-eth0",
            &[
                Port {
                    port: 80,
                    protocol: Protocol::Tcp,
                },
                Port {
                    port: 53,
                    protocol: Protocol::Udp,
                },
            ],
        );
        for want in [
            "tcp dport 80 counter dnat to 10.0.2.2",
            "udp dport 53 counter dnat to 10.0.2.2",
            "ip daddr 127.0.0.1 tcp dport 80 counter dnat to 10.0.2.2",
            "tcp dport 80 ip saddr 127.0.0.1 counter snat to 10.0.2.1",
            "udp dport 53 ip saddr 127.0.0.1 counter snat to 10.0.2.1",
        ] {
            assert!(some.contains(want), "missing {want:?} in\n{some}");
        }
        assert!(
            !some.contains("    counter dnat to 10.0.2.2"),
            "allow-list must not dnat every port:\n{some}"
        );
    }
}
