//! Metrics: per-VM CPU and memory sampled from cgroup accounting ([`sampler`]), the numbers the
//! autoscaler and the `metrics.k8s.io` API read, and corral's own [`counters`].

pub mod counters;
pub mod node;
pub mod proc;
pub mod sampler;

pub use sampler::{Sampler, VmMetrics};
