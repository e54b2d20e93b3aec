//! `corral vmm`'s console log on the real /dev/kvm: a chatty guest's log stays within two files
//! of `--console-log-max-bytes` holding its newest output; a log that cannot be written (ENOSPC)
//! is reported once and the guest runs on; the cap is checked.

use std::time::{Duration, Instant};

use corral_tests::vmm::{STEP, Vm, VmArgs};

#[test]
fn chatty_guest_log_is_capped_rotated_and_holds_the_newest_output() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let rotated = dir.path().join("console.log.1");
    let cap = 4096u64;
    let mut vm = Vm::spawn(VmArgs::testguest("mode=echo").args([
        "--console-log",
        log.to_str().unwrap(),
        "--console-log-max-bytes",
        "4Ki",
    ]));
    vm.wait_for("TESTGUEST READY", STEP);
    // About 25 KiB of output: six rotations or so.
    let lines = 400;
    for i in 0..lines {
        vm.send(&format!(
            "line {i:05} of the chatty guest's console output\n"
        ));
        if i % 50 == 49 {
            vm.wait_for(&format!("testguest: echo line {i:05} "), STEP);
        }
    }
    vm.wait_for(&format!("testguest: echo line {:05} ", lines - 1), STEP);
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0, "stderr:\n{}", vm.stderr());
    let out = vm.output();
    assert!(out.len() as u64 > 5 * cap, "{} bytes of output", out.len());

    let old = std::fs::read(&rotated).expect("console.log.1");
    let new = std::fs::read(&log).unwrap();
    assert_eq!(old.len() as u64, cap, "the rotated file is one full cap");
    assert!(new.len() as u64 <= cap, "current file {} bytes", new.len());
    let kept = String::from_utf8([old, new].concat())
        .unwrap()
        .replace('\r', "");
    assert!(
        out.ends_with(&kept),
        "the two files are the end of the output:\n{kept}"
    );
    assert!(kept.contains("testguest: echo line 00399 "), "{kept}");
    assert!(!kept.contains("TESTGUEST READY"), "old output rotated out");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    assert!(
        !vm.stderr().contains("console log"),
        "no failure to report: {}",
        vm.stderr()
    );
}

#[test]
fn unwritable_log_is_reported_once_and_the_guest_runs_on() {
    // /dev/full: every write fails with ENOSPC; a device is never renamed.
    let mut vm = Vm::spawn(
        VmArgs::testguest("mode=poweroff")
            .args(["--console-log", "/dev/full"])
            .no_stdin(),
    );
    let code = vm.exit_code(STEP);
    // `Vm` collects stderr asynchronously: wait for the report to arrive (it never does on main).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !vm.stderr().contains("console log: ") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (out, err) = (vm.output(), vm.stderr());
    assert_eq!(code, 0, "stderr:\n{err}");
    assert!(out.contains("TESTGUEST READY") && out.contains("testguest: poweroff"));
    assert_eq!(
        err.matches("console log: ").count(),
        1,
        "one report:\n{err}"
    );
    assert!(err.contains("/dev/full"), "{err}");
    assert!(std::path::Path::new("/dev/full").exists());
}

#[test]
fn console_log_cap_out_of_range_is_a_bad_argument() {
    for (cap, why) in [
        ("1Ki", "outside 4Ki..1Gi"),
        ("2Gi", "outside 4Ki..1Gi"),
        ("lots", ""),
    ] {
        // Run to the end here: `Vm` collects stderr asynchronously.
        let out = std::process::Command::new(corral_tests::bin::corral())
            .arg("vmm")
            .args(
                VmArgs::testguest("mode=poweroff")
                    .args(["--console-log-max-bytes", cap])
                    .args,
            )
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cap}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--console-log-max-bytes") && err.contains(why),
            "{cap}: {err}"
        );
        assert!(!err.contains("unexpected argument"), "{err}");
    }
}
