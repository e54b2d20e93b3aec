//! `nested SCENARIO [KEY=VALUE ...] [--qemu] [--pod-network] [--deadline SECS]`: runs `tests/nested/<SCENARIO>.sh`
//! in one L1 machine (see `corral_tests::nested`), streams L1's console to stderr and prints
//! the scenario's `NESTED-VALUE`s as JSON on stdout. `KEY=VALUE` becomes `NESTED_KEY` in the
//! script's environment; `--qemu` and `--pod-network` add those tools to L1. Exit status 0
//! when the scenario passed.

use std::process::ExitCode;
use std::time::Duration;

use corral_tests::nested::{Scenario, run};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!(
            "usage: nested SCENARIO [KEY=VALUE ...] [--qemu] [--pod-network] [--deadline SECS]"
        );
        return ExitCode::from(2);
    };
    let mut s = Scenario::new(&name);
    while let Some(a) = args.next() {
        if a == "--qemu" {
            s = s.with_qemu();
        } else if a == "--pod-network" {
            s = s.with_pod_network();
        } else if a == "--deadline" {
            let Some(secs) = args.next().and_then(|v| v.parse().ok()) else {
                eprintln!("nested: --deadline SECS");
                return ExitCode::from(2);
            };
            s = s.deadline(Duration::from_secs(secs));
        } else if let Some((k, v)) = a.split_once('=') {
            s = s.env(k, v);
        } else {
            eprintln!("nested: unknown argument {a:?}");
            return ExitCode::from(2);
        }
    }
    let out = run(&s);
    println!(
        "{}",
        serde_json::to_string_pretty(&out.values).expect("values as JSON")
    );
    if out.passed() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "nested {name}: failed (exit {:?}): {:?}; logs in {}",
            out.exit,
            out.failures,
            out.dir.display()
        );
        ExitCode::FAILURE
    }
}
