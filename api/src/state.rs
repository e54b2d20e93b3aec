//! What every handler can reach.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use supervisor::runtime::VmRuntime;
use supervisor::service::Service;
use supervisor::store::Store;

/// Shared handler state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub store: Arc<Store>,
    pub runtime: Arc<dyn VmRuntime>,
    /// False until the daemon has finished starting (`/readyz`).
    pub ready: Arc<AtomicBool>,
    /// The metrics sampler (`metrics.k8s.io`, `/metrics`), when the daemon runs one.
    pub metrics: Option<Arc<crate::metrics_api::MetricsState>>,
}
