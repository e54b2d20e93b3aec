//! `corral logs VMI`: the recent serial console output of a VMI.

use std::io::Write;
use std::process::ExitCode;

use super::common::{CmdError, Conn, check};

/// Arguments of `corral logs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the VMI.
    pub name: String,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// How many bytes of the end of the log to show.
    #[arg(long, default_value_t = 65536)]
    pub tail_bytes: u64,
    #[command(flatten)]
    pub conn: Conn,
}

fn run_inner(a: &Args) -> Result<(), CmdError> {
    let client = a.conn.client()?;
    let path = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{}/virtualmachineinstances/{}/consolelog?tailBytes={}",
        a.namespace, a.name, a.tail_bytes
    );
    let r = check(client.get(&path)?)?;
    std::io::stdout()
        .write_all(&r.body)
        .map_err(|e| CmdError::Other(e.to_string()))?;
    Ok(())
}

/// Runs `corral logs`.
pub fn run(a: Args) -> ExitCode {
    match run_inner(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}
