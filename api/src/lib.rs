//! corral's HTTP API (Kubernetes-style, served by `corral daemon`) and command-line interface.
//!
//! Threads: the daemon runs one tokio runtime; handlers parse and map, and run store writes on
//! the blocking pool. Watches and console sessions are one task each.

pub mod body;
pub mod cli;
pub mod client;
pub mod console;
pub mod console_input;
pub mod daemon;
pub mod daemon_metrics;
pub mod discovery;
pub mod hostcheck;
pub mod hpa_versions;
pub mod image_source;
pub mod metrics_api;
pub mod objects;
pub mod openapi;
pub mod path;
pub mod router;
pub mod server;
pub mod state;
pub mod status;
pub mod table;
pub mod tls;
pub mod ui;
pub mod watch;
pub mod watch_ws;
