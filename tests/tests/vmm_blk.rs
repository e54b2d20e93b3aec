//! virtio-blk on the real /dev/kvm, driven by the test guest's virtio drivers: base reads,
//! copy-on-write overlays (private per VM, base untouched, shared by concurrent VMs), read-only and
//! scratch disks, hostile requests, the NoCloud seed, unnamed scratch files (gone after exit and
//! after SIGKILL), reboots, and the exit file. Every test runs twice, as `pci::NAME` over
//! virtio-pci (MSI-X) and as `mmio::NAME` over virtio-mmio (`corral vmm --transport`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_tests::per_transport;
use corral_tests::transport::Transport;
use corral_tests::vmm::{STEP, Vm, VmArgs, fds_under, fnv, guest_pattern, lines_with, sha256};

per_transport!(
    overlay_reads_the_base_and_keeps_writes_private,
    overlay_survives_a_guest_reboot_but_not_the_vm,
    read_only_raw_and_scratch_disks,
    hostile_requests_get_error_statuses_and_the_vmm_keeps_serving,
    guest_reads_the_nocloud_seed,
    scratch_files_are_unnamed_and_die_with_the_vmm_even_on_sigkill,
    idle_guest_with_disks_costs_no_cpu,
    the_linux_64bit_entry_finds_the_same_devices,
    the_seed_image_the_vmm_serves_passes_fsck_blkid_and_mtools,
    bad_seed_directories_and_disk_specs_are_refused_with_exit_2,
);

const READY: &str = "TESTGUEST READY";
const SECTOR: usize = 512;

