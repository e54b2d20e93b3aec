//! The built-in HorizontalPodAutoscaler: Kubernetes' podautoscaler over VMIs.
//!
//! [`algorithm`] computes a proposal from VMIs and CPU samples, [`behavior`] normalizes it
//! (stabilization, rate limits, bounds), [`status`] builds the HPA status and conditions, and
//! [`reconcile`] ties them to the store, the metrics sampler and the scale subresource.

pub mod algorithm;
pub mod behavior;
pub mod pods;
pub mod reconcile;
pub mod status;
