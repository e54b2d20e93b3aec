//! The CirrOS-shape container disk (tests/fixtures/parts/35-cirros-shape.sh: laid out like
//! CirrOS 0.4.0, the seed lab's image) imported by the `corral` binary: the qcow2 v2 disk is
//! converted, the ext3 root is read, kernel and initrd are the ones `/boot/grub/menu.lst`
//! names and the command line is its default entry's, and the CLI says where it came from.

use std::path::{Path, PathBuf};

use corral_tests::corral::{fixtures, image_cmd, ok};
use serde_json::Value;

fn shape() -> PathBuf {
    let dir = fixtures().join("images/cirros-shape");
    assert!(
        dir.join("oci/index.json").exists(),
        "{} missing: run tests/fixtures/build.sh (part 35-cirros-shape.sh)",
        dir.display()
    );
    dir
}

const CMDLINE: &str = "ro root=LABEL=cirros-rootfs console=tty1 console=ttyS0";
const SOURCE: &str = "/boot/grub/menu.lst (partition 1)";

fn import(store: &Path, input: &Path, tag: &str, json: bool) -> String {
    let mut c = image_cmd(store);
    c.arg("import").arg(input).args(["--tag", tag]);
    if json {
        c.arg("--json");
    }
    ok(c)
}

#[test]
fn imports_the_cirros_shape() {
    let dir = shape();
    let kver = std::fs::read_to_string(dir.join("kernel-version"))
        .unwrap()
        .trim()
        .to_string();
    // The fixture really is shaped like CirrOS: qcow2 v2 (compat 0.10) in the layer.
    let qcow2 = std::fs::read(dir.join("disk.qcow2")).unwrap();
    assert_eq!(&qcow2[..4], b"QFI\xfb");
    assert_eq!(u32::from_be_bytes(qcow2[4..8].try_into().unwrap()), 2);

    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let tag = "localhost/corral/cirros-shape:v1";
    let img: Value =
        serde_json::from_str(&import(&store, &dir.join("oci"), tag, true)).expect("import --json");
    assert_eq!(img["reference"], tag);
    assert_eq!(img["disk_name"], "/disk/disk.qcow2");
    assert_eq!(img["disk_format"], "qcow2");
    assert_eq!(img["qcow2_version"], 2, "{img:#}");
    assert_eq!(img["disk_size"], 64 << 20);
    // The converted disk is the fixture's raw disk, byte for byte.
    let raw = img["disk_raw"].as_str().unwrap();
    assert!(
        std::fs::read(raw).unwrap() == std::fs::read(dir.join("disk.raw")).unwrap(),
        "{raw} differs from the fixture's disk.raw"
    );
    let boot = &img["boot"];
    assert_eq!(boot["root_partition"], 1);
    assert_eq!(boot["root_fs_type"], "ext3", "{img:#}");
    assert_eq!(img["rootfs_label"], "cirros-rootfs");
    assert_eq!(boot["kernel_partition"], 1);
    assert_eq!(boot["kernel_path"], format!("/boot/vmlinuz-{kver}"));
    assert_eq!(boot["initrd_path"], format!("/boot/initrd.img-{kver}"));
    // A bzImage in the disk, decompressed to vmlinux (the payload's compression).
    assert_ne!(boot["kernel_format"], "elf");
    assert_eq!(img["cmdline"], CMDLINE);
    assert_eq!(img["cmdline_source"], SOURCE);
    assert_eq!(boot["cmdline_source"], SOURCE);
    let initrd = img["initrd"].as_str().unwrap();
    assert_eq!(
        &std::fs::read(initrd).unwrap()[..2],
        b"\x1f\x8b",
        "gzip initramfs"
    );
    let kernel = img["kernel"].as_str().unwrap();
    assert_eq!(&std::fs::read(kernel).unwrap()[..4], b"\x7fELF");

    // Human output (the same image again: artifacts reused), as an OCI layout tar.
    let tar = tmp.path().join("cirros-shape.tar");
    std::fs::copy(dir.join("oci.tar"), &tar).unwrap();
    let out = import(&store, &tar, "localhost/corral/cirros-shape:tar", false);
    eprintln!("{out}");
    for want in [
        "localhost/corral/cirros-shape:tar".to_string(),
        "(64.0 MiB, qcow2 v2 /disk/disk.qcow2)".to_string(),
        "  rootfs   partition 1 (ext3, label cirros-rootfs)".to_string(),
        format!("(from partition 1 /boot/vmlinuz-{kver}, "),
        format!("(from /boot/initrd.img-{kver})"),
        format!("  cmdline  {CMDLINE}"),
        format!("           from {SOURCE}"),
    ] {
        assert!(out.contains(&want), "no {want:?} in:\n{out}");
    }
}
