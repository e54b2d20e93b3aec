//! The VMM's jail on the real /dev/kvm with the test guest: who the jailed process is, what it
//! can see, that a full VM life (disks, console connections, control requests, a guest reboot,
//! a stop, the exit file) works under the seccomp filters, and that a forbidden system call on
//! any thread kind kills the VMM with SIGSYS.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use corral_tests::vmm::{STEP, Vm, VmArgs, control, guest_pattern, wait_for_socket};

const READY: &str = "TESTGUEST READY";
/// A uid/gid of the daemon's dynamic range.
const JAIL_ID: u32 = vmm::jail::DYNAMIC_ID_BASE + 0x4242;

/// A VM run directory as the daemon prepares it: root-owned, group = the VM's gid, 01770.
fn run_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("run");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(0), Some(JAIL_ID)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1770)).unwrap();
    dir
}

fn jailed(cmdline: &str, run: &Path) -> VmArgs {
    VmArgs::testguest(cmdline).args([
        "--jail-uid".to_string(),
        JAIL_ID.to_string(),
        "--control-socket".into(),
        run.join("control.sock").display().to_string(),
        "--console-log".into(),
        run.join("console.log").display().to_string(),
        "--exit-file".into(),
        run.join("exit.json").display().to_string(),
        "--scratch-dir".into(),
        run.display().to_string(),
    ])
}

