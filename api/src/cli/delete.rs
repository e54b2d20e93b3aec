//! `corral delete TYPE NAME...` (or `TYPE --all`): delete objects and, by default, wait until
//! they are gone.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::common::{self, CmdError, Conn, check, collection_path, list_items, object_path};
use crate::client::Request;

/// Arguments of `corral delete`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Resource type (vmirs, vmi, hpa) or TYPE/NAME.
    pub resource: String,
    /// Names of the objects.
    pub names: Vec<String>,
    /// Delete every object of the type in the namespace (kubectl's `--all`).
    #[arg(long)]
    pub all: bool,
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

/// The names given on the command line; empty with `--all`.
fn given_names(a: &Args, first: Option<String>) -> Result<Vec<String>, CmdError> {
    let names: Vec<String> = first.into_iter().chain(a.names.iter().cloned()).collect();
    match (a.all, names.is_empty()) {
        (true, false) => Err(CmdError::Usage(
            "--all deletes every object of the type: give names or --all, not both".into(),
        )),
        (false, true) => Err(CmdError::Usage("resource name(s) required".into())),
        _ => Ok(names),
    }
}

fn run_inner(a: &Args) -> Result<(), CmdError> {
    let (kind, first) = common::type_and_name(&a.resource, None)?;
    let names = given_names(a, first)?;
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
    let names = if a.all {
        item_names(&check(client.get(&collection_path(kind, Some(&a.namespace)))?)?.json()?)
    } else {
        names
    };
    if names.is_empty() {
        crate::outln!("No resources found");
        return Ok(());
    }
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

/// The names of a list's items, in the list's order.
fn item_names(list: &Value) -> Vec<String> {
    list_items(list)
        .iter()
        .map(|o| supervisor::meta::name(o).to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Runs `corral delete`.
pub fn run(a: Args) -> ExitCode {
    match run_inner(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_takes_the_names_of_every_item() {
        let list = json!({"kind": "ServiceList", "items": [
            {"metadata": {"name": "lab"}},
            {"metadata": {}},
            {"metadata": {"name": "sticky"}},
        ]});
        assert_eq!(item_names(&list), ["lab", "sticky"]);
        assert!(item_names(&json!({"kind": "ServiceList", "items": []})).is_empty());
        assert!(item_names(&json!({"kind": "Status"})).is_empty());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn given(argv: &[&str]) -> Result<Vec<String>, String> {
        use clap::Parser;
        let a = Cli::try_parse_from(std::iter::once("delete").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?
            .args;
        let (_, first) = common::type_and_name(&a.resource, None).map_err(|e| e.to_string())?;
        given_names(&a, first).map_err(|e| e.to_string())
    }

    #[test]
    fn names_or_all_but_not_both() {
        assert_eq!(given(&["vmirs", "a", "b"]).unwrap(), ["a", "b"]);
        assert_eq!(given(&["vmirs/a", "b"]).unwrap(), ["a", "b"]);
        assert!(given(&["svc", "--all"]).unwrap().is_empty());
        assert!(
            given(&["svc", "lab", "--all"])
                .unwrap_err()
                .contains("not both")
        );
        assert!(
            given(&["svc/lab", "--all"])
                .unwrap_err()
                .contains("not both")
        );
        assert!(given(&["svc"]).unwrap_err().contains("name(s) required"));
    }
}
