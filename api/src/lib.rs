//! corral's HTTP API and command-line interface.
pub mod cli;
