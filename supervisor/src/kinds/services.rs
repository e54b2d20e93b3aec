//! Core v1 `Service` and `Endpoints`: typed spec, validation and defaulting, and the allocation
//! of cluster IPs and node ports, as the Kubernetes API server does them for a single-stack IPv4
//! cluster. Types `ClusterIP` (with headless `None`) and `NodePort`, protocol TCP; every other
//! field that would change behaviour is refused with a 422 naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::validation::{FieldError, Invalid, check_dns1123_label, shown};
use crate::selector::{validate_key, validate_value};

/// Kubernetes' default NodePort range.
pub const NODE_PORTS: RangeInclusive<u16> = 30000..=32767;
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const AFFINITY_TIMEOUT: i64 = 10_800;

/// An IPv4 prefix, e.g. the service range `10.96.0.0/12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub len: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` (host bits must be zero).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 CIDR (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| (8..=30).contains(l))
            .ok_or_else(|| format!("{s:?}: the prefix length must be 8..=30"))?;
        let c = Cidr { base: ip, len };
        if u32::from(ip) & !c.mask() != 0 {
            return Err(format!("{s:?}: host bits are set"));
        }
        Ok(c)
    }

    fn mask(self) -> u32 {
        u32::MAX << (32 - u32::from(self.len))
    }

    /// Whether `ip` is a usable host address of the prefix (not the network or broadcast one).
    pub fn holds(self, ip: Ipv4Addr) -> bool {
        let (ip, base) = (u32::from(ip), u32::from(self.base));
        ip & self.mask() == base && ip != base && ip != base | !self.mask()
    }

    /// Usable host addresses, lowest first.
    fn hosts(self) -> impl Iterator<Item = Ipv4Addr> {
        let base = u32::from(self.base);
        (base + 1..base | !self.mask()).map(Ipv4Addr::from)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.len)
    }
}

/// `spec` of a Service, as sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub ports: Option<Vec<ServicePort>>,
    #[serde(default)]
    pub session_affinity: Option<String>,
    #[serde(default)]
    pub session_affinity_config: Option<Value>,
    #[serde(default)]
    pub ip_families: Option<Vec<String>>,
    #[serde(default)]
    pub ip_family_policy: Option<String>,
    #[serde(default)]
    pub internal_traffic_policy: Option<String>,
    #[serde(default)]
    pub external_traffic_policy: Option<String>,
    #[serde(default)]
    pub publish_not_ready_addresses: Option<bool>,
    // Accepted by Kubernetes, refused here when set (see `validate`).
    #[serde(default, rename = "externalIPs")]
    pub external_ips: Option<Value>,
    #[serde(default, rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<Value>,
    #[serde(default)]
    pub load_balancer_source_ranges: Option<Value>,
    #[serde(default)]
    pub load_balancer_class: Option<Value>,
    #[serde(default)]
    pub allocate_load_balancer_node_ports: Option<Value>,
    #[serde(default)]
    pub external_name: Option<Value>,
    #[serde(default)]
    pub health_check_node_port: Option<Value>,
    #[serde(default)]
    pub traffic_distribution: Option<Value>,
}

/// `spec.ports[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
    #[serde(default)]
    pub port: Option<i64>,
    /// An integer or an IANA service name (resolved against the VMI's `interfaces[].ports`).
    #[serde(default)]
    pub target_port: Option<Value>,
    #[serde(default)]
    pub node_port: Option<i64>,
}

/// A port's target: a number, or a name looked up in each endpoint's named ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// Whether `s` is an IANA_SVC_NAME (a named port): ≤ 15 characters, lowercase alphanumerics and
/// `-`, at least one letter, no leading, trailing or doubled `-`.
pub fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn one_of(inv: &mut Invalid, field: &str, v: &Option<String>, allowed: &[&str]) {
    if let Some(v) = v {
        if !allowed.contains(&v.as_str()) {
            let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
            inv.push(FieldError::unsupported(
                field,
                &format!("{}: supported values: {}", shown(v), list.join(", ")),
            ));
        }
    }
}

impl ServiceSpec {
    /// `spec.type`, defaulted.
    pub fn service_type(&self) -> &str {
        self.kind.as_deref().unwrap_or("ClusterIP")
    }

