//! `corral daemon`: opens the store, re-adopts running VMs, starts the controllers and serves the
//! API on a unix socket (and TCP with a token), then tells systemd it is ready.
//!
//! Threads: one multi-threaded tokio runtime (API, controllers, VM watchers); store commits run
//! on tokio's blocking pool. VMs run in their own `corral vmm` processes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use supervisor::capacity::Capacity;
use supervisor::controller::{self, ControllerConfig, Ctx};
use supervisor::events::Recorder;
use supervisor::runtime::VmRuntime;
use supervisor::runtime::args::VmmJail;
use supervisor::runtime::process::{ProcessConfig, ProcessRuntime};
use supervisor::service::Service;
use supervisor::store::Store;

use crate::state::AppState;

/// Everything the daemon is configured with.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// VMs' overlays, emptyDisks and seeds (on disk).
    pub scratch_dir: PathBuf,
    pub socket: PathBuf,
    pub listen: Option<String>,
    pub token: Option<String>,
    pub memory_reserve: u64,
    pub vmm_overhead: u64,
    pub burst: usize,
    pub workers: usize,
    pub resync: Duration,
    pub insecure_registries: Vec<String>,
    /// Extra names and addresses for the TCP listener's certificate.
    pub tls_sans: Vec<String>,
    pub registry_auth_file: Option<PathBuf>,
    pub vmm_binary: PathBuf,
    pub hpa_sync_period: Duration,
    pub hpa_downscale_stabilization: Duration,
    pub metrics_resolution: Duration,
    pub cgroups: supervisor::cgroups::CgroupConfig,
    /// Who the VMMs run as (`--vmm-user`, `--no-jail`).
    pub vmm_jail: supervisor::runtime::args::VmmJail,
    /// Pod networking (`--no-pod-network`: None).
    pub network: Option<supervisor::network::NetworkConfig>,
    /// Services' cluster IP range (`--service-cluster-ip-range`).
    pub service_range: supervisor::kinds::services::Cidr,
    /// Where `token` was read from (its mode is checked at start).
    pub token_file: Option<PathBuf>,
    /// Connection, handshake, header and body limits of the API listeners.
    pub api_limits: crate::server::Limits,
}

