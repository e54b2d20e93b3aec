//! `corral delete TYPE NAME...`: delete objects and, by default, wait until they are gone.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;

use super::common::{self, CmdError, Conn, check, object_path};
use crate::client::Request;

/// Arguments of `corral delete`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Resource type (vmirs, vmi, hpa) or TYPE/NAME.
    pub resource: String,
    /// Names of the objects.
    pub names: Vec<String>,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// What happens to the VMIs of a replica set: background, foreground or orphan.
    #[arg(long, default_value = "background")]
    pub cascade: String,
    /// Wait until the objects are gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub wait: bool,
    /// Seconds to give the guest to stop (overrides terminationGracePeriodSeconds).
    #[arg(long)]
    pub grace_period: Option<i64>,
    #[command(flatten)]
    pub conn: Conn,
}

fn run_inner(a: &Args) -> Result<(), CmdError> {
    let (kind, first) = common::type_and_name(&a.resource, None)?;
    let names: Vec<String> = first.into_iter().chain(a.names.iter().cloned()).collect();
    if names.is_empty() {
        return Err(CmdError::Usage("resource name(s) required".into()));
    }
    let policy = match a.cascade.as_str() {
        "background" | "true" => "Background",
        "foreground" => "Foreground",
        "orphan" | "false" => "Orphan",
        o => {
            return Err(CmdError::Usage(format!(
                "--cascade {o:?}: must be background, foreground or orphan"
            )));
        }
    };
    let client = a.conn.client()?;
    let info = kind.info();
    for name in &names {
        let path = object_path(kind, &a.namespace, name);
        let mut opts =
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy});
        if let Some(g) = a.grace_period {
            opts["gracePeriodSeconds"] = json!(g);
        }
        let body = serde_json::to_vec(&opts).unwrap_or_default();
        let mut req = Request::new("DELETE", &path);
        req.content_type = Some("application/json");
        req.body = &body;
        check(client.send(&req)?)?;
        let label = if info.group.is_empty() {
            format!("{} \"{name}\"", info.singular)
        } else {
            format!("{}.{} \"{name}\"", info.singular, info.group)
        };
        crate::outln!("{label} deleted from {} namespace", a.namespace);
        if a.wait {
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let r = client.get(&path)?;
                if r.status == 404 {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(CmdError::Other(format!(
                        "timed out waiting for {label} to be deleted"
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

/// Runs `corral delete`.
pub fn run(a: Args) -> ExitCode {
    match run_inner(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}
