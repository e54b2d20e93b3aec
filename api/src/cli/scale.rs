//! `corral scale vmirs NAME --replicas N`: the scale subresource.

use std::process::ExitCode;

use serde_json::json;
use supervisor::kinds::Kind;

use super::common::{self, CmdError, Conn, check, object_path};
use crate::client::Request;

/// Arguments of `corral scale`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// vmirs or vmirs/NAME.
    pub resource: String,
    /// Name of the replica set.
    pub name: Option<String>,
    /// Desired replicas.
    #[arg(long)]
    pub replicas: i64,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub conn: Conn,
}

fn run_inner(a: &Args) -> Result<(), CmdError> {
    let (kind, name) = common::type_and_name(&a.resource, a.name.as_deref())?;
    if kind != Kind::ReplicaSet {
        return Err(CmdError::Usage(format!(
            "{} cannot be scaled; only vmirs can",
            kind.qualified_plural()
        )));
    }
    let name = name.ok_or_else(|| CmdError::Usage("the replica set's name is required".into()))?;
    let client = a.conn.client()?;
    let body = serde_json::to_vec(&json!({"spec": {"replicas": a.replicas}})).unwrap_or_default();
    let path = format!("{}/scale", object_path(kind, &a.namespace, &name));
    let mut req = Request::new("PATCH", &path);
    req.content_type = Some("application/merge-patch+json");
    req.body = &body;
    check(client.send(&req)?)?;
    crate::outln!("virtualmachineinstancereplicaset.kubevirt.io/{name} scaled");
    Ok(())
}

/// Runs `corral scale`.
pub fn run(a: Args) -> ExitCode {
    match run_inner(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}