/// True when a token file's mode lets its group or others read (or write) it.
pub fn token_file_is_exposed(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// Logs a warning when the token file is readable by its group or by others.
fn warn_about_token_file(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if token_file_is_exposed(m.permissions().mode()) => {
            let mode = format!("{:o}", m.permissions().mode() & 0o777);
            tracing::warn!(path = %path.display(), mode, "the API token file is readable by other users; chmod 600 it");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot check the API token file's mode");
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("create directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("open the state database")]
    Store(#[source] supervisor::store::StoreError),
    #[error("start the VM runtime in {path}")]
    Runtime {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("open the image store")]
    Images(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("listen")]
    Listen(#[from] crate::server::ListenError),
    #[error("set up cgroups")]
    Cgroups(#[source] supervisor::cgroups::CgroupError),
    #[error("set up TLS for the TCP listener")]
    Tls(#[from] crate::tls::TlsError),
}

/// The VMM jail needs root: a non-root (development) daemon runs its VMMs unjailed, and says so.
fn vmm_jail(jail: VmmJail) -> VmmJail {
    if jail != VmmJail::Off && !rustix::process::geteuid().is_root() {
        tracing::warn!(
            "not running as root: VMMs run unjailed (as this user, with its view of the host)"
        );
        return VmmJail::Off;
    }
    jail
}

fn mkdir(p: &Path) -> Result<(), DaemonError> {
    std::fs::create_dir_all(p).map_err(|source| DaemonError::Dir {
        path: p.display().to_string(),
        source,
    })
}

/// Runs the daemon until SIGTERM or SIGINT. VMs keep running after it exits.
pub async fn run(cfg: DaemonConfig) -> Result<(), DaemonError> {
    let t0 = std::time::Instant::now();
    crate::hostcheck::warn_about_kvm();
    if let Some(p) = &cfg.token_file {
        warn_about_token_file(p);
    }
    mkdir(&cfg.state_dir)?;
    mkdir(&cfg.run_dir)?;
    let store =
        Arc::new(Store::open(&cfg.state_dir.join("corral.redb")).map_err(DaemonError::Store)?);
    let (vm_tx, vm_rx) = tokio::sync::mpsc::unbounded_channel();
    let placer = crate::daemon_metrics::placer(&cfg, &store)?;
    let placement = placer
        .clone()
        .map(|p| p as Arc<dyn supervisor::runtime::process::Placement>);
    let runtime: Arc<dyn VmRuntime> = Arc::new(
        ProcessRuntime::start(
            ProcessConfig {
                run_dir: cfg.run_dir.clone(),
                scratch_dir: cfg.scratch_dir.clone(),
                binary: cfg.vmm_binary.clone(),
                extra_env: Vec::new(),
                placement,
                jail: vmm_jail(cfg.vmm_jail),
                network: cfg.network.clone(),
            },
            vm_tx,
        )
        .map_err(|source| DaemonError::Runtime {
            path: cfg.run_dir.display().to_string(),
            source,
        })?,
    );
    let images = crate::image_source::StoreSource::open(&cfg)
        .map_err(|e| DaemonError::Images(Box::new(e)))?;
    let capacity = Capacity {
        reserve: cfg.memory_reserve,
        overhead: cfg.vmm_overhead,
    };
    let ctx = Arc::new(Ctx {
        store: store.clone(),
        runtime: runtime.clone(),
        images: controller::images::ImageCache::new(Arc::new(images)),
        events: Recorder::new(store.clone()),
        capacity,
        queue: controller::queue::WorkQueue::new(),
        config: ControllerConfig {
            burst: cfg.burst,
            workers: cfg.workers,
            resync: cfg.resync,
        },
        launch_lock: Default::default(),
        crash_loops: Default::default(),
        probes: Default::default(),
    });
    let (metrics, autoscaler) = crate::daemon_metrics::start(&cfg, runtime.clone(), placer);
    controller::spawn(ctx, vm_rx, Some(autoscaler));
    supervisor::proxy::spawn(Arc::new(supervisor::proxy::Proxy::new(
        store.clone(),
        Box::new(supervisor::proxy::Nft::new()),
    )));

    let state = AppState {
        service: Arc::new(
            Service::new(store.clone(), Arc::new(capacity)).with_service_range(cfg.service_range),
        ),
        store,
        runtime,
        ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        metrics: Some(metrics),
    };
    // Give the heap back after bursts (creating or deleting many VMs).
    tokio::spawn(async {
        let mut t = tokio::time::interval(Duration::from_secs(30));
        loop {
            t.tick().await;
            let _ = tokio::task::spawn_blocking(supervisor::host::trim_heap).await;
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let unix = crate::server::bind_unix(&cfg.socket).await?;
    let mut servers = Vec::new();
    servers.push(tokio::spawn(crate::server::serve_unix(
        unix,
        crate::router::router(state.clone(), None, &cfg.api_limits),
        cfg.api_limits.clone(),
        shutdown(),
    )));
    if let Some(addr) = &cfg.listen {
        let sans = crate::tls::default_sans(addr, &cfg.tls_sans);
        let (tls, ca) = crate::tls::server_config(&cfg.state_dir.join("tls"), &sans)?;
        let tcp = crate::server::bind_tcp(addr).await?;
        let listener =
            crate::tls::TlsListener::new(tcp, tls, &cfg.api_limits).map_err(|source| {
                crate::server::ListenError::BindTcp {
                    addr: addr.clone(),
                    source,
                }
            })?;
        let token = cfg.token.clone();
        servers.push(tokio::spawn(crate::server::serve_tcp(
            listener,
            crate::router::router(state.clone(), token, &cfg.api_limits),
            cfg.api_limits.clone(),
            shutdown(),
        )));
        tracing::info!(%addr, ca = %ca.display(), "serving the API over HTTPS (bearer token required)");
    }
    // Handlers first: a SIGTERM right after READY=1 must be a clean stop, not the default death.
    let stop_signal = stop_signals();
    state.ready.store(true, Ordering::Relaxed);
    tracing::info!(socket = %cfg.socket.display(), startup_ms = t0.elapsed().as_millis() as u64, "corral daemon ready");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    stop_signal.await;
    tracing::info!("stopping the API; VMs keep running and are re-adopted by the next start");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on the first of them.
fn stop_signals() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_modes() {
        for (mode, exposed) in [
            (0o100600, false),
            (0o100400, false),
            (0o100640, true),
            (0o100644, true),
            (0o100604, true),
            (0o100660, true),
        ] {
            assert_eq!(token_file_is_exposed(mode), exposed, "{mode:o}");
        }
    }
}
