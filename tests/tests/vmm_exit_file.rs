//! `--exit-file`: every exit the VMM controls leaves `{"code": N, "reason": "..."}` there, so a
//! supervisor that re-adopted the VMM (and cannot wait for it) learns how it ended.

use std::path::Path;

use corral_tests::vmm::{STEP, Vm, VmArgs};

fn record(path: &Path) -> (i64, String) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    (
        v["code"].as_i64().unwrap(),
        v["reason"].as_str().unwrap().to_string(),
    )
}

fn with_exit_file(cmdline: &str, path: &Path) -> VmArgs {
    VmArgs::testguest(cmdline).args(["--exit-file", path.to_str().unwrap()])
}

#[test]
fn each_outcome_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exit.json");

    let mut vm = Vm::spawn(with_exit_file("mode=poweroff", &file).no_stdin());
    assert_eq!(vm.exit_code(STEP), 0);
    assert_eq!(record(&file), (0, "guest powered off".into()));

    let mut vm = Vm::spawn(with_exit_file("mode=crash", &file).no_stdin());
    assert_eq!(vm.exit_code(STEP), 3);
    let (code, reason) = record(&file);
    assert_eq!(code, 3);
    assert!(
        reason.starts_with("guest crashed: vCPU 0: triple fault"),
        "{reason}"
    );

    let mut vm = Vm::spawn(with_exit_file("console=ttyS0", &file));
    vm.wait_for("TESTGUEST READY", STEP);
    vm.signal(libc::SIGTERM);
    assert_eq!(vm.exit_code(STEP), 5);
    assert_eq!(record(&file), (5, "stopped: SIGTERM".into()));

    let mut vm = Vm::spawn(
        with_exit_file("mode=poweroff", &file)
            .args(["--cpus", "0"])
            .no_stdin(),
    );
    assert_eq!(vm.exit_code(STEP), 2);
    let (code, reason) = record(&file);
    assert_eq!(code, 2);
    assert!(reason.contains("bad arguments: 0 vCPUs"), "{reason}");

    let junk = dir.path().join("junk");
    std::fs::write(&junk, [0u8; 4096]).unwrap();
    let mut args = with_exit_file("", &file).no_stdin();
    args.args[1] = junk.display().to_string();
    let mut vm = Vm::spawn(args);
    assert_eq!(vm.exit_code(STEP), 1);
    let (code, reason) = record(&file);
    assert_eq!(code, 1);
    assert!(reason.contains("loading the kernel"), "{reason}");
    // Only the record is left in the directory (the temporary file was renamed).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}"); // exit.json and junk
}

#[test]
fn sigkill_leaves_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exit.json");
    let mut vm = Vm::spawn(with_exit_file("console=ttyS0", &file));
    vm.wait_for("TESTGUEST READY", STEP);
    vm.signal(libc::SIGKILL);
    vm.wait_exit(STEP);
    assert!(!file.exists());
}
