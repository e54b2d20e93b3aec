//! The `corral` binary: parses the command line and hands over to [`api::cli`].

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    // `corral vmm` starts once per VM: it parses only its own flags, not the whole command tree
    // (less start-up code and fewer pages touched in every VMM; see the boot benchmark).
    if std::env::args_os().nth(1).is_some_and(|a| a == "vmm") {
        return api::cli::vmm::main();
    }
    let matches = api::cli::Cli::command().get_matches();
    let cli = match api::cli::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    api::cli::run(cli, &matches)
}
