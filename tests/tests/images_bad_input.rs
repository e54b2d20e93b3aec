//! Bad input: each case fails with a clear error naming the problem, and leaves the store
//! exactly as it was (compared file by file before and after).

use std::path::{Path, PathBuf};

use corral_tests::corral::{fails, fixtures, image_cmd, ok, snapshot};
use corral_tests::oci::{Layer, Tar, disk_layer, write_layout};
use corral_tests::registry::Registry;

/// A store that already holds the test guest, so "unchanged" means something.
fn seeded_store(reg: &Registry, dir: &Path) -> PathBuf {
    let s = dir.join("store");
    reg.push(
        &format!(
            "oci:{}:latest",
            fixtures().join("images/testguest/oci").display()
        ),
        "corral/testguest:latest",
    );
    let mut c = image_cmd(&s);
    c.args([
        "pull",
        "--insecure-registry",
        &reg.addr,
        &reg.reference("corral/testguest:latest"),
    ]);
    ok(c);
    s
}

/// Pulls `reference`; asserts failure whose message contains every `want`, and an unchanged store.
fn pull_fails(store: &Path, reg: Option<&Registry>, reference: &str, want: &[&str]) {
    let before = snapshot(store);
    let mut c = image_cmd(store);
    c.arg("pull");
    if let Some(r) = reg {
        c.args(["--insecure-registry", &r.addr]);
    }
    c.arg(reference);
    let err = fails(c);
    for w in want {
        assert!(
            err.contains(w),
            "error for {reference} should mention {w:?}:\n{err}"
        );
    }
    assert!(err.contains("corral: error: "), "{err}");
    assert_eq!(
        snapshot(store),
        before,
        "store changed by the failed pull of {reference}"
    );
}

/// Pushes a layout built from `layers` as `repo:latest`.
fn push_layers(reg: &Registry, dir: &Path, repo: &str, layers: &[Layer]) -> String {
    let l = dir.join(repo.replace('/', "_"));
    write_layout(&l, layers);
    reg.push(
        &format!("oci:{}:latest", l.display()),
        &format!("{repo}:latest"),
    );
    reg.reference(&format!("{repo}:latest"))
}

#[test]
fn registry_errors() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let s = seeded_store(&reg, dir.path());
    pull_fails(
        &s,
        None,
        "nonexistent.invalid/corral/testguest:latest",
        &["cannot reach registry nonexistent.invalid"],
    );
    pull_fails(
        &s,
        Some(&reg),
        &reg.reference("corral/testguest:no-such-tag"),
        &["not found in registry", "no-such-tag"],
    );
    pull_fails(
        &s,
        Some(&reg),
        &reg.reference("corral/no-such-repo:latest"),
        &["not found"],
    );
    // a plain-HTTP registry without --insecure-registry
    pull_fails(
        &s,
        None,
        &reg.reference("corral/testguest:latest"),
        &["--insecure-registry"],
    );

    let basic = Registry::start_basic("alice", "pw");
    basic.push(
        &format!(
            "oci:{}:latest",
            fixtures().join("images/testguest/oci").display()
        ),
        "corral/testguest:latest",
    );
    pull_fails(
        &s,
        Some(&basic),
        &basic.reference("corral/testguest:latest"),
        &["refused access (401/403)", "no credentials"],
    );
}

#[test]
fn digest_mismatch_from_the_registry() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let s = seeded_store(&reg, dir.path());
    let reference = push_layers(
        &reg,
        dir.path(),
        "corral/tampered",
        &[Layer::gzip(disk_layer("disk.img", &[7u8; 100_000]))],
    );
    // flip one byte of the layer in the registry's storage, behind its back
    let layout = dir.path().join("corral_tampered");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(&mdigest)).unwrap())
            .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let data = reg.blob_data(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    pull_fails(&s, Some(&reg), &reference, &["digest mismatch", &layer]);
}

#[test]
fn hostile_and_broken_layers() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let s = seeded_store(&reg, dir.path());
    let d = dir.path();
    let cases: Vec<(&str, Layer, Vec<&str>)> = vec![
        (
            "corral/truncated-gzip",
            Layer::truncated_gzip(disk_layer("disk.img", &vec![3u8; 300_000])),
            vec!["corrupt or truncated", "deflate"],
        ),
        (
            "corral/dotdot",
            Layer::gzip(
                Tar::new()
                    .file("disk/disk.img", b"x")
                    .file("disk/../../../etc/evil", b"x")
                    .finish(),
            ),
            vec!["contains \"..\"", "disk/../../../etc/evil"],
        ),
        (
            "corral/absolute",
            Layer::gzip(Tar::new().file("/etc/evil", b"x").finish()),
            vec!["absolute path \"/etc/evil\""],
        ),
        (
            "corral/symlink-escape",
            Layer::gzip(
                Tar::new()
                    .file("disk/disk.img", b"x")
                    .symlink("disk/link", "../../../../etc/shadow")
                    .finish(),
            ),
            vec!["escapes the image root", "disk/link"],
        ),
        (
            "corral/through-symlink",
            Layer::gzip(
                Tar::new()
                    .symlink("disk", "/etc")
                    .file("disk/disk.img", b"x")
                    .finish(),
            ),
            vec!["goes through the symlink"],
        ),
        (
            "corral/device",
            Layer::gzip(
                Tar::new()
                    .file("disk/disk.img", b"x")
                    .entry("dev/sda", b'4', b"", "")
                    .finish(),
            ),
            vec!["block device"],
        ),
        (
            "corral/two-disks",
            Layer::gzip(
                Tar::new()
                    .file("disk/a.qcow2", b"x")
                    .file("disk/b.img", b"y")
                    .finish(),
            ),
            vec![
                "more than one file under /disk/",
                "/disk/a.qcow2",
                "/disk/b.img",
            ],
        ),
        (
            "corral/no-disk",
            Layer::gzip(Tar::new().file("etc/hostname", b"x").finish()),
            vec!["no disk file under /disk/"],
        ),
    ];
    for (repo, layer, want) in cases {
        let reference = push_layers(&reg, d, repo, &[layer]);
        pull_fails(&s, Some(&reg), &reference, &want);
    }
}

