//! Real Linux guests, in the nested tier (tests/src/nested/mod.rs): each test boots one L1
//! machine under QEMU's emulated AMD SVM and runs `tests/nested/<name>.sh` in it; corral in L1
//! boots the CirrOS-like image on a real (SVM) /dev/kvm. Logs: `target/nested/<name>/`.
//!
//! The scenarios run one at a time (each L1 wants both host cores).

use std::sync::Mutex;
use std::time::Duration;

use corral_tests::linux_log;
use corral_tests::nested::{self, Outcome, Scenario};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(s: Scenario) -> Outcome {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    nested::run(&s)
}

/// `corral vmm` boots the CirrOS-like image (kernel, initrd and command line as `corral image
/// import` extracted them) through the PVH entry and the 64-bit boot protocol (virtio-pci) and the
/// bzImage (virtio-mmio).
#[test]
fn boot() {
    let out = run(Scenario::new("boot").deadline(Duration::from_secs(300)));
    out.assert_passed();
    let cmdline = out.file("cmdline").trim().to_string();
    for variant in ["pvh", "linux", "bzimage"] {
        // Early boot, from the guest's dmesg: what vmm_linux checks on the PVM host.
        linux_log::check_early_boot(
            &out.file(&format!("dmesg-{variant}.log")),
            &linux_log::Machine {
                cmdline: &cmdline,
                memory: 256 << 20,
                cpus: 2,
                disks: 3,
                pvh: variant == "pvh",
                transport: if variant == "bzimage" {
                    vmm::TransportKind::Mmio
                } else {
                    vmm::TransportKind::Pci
                },
            },
        );
        // Userspace, from the console: root on vda1, the seed's user-data, 2 CPUs, a clean
        // power-off through ACPI S5.
        let console = out.file(&format!("boot-{variant}.log"));
        for want in [
            "initrd: mounted LABEL=cirros-rootfs (/dev/vda1) on /".to_string(),
            format!("cidata: seed=/dev/vdc instance-id=iid-nested-{variant}"),
            format!("USERDATA: ran on nested-{variant} cpus=2 vda=yes vdb=yes"),
            "USERDATA: dmesg on vdb".to_string(),
            "cidata: user-data exit=0".to_string(),
            "cpus=2 root=/dev/vda1".to_string(),
            "GUEST-SHUTDOWN".to_string(),
            "reboot: Power down".to_string(),
        ] {
            assert!(
                console.contains(&want),
                "{variant}: no {want:?} in:\n{console}"
            );
        }
    }
}

/// The seed lab on real guests: 2/2 Ready and at GUEST-READY, scale 2 -> 1 -> 3, a killed VMM
/// replaced, and deleting the set leaves no process, run directory or cgroup.
#[test]
fn lab() {
    let out = run(Scenario::new("lab").deadline(Duration::from_secs(420)));
    out.assert_passed();
    // Scale-down stops a guest through its power button: far less than the 30 s grace period.
    let down: u64 = out.value("scale_down_ms");
    assert!(down < 15_000, "scale 2 -> 1 took {down} ms");
    // The script checked the VMM of a real Linux guest: a jail uid, no_new_privs, seccomp on
    // each of its threads (main, event loop, vCPU, disk workers).
    let threads: u64 = out.value("jailed_threads");
    assert!(threads >= 3, "{threads} threads");
}

/// Deleting a VMI shuts real Linux down through ACPI (VMM exit 0, long before the grace
/// period); `reboot` in the guest restarts it inside the same VMM process.
#[test]
fn shutdown() {
    let out = run(Scenario::new("shutdown").deadline(Duration::from_secs(300)));
    out.assert_passed();
    let ms: u64 = out.value("shutdown_ms");
    nested::announce(&format!(
        "nested shutdown: the guest powered off {ms} ms after the VMI was deleted (grace 30 s)"
    ));
}

/// cgroup v2 only: the daemon picks it, a guest spinning under `limits.cpu: 300m` measures
/// 300m +- 10 %, and the seed HPA scales the set 1 -> 2.
#[test]
fn cgroup_v2() {
    let out = run(Scenario::new("cgroup-v2").deadline(Duration::from_secs(360)));
    out.assert_passed();
    let m: u64 = out.value("cpu_millicores");
    assert!((270..=330).contains(&m), "{m}m");
    assert_eq!(out.values["cpu_max"], "30000/100000");
}

