//! Imports (docker-archive, OCI layout directory and tar), `ls`, `rm`, `gc`, crash safety under
//! `kill -9`, and KubeVirt's kernelBoot override through the library API.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use corral_tests::corral::{fails, fixtures, image_cmd, ok};
use corral_tests::registry::Registry;
use serde_json::Value;

fn images() -> PathBuf {
    fixtures().join("images")
}

fn import(store: &Path, input: &Path, tag: Option<&str>) -> Value {
    let mut c = image_cmd(store);
    c.args(["import", "--json"]).arg(input);
    if let Some(t) = tag {
        c.args(["--tag", t]);
    }
    serde_json::from_str(&ok(c)).expect("import --json")
}

fn ls(store: &Path) -> Vec<Value> {
    let mut c = image_cmd(store);
    c.args(["ls", "--json"]);
    serde_json::from_str::<Value>(&ok(c))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn blobs(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs/sha256"))
        .map(|r| r.count())
        .unwrap_or(0)
}

#[test]
fn imports_archives_and_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("store");
    // docker-archive (skopeo's docker-archive: format; layers uncompressed, checked by diff_id)
    let a = import(&s, &images().join("testguest/docker-archive.tar"), None);
    assert_eq!(a["reference"], "localhost/corral/testguest:latest");
    assert_eq!(a["disk_format"], "qcow2");
    assert!(Path::new(a["kernel"].as_str().unwrap()).exists());
    // the same image as an OCI layout directory: same image id, artifacts reused
    let b = import(
        &s,
        &images().join("testguest/oci"),
        Some("localhost/corral/testguest:oci"),
    );
    assert_eq!(b["id"], a["id"]);
    assert_eq!(b["disk_raw"], a["disk_raw"]);
    // an OCI layout as a tar (what `podman save --format oci-archive` writes)
    let tar = dir.path().join("cirros-like.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(images().join("cirros-like/oci"))
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let c = import(&s, &tar, None);
    assert_eq!(
        c["reference"], "localhost/cirros-like:latest",
        "named after the file when the layout names no image"
    );
    assert_eq!(
        c["cmdline"], "root=LABEL=cirros-rootfs ro console=ttyS0 quiet",
        "the image's /etc/kernel/cmdline"
    );
    let listed = ls(&s);
    let names: Vec<&str> = listed
        .iter()
        .map(|r| r["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "localhost/cirros-like:latest",
            "localhost/corral/testguest:latest",
            "localhost/corral/testguest:oci"
        ]
    );
    let mut table = image_cmd(&s);
    table.arg("ls");
    let table = ok(table);
    assert!(
        table.contains("localhost/cirros-like:latest") && table.contains("/boot/vmlinuz-"),
        "{table}"
    );

    // rm keeps what another reference still uses; the last reference takes it all
    let mut c = image_cmd(&s);
    c.args(["rm", "localhost/corral/testguest:latest"]);
    ok(c);
    assert!(
        Path::new(b["disk_raw"].as_str().unwrap()).exists(),
        "still used by :oci"
    );
    let mut c = image_cmd(&s);
    c.args(["rm", "localhost/corral/testguest:oci"]);
    ok(c);
    assert!(!Path::new(b["disk_raw"].as_str().unwrap()).exists());
    let mut c = image_cmd(&s);
    c.args(["rm", "localhost/corral/testguest:oci"]);
    assert!(fails(c).contains("no image localhost/corral/testguest:oci in the store"));
    let mut c = image_cmd(&s);
    c.args(["rm", "localhost/cirros-like:latest"]);
    ok(c);
    assert_eq!(blobs(&s), 0);
    assert_eq!(std::fs::read_dir(s.join("images")).unwrap().count(), 0);
    assert!(ls(&s).is_empty());
}

/// `kill -9` at several points of a pull: the store never shows a half image, the next open
/// (or gc) sweeps the leftovers, and the next pull succeeds.
#[test]
fn kill_9_during_a_pull_never_leaves_a_half_image() {
    let reg = Registry::start();
    reg.push(
        &format!("oci:{}:latest", images().join("cirros-like/oci").display()),
        "corral/cirros-like:latest",
    );
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("store");
    let reference = reg.reference("corral/cirros-like:latest");
    let mut saw_leftovers = false;
    for delay_ms in [30u64, 120, 250, 400] {
        let mut c = image_cmd(&s);
        c.args(["pull", "--insecure-registry", &reg.addr, &reference])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let tmp = std::fs::read_dir(s.join("tmp"))
            .map(|r| r.count())
            .unwrap_or(0);
        saw_leftovers |= tmp > 0;
        // whatever ls shows is complete (and opening the store swept the dead pull's staging)
        for r in ls(&s) {
            let img = &r["image"];
            for key in ["disk_raw", "kernel", "initrd"] {
                assert!(
                    Path::new(img[key].as_str().unwrap()).exists(),
                    "{key} of a listed image exists"
                );
            }
        }
        assert_eq!(
            std::fs::read_dir(s.join("tmp")).unwrap().count(),
            0,
            "open swept the staging"
        );
        // remove what the killed pull had committed, so the next round starts over
        let mut c = image_cmd(&s);
        c.args(["rm", &reference]);
        let _ = c.output();
    }
    let mut gc = image_cmd(&s);
    gc.arg("gc");
    let out = ok(gc);
    assert!(out.starts_with("gc: removed"), "{out}");
    assert_eq!(
        std::fs::read_dir(s.join("tmp")).unwrap().count(),
        0,
        "gc swept the staging"
    );
    assert!(
        saw_leftovers,
        "at least one kill landed mid-pull (otherwise this test proves nothing)"
    );
    let mut c = image_cmd(&s);
    c.args([
        "pull",
        "--json",
        "--insecure-registry",
        &reg.addr,
        &reference,
    ]);
    let img: Value = serde_json::from_str(&ok(c)).unwrap();
    assert!(Path::new(img["kernel"].as_str().unwrap()).exists());
}

/// gc removes blobs and artifacts of images no reference points to any more.
#[test]
fn gc_collects_what_a_moved_tag_left_behind() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("store");
    let reference = reg.reference("corral/moving:latest");
    let pull = |s: &Path| {
        let mut c = image_cmd(s);
        c.args([
            "pull",
            "--json",
            "--insecure-registry",
            &reg.addr,
            &reference,
        ]);
        serde_json::from_str::<Value>(&ok(c)).unwrap()
    };
    reg.push(
        &format!("oci:{}:latest", images().join("testguest/oci").display()),
        "corral/moving:latest",
    );
    let first = pull(&s);
    reg.push(
        &format!(
            "oci:{}:latest",
            images().join("testguest/oci-zstd").display()
        ),
        "corral/moving:latest",
    );
    let second = pull(&s);
    assert_ne!(first["digest"], second["digest"]);
    assert_eq!(
        first["id"], second["id"],
        "same config: the artifacts are shared"
    );
    reg.push(
        &format!(
            "oci:{}:latest",
            images().join("testguest/oci-plain").display()
        ),
        "corral/moving:latest",
    );
    let third = pull(&s);
    assert_ne!(third["id"], first["id"]);
    let before = blobs(&s);
    let mut gc = image_cmd(&s);
    gc.arg("gc");
    let out = ok(gc);
    assert!(out.contains("1 artifact dirs"), "{out}");
    assert!(
        blobs(&s) < before,
        "old manifests and layers collected: {out}"
    );
    assert!(!Path::new(first["dir"].as_str().unwrap()).exists());
    assert!(Path::new(third["disk_raw"].as_str().unwrap()).exists());
}