/// `Field:\tvalue` of a /proc status file.
fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
        .to_string()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_jailed_vmm_is_unprivileged_sees_only_its_run_dir_and_runs_a_whole_vm() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_dir(tmp.path());
    // Stand-ins for what the VMM must never reach: the state database (outside the run dir)
    // and a root-only file inside it.
    let state_db = tmp.path().join("corral.redb");
    std::fs::write(&state_db, b"state").unwrap();
    let secret = run.join("vm.json");
    std::fs::write(&secret, b"{}").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let base = tmp.path().join("base.raw");
    std::fs::write(&base, guest_pattern(1, 1 << 20)).unwrap();

    let mut vm = Vm::spawn(jailed("console=ttyS0", &run).args([
        "--cpus".to_string(),
        "2".into(),
        "--disk".into(),
        format!("{},overlay,serial=root", base.display()),
        "--disk".into(),
        "empty=1Mi".into(),
        // Small enough that the guest's output rotates the log (from a vCPU thread).
        "--console-log-max-bytes".into(),
        "4Ki".into(),
    ]));
    vm.wait_for(READY, STEP);
    let pid = vm.pid();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));

    // Who it is: the jail's uid/gid everywhere, no groups, no capabilities, no_new_privs, and a
    // seccomp filter on every thread.
    let status = std::fs::read_to_string(proc_dir.join("status")).unwrap();
    let id = JAIL_ID.to_string();
    assert_eq!(field(&status, "Uid"), format!("{id}\t{id}\t{id}\t{id}"));
    assert_eq!(field(&status, "Gid"), format!("{id}\t{id}\t{id}\t{id}"));
    assert_eq!(field(&status, "Groups"), "");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(&status, cap), "0000000000000000", "{cap}");
    }
    assert_eq!(field(&status, "NoNewPrivs"), "1");
    let tasks = names_in(&proc_dir.join("task"));
    let mut kinds = Vec::new();
    for task in &tasks {
        let st = std::fs::read_to_string(proc_dir.join("task").join(task).join("status"))
            .unwrap_or_default();
        if st.is_empty() {
            continue; // a thread that just ended
        }
        let name = field(&st, "Name");
        kinds.push(name.trim_end_matches(char::is_numeric).to_string());
        assert_eq!(field(&st, "Seccomp"), "2", "thread {task} ({name})");
        // Every thread but the main one stacks its own filter on the main one's.
        let filters: u32 = field(&st, "Seccomp_filters").parse().unwrap();
        let want = if task == &pid.to_string() { 1 } else { 2 };
        assert_eq!(filters, want, "thread {task} ({name})");
    }
    for kind in ["devices", "blk-read", "vcpu"] {
        assert!(kinds.contains(&kind.to_string()), "{kinds:?}");
    }

    // What it sees: an empty root with only the path down to its run directory, which holds
    // its files; nothing else of the host (no /proc, /dev, /etc, state database).
    let root = proc_dir.join("root");
    let first = run
        .components()
        .nth(1)
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    assert_eq!(names_in(&root), vec![first.to_string()]);
    let inside = root.join(run.strip_prefix("/").unwrap());
    let files = names_in(&inside);
    for f in ["console.log", "control.sock", "vm.json"] {
        assert!(files.contains(&f.to_string()), "{files:?}");
    }
    assert!(!root.join("dev/kvm").exists());
    assert!(!root.join("etc").exists());
    assert!(!root.join(state_db.strip_prefix("/").unwrap()).exists());
    assert!(root.join(run.strip_prefix("/").unwrap()).exists());
    // The jail's root is read-only, its run directory nosuid,nodev,noexec.
    let mounts = std::fs::read_to_string(proc_dir.join("mountinfo")).unwrap();
    let lines: Vec<&str> = mounts.lines().collect();
    assert_eq!(lines.len(), 2, "{mounts}");
    assert!(lines[0].contains(" / / ro,"), "{mounts}");
    let run_line = lines[1];
    assert!(
        run_line.contains(&format!(" {} rw,nosuid,nodev,noexec", run.display())),
        "{mounts}"
    );

    // A whole VM life under the filters: disk reads and writes (the read workers and the
    // event loop), a control request and a console connection (the event loop), console output
    // (the vCPUs), a guest reboot (the main thread builds the VM again from the kept kernel).
    let pattern = guest_pattern(1, 1 << 20);
    let want = corral_tests::vmm::fnv(&pattern[..64 * 512]);
    let read = vm.ask("blk read 0 0 64", "testguest: blk read ");
    assert!(read.contains("status=0"), "{read}");
    let got = read
        .split_whitespace()
        .find_map(|w| w.strip_prefix("fnv=0x"))
        .map(|h| u64::from_str_radix(h, 16).unwrap());
    assert_eq!(got, Some(want), "{read}");
    let wrote = vm.ask("blk write 1 0 8 3", "testguest: blk write ");
    assert!(wrote.contains("status=0"), "{wrote}");
    let flushed = vm.ask("blk flush 1", "testguest: blk flush ");
    assert!(flushed.contains("status=0"), "{flushed}");
    let socket = run.join("control.sock");
    wait_for_socket(&socket, STEP);
    let st = control(&socket, r#"{"op":"status"}"#);
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["vcpus_entered"], true, "{st}");
    // Enough output to cross the 4 KiB cap at least once.
    for i in 0..24 {
        vm.send(&format!("echo line{i} {}\n", "y".repeat(200)));
    }
    vm.wait_for("line23 ", STEP);
    vm.send("reboot\n");
    vm.wait_for_n(READY, 2, STEP);
    let read = vm.ask("blk read 0 0 64", "testguest: blk read ");
    assert!(read.contains("status=0"), "{read}");
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0, "{}", vm.stderr());

    // It wrote its exit file and removed its socket from inside the jail; the daemon's own
    // root-only file is untouched.
    let exit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("exit.json")).unwrap()).unwrap();
    assert_eq!(exit["code"], 0, "{exit}");
    assert!(!socket.exists());
    assert_eq!(std::fs::read(&secret).unwrap(), b"{}");
    // The log was rotated inside the jail: both files belong to the jail's user.
    let rotated = run.join("console.log.1");
    assert!(rotated.exists(), "{:?}", names_in(&run));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&rotated).unwrap().uid(), JAIL_ID);
    assert_eq!(
        std::fs::metadata(run.join("console.log")).unwrap().uid(),
        JAIL_ID
    );
    assert!(!vm.stderr().contains("console log:"), "{}", vm.stderr());
}

#[test]
fn a_forbidden_syscall_on_any_thread_kind_kills_the_vmm_with_sigsys() {
    for kind in ["main", "event-loop", "vcpu", "blk-read"] {
        let tmp = tempfile::tempdir().unwrap();
        let run = run_dir(tmp.path());
        let mut vm = Vm::spawn(jailed("console=ttyS0", &run).no_stdin().args([
            "--disk",
            "empty=1Mi",
            "--jail-selftest",
            kind,
        ]));
        let status = vm.wait_exit(STEP);
        assert_eq!(
            status.signal(),
            Some(libc::SIGSYS),
            "{kind}: {status:?}\n{}",
            vm.stderr()
        );
    }
}

#[test]
fn the_jail_refuses_root_as_its_identity() {
    let mut vm = Vm::spawn(
        VmArgs::testguest("mode=poweroff")
            .no_stdin()
            .args(["--jail-uid", "0"]),
    );
    assert_eq!(vm.exit_code(STEP), 2, "{}", vm.stderr());
    assert!(vm.stderr().contains("must not be 0"), "{}", vm.stderr());
}

