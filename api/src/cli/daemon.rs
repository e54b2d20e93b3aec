//! `corral daemon`: the supervisor service.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;
use supervisor::quantity::parse_bytes;
use supervisor::runtime::args::VmmJail;

use crate::daemon::DaemonConfig;

/// Arguments of `corral daemon`. Every flag can also be set in the `--config` YAML file (same
/// names); flags given on the command line or in the environment win.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Durable state: the object database and the image store.
    #[arg(long, env = "CORRAL_STATE_DIR", default_value = "/var/lib/corral")]
    pub state_dir: PathBuf,
    /// Runtime state: VM run directories and the API socket (a tmpfs such as /run).
    #[arg(long, env = "CORRAL_RUN_DIR", default_value = "/run/corral")]
    pub run_dir: PathBuf,
    /// The API's unix socket [default: <run-dir>/corral.sock].
    #[arg(long, env = "CORRAL_SOCKET")]
    pub socket: Option<PathBuf>,
    /// VMs' ephemeral storage: overlays, emptyDisks and seeds, admitted against this
    /// filesystem's size [default: <state-dir>/scratch].
    #[arg(long, env = "CORRAL_SCRATCH_DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Also serve the API on this TCP address (requires --token-file).
    #[arg(long)]
    pub listen: Option<String>,
    /// File holding the bearer token TCP clients must send.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// YAML file with any of these settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Host memory never given to VMs.
    #[arg(long, default_value = "512Mi")]
    pub memory_reserve: String,
    /// Memory counted per VM on top of its guest memory (the VMM process itself; measured:
    /// 5.2 MiB RSS, at most 4.1 MiB charged to its cgroup for a 1 GiB test guest).
    #[arg(long, default_value = "16Mi")]
    pub vmm_overhead: String,
    /// Most VMIs created or deleted per replica-set sync.
    #[arg(long, default_value_t = 250)]
    pub burst: usize,
    /// Concurrent reconciles.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Full resync period in seconds.
    #[arg(long, default_value_t = 30)]
    pub resync_seconds: u64,
    /// Registry reached over plain HTTP (repeatable), e.g. 127.0.0.1:5000.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Docker config.json with registry credentials.
    #[arg(long)]
    pub registry_auth_file: Option<PathBuf>,
    /// How often each HorizontalPodAutoscaler is synced (`15s`, `500ms`, `1m`).
    #[arg(long, default_value = "15s")]
    pub hpa_sync_period: String,
    /// How long an HPA waits before scaling down (the highest recommendation of this window
    /// wins; shorten it for tests).
    #[arg(long, default_value = "5m")]
    pub hpa_downscale_stabilization: String,
    /// How often VM CPU and memory are sampled (metrics-server's `--metric-resolution`).
    #[arg(long, default_value = "15s")]
    pub metrics_resolution: String,
    /// cgroup hierarchy for VM limits and accounting: auto, v1, v2 or none.
    #[arg(long, default_value = "auto")]
    pub cgroups: String,
    /// The VMs' parent cgroup: absolute (`/corral`) or relative to the daemon's own cgroup.
    #[arg(long, default_value = "vms")]
    pub cgroup_root: String,
    /// Extra DNS name or IP for the TCP listener's certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// Run every VMM jailed as this user (a name from /etc/passwd, UID or UID:GID) instead of
    /// a per-VM uid/gid from the reserved range 0x7c000000-0x7c0fffff (the default).
    #[arg(long, value_name = "USER")]
    pub vmm_user: Option<String>,
    /// Do not jail the VMMs (they run as the daemon's user with its view; debugging only).
    #[arg(long, conflicts_with = "vmm_user")]
    pub no_jail: bool,
    /// Run VMs without NICs instead of giving each a pod network (namespace, CNI, masquerade).
    #[arg(long)]
    pub no_pod_network: bool,
    /// CNI configuration directory; corral writes its default conflist here when it is empty.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// Directory of CNI plugin binaries (repeatable).
    #[arg(long = "cni-bin-dir", default_value = "/usr/lib/cni")]
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Where Services' cluster IPs come from (kube-apiserver's flag and default).
    #[arg(long, default_value = supervisor::service::DEFAULT_SERVICE_RANGE)]
    pub service_cluster_ip_range: String,
    /// Most API connections served at once per listener (more wait to be accepted).
    #[arg(long, default_value_t = 1024)]
    pub api_max_connections: usize,
    /// Most TLS handshakes in progress on the TCP listener (more are closed).
    #[arg(long, default_value_t = 64)]
    pub api_max_handshakes: usize,
    /// Time a TCP client has to finish its TLS handshake.
    #[arg(long, default_value = "10s")]
    pub api_handshake_timeout: String,
    /// Time a client has to send a request's headers; also how long an idle connection is kept.
    #[arg(long, default_value = "30s")]
    pub api_header_timeout: String,
    /// Time a client has to send a request's body.
    #[arg(long, default_value = "60s")]
    pub api_body_timeout: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    state_dir: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    scratch_dir: Option<PathBuf>,
    listen: Option<String>,
    token_file: Option<PathBuf>,
    memory_reserve: Option<String>,
    vmm_overhead: Option<String>,
    burst: Option<usize>,
    workers: Option<usize>,
    resync_seconds: Option<u64>,
    insecure_registries: Option<Vec<String>>,
    registry_auth_file: Option<PathBuf>,
    hpa_sync_period: Option<String>,
    hpa_downscale_stabilization: Option<String>,
    metrics_resolution: Option<String>,
    cgroups: Option<String>,
    cgroup_root: Option<String>,
    tls_sans: Option<Vec<String>>,
    vmm_user: Option<String>,
    no_jail: Option<bool>,
    no_pod_network: Option<bool>,
    cni_conf_dir: Option<PathBuf>,
    cni_bin_dirs: Option<Vec<PathBuf>>,
    service_cluster_ip_range: Option<String>,
    api_max_connections: Option<usize>,
    api_max_handshakes: Option<usize>,
    api_handshake_timeout: Option<String>,
    api_header_timeout: Option<String>,
    api_body_timeout: Option<String>,
}

