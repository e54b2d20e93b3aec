//! Shared helpers for corral's end-to-end tests.

pub mod vmm;
