//! Shared helpers for corral's end-to-end tests.

pub mod corral;
pub mod oci;
pub mod registry;
pub mod vmm;