/// Errors in the daemon's configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: read")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("--{flag} {value:?}: {message}")]
    Value {
        flag: &'static str,
        value: String,
        message: String,
    },
    #[error("--listen needs --token-file: TCP clients must authenticate")]
    ListenWithoutToken,
    #[error("{path}: the token file is empty")]
    EmptyToken { path: String },
}

fn from_cli(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: p.clone(),
        source,
    })?;
    serde_norway::from_str(&text).map_err(|e| ConfigError::Parse {
        path: p,
        message: e.to_string(),
    })
}

macro_rules! merge {
    ($args:ident, $file:ident, $m:ident, $($field:ident),*) => {
        $(
            if !from_cli($m, stringify!($field)) {
                if let Some(v) = $file.$field.take() {
                    $args.$field = v.into();
                }
            }
        )*
    };
}

/// Merges the config file into the flags and validates everything.
pub fn resolve(mut a: Args, m: &ArgMatches) -> Result<DaemonConfig, ConfigError> {
    if let Some(path) = a.config.clone() {
        let mut f = read_file_config(&path)?;
        merge!(
            a,
            f,
            m,
            state_dir,
            run_dir,
            memory_reserve,
            vmm_overhead,
            burst,
            workers,
            resync_seconds,
            insecure_registries,
            hpa_sync_period,
            hpa_downscale_stabilization,
            metrics_resolution,
            cgroups,
            vmm_user,
            no_jail,
            no_pod_network,
            cni_conf_dir,
            cni_bin_dirs,
            service_cluster_ip_range,
            cgroup_root,
            tls_sans,
            api_max_connections,
            api_max_handshakes,
            api_handshake_timeout,
            api_header_timeout,
            api_body_timeout
        );
        if !from_cli(m, "socket") && f.socket.is_some() {
            a.socket = f.socket.take();
        }
        if !from_cli(m, "scratch_dir") && f.scratch_dir.is_some() {
            a.scratch_dir = f.scratch_dir.take();
        }
        if !from_cli(m, "listen") && f.listen.is_some() {
            a.listen = f.listen.take();
        }
        if !from_cli(m, "token_file") && f.token_file.is_some() {
            a.token_file = f.token_file.take();
        }
        if !from_cli(m, "registry_auth_file") && f.registry_auth_file.is_some() {
            a.registry_auth_file = f.registry_auth_file.take();
        }
    }
    let bytes = |flag: &'static str, v: &str| {
        parse_bytes(v).map_err(|e| ConfigError::Value {
            flag,
            value: v.to_string(),
            message: e.to_string(),
        })
    };
    let duration = |flag: &'static str, v: &str| {
        parse_duration(v).map_err(|message| ConfigError::Value {
            flag,
            value: v.to_string(),
            message,
        })
    };
    let hpa_sync_period = duration("hpa-sync-period", &a.hpa_sync_period)?;
    let hpa_downscale_stabilization = duration(
        "hpa-downscale-stabilization",
        &a.hpa_downscale_stabilization,
    )?;
    let metrics_resolution = duration("metrics-resolution", &a.metrics_resolution)?;
    for (flag, d) in [
        ("hpa-sync-period", hpa_sync_period),
        ("metrics-resolution", metrics_resolution),
    ] {
        if d < Duration::from_millis(100) {
            return Err(ConfigError::Value {
                flag,
                value: format!("{d:?}"),
                message: "must be at least 100ms".into(),
            });
        }
    }
    let mut api_limits = crate::server::Limits {
        max_connections: a.api_max_connections,
        max_handshakes: a.api_max_handshakes,
        handshake_timeout: duration("api-handshake-timeout", &a.api_handshake_timeout)?,
        header_timeout: duration("api-header-timeout", &a.api_header_timeout)?,
        body_timeout: duration("api-body-timeout", &a.api_body_timeout)?,
        ..Default::default()
    };
    for (flag, n) in [
        ("api-max-connections", &mut api_limits.max_connections),
        ("api-max-handshakes", &mut api_limits.max_handshakes),
    ] {
        if *n == 0 {
            return Err(ConfigError::Value {
                flag,
                value: "0".into(),
                message: "must be at least 1".into(),
            });
        }
    }
    for (flag, d) in [
        ("api-handshake-timeout", api_limits.handshake_timeout),
        ("api-header-timeout", api_limits.header_timeout),
        ("api-body-timeout", api_limits.body_timeout),
    ] {
        if d < Duration::from_millis(100) || d > Duration::from_secs(86_400) {
            return Err(ConfigError::Value {
                flag,
                value: format!("{d:?}"),
                message: "must be between 100ms and 24h".into(),
            });
        }
    }
    let cgroup_mode = a
        .cgroups
        .parse::<supervisor::cgroups::Mode>()
        .map_err(|message| ConfigError::Value {
            flag: "cgroups",
            value: a.cgroups.clone(),
            message,
        })?;
    let memory_reserve = bytes("memory-reserve", &a.memory_reserve)?;
    let vmm_overhead = bytes("vmm-overhead", &a.vmm_overhead)?;
    if a.listen.is_some() && a.token_file.is_none() {
        return Err(ConfigError::ListenWithoutToken);
    }
    let token = match &a.token_file {
        None => None,
        Some(p) => {
            let t = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(ConfigError::EmptyToken {
                    path: p.display().to_string(),
                });
            }
            Some(t)
        }
    };
    if a.workers == 0 {
        return Err(ConfigError::Value {
            flag: "workers",
            value: "0".into(),
            message: "must be at least 1".into(),
        });
    }
    let vmm_jail = match (&a.vmm_user, a.no_jail) {
        (_, true) => VmmJail::Off,
        (None, false) => VmmJail::Dynamic,
        (Some(user), false) => {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let (uid, gid) =
                parse_vmm_user(user, &passwd).map_err(|message| ConfigError::Value {
                    flag: "vmm-user",
                    value: user.clone(),
                    message,
                })?;
            VmmJail::User { uid, gid }
        }
    };
    let socket = a
        .socket
        .clone()
        .unwrap_or_else(|| crate::server::default_socket(&a.run_dir));
    let scratch_dir = a
        .scratch_dir
        .clone()
        .unwrap_or_else(|| a.state_dir.join("scratch"));
    let service_range = supervisor::kinds::services::Cidr::parse(&a.service_cluster_ip_range)
        .map_err(|message| ConfigError::Value {
            flag: "service-cluster-ip-range",
            value: a.service_cluster_ip_range.clone(),
            message,
        })?;
    let network = (!a.no_pod_network).then(|| {
        let mut n = supervisor::network::NetworkConfig::new(&a.run_dir);
        n.cni_conf_dir = a.cni_conf_dir.clone();
        n.cni_bin_dirs = a.cni_bin_dirs.clone();
        n
    });
    Ok(DaemonConfig {
        scratch_dir,
        state_dir: a.state_dir,
        run_dir: a.run_dir,
        socket,
        listen: a.listen,
        token,
        token_file: a.token_file,
        api_limits,
        memory_reserve,
        vmm_overhead,
        burst: a.burst.max(1),
        workers: a.workers,
        resync: Duration::from_secs(a.resync_seconds.max(1)),
        insecure_registries: a.insecure_registries,
        tls_sans: a.tls_sans,
        registry_auth_file: a.registry_auth_file,
        vmm_binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("corral")),
        hpa_sync_period,
        hpa_downscale_stabilization,
        metrics_resolution,
        cgroups: supervisor::cgroups::CgroupConfig {
            mode: cgroup_mode,
            root: Some(a.cgroup_root),
        },
        network,
        service_range,
        vmm_jail,
    })
}

