//! What the client commands share: how to reach the daemon, resource names as kubectl accepts
//! them, API paths, error display, and kubectl-style table printing.

use std::path::PathBuf;

use serde_json::Value;
use supervisor::kinds::Kind;

use crate::client::{Client, ClientError, Endpoint, Response};

/// How to reach the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// The daemon's unix socket.
    #[arg(
        long,
        env = "CORRAL_SOCKET",
        default_value = "/run/corral/corral.sock",
        global = true
    )]
    pub socket: PathBuf,
    /// Talk to the daemon over HTTPS instead (host:port or https://host:port).
    #[arg(long, env = "CORRAL_SERVER", global = true)]
    pub server: Option<String>,
    /// Bearer token file for --server.
    #[arg(long, env = "CORRAL_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificate of the daemon's TCP listener (its `<state-dir>/tls/ca.crt`).
    #[arg(
        long,
        env = "CORRAL_CA",
        default_value = "/var/lib/corral/tls/ca.crt",
        global = true
    )]
    pub certificate_authority: PathBuf,
}

/// A failed client command: the message is printed once, the code is the exit status.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server answered with a Status error; printed like kubectl does.
    #[error("Error from server ({reason}): {message}")]
    Server { reason: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Other(String),
}

impl CmdError {
    /// Exit status for the error.
    pub fn code(&self) -> u8 {
        match self {
            CmdError::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl Conn {
    /// A client for these settings.
    pub fn client(&self) -> Result<Client, CmdError> {
        Ok(Client::new(self.endpoint()?))
    }

    /// Where and how to reach the daemon.
    pub fn endpoint(&self) -> Result<Endpoint, CmdError> {
        Ok(match &self.server {
            None => Endpoint::Unix(self.socket.clone()),
            Some(s) => {
                let addr = s
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string();
                if s.starts_with("https://") {
                    return Err(CmdError::Usage("--server: https is not supported; corral serves plain HTTP with a bearer token".into()));
                }
                let token = match &self.token_file {
                    None => None,
                    Some(p) => Some(
                        std::fs::read_to_string(p)
                            .map_err(|e| CmdError::File {
                                path: p.display().to_string(),
                                message: e.to_string(),
                            })?
                            .trim()
                            .to_string(),
                    ),
                };
                Endpoint::Tcp {
                    addr,
                    token,
                    ca: self.certificate_authority.clone(),
                }
            }
        })
    }
}

/// Turns a non-2xx response into [`CmdError::Server`].
pub fn check(resp: Response) -> Result<Response, CmdError> {
    if (200..300).contains(&resp.status) {
        return Ok(resp);
    }
    let (reason, message) = match resp.json() {
        Ok(v) if v.get("kind").and_then(Value::as_str) == Some("Status") => (
            v.get("reason")
                .and_then(Value::as_str)
                .unwrap_or("Unknown")
                .to_string(),
            v.get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ),
        _ => (
            "Unknown".to_string(),
            format!("HTTP {}: {}", resp.status, resp.text().trim()),
        ),
    };
    Err(CmdError::Server { reason, message })
}

/// Resolves a resource name as kubectl does (plural, singular, short name, `kind.group`).
pub fn resolve_kind(s: &str) -> Result<Kind, CmdError> {
    let s = s.to_ascii_lowercase();
    let base = s.split('.').next().unwrap_or(&s).to_string();
    for k in Kind::ALL {
        let i = k.info();
        if base == i.plural
            || base == i.singular
            || i.short_names.contains(&base.as_str())
            || base == i.kind.to_ascii_lowercase()
        {
            return Ok(k);
        }
    }
    Err(CmdError::Usage(format!(
        "the server doesn't have a resource type \"{s}\" (known: vmirs, vmi, hpa, events, svc, endpoints)"
    )))
}

/// Splits `type/name` or `type name`.
pub fn type_and_name(
    first: &str,
    second: Option<&str>,
) -> Result<(Kind, Option<String>), CmdError> {
    if let Some((t, n)) = first.split_once('/') {
        return Ok((resolve_kind(t)?, Some(n.to_string())));
    }
    Ok((resolve_kind(first)?, second.map(str::to_string)))
}

/// The collection path of `kind` in `ns` (all namespaces with `None`).
pub fn collection_path(kind: Kind, ns: Option<&str>) -> String {
    let i = kind.info();
    let base = if i.group.is_empty() {
        format!("/api/{}", i.version)
    } else {
        format!("/apis/{}/{}", i.group, i.version)
    };
    match ns {
        Some(ns) => format!("{base}/namespaces/{ns}/{}", i.plural),
        None => format!("{base}/{}", i.plural),
    }
}

/// The `items` of a list object; empty when it has none.
pub fn list_items(list: &Value) -> &[Value] {
    list.get("items")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The path of one object.
pub fn object_path(kind: Kind, ns: &str, name: &str) -> String {
    format!("{}/{name}", collection_path(kind, Some(ns)))
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Prints rows as kubectl does: upper-case headers, columns padded to the widest cell + 3.
pub fn print_table(headers: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(String::len).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        crate::outln!("{}", s.trim_end());
    };
    line(headers);
    for r in rows {
        line(r);
    }
}

/// A Table cell as text (`null` → empty).
pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_resolve_like_kubectl() {
        for s in [
            "vmirs",
            "VMIRS",
            "virtualmachineinstancereplicasets",
            "virtualmachineinstancereplicaset.kubevirt.io",
        ] {
            assert_eq!(resolve_kind(s).unwrap(), Kind::ReplicaSet, "{s}");
        }
        assert_eq!(resolve_kind("vmi").unwrap(), Kind::Vmi);
        assert_eq!(resolve_kind("hpa").unwrap(), Kind::Hpa);
        assert_eq!(resolve_kind("events").unwrap(), Kind::Event);
        assert!(resolve_kind("pods").is_err());
        assert_eq!(
            type_and_name("vmi/x", None).unwrap(),
            (Kind::Vmi, Some("x".into()))
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            collection_path(Kind::Vmi, Some("a")),
            "/apis/kubevirt.io/v1/namespaces/a/virtualmachineinstances"
        );
        assert_eq!(collection_path(Kind::Event, None), "/api/v1/events");
        assert_eq!(enc("a=b,c in (d)"), "a%3Db%2Cc%20in%20%28d%29");
    }
}