/// A base image of `len` bytes: byte i = (i * 7 + i / 4096) as u8 (every sector differs).
fn base_image(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
    let path = dir.join("base.raw");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn seed_dir(dir: &Path, instance_id: &str) -> PathBuf {
    let seed = dir.join(format!("seed-{instance_id}"));
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(
        seed.join("meta-data"),
        format!("instance-id: {instance_id}\nlocal-hostname: {instance_id}\n"),
    )
    .unwrap();
    std::fs::write(
        seed.join("user-data"),
        "#cloud-config\npassword: gocubsgo\nchpasswd: { expire: False }\n",
    )
    .unwrap();
    seed
}

/// `status=S fnv=0x... head=...` of a `blk read|write` reply.
fn status_and_fnv(reply: &str) -> (u8, u64) {
    let field = |k: &str| {
        reply
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {reply:?}"))
            .to_string()
    };
    let fnv = u64::from_str_radix(field("fnv=").trim_start_matches("0x"), 16).unwrap();
    (field("status=").parse().unwrap(), fnv)
}

fn read(vm: &mut Vm, dev: usize, sector: usize, count: usize) -> (u8, u64) {
    status_and_fnv(&vm.ask(
        &format!("blk read {dev} {sector} {count}"),
        "testguest: blk read ",
    ))
}

fn write(vm: &mut Vm, dev: usize, sector: usize, count: usize, seed: u8) -> u8 {
    status_and_fnv(&vm.ask(
        &format!("blk write {dev} {sector} {count} {seed}"),
        "testguest: blk write ",
    ))
    .0
}

/// Interrupts the guest took for disk `dev` (device index = disk index), from its `virtio irqs`:
/// on the disk's GSI (mmio) or on its queue's MSI-X entry (pci; none may come for configuration
/// changes).
fn queue_interrupts(vm: &mut Vm, t: Transport, dev: usize) -> u64 {
    let reply = vm.ask("virtio irqs", &format!("testguest: virtio irqs dev={dev} "));
    let count = match t {
        Transport::Mmio => reply.strip_prefix(&format!("gsi={} count=", 5 + dev)),
        Transport::Pci => reply.strip_prefix("msix config=0 q0="),
    };
    count
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{t:?}: bad irqs line {reply:?}"))
}

fn spawn(t: Transport, dir: &Path, disks: &[String]) -> Vm {
    let mut args = VmArgs::testguest("console=ttyS0")
        .args(t.args())
        .args(["--scratch-dir", dir.to_str().unwrap()]);
    for d in disks {
        args = args.args(["--disk", d.as_str()]);
    }
    let vm = Vm::spawn(args);
    vm.wait_for(READY, STEP);
    vm
}

fn overlay_reads_the_base_and_keeps_writes_private(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (base, bytes) = base_image(dir.path(), 4 << 20);
    let hash = sha256(&base);
    let disk = format!("{},overlay,serial=containerdisk", base.display());
    // Two VMs on one base at the same time.
    let mut a = spawn(t, dir.path(), std::slice::from_ref(&disk));
    let mut b = spawn(t, dir.path(), &[disk]);
    let out = a.output();
    assert!(
        out.contains(&format!(
            "testguest: blk dev=0 {} capacity={} ro=0 serial=\"containerdisk\"",
            t.location(0, 1),
            bytes.len() / SECTOR
        )),
        "{out}"
    );

    // Reads return the base's bytes (aligned, unaligned to the 4 KiB clusters, the last sectors).
    for (sector, count) in [(0, 64), (3, 5), (bytes.len() / SECTOR - 9, 9)] {
        let want = fnv(&bytes[sector * SECTOR..(sector + count) * SECTOR]);
        assert_eq!(read(&mut a, 0, sector, count), (0, want), "sector {sector}");
    }
    // A's writes (partial cluster, whole clusters, straddling) are read back by A...
    let mut expect = bytes.clone();
    for (sector, count, seed) in [(1, 2, 7), (16, 16, 9), (30, 4, 11)] {
        assert_eq!(write(&mut a, 0, sector, count, seed), 0);
        expect[sector * SECTOR..(sector + count) * SECTOR]
            .copy_from_slice(&guest_pattern(seed, count * SECTOR));
    }
    assert_eq!(read(&mut a, 0, 0, 64), (0, fnv(&expect[..64 * SECTOR])));
    // ...but not by B, which still sees the base, and can write its own data.
    assert_eq!(read(&mut b, 0, 0, 64), (0, fnv(&bytes[..64 * SECTOR])));
    assert_eq!(write(&mut b, 0, 1, 2, 200), 0);
    let mut expect_b = bytes.clone();
    expect_b[SECTOR..3 * SECTOR].copy_from_slice(&guest_pattern(200, 2 * SECTOR));
    assert_eq!(read(&mut b, 0, 0, 8), (0, fnv(&expect_b[..8 * SECTOR])));
    assert_eq!(read(&mut a, 0, 0, 8), (0, fnv(&expect[..8 * SECTOR])));

    for vm in [&mut a, &mut b] {
        assert_eq!(
            vm.ask("blk flush 0", "testguest: blk flush "),
            "dev=0 status=0"
        );
        vm.send("poweroff\n");
        assert_eq!(vm.exit_code(STEP), 0);
    }
    assert_eq!(sha256(&base), hash, "the base image changed");
    assert_eq!(std::fs::read(&base).unwrap(), bytes);
}

fn overlay_survives_a_guest_reboot_but_not_the_vm(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (base, bytes) = base_image(dir.path(), 1 << 20);
    let disk = format!("{},overlay", base.display());
    let mut vm = spawn(t, dir.path(), std::slice::from_ref(&disk));
    assert_eq!(write(&mut vm, 0, 8, 8, 42), 0);
    vm.send("reboot\n");
    vm.wait_for_n(READY, 2, STEP);
    // The device was reset and re-attached to the new boot's memory; the overlay is the VM's.
    assert_eq!(
        read(&mut vm, 0, 8, 8),
        (0, fnv(&guest_pattern(42, 8 * SECTOR)))
    );
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0);
    // A new VM of the same base starts from the base again.
    let mut again = spawn(t, dir.path(), &[disk]);
    assert_eq!(
        read(&mut again, 0, 8, 8),
        (0, fnv(&bytes[8 * SECTOR..16 * SECTOR]))
    );
    again.send("poweroff\n");
    assert_eq!(again.exit_code(STEP), 0);
}