    /// Validates like the API server (plus corral's refusals); `spec` is the field prefix.
    pub fn validate(&self, inv: &mut Invalid) {
        let refuse = |inv: &mut Invalid, field: &str, v: &Option<Value>, why: &str| {
            let set = match v {
                None | Some(Value::Null) => false,
                Some(Value::Array(a)) => !a.is_empty(),
                Some(Value::String(s)) => !s.is_empty(),
                Some(_) => true,
            };
            if set {
                inv.push(FieldError::forbidden(format!("spec.{field}"), why));
            }
        };
        let single = "corral is a single node without load balancers or external addresses";
        refuse(inv, "externalIPs", &self.external_ips, single);
        refuse(inv, "loadBalancerIP", &self.load_balancer_ip, single);
        refuse(
            inv,
            "loadBalancerSourceRanges",
            &self.load_balancer_source_ranges,
            single,
        );
        refuse(inv, "loadBalancerClass", &self.load_balancer_class, single);
        refuse(
            inv,
            "allocateLoadBalancerNodePorts",
            &self.allocate_load_balancer_node_ports,
            single,
        );
        refuse(inv, "externalName", &self.external_name, single);
        refuse(
            inv,
            "healthCheckNodePort",
            &self.health_check_node_port,
            single,
        );
        refuse(
            inv,
            "trafficDistribution",
            &self.traffic_distribution,
            "not supported by corral",
        );
        let ty = self.service_type();
        if !["ClusterIP", "NodePort"].contains(&ty) {
            inv.push(FieldError::unsupported(
                "spec.type",
                &format!(
                    "{}: supported values: \"ClusterIP\", \"NodePort\" (corral has no load balancer or external names)",
                    shown(ty)
                ),
            ));
        }
        let headless = self.cluster_ip.as_deref() == Some("None");
        if let Some(ip) = self.cluster_ip.as_deref().filter(|s| !s.is_empty()) {
            if !headless && ip.parse::<Ipv4Addr>().is_err() {
                inv.push(FieldError::invalid(
                    "spec.clusterIP",
                    shown(ip),
                    "must be a valid IPv4 address, or \"None\" for a headless service",
                ));
            }
        }
        if headless && ty == "NodePort" {
            inv.push(FieldError::invalid(
                "spec.clusterIP",
                "\"None\"",
                "may not be set to 'None' for NodePort services",
            ));
        }
        if let (Some(ips), Some(ip)) = (&self.cluster_ips, &self.cluster_ip) {
            if ips.len() > 1 {
                inv.push(FieldError::invalid(
                    "spec.clusterIPs",
                    format!("{ips:?}"),
                    "corral is single-stack IPv4: at most one address",
                ));
            } else if ips.first().is_some_and(|f| f != ip) && !ip.is_empty() {
                inv.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    shown(&ips[0]),
                    "must match `clusterIP` when present",
                ));
            }
        }
        for (i, f) in self.ip_families.iter().flatten().enumerate() {
            if f != "IPv4" {
                inv.push(FieldError::unsupported(
                    format!("spec.ipFamilies[{i}]"),
                    &format!("{}: supported values: \"IPv4\"", shown(f)),
                ));
            }
        }
        one_of(
            inv,
            "spec.ipFamilyPolicy",
            &self.ip_family_policy,
            &["SingleStack", "PreferDualStack"],
        );
        one_of(
            inv,
            "spec.sessionAffinity",
            &self.session_affinity,
            &["None", "ClientIP"],
        );
        one_of(
            inv,
            "spec.internalTrafficPolicy",
            &self.internal_traffic_policy,
            &["Cluster", "Local"],
        );
        one_of(
            inv,
            "spec.externalTrafficPolicy",
            &self.external_traffic_policy,
            &["Cluster", "Local"],
        );
        if self.external_traffic_policy.is_some() && ty == "ClusterIP" {
            inv.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                shown(self.external_traffic_policy.as_deref().unwrap_or("")),
                "may only be set for externally-accessible services",
            ));
        }
        if let Some(cfg) = &self.session_affinity_config {
            let t = cfg.pointer("/clientIP/timeoutSeconds");
            if self.session_affinity.as_deref() != Some("ClientIP") && !cfg.is_null() {
                inv.push(FieldError::invalid(
                    "spec.sessionAffinityConfig",
                    "(config)",
                    "must not be set when session affinity is None",
                ));
            } else if let Some(t) = t {
                if !t.as_i64().is_some_and(|t| (1..=86_400).contains(&t)) {
                    inv.push(FieldError::invalid(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        t,
                        "must be greater than 0 and less than 86400",
                    ));
                }
            }
        }
        for (k, v) in self.selector.iter().flatten() {
            if let Err(e) = validate_key(k).and_then(|()| validate_value(v)) {
                inv.push(FieldError::invalid(
                    format!("spec.selector[{k}]"),
                    shown(v),
                    &e.to_string(),
                ));
            }
        }
        self.validate_ports(inv, ty, headless);
    }

    fn validate_ports(&self, inv: &mut Invalid, ty: &str, headless: bool) {
        let ports = self.ports.as_deref().unwrap_or_default();
        if ports.is_empty() && !headless {
            inv.push(FieldError::required("spec.ports", ""));
        }
        let mut names = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut node_ports = BTreeSet::new();
        for (i, p) in ports.iter().enumerate() {
            let at = format!("spec.ports[{i}]");
            match p.name.as_deref().filter(|n| !n.is_empty()) {
                None if ports.len() > 1 => inv.push(FieldError::required(format!("{at}.name"), "")),
                None => {}
                Some(n)
                    if check_dns1123_label(inv, &format!("{at}.name"), n) && !names.insert(n) =>
                {
                    inv.push(FieldError {
                        reason: "FieldValueDuplicate",
                        field: format!("{at}.name"),
                        message: format!("Duplicate value: {}", shown(n)),
                    });
                }
                Some(_) => {}
            }
            match p.port {
                None => inv.push(FieldError::required(format!("{at}.port"), "")),
                Some(n) if !(1..=65535).contains(&n) => inv.push(FieldError::invalid(
                    format!("{at}.port"),
                    n,
                    "must be between 1 and 65535, inclusive",
                )),
                Some(n) => {
                    if !seen.insert(n) {
                        inv.push(FieldError {
                            reason: "FieldValueDuplicate",
                            field: at.clone(),
                            message: format!(
                                "Duplicate value: {{\"port\":{n},\"protocol\":\"TCP\"}}"
                            ),
                        });
                    }
                }
            }
            one_of(inv, &format!("{at}.protocol"), &p.protocol, &["TCP"]);
            match &p.target_port {
                None => {}
                Some(Value::Number(n)) if !n.as_i64().is_some_and(|n| (1..=65535).contains(&n)) => {
                    inv.push(FieldError::invalid(
                        format!("{at}.targetPort"),
                        n,
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                Some(Value::Number(_)) => {}
                Some(Value::String(s)) if is_port_name(s) => {}
                Some(v) => inv.push(FieldError::invalid(
                    format!("{at}.targetPort"),
                    v,
                    "must be a port number (1-65535) or an IANA_SVC_NAME (at most 15 lowercase alphanumerics or '-', with a letter)",
                )),
            }
            if let Some(np) = p.node_port.filter(|&n| n != 0) {
                if ty != "NodePort" {
                    inv.push(FieldError::forbidden(
                        format!("{at}.nodePort"),
                        "may not be used when `type` is 'ClusterIP'",
                    ));
                } else if !node_ports.insert(np) {
                    inv.push(FieldError {
                        reason: "FieldValueDuplicate",
                        field: format!("{at}.nodePort"),
                        message: format!("Duplicate value: {np}"),
                    });
                }
            }
        }
    }
}

impl ServicePort {
    /// The defaulted target (the service port when unset).
    pub fn target(&self) -> TargetPort {
        match &self.target_port {
            Some(Value::String(s)) => TargetPort::Name(s.clone()),
            Some(Value::Number(n)) => TargetPort::Number(n.as_u64().unwrap_or(0) as u16),
            _ => TargetPort::Number(self.port.unwrap_or(0) as u16),
        }
    }
}

/// Addresses and ports already taken by other Services.
#[derive(Debug, Default)]
pub struct Taken {
    pub ips: BTreeSet<Ipv4Addr>,
    pub node_ports: BTreeSet<u16>,
}

impl Taken {
    /// What the stored Services (other than `except`, `namespace/name`) hold.
    pub fn from_services<'a>(services: impl IntoIterator<Item = &'a Value>, except: &str) -> Taken {
        let mut t = Taken::default();
        for s in services {
            let key = format!("{}/{}", crate::meta::namespace(s), crate::meta::name(s));
            if key == except {
                continue;
            }
            if let Some(ip) = s
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
            {
                t.ips.insert(ip);
            }
            for p in s
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                    t.node_ports.insert(n as u16);
                }
            }
        }
        t
    }
}