/// KubeVirt's spec.domain.firmware.kernelBoot: kernel/initrd from another container image,
/// kernelArgs replacing the default command line.
#[test]
fn kernel_boot_override() {
    let reg = Registry::start();
    reg.push(
        &format!("oci:{}:latest", images().join("nokernel/oci").display()),
        "corral/nokernel:latest",
    );
    reg.push(
        &format!("oci:{}:latest", images().join("kernelboot/oci").display()),
        "corral/kernels:latest",
    );
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = images::StoreConfig { insecure_registries: vec![reg.addr.clone()], ..Default::default() };
        let store = images::ImageStore::open(&dir.path().join("s"), config).unwrap();
        let disk_ref = reg.reference("corral/nokernel:latest");
        let err = store.pull(&disk_ref, images::PullOptions::default()).await.unwrap_err();
        assert!(format!("{err:?}").contains("NoKernel"), "{err:?}");
        let image = store.pull(&disk_ref, images::PullOptions { kernel_optional: true, progress: None }).await.unwrap();
        assert!(image.kernel.is_none());
        assert_eq!(image.cmdline, "root=LABEL=data ro console=ttyS0");
        let err = store.boot_artifacts(&image, None, None).await.unwrap_err();
        assert!(err.to_string().contains("has no kernel"), "{err}");

        let kb: images::KernelBoot = serde_json::from_value(serde_json::json!({
            "kernelArgs": "console=ttyS0 root=/dev/vda1 quiet",
            "container": {"image": reg.reference("corral/kernels:latest"), "kernelPath": "/boot/vmlinuz", "initrdPath": "/boot/initrd.img"}
        }))
        .unwrap();
        let boot = store.boot_artifacts(&image, Some(&kb), None).await.unwrap();
        assert_eq!(boot.cmdline, "console=ttyS0 root=/dev/vda1 quiet");
        assert_eq!(boot.disk_raw, image.disk_raw);
        let guest = fixtures().join("testguest.elf");
        let elf = if guest.exists() { guest } else { images().join(".tiny-elf/tiny.elf") };
        assert_eq!(std::fs::read(&boot.kernel).unwrap(), std::fs::read(elf).unwrap(), "kernelPath followed the /boot/vmlinuz symlink");
        assert_eq!(std::fs::read(boot.initrd.unwrap()).unwrap(), b"corral kernelBoot initrd\n");

        // a path the container lacks is named in the error
        let bad: images::KernelBoot = serde_json::from_value(serde_json::json!({
            "container": {"image": reg.reference("corral/kernels:latest"), "kernelPath": "/boot/bzImage"}
        }))
        .unwrap();
        let err = store.boot_artifacts(&image, Some(&bad), None).await.unwrap_err();
        let mut msg = err.to_string();
        let mut src = std::error::Error::source(&err);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        assert!(msg.contains("/boot/bzImage is not in the image"), "{msg}");

        // initrdPath alone: the disk's own kernel, the container's initrd
        reg.push(&format!("oci:{}:latest", images().join("testguest/oci").display()), "corral/testguest:latest");
        let guest_img = store.pull(&reg.reference("corral/testguest:latest"), images::PullOptions::default()).await.unwrap();
        let only_initrd: images::KernelBoot = serde_json::from_value(serde_json::json!({
            "container": {"image": reg.reference("corral/kernels:latest"), "initrdPath": "/boot/initrd.img"}
        }))
        .unwrap();
        let boot = store.boot_artifacts(&guest_img, Some(&only_initrd), None).await.unwrap();
        assert_eq!(Some(&boot.kernel), guest_img.kernel.as_ref());
        assert_eq!(std::fs::read(boot.initrd.unwrap()).unwrap(), b"corral kernelBoot initrd\n");
        assert_eq!(boot.cmdline, guest_img.cmdline);

        // resolve_cached never touches the network
        drop(reg);
        let cached = store.resolve_cached(&disk_ref).unwrap();
        assert_eq!(cached.disk_raw, image.disk_raw);
        assert!(store.resolve_cached("127.0.0.1:1/never/pulled:latest").is_none());
    });
}