fn read_only_raw_and_scratch_disks(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (base, bytes) = base_image(dir.path(), 1 << 20);
    let raw = dir.path().join("rw.raw");
    std::fs::write(&raw, &bytes).unwrap();
    let mut vm = spawn(
        t,
        dir.path(),
        &[
            format!("{},ro,serial=data", base.display()),
            format!("{},serial=rw", raw.display()),
            "empty=1Gi,serial=scratch".to_string(),
        ],
    );
    let out = vm.output();
    assert!(out.contains("capacity=2048 ro=1 serial=\"data\""), "{out}");
    assert!(
        out.contains("capacity=2097152 ro=0 serial=\"scratch\""),
        "{out}"
    );
    // Read-only: reads work, writes get VIRTIO_BLK_S_IOERR.
    assert_eq!(read(&mut vm, 0, 0, 16), (0, fnv(&bytes[..16 * SECTOR])));
    assert_eq!(write(&mut vm, 0, 0, 1, 1), 1);
    // Writable raw file: the write lands in the file itself.
    assert_eq!(write(&mut vm, 1, 4, 2, 3), 0);
    // Scratch: zeroes until written, at the far end too.
    let last = (1usize << 30) / SECTOR - 8;
    assert_eq!(read(&mut vm, 2, last, 8), (0, fnv(&[0u8; 8 * SECTOR])));
    assert_eq!(write(&mut vm, 2, last, 8, 5), 0);
    assert_eq!(
        read(&mut vm, 2, last, 8),
        (0, fnv(&guest_pattern(5, 8 * SECTOR)))
    );
    assert_eq!(
        vm.ask("blk id 2", "testguest: blk id "),
        "dev=2 serial=\"scratch\""
    );
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0);
    let mut expect = bytes.clone();
    expect[4 * SECTOR..6 * SECTOR].copy_from_slice(&guest_pattern(3, 2 * SECTOR));
    assert_eq!(std::fs::read(&raw).unwrap(), expect);
    assert_eq!(std::fs::read(&base).unwrap(), bytes);
}

fn hostile_requests_get_error_statuses_and_the_vmm_keeps_serving(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (base, bytes) = base_image(dir.path(), 1 << 20);
    let mut vm = spawn(t, dir.path(), &[format!("{},overlay", base.display())]);
    // Beyond the capacity, straddling it, a sector number that overflows, an unknown type, a
    // buffer outside guest RAM, a partial sector.
    assert_eq!(
        vm.ask("blk bad 0", "testguest: blk bad "),
        "dev=0 beyond=1 straddle=1 huge=1 unknown=2 outside=1 partial=1"
    );
    assert_eq!(read(&mut vm, 0, 0, 8), (0, fnv(&bytes[..8 * SECTOR])));
    // The guest waits for completions halted (it never polls), so they came as interrupts: on
    // the disk's own line or its queue's MSI-X entry. (Two completions may share one interrupt.)
    let irqs = queue_interrupts(&mut vm, t, 0);
    assert!(irqs > 0, "{t:?}: no interrupts");
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0);
}