/// Fills a validated Service's defaults and allocates what it lacks (its cluster IP, its node
/// ports), keeping what `old` (the stored version, on update) had: `clusterIP` is immutable and
/// node ports stay with their port. Errors are the API server's 422 causes.
pub fn default_and_allocate(
    obj: &mut Value,
    old: Option<&Value>,
    range: Cidr,
    taken: &Taken,
) -> Result<(), Invalid> {
    let mut inv = Invalid::default();
    let spec = obj
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Invalid::from(FieldError::required("spec", "")))?;
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    spec.insert("type".into(), json!(ty));
    // The cluster IP.
    let old_ip = old
        .and_then(|o| o.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let asked = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let ip = match (asked, old_ip) {
        (Some(a), Some(o)) if a != o => {
            inv.push(FieldError::invalid(
                "spec.clusterIP",
                shown(&a),
                "field is immutable",
            ));
            o
        }
        (_, Some(o)) => o,
        (Some(a), None) if a == "None" => a,
        (Some(a), None) => {
            let ip: Ipv4Addr = a.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
            if !range.holds(ip) {
                inv.push(FieldError::invalid(
                    "spec.clusterIPs",
                    format!("[]string{{\"{a}\"}}"),
                    &format!(
                        "failed to allocate IP {a}: the provided IP ({a}) is not in the valid range. The range of valid IPs is {range}"
                    ),
                ));
            } else if taken.ips.contains(&ip) {
                inv.push(FieldError::invalid(
                    "spec.clusterIPs",
                    format!("[]string{{\"{a}\"}}"),
                    &format!("failed to allocate IP {a}: provided IP is already allocated"),
                ));
            }
            a
        }
        (None, None) => match range.hosts().find(|h| !taken.ips.contains(h)) {
            Some(h) => h.to_string(),
            None => {
                inv.push(FieldError::invalid(
                    "spec.clusterIPs",
                    "[]string{}",
                    &format!("failed to allocate a serviceIP: range {range} is full"),
                ));
                String::new()
            }
        },
    };
    spec.insert("clusterIP".into(), json!(ip));
    spec.insert("clusterIPs".into(), json!([ip]));
    spec.insert("ipFamilies".into(), json!(["IPv4"]));
    spec.entry("ipFamilyPolicy")
        .or_insert_with(|| json!("SingleStack"));
    spec.entry("internalTrafficPolicy")
        .or_insert_with(|| json!("Cluster"));
    if ty == "NodePort" {
        spec.entry("externalTrafficPolicy")
            .or_insert_with(|| json!("Cluster"));
    }
    let affinity = spec
        .get("sessionAffinity")
        .and_then(Value::as_str)
        .unwrap_or("None")
        .to_string();
    spec.insert("sessionAffinity".into(), json!(affinity));
    if affinity == "ClientIP" {
        let cfg = spec
            .entry("sessionAffinityConfig")
            .or_insert_with(|| json!({}));
        if cfg.pointer("/clientIP/timeoutSeconds").is_none() {
            cfg["clientIP"] = json!({"timeoutSeconds": AFFINITY_TIMEOUT});
        }
    }
    // Ports: protocol, targetPort, node ports.
    let old_ports: Vec<Value> = old
        .and_then(|o| o.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut mine = BTreeSet::new();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            let Some(p) = p.as_object_mut() else { continue };
            p.entry("protocol").or_insert_with(|| json!("TCP"));
            if !p.contains_key("targetPort") {
                let port = p.get("port").cloned().unwrap_or(Value::Null);
                p.insert("targetPort".into(), port);
            }
            if ty != "NodePort" {
                p.remove("nodePort");
                continue;
            }
            let asked = p
                .get("nodePort")
                .and_then(Value::as_u64)
                .filter(|&n| n != 0);
            let port = p.get("port").cloned();
            let kept = old_ports
                .iter()
                .find(|o| o.get("port") == port.as_ref())
                .and_then(|o| o.get("nodePort"))
                .and_then(Value::as_u64);
            let at = format!("spec.ports[{i}].nodePort");
            let n = match asked {
                Some(n) => {
                    let was_ours = old_ports
                        .iter()
                        .any(|o| o.get("nodePort").and_then(Value::as_u64) == Some(n));
                    if !NODE_PORTS.contains(&(n as u16)) || n > 65535 {
                        inv.push(FieldError::invalid(
                            &at,
                            n,
                            &format!(
                                "provided port is not in the valid range. The range of valid ports is {}-{}",
                                NODE_PORTS.start(),
                                NODE_PORTS.end()
                            ),
                        ));
                    } else if taken.node_ports.contains(&(n as u16)) && !was_ours {
                        inv.push(FieldError::invalid(
                            &at,
                            n,
                            "provided port is already allocated",
                        ));
                    }
                    n as u16
                }
                None => match kept {
                    Some(k) => k as u16,
                    None => match NODE_PORTS
                        .clone()
                        .find(|c| !taken.node_ports.contains(c) && !mine.contains(c))
                    {
                        Some(c) => c,
                        None => {
                            inv.push(FieldError::invalid(&at, 0, "the node port range is full"));
                            0
                        }
                    },
                },
            };
            mine.insert(n);
            p.insert("nodePort".into(), json!(n));
        }
    }
    if obj.get("status").is_none_or(Value::is_null) {
        obj["status"] = json!({"loadBalancer": {}});
    }
    inv.into_result()
}

