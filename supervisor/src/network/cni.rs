//! CNI (spec 1.0) as a runtime: pick the network configuration, exec the plugin binaries for ADD
//! and DEL (config on stdin, `prevResult` chained through a conflist), read their JSON answers.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// File corral writes into an empty CNI configuration directory.
pub const DEFAULT_CONFLIST: &str = "10-corral.conflist";

/// CNI errors.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("read CNI config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("CNI config {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("write CNI config {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginMissing { plugin: String, dirs: String },
    #[error("run CNI plugin {plugin}")]
    Exec {
        plugin: String,
        #[source]
        source: io::Error,
    },
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}{details}")]
    Plugin {
        plugin: String,
        command: &'static str,
        code: u64,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} {command}: bad output: {msg}")]
    Output {
        plugin: String,
        command: &'static str,
        msg: String,
    },
    #[error("CNI result has no IPv4 address")]
    NoIp,
}

/// A network configuration list (a single-plugin `.conf` is wrapped into one).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Map<String, Value>>,
}

/// Settings of the conflist corral writes when the operator provides none.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultConfList {
    pub name: String,
    pub bridge: String,
    pub subnet: String,
    /// Masquerade traffic leaving the node (bridge plugin `ipMasq`, done with iptables on the host).
    pub ip_masq: bool,
    /// Append the `portmap` plugin (hostPort support; iptables on the host).
    pub portmap: bool,
    /// host-local's lease directory; `None`: its default /var/lib/cni/networks.
    pub ipam_data_dir: Option<PathBuf>,
}

impl Default for DefaultConfList {
    fn default() -> Self {
        DefaultConfList {
            name: "corral".into(),
            bridge: "corral0".into(),
            subnet: "10.244.0.0/24".into(),
            ip_masq: true,
            portmap: false,
            ipam_data_dir: None,
        }
    }
}

impl DefaultConfList {
    /// The conflist's JSON.
    pub fn to_json(&self) -> Value {
        let mut ipam = json!({
            "type": "host-local",
            "ranges": [[{ "subnet": self.subnet }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
        });
        if let Some(dir) = &self.ipam_data_dir {
            ipam["dataDir"] = json!(dir);
        }
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": self.ip_masq,
            "hairpinMode": true,
            "ipam": ipam,
        })];
        if self.portmap {
            plugins.push(json!({ "type": "portmap", "capabilities": { "portMappings": true } }));
        }
        json!({ "cniVersion": "1.0.0", "name": self.name, "plugins": plugins })
    }
}

/// The configuration to use: the lexically first `*.conflist`/`*.conf`/`*.json` in `dir`; when
/// there is none, `default` is written there (atomically: temp file + rename) and used.
pub fn load_or_write(dir: &Path, default: &DefaultConfList) -> Result<ConfList, CniError> {
    if let Some(path) = first_config(dir)? {
        return load(&path);
    }
    std::fs::create_dir_all(dir).map_err(|source| CniError::Write {
        path: dir.into(),
        source,
    })?;
    let path = dir.join(DEFAULT_CONFLIST);
    let tmp = dir.join(format!(".{DEFAULT_CONFLIST}.tmp"));
    let text = serde_json::to_vec_pretty(&default.to_json()).expect("JSON values serialize");
    let write = || -> io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|source| CniError::Write {
        path: path.clone(),
        source,
    })?;
    load(&path)
}

fn first_config(dir: &Path) -> Result<Option<PathBuf>, CniError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CniError::Read {
                path: dir.into(),
                source,
            });
        }
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().next())
}

/// Reads one configuration file.
pub fn load(path: &Path) -> Result<ConfList, CniError> {
    let text = std::fs::read(path).map_err(|source| CniError::Read {
        path: path.into(),
        source,
    })?;
    parse(path, &text)
}

/// Parses a conflist, or a single-plugin conf (anything without `plugins`).
pub fn parse(path: &Path, text: &[u8]) -> Result<ConfList, CniError> {
    let invalid = |msg: String| CniError::Invalid {
        path: path.into(),
        msg,
    };
    let v: Value = serde_json::from_slice(text).map_err(|e| invalid(e.to_string()))?;
    let Value::Object(mut obj) = v else {
        return Err(invalid("not a JSON object".into()));
    };
    let name = match obj.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(invalid("no \"name\"".into())),
    };
    let cni_version = match obj.get("cniVersion") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(invalid("no \"cniVersion\"".into())),
    };
    let plugins = match obj.remove("plugins") {
        Some(Value::Array(list)) => list
            .into_iter()
            .map(|p| match p {
                Value::Object(o) => Ok(o),
                _ => Err(invalid("a plugin is not an object".into())),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(invalid("\"plugins\" is not a list".into())),
        None => vec![obj],
    };
    if plugins.is_empty() {
        return Err(invalid("no plugins".into()));
    }
    for p in &plugins {
        match p.get("type") {
            Some(Value::String(t)) if !t.is_empty() && !t.contains('/') => {}
            _ => return Err(invalid("a plugin has no valid \"type\"".into())),
        }
    }
    Ok(ConfList {
        path: path.into(),
        name,
        cni_version,
        plugins,
    })
}

/// What one CNI invocation is about.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub container_id: &'a str,
    /// The pod namespace's path; `None` on a DEL whose namespace is already gone.
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    /// `CNI_ARGS` pairs (K8S_POD_NAMESPACE, K8S_POD_NAME, ...).
    pub args: Vec<(&'static str, String)>,
    /// Directories searched for plugin binaries (also `CNI_PATH`).
    pub bin_dirs: &'a [PathBuf],
}

/// The parts of a CNI result corral uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The whole final result, as the plugins returned it.
    pub raw: Value,
}