#[test]
fn bad_disks() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let s = seeded_store(&reg, dir.path());
    let d = dir.path();

    // qcow2 whose L1 table points past the end of the file
    let mut q = std::fs::read(fixtures().join("images/testguest/disk.qcow2")).unwrap();
    q[40..48].copy_from_slice(&(1u64 << 40).to_be_bytes());
    let r = push_layers(
        &reg,
        d,
        "corral/corrupt-qcow2",
        &[Layer::gzip(disk_layer("disk.qcow2", &q))],
    );
    pull_fails(
        &s,
        Some(&reg),
        &r,
        &["disk /disk/disk.qcow2: qcow2 image is corrupt", "L1 table"],
    );

    // truncated qcow2: data clusters past the end of the file
    let q = std::fs::read(fixtures().join("images/testguest/disk.qcow2")).unwrap();
    let r = push_layers(
        &reg,
        d,
        "corral/truncated-qcow2",
        &[Layer::gzip(disk_layer("disk.qcow2", &q[..q.len() / 2]))],
    );
    pull_fails(
        &s,
        Some(&reg),
        &r,
        &[
            "disk /disk/disk.qcow2: qcow2 image is corrupt",
            "past the end of the file",
        ],
    );

    // qcow2 with a backing file
    let backed = d.join("backed.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(fixtures().join("images/testguest/disk.qcow2"))
        .arg(&backed)
        .status()
        .unwrap();
    assert!(st.success());
    let r = push_layers(
        &reg,
        d,
        "corral/backing",
        &[Layer::gzip(disk_layer(
            "disk.qcow2",
            &std::fs::read(&backed).unwrap(),
        ))],
    );
    pull_fails(
        &s,
        Some(&reg),
        &r,
        &["has a backing file", "testguest/disk.qcow2"],
    );

    // a disk without a kernel
    reg.push(
        &format!(
            "oci:{}:latest",
            fixtures().join("images/nokernel/oci").display()
        ),
        "corral/nokernel:latest",
    );
    pull_fails(
        &s,
        Some(&reg),
        &reg.reference("corral/nokernel:latest"),
        &[
            "no kernel in the disk",
            "partition 1 (ext, label \"data\")",
            "/boot/vmlinuz*",
        ],
    );
    // ... which a kernelBoot container may supply instead
    let mut c = image_cmd(&s);
    c.args([
        "pull",
        "--kernel-optional",
        "--insecure-registry",
        &reg.addr,
        &reg.reference("corral/nokernel:latest"),
    ]);
    assert!(ok(c).contains("kernel   none"));
}

#[test]
fn bad_imports() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("store");
    let mut c = image_cmd(&s);
    c.arg("import")
        .arg(fixtures().join("images/testguest/docker-archive.tar"));
    ok(c);
    let d = dir.path();
    let import_fails = |path: &Path, want: &[&str]| {
        let before = snapshot(&s);
        let mut c = image_cmd(&s);
        c.arg("import").arg(path);
        let err = fails(c);
        for w in want {
            assert!(
                err.contains(w),
                "import of {} should mention {w:?}:\n{err}",
                path.display()
            );
        }
        assert_eq!(
            snapshot(&s),
            before,
            "store changed by the failed import of {}",
            path.display()
        );
    };
    let l = d.join("dotdot");
    write_layout(
        &l,
        &[Layer::gzip(Tar::new().file("../evil", b"x").finish())],
    );
    import_fails(&l, &["contains \"..\"", "\"../evil\""]);
    let l = d.join("tampered");
    write_layout(&l, &[Layer::gzip(disk_layer("disk.img", b"abc"))]);
    for e in std::fs::read_dir(l.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let b = std::fs::read(&p).unwrap();
        if b.starts_with(b"\x1f\x8b") {
            let mut b = b;
            let n = b.len() - 9;
            b[n] ^= 1;
            std::fs::write(&p, b).unwrap();
        }
    }
    import_fails(&l, &["digest mismatch"]);
    import_fails(&d.join("missing.tar"), &["cannot read", "missing.tar"]);
    std::fs::write(
        d.join("junk.tar"),
        Tar::new().file("hello.txt", b"hi").finish(),
    )
    .unwrap();
    import_fails(
        &d.join("junk.tar"),
        &["neither an OCI layout", "docker archive"],
    );
}
