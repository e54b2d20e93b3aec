//! A VMI's `readinessProbe` and `livenessProbe` (KubeVirt's `Probe`): `tcpSocket` and `httpGet`
//! handlers with Kubernetes' timing fields and defaults. `exec` and `guestAgentPing` need
//! KubeVirt's guest agent, which corral does not have: refused with a 422.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::services::is_port_name;
use super::validation::{FieldError, Invalid, shown};

/// `spec.readinessProbe` / `spec.livenessProbe`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    #[serde(default)]
    pub tcp_socket: Option<TcpSocket>,
    #[serde(default)]
    pub http_get: Option<HttpGet>,
    #[serde(default)]
    pub exec: Option<Value>,
    #[serde(default)]
    pub guest_agent_ping: Option<Value>,
    #[serde(default)]
    pub initial_delay_seconds: Option<i64>,
    #[serde(default)]
    pub period_seconds: Option<i64>,
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    #[serde(default)]
    pub success_threshold: Option<i64>,
    #[serde(default)]
    pub failure_threshold: Option<i64>,
}

/// `tcpSocket`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSocket {
    #[serde(default)]
    pub port: Option<Value>,
    #[serde(default)]
    pub host: Option<String>,
}

/// `httpGet`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    #[serde(default)]
    pub port: Option<Value>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub http_headers: Option<Vec<HttpHeader>>,
}

/// `httpGet.httpHeaders[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpHeader {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// What a probe checks, resolved and defaulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A TCP connection opens.
    Tcp { host: Option<String>, port: Port },
    /// `GET path` answers 200–399.
    Http {
        host: Option<String>,
        port: Port,
        path: String,
        headers: Vec<(String, String)>,
    },
}

/// A probe's port: a number or a name from the VMI's `interfaces[].ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    Number(u16),
    Name(String),
}

/// A validated probe with Kubernetes' defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub check: Check,
    pub initial_delay_s: u32,
    pub period_s: u32,
    pub timeout_s: u32,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn port(inv: &mut Invalid, field: &str, v: &Option<Value>) -> Port {
    match v {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| (1..=65535).contains(&n)) => {
            Port::Number(n.as_u64().unwrap_or(0) as u16)
        }
        Some(Value::String(s)) if is_port_name(s) => Port::Name(s.clone()),
        Some(Value::String(s)) if s.parse::<u16>().is_ok_and(|n| n > 0) => {
            Port::Number(s.parse().unwrap_or(0))
        }
        None => {
            inv.push(FieldError::required(field, ""));
            Port::Number(0)
        }
        Some(v) => {
            inv.push(FieldError::invalid(
                field,
                v,
                "must be a port number (1-65535) or a port name",
            ));
            Port::Number(0)
        }
    }
}

impl ProbeSpec {
    /// Validates the probe at `field` (`spec.readinessProbe`); `liveness` adds Kubernetes' rule
    /// that its successThreshold is 1.
    pub fn validate(&self, field: &str, liveness: bool) -> Result<Probe, Invalid> {
        let mut inv = Invalid::default();
        let handlers = [
            self.tcp_socket.is_some(),
            self.http_get.is_some(),
            self.exec.is_some(),
            self.guest_agent_ping.is_some(),
        ]
        .iter()
        .filter(|h| **h)
        .count();
        if handlers != 1 {
            inv.push(FieldError::required(
                field,
                "must specify exactly one handler type (tcpSocket or httpGet)",
            ));
        }
        for (set, name) in [
            (self.exec.is_some(), "exec"),
            (self.guest_agent_ping.is_some(), "guestAgentPing"),
        ] {
            if set {
                inv.push(FieldError::forbidden(
                    format!("{field}.{name}"),
                    "needs KubeVirt's guest agent, which corral does not run; use tcpSocket or httpGet",
                ));
            }
        }
        let mut num = |name: &str, v: Option<i64>, default: i64, min: i64| -> u32 {
            let n = v.unwrap_or(default);
            if n < min || n > 86_400 {
                inv.push(FieldError::invalid(
                    format!("{field}.{name}"),
                    n,
                    &format!("must be between {min} and 86400, inclusive"),
                ));
            }
            n.clamp(0, 86_400) as u32
        };
        let initial_delay_s = num("initialDelaySeconds", self.initial_delay_seconds, 0, 0);
        let period_s = num("periodSeconds", self.period_seconds, 10, 1);
        let timeout_s = num("timeoutSeconds", self.timeout_seconds, 1, 1);
        let success_threshold = num("successThreshold", self.success_threshold, 1, 1);
        let failure_threshold = num("failureThreshold", self.failure_threshold, 3, 1);
        if liveness && success_threshold != 1 {
            inv.push(FieldError::invalid(
                format!("{field}.successThreshold"),
                success_threshold,
                "must be 1",
            ));
        }
        let check = if let Some(t) = &self.tcp_socket {
            Check::Tcp {
                host: t.host.clone().filter(|h| !h.is_empty()),
                port: port(&mut inv, &format!("{field}.tcpSocket.port"), &t.port),
            }
        } else if let Some(h) = &self.http_get {
            if let Some(s) = h.scheme.as_deref().filter(|s| *s != "HTTP") {
                inv.push(FieldError::unsupported(
                    format!("{field}.httpGet.scheme"),
                    &format!("{}: supported values: \"HTTP\"", shown(s)),
                ));
            }
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                inv.push(FieldError::invalid(
                    format!("{field}.httpGet.path"),
                    shown(&path),
                    "must be an absolute path without spaces or control characters",
                ));
            }
            let mut headers = Vec::new();
            for (i, hd) in h.http_headers.iter().flatten().enumerate() {
                let ok_name = !hd.name.is_empty()
                    && hd
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !ok_name || hd.value.bytes().any(|b| b == b'\r' || b == b'\n') {
                    inv.push(FieldError::invalid(
                        format!("{field}.httpGet.httpHeaders[{i}]"),
                        shown(&hd.name),
                        "must be a valid HTTP header name with a single-line value",
                    ));
                }
                headers.push((hd.name.clone(), hd.value.clone()));
            }
            Check::Http {
                host: h.host.clone().filter(|h| !h.is_empty()),
                port: port(&mut inv, &format!("{field}.httpGet.port"), &h.port),
                path,
                headers,
            }
        } else {
            Check::Tcp {
                host: None,
                port: Port::Number(0),
            }
        };
        inv.into_result()?;
        Ok(Probe {
            check,
            initial_delay_s,
            period_s,
            timeout_s,
            success_threshold,
            failure_threshold,
        })
    }
}