/// kill -9 of the daemon with two real guests running: the new daemon adopts both (same
/// VMM pids), their consoles answer, nothing restarted.
#[test]
fn restart() {
    let out = run(Scenario::new("restart").deadline(Duration::from_secs(300)));
    out.assert_passed();
}

/// Pod networks with real Linux guests (CNI in L1, KubeVirt's masquerade binding): udhcpc's
/// lease, route, DNS and hostname; wget guest -> node and guest -> guest; curl node -> guest;
/// deletion leaves nothing.
#[test]
fn network() {
    let out = run(Scenario::new("network")
        .with_pod_network()
        .deadline(Duration::from_secs(420)));
    out.assert_passed();
    assert_eq!(out.values["lease"], "10.0.2.2/24,router=10.0.2.1,mtu=1500");
    assert_eq!(out.values["reached"], "l1->guest,guest->l1,guest->guest");
}

/// A real Debian cloud image (tests/fixtures/parts/40-debian-cloud.sh: systemd, Debian's
/// cloud-init, an initramfs with virtio_pci but no virtio_mmio) in the seed set: cloud-init
/// done with corral's NoCloud seed (hostname, instance-id, write_files, runcmd), a power-button
/// shutdown well inside the grace period; on virtio-mmio the same image never finds its root.
/// The image's OCI layout reaches L1 on a read-only disk (it would not fit L1's initramfs well).
#[test]
fn cloudinit() {
    let layout = corral_tests::bin::fixtures().join("images/debian-cloud-like/oci.ext4");
    // 4 GiB: the daemon admits a VMI only if its overlay could grow to the disk's virtual size
    // (1 GiB) on the scratch file system, here L1's root tmpfs (half of L1's memory), which also
    // holds the image store (~550 MiB for this image).
    let out = run(Scenario::new("cloudinit")
        .disk(&layout)
        .memory(4096)
        .deadline(Duration::from_secs(1200)));
    out.assert_passed();
    for key in [
        "guest_multi_user_uptime_ms",
        "cloud_init_done_ms",
        "shutdown_ms",
    ] {
        let ms: u64 = out.value(key);
        nested::announce(&format!("nested cloudinit: {key} = {ms}"));
    }
    let down: u64 = out.value("shutdown_ms");
    assert!(down < 30_000, "power-off took {down} ms");
    assert_eq!(
        out.values["guest_cloud_init"],
        "done,hostname,instance-id,write_files,runcmd"
    );
}

/// The CirrOS-shape disk (qcow2 v2, ext3, the command line only in GRUB legacy's menu.lst, as
/// CirrOS 0.4.0 ships it): `corral image import` takes kernel, initrd and command line from
/// menu.lst and says so; `corral vmm` boots it over virtio-pci to userspace and powers off.
#[test]
fn cirros_shape() {
    let out = run(Scenario::new("cirros-shape").deadline(Duration::from_secs(360)));
    if out.values.contains_key("early_boot_retries") {
        nested::announce(
            "nested cirros-shape: the first L2 boot was lost before userspace (emulated SVM \
             under load; console in boot-1.log); booted once more",
        );
    }
    out.assert_passed();
    assert_eq!(
        out.values["cmdline_source"],
        "/boot/grub/menu.lst (partition 1)"
    );
    assert_eq!(out.values["root_fs_type"], "ext3");
    assert_eq!(out.values["qcow2_version"], "2");
    let cmdline = out.file("cmdline").trim().to_string();
    assert_eq!(
        cmdline,
        "ro root=LABEL=cirros-rootfs console=tty1 console=ttyS0"
    );
    let import = out.file("image-import.txt");
    assert!(
        import.contains("           from /boot/grub/menu.lst (partition 1)"),
        "{import}"
    );
    let console = out.file("boot.log");
    for want in [
        "initrd: mounted LABEL=cirros-rootfs (/dev/vda1) on /",
        "cidata: seed=/dev/vdb instance-id=iid-cirros-shape",
        // /proc/mounts says ext4: the initramfs mounts the ext3 root with the ext4 driver.
        "USERDATA: ran on cirros-shape cpus=2 root=/dev/vda1 ext4",
        "cmdline=ro root=LABEL=cirros-rootfs console=tty1 console=ttyS0",
        "cidata: user-data exit=0",
        "GUEST-READY",
        "cpus=2 root=/dev/vda1",
        "GUEST-SHUTDOWN",
        "reboot: Power down",
    ] {
        assert!(console.contains(want), "no {want:?} in:\n{console}");
    }
}
