//! The real Debian cloud kernel on `corral vmm`: its early-boot log proves our boot structures
//! (command line, e820 map, ACPI tables — the DSDT with one `LNRO0005` device per disk — and the
//! CPU count) to a real Linux. Every boot has two virtio-blk disks (an overlay and a seed).
//!
//! On a PVM host (no vmx/svm) every guest instruction is emulated and the kernel stops in early
//! boot (KVM internal error on `lock cmpxchg16b`, after ~37 s here), so these tests stop the VM
//! once the lines are seen; the nested tier (tests/tests/nested.rs) boots the same kernel to
//! userspace on an emulated SVM host and checks the same lines there. On a host with hardware KVM they also boot a busybox initramfs that
//! loads Debian's virtio, virtio_ring, virtio_mmio and virtio_blk modules (the cloud kernel finds
//! virtio-mmio devices only through ACPI), checks that /dev/vda and /dev/vdb appear, prints a
//! marker and expects ACPI power-off (exit 0).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use corral_tests::linux_log;
use corral_tests::vmm::{Vm, VmArgs, fixture, hardware_kvm};

const CPUS: u16 = 2;
const MEMORY: u64 = 256 << 20;
const MARKER: &str = "CORRAL-LINUX-READY";

/// The virtio modules the initramfs loads, in dependency order.
const MODULES: [&str; 4] = ["virtio_ring", "virtio", "virtio_mmio", "virtio_blk"];

/// Writes a newc initramfs with busybox, the virtio modules and an /init that loads them, waits
/// for the two disks, prints the marker and powers off.
fn initramfs(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["bin", "proc", "sys", "dev", "lib"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for m in MODULES {
        std::fs::copy(
            fixture(&format!("modules/{m}.ko")),
            root.join(format!("lib/{m}.ko")),
        )
        .unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::write(
        root.join("init"),
        // No /dev/console node in the archive: mount devtmpfs and take the console from it.
        format!(
            "#!/bin/sh\n/bin/busybox mount -t devtmpfs devtmpfs /dev\n\
             exec 0</dev/console 1>/dev/console 2>&1\n/bin/busybox mount -t proc proc /proc\n\
             /bin/busybox mount -t sysfs sysfs /sys\n\
             for m in {modules}; do /bin/busybox insmod /lib/$m.ko; done\n\
             i=0; while [ $i -lt 100 ] && ! [ -b /dev/vdb ]; do /bin/busybox usleep 50000; i=$((i+1)); done\n\
             vda=no; vdb=no; [ -b /dev/vda ] && vda=yes; [ -b /dev/vdb ] && vdb=yes\n\
             echo \"{MARKER} cpus=$(/bin/busybox nproc) vda=$vda vdb=$vdb\"\n/bin/busybox poweroff -f\n",
            modules = MODULES.join(" ")
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = dir.join("initramfs.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc --quiet > {}",
            root.display(),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "cpio");
    out
}

fn boot_real_kernel(kernel: &str, protocol: &str, bound: Duration) {
    let hw = hardware_kvm();
    let dir = tempfile::tempdir().unwrap();
    let cmdline = "console=ttyS0 earlyprintk=serial reboot=k panic=-1";
    // Two disks: an overlay of a small image and a NoCloud seed.
    let image = dir.path().join("disk.raw");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let seed = dir.path().join("seed");
    std::fs::create_dir(&seed).unwrap();
    std::fs::write(seed.join("meta-data"), "instance-id: linux-1\n").unwrap();
    std::fs::write(seed.join("user-data"), "#cloud-config\n").unwrap();
    let mut args = VmArgs::testguest("").no_stdin().args([
        "--cpus",
        &CPUS.to_string(),
        "--memory",
        "256Mi",
        "--boot-protocol",
        protocol,
        "--scratch-dir",
        dir.path().to_str().unwrap(),
        "--disk",
        &format!("{},overlay,serial=root", image.display()),
        "--disk",
        &format!("seed={},serial=cidata", seed.display()),
    ]);
    args.args[1] = fixture(kernel).display().to_string();
    args.args[3] = cmdline.to_string();
    if hw {
        args = args.args(["--initrd", initramfs(dir.path()).to_str().unwrap()]);
    } else {
        note_full_boot_not_attempted();
    }
    let start = std::time::Instant::now();
    let mut vm = Vm::spawn(args);
    // The last line checked: `smpboot: Allowing N CPUs, 0 hotplug CPUs` (from the MADT).
    let out = vm.wait_for(
        &format!("smpboot: Allowing {CPUS} CPUs, 0 hotplug CPUs\n"),
        bound,
    );
    eprintln!(
        "{kernel} ({protocol}): early-boot lines after {:?}",
        start.elapsed()
    );

    // Ours, plus one virtio_mmio.device= per disk (ignored by Debian's kernels, which lack
    // VIRTIO_MMIO_CMDLINE_DEVICES, and used by kernels that have it).
    linux_log::check_early_boot(
        &out,
        &linux_log::Machine {
            cmdline,
            memory: MEMORY,
            cpus: CPUS,
            disks: 2,
            pvh: protocol == "pvh",
            transport: vmm::TransportKind::Pci,
        },
    );

    if hw {
        let out = vm.wait_for(&format!("{MARKER} cpus={CPUS} vda=yes vdb=yes"), bound);
        assert_eq!(vm.exit_code(bound), 0, "poweroff: {out}");
    } else {
        vm.signal(libc::SIGTERM);
        assert_eq!(vm.exit_code(Duration::from_secs(30)), 5);
    }
}

/// Says once per run, past libtest's output capture, why the full boot was not attempted.
fn note_full_boot_not_attempted() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "vmm_linux: full Linux boot (busybox initramfs loading virtio_mmio + virtio_blk, \
             /dev/vda and /dev/vdb, then poweroff) not attempted here: /dev/kvm is PVM (no \
             vmx/svm), where unmodified kernels stop in early boot; checked the early-boot log \
             (command line, e820, ACPI tables incl. the DSDT with the LNRO0005 devices) of \
             vmlinux (64-bit and PVH entry) and bzImage instead. The same checks and the boot to \
             userspace run on SVM in the nested tier (tests/tests/nested.rs, boot)"
        );
    });
}

#[test]
fn debian_vmlinux_64bit_boot_protocol() {
    boot_real_kernel("vmlinux", "linux", Duration::from_secs(120));
}

#[test]
fn debian_vmlinux_pvh_entry() {
    boot_real_kernel("vmlinux", "pvh", Duration::from_secs(120));
}

#[test]
fn debian_bzimage() {
    // Under PVM the LZ4 decompressor alone takes ~85 s of emulated instructions.
    boot_real_kernel("vmlinuz", "auto", Duration::from_secs(300));
}
