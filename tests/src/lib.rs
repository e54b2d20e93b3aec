//! Shared helpers for corral's end-to-end tests: find (or build) the `corral` binary, run a
//! daemon on private directories, talk to it over its socket, run single VMMs.

pub mod bin;
pub mod corral;
pub mod daemon;
pub mod lab;
pub mod linux_log;
pub mod nested;
pub mod netns;
pub mod oci;
pub mod proxy;
pub mod registry;
pub mod transport;
pub mod vmm;
