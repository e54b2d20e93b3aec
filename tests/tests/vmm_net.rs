//! `corral vmm --net` on the real /dev/kvm with the test guest (first finding the devices and
//! reading their ids, then with its virtio-net driver and TCP/IP stack: HTTP and TCP echo), jailed, with one tap opened by the VMM by name and
//! one inherited as a file descriptor — always inside a network namespace of its own: the test
//! thread first enters a fresh one ([`corral_tests::netns::enter_private`]) and refuses to go on
//! unless only `lo` exists there; the taps, `ip` and the VMMs are all made or spawned from that
//! thread, so they live in (or inherit) that namespace. No tap is ever created in the host's
//! namespace.

use std::os::fd::IntoRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use corral_tests::vmm::{STEP, Vm, VmArgs};
use vmm::devices::virtio::net::tap::Tap;

const JAIL_ID: u32 = vmm::jail::DYNAMIC_ID_BASE + 0x4243;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn jailed_vm_with_two_net_devices_in_its_own_network_namespace() {
    if !is_root() || !Path::new("/dev/net/tun").exists() || !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: needs root, /dev/net/tun and /dev/kvm");
        return;
    }
    // Before anything touches the network: this thread (and whatever it spawns from now on)
    // leaves the host's namespace for an empty one, and stops there unless that worked.
    corral_tests::netns::enter_private().expect("a private network namespace (needs root)");
    assert!(
        corral_tests::netns::in_private(),
        "the test thread is still in the process's network namespace"
    );
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert_eq!(links.lines().count(), 1, "not a fresh namespace: {links}");
    assert!(links.contains(": lo:"), "{links}");

    // The daemon's way: the parent opens the tap and the VMM inherits it.
    let fd = Tap::open("cvmmnet1").unwrap().into_raw_fd();
    // SAFETY: fcntl on our own open fd; clearing FD_CLOEXEC lets the VMM inherit it.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    assert_eq!(rc, 0);

    let tmp = tempfile::tempdir().unwrap();
    let run = run_dir(tmp.path());
    let cmdline = "console=ttyS0 mode=poweroff";
    let mut vm = Vm::spawn(
        VmArgs::testguest(cmdline)
            .args([
                "--boot-protocol".to_string(),
                "linux".into(),
                // Discovery over virtio-mmio here (windows, GSIs); the traffic below runs over
                // virtio-pci, the default.
                "--transport".into(),
                "mmio".into(),
                "--jail-uid".into(),
                JAIL_ID.to_string(),
                "--exit-file".into(),
                run.join("exit.json").display().to_string(),
                "--disk".into(),
                "empty=1Mi".into(),
                "--net".into(),
                "tap=cvmmnet0".into(),
                "--net".into(),
                format!("fd={fd},mac=02:00:00:00:00:42"),
            ])
            .no_stdin(),
    );
    let code = vm.exit_code(STEP);
    let out = vm.output();
    assert_eq!(code, 0, "output:\n{out}\nstderr:\n{}", vm.stderr());
    assert!(out.contains("testguest: poweroff"), "{out}");
    assert!(
        out.contains(
            "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
             virtio_mmio.device=4K@0xd0002000:7\""
        ),
        "{out}"
    );
    assert!(out.contains("testguest: virtio devices=3"), "{out}");
    for (dev, base, gsi) in [(1, "0xd0001000", 6), (2, "0xd0002000", 7)] {
        let line =
            format!("testguest: virtio dev={dev} base={base} gsi={gsi} via=dsdt device_id=1");
        assert!(out.contains(&line), "no {line:?} in:\n{out}");
    }

    // Traffic through the device: the test guest's own driver and TCP/IP stack (static address)
    // on a jailed VMM's inherited tap; the host side of the tap is 10.0.2.1/24.
    let fd = Tap::open("cvmmnet2").unwrap().into_raw_fd();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    for args in [
        &["addr", "add", "10.0.2.1/24", "dev", "cvmmnet2"][..],
        &["link", "set", "cvmmnet2", "up"][..],
    ] {
        assert!(Command::new("ip").args(args).status().unwrap().success());
    }
    let run2 = tmp.path().join("run2");
    std::fs::rename(&run, &run2).unwrap();
    let vm = Vm::spawn(
        VmArgs::testguest("console=ttyS0 net=static:10.0.2.2/24,gw=10.0.2.1")
            .args([
                "--jail-uid".to_string(),
                JAIL_ID.to_string(),
                "--exit-file".into(),
                run2.join("exit.json").display().to_string(),
                "--net".into(),
                format!("fd={fd}"),
            ])
            .no_stdin(),
    );
    let out = vm.wait_for("testguest: net listening", STEP);
    assert!(
        out.contains("testguest: pci 00:01.0 id=1af4:1041"),
        "the NIC over virtio-pci: {out}"
    );
    let answer = http_get("10.0.2.2:80", "/");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello from testguest"),
        "{answer}"
    );
    // 64 KiB through the echo port and back, byte for byte.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect("10.0.2.2:7").unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || w.write_all(&data).unwrap())
    };
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "the echo differs");
}

/// A VM run directory as the daemon prepares it: root-owned, group = the VM's gid, 01770.
fn run_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("run");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(0), Some(JAIL_ID)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1770)).unwrap();
    dir
}

/// One HTTP/1.0 GET over a plain socket: the whole answer (head and body).
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.trim_end().to_string()
}