fn guest_reads_the_nocloud_seed(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = base_image(dir.path(), 1 << 20);
    let seed = seed_dir(dir.path(), "vmi-replica-7.default");
    // The daemon's order (container disk, seed), and the --seed-dir alias on a second VM.
    let mut vm = spawn(
        t,
        dir.path(),
        &[
            format!("{},overlay,serial=containerdisk", base.display()),
            format!("seed={},serial=cloudinitdisk", seed.display()),
        ],
    );
    let out = vm.output();
    let line = format!(
        "testguest: blk dev=1 {} capacity=2048 ro=1 serial=\"cloudinitdisk\"",
        t.location(1, 1)
    );
    assert!(out.contains(&line), "no {line:?} in:\n{out}");
    assert_eq!(
        lines_with(&out, "testguest: cidata "),
        vec![
            "testguest: cidata dev=1 instance-id=vmi-replica-7.default",
            "testguest: cidata dev=1 user-data first-line=\"#cloud-config\"",
        ]
    );
    // The seed is read-only.
    assert_eq!(write(&mut vm, 1, 0, 1, 0), 1);
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0);

    let mut vm = Vm::spawn(
        VmArgs::testguest("mode=poweroff")
            .args(t.args())
            .args([
                "--seed-dir",
                seed.to_str().unwrap(),
                "--scratch-dir",
                dir.path().to_str().unwrap(),
            ])
            .no_stdin(),
    );
    assert_eq!(vm.exit_code(STEP), 0);
    let out = vm.output();
    assert!(out.contains("serial=\"cidata\""), "{out}");
    assert!(
        out.contains("testguest: cidata dev=0 instance-id=vmi-replica-7.default"),
        "{out}"
    );
}

fn scratch_files_are_unnamed_and_die_with_the_vmm_even_on_sigkill(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let scratch = dir.path().join("run");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    let (base, _) = base_image(&images, 1 << 20);
    let seed = seed_dir(&images, "iid-kill");
    let disks = [
        format!("{},overlay", base.display()),
        format!("seed={}", seed.display()),
        "empty=64Mi".to_string(),
    ];
    for how in ["poweroff", "SIGKILL"] {
        let mut vm = spawn(t, &scratch, &disks);
        assert_eq!(write(&mut vm, 0, 0, 8, 1), 0);
        assert_eq!(write(&mut vm, 2, 0, 8, 1), 0);
        // Three files are open in the scratch directory, none has a name there.
        let fds = fds_under(vm.pid(), &scratch);
        assert_eq!(fds.len(), 3, "{fds:?}");
        assert!(fds.iter().all(|f| f.ends_with("(deleted)")), "{fds:?}");
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
        if how == "poweroff" {
            vm.send("poweroff\n");
            assert_eq!(vm.exit_code(STEP), 0);
        } else {
            vm.signal(libc::SIGKILL);
            let status = vm.wait_exit(STEP);
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL)
            );
        }
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "{how}");
        assert!(
            !Path::new(&format!("/proc/{}", vm.pid())).exists()
                || fds_under(vm.pid(), &scratch).is_empty()
        );
    }
}

fn idle_guest_with_disks_costs_no_cpu(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = base_image(dir.path(), 1 << 20);
    let seed = seed_dir(dir.path(), "iid-idle");
    let mut vm = spawn(
        t,
        dir.path(),
        &[
            format!("{},overlay", base.display()),
            format!("seed={}", seed.display()),
        ],
    );
    assert_eq!(write(&mut vm, 0, 0, 8, 1), 0);
    std::thread::sleep(Duration::from_millis(300));
    let hz = corral_tests::vmm::ticks_per_second();
    let before = vm.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let share = (vm.cpu_ticks() - before) as f64 / (2.0 * hz as f64);
    assert!(
        share < 0.02,
        "idle guest with disks used {:.1}% of a core",
        share * 100.0
    );
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0);
}

fn the_linux_64bit_entry_finds_the_same_devices(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = base_image(dir.path(), 1 << 20);
    let mut vm = Vm::spawn(
        VmArgs::testguest("mode=poweroff")
            .args(t.args())
            .args([
                "--boot-protocol",
                "linux",
                "--disk",
                &format!("{},ro", base.display()),
                "--disk",
                "empty=1Mi",
            ])
            .no_stdin(),
    );
    assert_eq!(vm.exit_code(STEP), 0);
    let out = vm.output();
    // virtio-mmio devices are also on the command line (Linux needs them there without ACPI);
    // virtio-pci functions are found on the bus only.
    match t {
        Transport::Mmio => assert!(
            out.contains("virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6\""),
            "{out}"
        ),
        Transport::Pci => assert!(!out.contains("virtio_mmio.device="), "{out}"),
    }
    assert_eq!(
        lines_with(&out, "testguest: blk dev="),
        [
            format!(
                "testguest: blk dev=0 {} capacity=2048 ro=1 serial=\"\"",
                t.location(0, 1)
            ),
            format!(
                "testguest: blk dev=1 {} capacity=2048 ro=0 serial=\"\"",
                t.location(1, 1)
            ),
        ],
        "{out}"
    );
    assert!(out.contains("testguest: virtio devices=2"), "{out}");
}

