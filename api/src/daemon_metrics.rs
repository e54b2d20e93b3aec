//! The daemon's cgroup, metrics and autoscaler wiring: per-VM cgroups (detected, or disabled
//! with a warning in `auto` mode), the sampler task, and the HPA reconciler plugged into the
//! controller manager.

use std::sync::Arc;

use supervisor::autoscaler::reconcile::{Autoscaler, AutoscalerConfig};
use supervisor::cgroups::place::Placer;
use supervisor::cgroups::{Cgroups, Mode};
use supervisor::controller::HpaReconciler;
use supervisor::metrics::Sampler;
use supervisor::runtime::VmRuntime;
use supervisor::store::Store;

use crate::daemon::{DaemonConfig, DaemonError};
use crate::metrics_api::MetricsState;

/// Sets up per-VM cgroups. `auto` without usable cgroups (e.g. not root) continues without them
/// (no limits; CPU metrics from the VMMs' `/proc` times) and says so; an explicit mode fails.
pub fn placer(cfg: &DaemonConfig, store: &Arc<Store>) -> Result<Option<Arc<Placer>>, DaemonError> {
    if cfg.cgroups.mode == Mode::None {
        tracing::warn!("cgroups disabled (--cgroups none): CPU and memory limits are not enforced");
        return Ok(None);
    }
    match Cgroups::detect(&cfg.cgroups) {
        Ok(cg) => {
            tracing::info!(cgroups = %cg.describe(), "per-VM cgroups");
            Ok(Some(Arc::new(Placer {
                cgroups: Arc::new(cg),
                store: Arc::clone(store),
                overhead: cfg.vmm_overhead,
            })))
        }
        Err(e) if cfg.cgroups.mode == Mode::Auto => {
            tracing::warn!(error = %supervisor::error_chain(&e), "no usable cgroups: CPU and memory limits are not enforced; VM CPU is measured from /proc");
            Ok(None)
        }
        Err(e) => Err(DaemonError::Cgroups(e)),
    }
}

/// Starts the sampler and builds the autoscaler.
pub fn start(
    cfg: &DaemonConfig,
    runtime: Arc<dyn VmRuntime>,
    placer: Option<Arc<Placer>>,
) -> (Arc<MetricsState>, Arc<dyn HpaReconciler>) {
    let cgroups = placer.as_ref().map(|p| Arc::clone(&p.cgroups));
    let sampler = Sampler::new(runtime, cgroups, placer);
    sampler.spawn(cfg.metrics_resolution);
    let autoscaler = Autoscaler::new(
        AutoscalerConfig {
            sync_period: cfg.hpa_sync_period,
            downscale_stabilization: cfg.hpa_downscale_stabilization,
            ..AutoscalerConfig::default()
        },
        sampler.clone(),
    );
    tracing::info!(
        sync_period = ?cfg.hpa_sync_period,
        downscale_stabilization = ?cfg.hpa_downscale_stabilization,
        metrics_resolution = ?cfg.metrics_resolution,
        "autoscaler ready"
    );
    (
        Arc::new(MetricsState {
            sampler,
            vmm_overhead: cfg.vmm_overhead,
        }),
        Arc::new(autoscaler),
    )
}