/// Endpoints (core v1) are written by corral's endpoints controller for Services with a
/// selector, and may be written by users for Services without one: metadata and `subsets` with
/// IPv4 addresses and ports are checked.
pub fn validate_endpoints(obj: &Value, inv: &mut Invalid) {
    for (i, s) in obj
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in s
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let ip = a.get("ip").and_then(Value::as_str).unwrap_or("");
                if ip.parse::<Ipv4Addr>().is_err() {
                    inv.push(FieldError::invalid(
                        format!("subsets[{i}].{list}[{j}].ip"),
                        shown(ip),
                        "must be a valid IPv4 address",
                    ));
                }
            }
        }
        for (j, p) in s
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let n = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&n) {
                inv.push(FieldError::invalid(
                    format!("subsets[{i}].ports[{j}].port"),
                    n,
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if let Some(pr) = p.get("protocol").and_then(Value::as_str) {
                if pr != "TCP" {
                    inv.push(FieldError::unsupported(
                        format!("subsets[{i}].ports[{j}].protocol"),
                        &format!("{}: supported values: \"TCP\"", shown(pr)),
                    ));
                }
            }
        }
    }
}

/// An EndpointSlice (discovery.k8s.io/v1): `addressType` IPv4 (the only family corral serves),
/// IPv4 `endpoints[].addresses`, ports in range.
pub fn validate_endpoint_slice(obj: &Value, inv: &mut Invalid) {
    match obj.get("addressType").and_then(Value::as_str) {
        Some("IPv4") => {}
        None => inv.push(FieldError::required("addressType", "")),
        Some(t) => inv.push(FieldError::unsupported(
            "addressType",
            &format!("{}: supported values: \"IPv4\"", shown(t)),
        )),
    }
    for (i, e) in obj
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let addrs = e.get("addresses").and_then(Value::as_array);
        if addrs.is_none_or(|a| a.is_empty()) {
            inv.push(FieldError::required(
                format!("endpoints[{i}].addresses"),
                "must contain at least 1 address",
            ));
        }
        for (j, a) in addrs.into_iter().flatten().enumerate() {
            let ip = a.as_str().unwrap_or("");
            if ip.parse::<Ipv4Addr>().is_err() {
                inv.push(FieldError::invalid(
                    format!("endpoints[{i}].addresses[{j}]"),
                    shown(ip),
                    "must be a valid IPv4 address",
                ));
            }
        }
    }
    for (j, p) in obj
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(n) = p.get("port").and_then(Value::as_i64) {
            if !(1..=65535).contains(&n) {
                inv.push(FieldError::invalid(
                    format!("ports[{j}].port"),
                    n,
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests;
