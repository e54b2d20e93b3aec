//! `corral daemon`: the supervisor service.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;
use supervisor::quantity::parse_bytes;

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
    /// Memory counted per VM on top of its guest memory (the VMM process itself).
    #[arg(long, default_value = "24Mi")]
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
    /// Extra DNS name or IP for the TCP listener's certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    state_dir: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    listen: Option<String>,
    token_file: Option<PathBuf>,
    memory_reserve: Option<String>,
    vmm_overhead: Option<String>,
    burst: Option<usize>,
    workers: Option<usize>,
    resync_seconds: Option<u64>,
    insecure_registries: Option<Vec<String>>,
    registry_auth_file: Option<PathBuf>,
    tls_sans: Option<Vec<String>>,
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
            tls_sans
        );
        if !from_cli(m, "socket") && f.socket.is_some() {
            a.socket = f.socket.take();
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
    let socket = a
        .socket
        .clone()
        .unwrap_or_else(|| crate::server::default_socket(&a.run_dir));
    Ok(DaemonConfig {
        state_dir: a.state_dir,
        run_dir: a.run_dir,
        socket,
        listen: a.listen,
        token,
        memory_reserve,
        vmm_overhead,
        burst: a.burst.max(1),
        workers: a.workers,
        resync: Duration::from_secs(a.resync_seconds.max(1)),
        insecure_registries: a.insecure_registries,
        tls_sans: a.tls_sans,
        registry_auth_file: a.registry_auth_file,
        vmm_binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("corral")),
    })
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