/// The daemon jails every VMM by default: a VMI of a replica set runs as a uid of the dynamic
/// range, filtered, and cannot see the daemon's state directory.
#[test]
fn the_daemon_jails_its_vmms_by_default() {
    use corral_tests::daemon::{Daemon, wait_for};
    let reg = corral_tests::registry::Registry::start();
    let oci = corral_tests::corral::fixtures().join("images/testguest/oci");
    reg.push(
        &format!("oci:{}:latest", oci.display()),
        "corral/testguest:latest",
    );
    let d = Daemon::start(&["--insecure-registry", reg.addr.as_str()]);
    let yaml = std::fs::read_to_string(
        corral_tests::bin::workspace().join("tests/fixtures/seed/vmirs.yaml"),
    )
    .unwrap()
    .replace(
        "quay.io/kubevirt/cirros-container-disk-demo",
        &format!("{}/corral/testguest:latest", reg.addr),
    )
    .replace("replicas: 2", "replicas: 1");
    let r = d.req(
        "POST",
        "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets",
        Some("application/yaml"),
        yaml.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let pid = wait_for(std::time::Duration::from_secs(60), "a ready VMI", || {
        let items =
            d.get_json("/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances")["items"]
                .as_array()
                .cloned()
                .unwrap_or_default();
        let ready = items.iter().any(|v| {
            v["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        });
        if ready {
            d.vmm_pids().first().copied()
        } else {
            None
        }
    });
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(proc_dir.join("status")).unwrap();
    let uid: u32 = field(&status, "Uid")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (vmm::jail::DYNAMIC_ID_BASE..vmm::jail::DYNAMIC_ID_BASE + vmm::jail::DYNAMIC_ID_RANGE)
            .contains(&uid),
        "{status}"
    );
    assert_eq!(field(&status, "CapEff"), "0000000000000000");
    assert_eq!(field(&status, "NoNewPrivs"), "1");
    assert_eq!(field(&status, "Seccomp"), "2");
    // Its whole view is its run directory: the state directory (object database, CA key,
    // images) is not there, and its run directory is.
    let root = proc_dir.join("root");
    let run_dirs = names_in(&d.vms_dir());
    assert_eq!(run_dirs.len(), 1, "{run_dirs:?}");
    let run = d.vms_dir().join(&run_dirs[0]);
    assert!(
        root.join(run.strip_prefix("/").unwrap())
            .join("console.log")
            .exists()
    );
    let mounts = std::fs::read_to_string(proc_dir.join("mountinfo")).unwrap();
    assert_eq!(mounts.lines().count(), 2, "{mounts}");
    assert!(
        !mounts.contains(&d.state_dir.display().to_string()),
        "{mounts}"
    );
    assert!(!root.join(d.state_dir.strip_prefix("/").unwrap()).exists());
    let meta = std::fs::metadata(&run).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, uid, 0o1770)
    );
}

/// Every way a VM ends works under the filters as it does unjailed (the crash report's register
/// reads on a vCPU thread, the signalfd on the event loop, the exit file from the main thread).
#[test]
fn jailed_outcomes_are_the_unjailed_ones() {
    for (cmdline, code) in [
        ("console=ttyS0 mode=poweroff", 0),
        ("console=ttyS0 mode=crash", 3),
        ("console=ttyS0 mode=internal-error", 4),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let run = run_dir(tmp.path());
        let mut vm = Vm::spawn(jailed(cmdline, &run).no_stdin());
        let status = vm.wait_exit(STEP);
        assert_eq!(
            status.code(),
            Some(code),
            "{cmdline}: {status:?}\n{}",
            vm.stderr()
        );
        let exit: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("exit.json")).unwrap()).unwrap();
        assert_eq!(exit["code"], code, "{cmdline}: {exit}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = run_dir(tmp.path());
    let mut vm = Vm::spawn(jailed("console=ttyS0", &run).no_stdin());
    vm.wait_for(READY, STEP);
    vm.signal(libc::SIGTERM);
    assert_eq!(vm.exit_code(STEP), 5, "{}", vm.stderr());
    let exit = std::fs::read_to_string(run.join("exit.json")).unwrap();
    assert!(exit.contains("SIGTERM"), "{exit}");
}