/// The probes of a VMI spec (`readinessProbe`, `livenessProbe`), validated; invalid ones are
/// left out (admission already refused them).
pub fn of_spec(spec: &Value) -> (Option<Probe>, Option<Probe>) {
    let get = |name: &str, liveness: bool| {
        let v = spec.get(name)?;
        let p: ProbeSpec = serde_json::from_value(v.clone()).ok()?;
        p.validate(name, liveness).ok()
    };
    (get("readinessProbe", false), get("livenessProbe", true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe(v: Value, liveness: bool) -> Result<Probe, String> {
        let p: ProbeSpec = serde_json::from_value(v).unwrap();
        p.validate("spec.readinessProbe", liveness)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_kubernetes() {
        let p = probe(json!({"httpGet": {"port": 80}}), false).unwrap();
        assert_eq!(
            p,
            Probe {
                check: Check::Http {
                    host: None,
                    port: Port::Number(80),
                    path: "/".into(),
                    headers: vec![]
                },
                initial_delay_s: 0,
                period_s: 10,
                timeout_s: 1,
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let t = probe(
            json!({"tcpSocket": {"port": "http"}, "periodSeconds": 2}),
            false,
        )
        .unwrap();
        assert_eq!(
            t.check,
            Check::Tcp {
                host: None,
                port: Port::Name("http".into())
            }
        );
        assert_eq!(t.period_s, 2);
    }

    #[test]
    fn bad_probes_name_the_field() {
        let table = [
            (
                json!({"exec": {"command": ["true"]}}),
                "spec.readinessProbe.exec: Forbidden",
            ),
            (
                json!({"guestAgentPing": {}}),
                "spec.readinessProbe.guestAgentPing: Forbidden",
            ),
            (json!({}), "must specify exactly one handler"),
            (
                json!({"tcpSocket": {"port": 80}, "httpGet": {"port": 80}}),
                "exactly one handler",
            ),
            (
                json!({"tcpSocket": {}}),
                "spec.readinessProbe.tcpSocket.port: Required",
            ),
            (
                json!({"tcpSocket": {"port": 0}}),
                "tcpSocket.port: Invalid value: 0",
            ),
            (
                json!({"httpGet": {"port": 80, "scheme": "HTTPS"}}),
                "httpGet.scheme: Unsupported value: \"HTTPS\"",
            ),
            (
                json!({"httpGet": {"port": 80, "path": "x"}}),
                "httpGet.path: Invalid value",
            ),
            (
                json!({"httpGet": {"port": 80, "httpHeaders": [{"name": "X", "value": "a\r\nb"}]}}),
                "httpHeaders[0]",
            ),
            (
                json!({"tcpSocket": {"port": 80}, "periodSeconds": 0}),
                "periodSeconds: Invalid value: 0",
            ),
            (
                json!({"tcpSocket": {"port": 80}, "failureThreshold": -1}),
                "failureThreshold: Invalid value: -1",
            ),
        ];
        for (v, want) in table {
            let e = probe(v.clone(), false).unwrap_err();
            assert!(e.contains(want), "{v}: want {want:?} in {e}");
        }
        let e = probe(
            json!({"tcpSocket": {"port": 80}, "successThreshold": 2}),
            true,
        )
        .unwrap_err();
        assert!(
            e.contains("successThreshold: Invalid value: 2: must be 1"),
            "{e}"
        );
        assert!(
            probe(
                json!({"tcpSocket": {"port": 80}, "successThreshold": 2}),
                false
            )
            .is_ok()
        );
    }
}