/// `--vmm-user`: a user name (looked up in `passwd`), `UID` (gid = uid) or `UID:GID`; never root.
fn parse_vmm_user(user: &str, passwd: &str) -> Result<(u32, u32), String> {
    let numeric = |s: &str| s.parse::<u32>().ok();
    let ids = if let Some((u, g)) = user.split_once(':') {
        numeric(u).zip(numeric(g))
    } else if let Some(u) = numeric(user) {
        Some((u, u))
    } else {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 4 && f[0] == user).then(|| numeric(f[2]).zip(numeric(f[3])))?
        })
    };
    match ids {
        Some((0, _)) | Some((_, 0)) => Err("the VMM user must not be root".into()),
        Some(ids) => Ok(ids),
        None => Err("no such user (a name from /etc/passwd, UID or UID:GID)".into()),
    }
}

/// Parses `15s`, `500ms`, `5m`, `1h` or plain seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a duration such as 15s, 500ms or 5m".to_string())?;
    let ms = match unit {
        "" | "s" => n.saturating_mul(1000),
        "ms" => n,
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        u => return Err(format!("unknown unit {u:?} (ms, s, m or h)")),
    };
    Ok(Duration::from_millis(ms))
}

/// Runs the daemon.
pub fn run(args: Args, m: &ArgMatches) -> ExitCode {
    crate::cli::init_tracing();
    let cfg = match resolve(args, m) {
        Ok(c) => c,
        Err(e) => {
            crate::cli::print_error_chain(&e);
            return ExitCode::from(2);
        }
    };
    supervisor::host::limit_malloc_arenas();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::cli::print_error_chain(&e);
            return ExitCode::from(1);
        }
    };
    match rt.block_on(crate::daemon::run(cfg)) {
        Ok(()) => {
            rt.shutdown_timeout(Duration::from_secs(1));
            ExitCode::SUCCESS
        }
        Err(e) => {
            crate::cli::print_error_chain(&e);
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmm_user_forms() {
        let passwd =
            "root:x:0:0::/root:/bin/sh\ncorral-vmm:x:990:985::/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(parse_vmm_user("corral-vmm", passwd), Ok((990, 985)));
        assert_eq!(parse_vmm_user("1234", passwd), Ok((1234, 1234)));
        assert_eq!(parse_vmm_user("1234:77", passwd), Ok((1234, 77)));
        assert!(parse_vmm_user("root", passwd).is_err());
        assert!(parse_vmm_user("0:5", passwd).is_err());
        assert!(parse_vmm_user("nobody-here", passwd).is_err());
    }
}
