//! `corral kubeconfig`: a kubeconfig that points kubectl at the daemon's TCP listener.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use serde_json::json;

use super::common::CmdError;

/// Arguments of `corral kubeconfig`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The daemon's TCP address (its --listen), e.g. 127.0.0.1:6443.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub server: String,
    /// The daemon's bearer token file (its --token-file).
    #[arg(long, default_value = "/etc/corral/token")]
    pub token_file: PathBuf,
    /// The CA of the daemon's TCP listener (`<state-dir>/tls/ca.crt`).
    #[arg(long, default_value = "/var/lib/corral/tls/ca.crt")]
    pub ca_file: PathBuf,
    /// Default namespace of the context.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

fn run_inner(a: &Args) -> Result<(), CmdError> {
    let token = std::fs::read_to_string(&a.token_file).map_err(|e| CmdError::File {
        path: a.token_file.display().to_string(),
        message: e.to_string(),
    })?;
    let ca = std::fs::read(&a.ca_file).map_err(|e| CmdError::File {
        path: a.ca_file.display().to_string(),
        message: e.to_string(),
    })?;
    let server = format!("https://{}", a.server.trim_start_matches("https://"));
    let kc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "corral", "cluster": {"server": server, "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(&ca)}}],
        "users": [{"name": "corral", "user": {"token": token.trim()}}],
        "contexts": [{"name": "corral", "context": {"cluster": "corral", "user": "corral", "namespace": a.namespace}}],
        "current-context": "corral",
    });
    crate::out!("{}", serde_norway::to_string(&kc).unwrap_or_default());
    Ok(())
}

/// Runs `corral kubeconfig`.
pub fn run(a: Args) -> ExitCode {
    match run_inner(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}
