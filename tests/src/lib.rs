//! Shared helpers for corral's end-to-end tests: find (or build) the `corral` binary, run a
//! daemon on private directories, talk to it over its socket.

pub mod bin;
pub mod daemon;