/// Runs a tool and returns its stdout (panics with stderr if it fails).
fn tool(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn the_seed_image_the_vmm_serves_passes_fsck_blkid_and_mtools(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_dir(dir.path(), "iid-tools");
    std::fs::write(seed.join("network-config"), "version: 2\nethernets: {}\n").unwrap();
    // user-data from userDataBase64 can be any bytes: the copy must be exact.
    let user: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(seed.join("user-data"), &user).unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let vm = spawn(
        t,
        &run,
        &[format!("seed={},serial=cloudinitdisk", seed.display())],
    );
    // The unnamed image, through the VMM's own descriptor.
    let fd = std::fs::read_dir(format!("/proc/{}/fd", vm.pid()))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&run)))
        .expect("seed image fd");
    let image = dir.path().join("seed.img");
    std::fs::copy(fd.path(), &image).unwrap();
    drop(vm);
    let img = image.to_str().unwrap();

    let fsck = tool("fsck.fat", &["-n", img]);
    // Three files plus the volume label entry.
    assert!(fsck.contains(": 4 files,"), "{fsck}");
    let blkid = tool("blkid", &["-o", "export", img]);
    assert!(blkid.lines().any(|l| l == "LABEL=cidata"), "{blkid}");
    assert!(blkid.lines().any(|l| l == "TYPE=vfat"), "{blkid}");
    let mdir = tool("mdir", &["-b", "-i", img, "::/"]);
    let mut names: Vec<&str> = mdir.lines().map(|l| l.trim_start_matches("::/")).collect();
    names.sort();
    assert_eq!(
        names,
        ["meta-data", "network-config", "user-data"],
        "{mdir}"
    );
    let get = |name: &str| {
        let out = std::process::Command::new("mtype")
            .args(["-i", img, &format!("::/{name}")])
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    assert_eq!(
        get("meta-data"),
        std::fs::read(seed.join("meta-data")).unwrap()
    );
    assert_eq!(get("network-config"), b"version: 2\nethernets: {}\n");
    assert_eq!(get("user-data"), user);
}

fn bad_seed_directories_and_disk_specs_are_refused_with_exit_2(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let guest = corral_tests::vmm::testguest();
    let run = |disk: &str| {
        std::process::Command::new(corral_tests::vmm::corral())
            .args([
                "vmm",
                "--no-stdin",
                "--transport",
                t.name(),
                "--kernel",
                guest.to_str().unwrap(),
                "--disk",
                disk,
            ])
            .output()
            .unwrap()
    };
    for (disk, code, msg) in [
        (
            "/nonexistent.raw,overlay",
            2,
            "/nonexistent.raw: no such file",
        ),
        (
            "seed=/nonexistent-seed",
            2,
            "/nonexistent-seed: no such directory",
        ),
        ("/x,bogus", 2, "unknown option \"bogus\""),
        ("empty=12parsecs", 2, "bad size"),
    ] {
        let o = run(disk);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{disk}: {err}");
        assert!(err.contains(msg), "{disk}: {err}");
    }
    // A seed directory without user-data: the VMM cannot build the disk (exit 1, named).
    let seed = dir.path().join("seed");
    std::fs::create_dir(&seed).unwrap();
    std::fs::write(seed.join("meta-data"), "instance-id: x\n").unwrap();
    let o = run(&format!("seed={}", seed.display()));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("lacks user-data"), "{err}");
}
