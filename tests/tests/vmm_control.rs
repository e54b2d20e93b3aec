//! The control socket: status, console streams, stop.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use corral_tests::vmm::{STEP, Vm, VmArgs, control, wait_for_socket};

fn attach_console(socket: &std::path::Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(b"{\"op\":\"console\"}\n").unwrap();
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"{\"ok\":true}\n");
    s.set_read_timeout(Some(STEP)).unwrap();
    s
}

fn read_until(s: &mut UnixStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + STEP;
    while !String::from_utf8_lossy(&got).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {:?}",
            String::from_utf8_lossy(&got)
        );
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "console closed before {needle:?}");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn status_console_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vm.sock");
    std::fs::write(&socket, "stale").unwrap(); // a leftover file is replaced
    let mut vm = Vm::spawn(
        VmArgs::testguest("console=ttyS0")
            .args([
                "--cpus",
                "2",
                "--memory",
                "128Mi",
                "--control-socket",
                socket.to_str().unwrap(),
            ])
            .no_stdin(),
    );
    vm.wait_for("TESTGUEST READY", STEP);
    wait_for_socket(&socket, STEP);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let status = control(&socket, r#"{"op":"status"}"#);
    assert_eq!(status["pid"], vm.pid());
    assert_eq!(status["state"], "running");
    assert_eq!(status["vcpus"], 2);
    assert_eq!(status["memory_bytes"], 128u64 << 20);
    assert_eq!(status["boots"], 1);
    assert_eq!(status["vcpus_entered"], true);
    let started = status["started_unix_ms"].as_u64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(started <= now_ms && now_ms - started < 120_000, "{status}");

    let bad = control(&socket, r#"{"op":"explode"}"#);
    assert!(bad["error"].as_str().unwrap().contains("explode"), "{bad}");

    // Two consoles: both see every output byte; either can type.
    let mut a = attach_console(&socket);
    let mut b = attach_console(&socket);
    a.write_all(b"echo from-a\n").unwrap();
    read_until(&mut a, "from-a\r\n");
    read_until(&mut b, "from-a\r\n");
    b.write_all(b"echo from-b\n").unwrap();
    read_until(&mut a, "from-b\r\n");
    read_until(&mut b, "from-b\r\n");
    drop(b);

    // A reboot through the console counts a boot.
    a.write_all(b"reboot\n").unwrap();
    read_until(&mut a, "TESTGUEST READY");
    let deadline = Instant::now() + STEP;
    while control(&socket, r#"{"op":"status"}"#)["boots"] != 2 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }

    // A stop with a grace period presses the ACPI power button; the guest powers off, which
    // ends the VM as a power-off (exit 0), not a host stop.
    let reply = control(&socket, r#"{"op":"stop","grace_ms":10000}"#);
    assert_eq!(reply, serde_json::json!({"ok": true}));
    assert_eq!(vm.exit_code(STEP), 0, "{}", vm.stderr());
    let out = vm.output();
    assert!(
        out.contains("testguest: power button\ntestguest: poweroff"),
        "{out}"
    );
    assert!(!socket.exists(), "socket removed at exit");
    // The console connection sees the end of the stream.
    let mut rest = String::new();
    let _ = BufReader::new(&mut a).read_line(&mut rest);
}

#[test]
fn a_console_reader_that_never_reads_does_not_block_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vm.sock");
    let mut vm = Vm::spawn(
        VmArgs::testguest("console=ttyS0").args(["--control-socket", socket.to_str().unwrap()]),
    );
    vm.wait_for("TESTGUEST READY", STEP);
    let _lazy = attach_console(&socket); // never read
    // ~85 KiB of output: more than the lazy socket and its 64 KiB buffer hold. The guest's 1 KiB
    // input ring fills up over and over, so this also exercises its receive flow control.
    let line = format!("echo {}\n", "x".repeat(200));
    for _ in 0..400 {
        vm.send(&line);
    }
    vm.send("echo all-done\n");
    let out = vm.wait_for("\nall-done\n", Duration::from_secs(120));
    assert_eq!(out.matches(&line[5..]).count(), 400, "no input line lost");
    let status = control(&socket, r#"{"op":"status"}"#);
    assert!(
        status["console_dropped_bytes"].as_u64().unwrap() > 0,
        "{status}"
    );
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0);
}

/// A guest that ignores everything, with a control socket.
fn hung_guest(socket: &std::path::Path) -> Vm {
    let vm = Vm::spawn(
        VmArgs::testguest("mode=hang")
            .args(["--control-socket", socket.to_str().unwrap()])
            .no_stdin(),
    );
    vm.wait_for("testguest: hang", STEP);
    wait_for_socket(socket, STEP);
    vm
}

#[test]
fn stop_forces_a_guest_that_ignores_the_power_button_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vm.sock");
    let mut vm = hung_guest(&socket);
    let start = Instant::now();
    assert_eq!(
        control(&socket, r#"{"op":"stop","grace_ms":400}"#)["ok"],
        true
    );
    assert_eq!(vm.exit_code(STEP), 5);
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert!(
        vm.stderr().contains("forced after 400 ms grace"),
        "{}",
        vm.stderr()
    );
    // grace_ms 0 (or absent) stops at once.
    let mut vm = hung_guest(&socket);
    assert_eq!(control(&socket, r#"{"op":"stop"}"#)["ok"], true);
    assert_eq!(vm.exit_code(STEP), 5);
    assert!(
        vm.stderr().contains("stopped: control socket stop\n"),
        "{}",
        vm.stderr()
    );
}

#[test]
fn a_stop_during_early_boot_still_powers_the_guest_off() {
    // The stop arrives as soon as the control socket exists, before the guest has routed the
    // power button's interrupt: the first press is lost, a repeated one powers it off.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vm.sock");
    let mut vm = Vm::spawn(
        VmArgs::testguest("console=ttyS0")
            .args(["--control-socket", socket.to_str().unwrap()])
            .no_stdin(),
    );
    wait_for_socket(&socket, STEP);
    let t0 = Instant::now();
    let reply = control(&socket, r#"{"op":"stop","grace_ms":20000}"#);
    assert_eq!(reply, serde_json::json!({"ok": true}));
    assert_eq!(vm.exit_code(STEP), 0, "{}", vm.stderr());
    assert!(
        vm.output().contains("testguest: poweroff"),
        "{}",
        vm.output()
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}
