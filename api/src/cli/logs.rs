//! `corral logs VMI`: the recent serial console output of a VMI (what is left of it in the
//! VMM's capped, rotated console log).

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
    /// How many bytes of the end of the log to show (at most 8Mi; the VMM keeps the last
    /// 1-2 MiB of output).
    #[arg(long, default_value_t = 65536,
          value_parser = clap::value_parser!(u64).range(0..=crate::console::MAX_TAIL))]
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn tail_bytes_is_bounded_before_asking_the_daemon() {
        let parse = |t: &str| Cli::try_parse_from(["corral", "logs", "vm", "--tail-bytes", t]);
        match parse("8388608").unwrap().command {
            Command::Logs(a) => assert_eq!(a.tail_bytes, 8 << 20),
            other => panic!("{other:?}"),
        }
        for bad in ["8388609", "x"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("--tail-bytes"), "{e}");
        }
        assert!(parse("-1").is_err());
    }
}