/// Runs ADD through every plugin of the list, chaining `prevResult`.
pub fn add(conf: &ConfList, inv: &Invocation<'_>) -> Result<AddResult, CniError> {
    let mut prev: Option<Value> = None;
    let mut last_plugin = String::new();
    for plugin in &conf.plugins {
        last_plugin = plugin_type(plugin).to_owned();
        let out = exec(conf, plugin, "ADD", inv, prev.as_ref())?;
        let v: Value = serde_json::from_slice(&out).map_err(|e| CniError::Output {
            plugin: last_plugin.clone(),
            command: "ADD",
            msg: e.to_string(),
        })?;
        prev = Some(v);
    }
    let raw = prev.unwrap_or(Value::Null);
    parse_result(&raw).map_err(|msg| match msg {
        None => CniError::NoIp,
        Some(msg) => CniError::Output {
            plugin: last_plugin,
            command: "ADD",
            msg,
        },
    })
}

/// Runs DEL through the plugins in reverse order. Every plugin runs; the first error is returned.
pub fn del(conf: &ConfList, inv: &Invocation<'_>) -> Result<(), CniError> {
    let mut first = None;
    for plugin in conf.plugins.iter().rev() {
        if let Err(e) = exec(conf, plugin, "DEL", inv, None) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn plugin_type(p: &Map<String, Value>) -> &str {
    p.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The stdin of one plugin: its object plus the list's name/version and the previous result.
pub fn plugin_stdin(conf: &ConfList, plugin: &Map<String, Value>, prev: Option<&Value>) -> Value {
    let mut obj = plugin.clone();
    obj.insert("name".into(), Value::String(conf.name.clone()));
    obj.insert("cniVersion".into(), Value::String(conf.cni_version.clone()));
    if let Some(prev) = prev {
        obj.insert("prevResult".into(), prev.clone());
    }
    Value::Object(obj)
}

fn exec(
    conf: &ConfList,
    plugin: &Map<String, Value>,
    command: &'static str,
    inv: &Invocation<'_>,
    prev: Option<&Value>,
) -> Result<Vec<u8>, CniError> {
    let name = plugin_type(plugin).to_owned();
    let bin = inv
        .bin_dirs
        .iter()
        .map(|d| d.join(&name))
        .find(|p| p.is_file())
        .ok_or_else(|| CniError::PluginMissing {
            plugin: name.clone(),
            dirs: inv
                .bin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        })?;
    let stdin =
        serde_json::to_vec(&plugin_stdin(conf, plugin, prev)).expect("JSON values serialize");
    let cni_path = std::env::join_paths(inv.bin_dirs).map_err(|e| CniError::Exec {
        plugin: name.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    let args: Vec<String> = std::iter::once("IgnoreUnknown=1".to_owned())
        .chain(inv.args.iter().map(|(k, v)| format!("{k}={v}")))
        .collect();
    let exec_err = |source| CniError::Exec {
        plugin: name.clone(),
        source,
    };
    let mut child = Command::new(&bin)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env(
            "CNI_NETNS",
            inv.netns.map(|p| p.as_os_str()).unwrap_or_default(),
        )
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", args.join(";"))
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(exec_err)?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(&stdin).map_err(exec_err)?;
    }
    let out = child.wait_with_output().map_err(exec_err)?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(plugin_error(
        &name,
        command,
        &out.stdout,
        &out.stderr,
        out.status,
    ))
}

#[derive(Deserialize)]
struct ErrorJson {
    #[serde(default)]
    code: u64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// A failed plugin's error: its JSON `{code, msg, details}` on stdout, else its stderr.
pub fn plugin_error(
    plugin: &str,
    command: &'static str,
    stdout: &[u8],
    stderr: &[u8],
    status: impl std::fmt::Display,
) -> CniError {
    match serde_json::from_slice::<ErrorJson>(stdout) {
        Ok(e) if !e.msg.is_empty() => CniError::Plugin {
            plugin: plugin.into(),
            command,
            code: e.code,
            msg: e.msg,
            details: if e.details.is_empty() {
                String::new()
            } else {
                format!(" ({})", e.details)
            },
        },
        _ => CniError::Output {
            plugin: plugin.into(),
            command,
            msg: format!("{status}: {}", String::from_utf8_lossy(stderr).trim()),
        },
    }
}

/// The first IPv4 address of a result (`ips[].address` "a.b.c.d/len", `ips[].gateway`).
/// `Err(None)`: no IPv4 address; `Err(Some(msg))`: malformed.
pub fn parse_result(v: &Value) -> Result<AddResult, Option<String>> {
    let ips = v.get("ips").and_then(Value::as_array).ok_or(None)?;
    for ip in ips {
        let Some(addr) = ip.get("address").and_then(Value::as_str) else {
            return Err(Some("an ips[] entry has no address".into()));
        };
        let Some((a, len)) = addr.split_once('/') else {
            return Err(Some(format!("address {addr:?} has no prefix length")));
        };
        if a.contains(':') {
            continue;
        }
        let ip4: Ipv4Addr = a
            .parse()
            .map_err(|_| Some(format!("bad address {addr:?}")))?;
        let prefix_len = len
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| Some(format!("bad prefix in {addr:?}")))?;
        let gateway = match ip.get("gateway").and_then(Value::as_str) {
            Some(g) => Some(g.parse().map_err(|_| Some(format!("bad gateway {g:?}")))?),
            None => None,
        };
        return Ok(AddResult {
            ip: ip4,
            prefix_len,
            gateway,
            raw: v.clone(),
        });
    }
    Err(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_configs() {
        let p = Path::new("x");
        let single = br#"{"cniVersion":"0.4.0","name":"n","type":"bridge","bridge":"b"}"#;
        let c = parse(p, single).unwrap();
        assert_eq!(
            (c.name.as_str(), c.cni_version.as_str(), c.plugins.len()),
            ("n", "0.4.0", 1)
        );
        assert_eq!(c.plugins[0]["bridge"], "b");
        let list = br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#;
        assert_eq!(parse(p, list).unwrap().plugins.len(), 2);
        for (bad, why) in [
            (&b"[]"[..], "not a JSON object"),
            (
                br#"{"cniVersion":"1.0.0","plugins":[{"type":"a"}]}"#,
                "no \"name\"",
            ),
            (
                br#"{"name":"n","plugins":[{"type":"a"}]}"#,
                "no \"cniVersion\"",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "no plugins",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../x"}]}"#,
                "no valid \"type\"",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":{}}"#,
                "not a list",
            ),
            (b"{", "EOF"),
        ] {
            let err = parse(p, bad).unwrap_err().to_string();
            assert!(err.contains(why), "{err} lacks {why}");
        }
    }

    #[test]
    fn default_conflist_round_trips() {
        let d = DefaultConfList {
            ipam_data_dir: Some("/tmp/l".into()),
            portmap: true,
            ..Default::default()
        };
        let text = serde_json::to_vec(&d.to_json()).unwrap();
        let c = parse(Path::new("d"), &text).unwrap();
        assert_eq!(c.plugins.len(), 2);
        assert_eq!(c.plugins[0]["ipam"]["dataDir"], "/tmp/l");
        assert_eq!(c.plugins[0]["ipMasq"], true);
        let stdin = plugin_stdin(&c, &c.plugins[1], Some(&json!({"ips": []})));
        assert_eq!(stdin["name"], "corral");
        assert_eq!(stdin["cniVersion"], "1.0.0");
        assert_eq!(stdin["prevResult"], json!({"ips": []}));
    }

    #[test]
    fn results_and_errors() {
        let ok = json!({"ips":[{"address":"fd00::2/64"},{"address":"10.244.0.7/24","gateway":"10.244.0.1","interface":2}]});
        let r = parse_result(&ok).unwrap();
        assert_eq!(
            (r.ip, r.prefix_len, r.gateway),
            (
                "10.244.0.7".parse().unwrap(),
                24,
                Some("10.244.0.1".parse().unwrap())
            )
        );
        assert_eq!(parse_result(&json!({"ips":[]})).unwrap_err(), None);
        assert_eq!(parse_result(&json!({})).unwrap_err(), None);
        for bad in [
            json!({"ips":[{"address":"10.0.0.1"}]}),
            json!({"ips":[{"address":"10.0.0.300/24"}]}),
            json!({"ips":[{"address":"10.0.0.1/33"}]}),
            json!({"ips":[{}]}),
            json!({"ips":[{"address":"10.0.0.1/8","gateway":"x"}]}),
        ] {
            assert!(parse_result(&bad).unwrap_err().is_some(), "{bad}");
        }
        let e = plugin_error(
            "bridge",
            "ADD",
            br#"{"code":11,"msg":"failed to allocate","details":"range full"}"#,
            b"",
            "exit status: 1",
        );
        assert_eq!(
            e.to_string(),
            "CNI plugin bridge ADD failed (code 11): failed to allocate (range full)"
        );
        let e = plugin_error(
            "bridge",
            "ADD",
            b"garbage",
            b"panic: boom\n",
            "exit status: 2",
        );
        assert_eq!(
            e.to_string(),
            "CNI plugin bridge ADD: bad output: exit status: 2: panic: boom"
        );
    }
}
