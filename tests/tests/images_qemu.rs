//! Cross-check with a real Linux: QEMU's software emulation (`-accel tcg -M pc`, virtio-blk
//! over PCI) boots the artifacts corral produced from the
//! CirrOS-like container disk (extracted vmlinux, initrd, converted disk.raw, default cmdline)
//! with a NoCloud seed, and the guest must mount its root by label, print the seed's
//! instance-id, run its `#!` user-data and reach the login prompt.
//!
//! PENDING: the seed is built here with mkfs.vfat + mcopy; switch to corral's own seed builder
//! when the virtio-blk + seed issue lands it.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use corral_tests::corral::{fixtures, image_cmd, ok};
use corral_tests::registry::Registry;
use serde_json::Value;

/// A NoCloud `cidata` vfat image (stand-in for corral's seed builder, see the module doc).
fn seed(dir: &Path, instance_id: &str) -> std::path::PathBuf {
    let meta = dir.join("meta-data");
    let user = dir.join("user-data");
    std::fs::write(
        &meta,
        format!("instance-id: {instance_id}\nlocal-hostname: corral-e2e\n"),
    )
    .unwrap();
    std::fs::write(
        &user,
        "#!/bin/sh\necho \"USERDATA: ran on $(hostname) kernel $(uname -r)\"\n",
    )
    .unwrap();
    let img = dir.join("seed.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let st = Command::new("mkfs.vfat")
        .args(["-n", "CIDATA"])
        .arg(&img)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.vfat (apt dosfstools)");
    let st = Command::new("mcopy")
        .arg("-i")
        .arg(&img)
        .arg(&meta)
        .arg(&user)
        .arg("::/")
        .status()
        .unwrap();
    assert!(st.success(), "mcopy (apt mtools)");
    img
}

#[test]
fn debian_kernel_boots_the_extracted_artifacts_under_tcg() {
    let reg = Registry::start();
    reg.push(
        &format!(
            "oci:{}:latest",
            fixtures().join("images/cirros-like/oci").display()
        ),
        "corral/cirros-like:latest",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut c = image_cmd(&dir.path().join("store"));
    c.args([
        "pull",
        "--json",
        "--insecure-registry",
        &reg.addr,
        &reg.reference("corral/cirros-like:latest"),
    ]);
    let img: Value = serde_json::from_str(&ok(c)).unwrap();
    let get = |k: &str| img[k].as_str().unwrap().to_string();
    let seed = seed(dir.path(), "iid-corral-e2e-0001");
    // Under TCG on a busy host the guest's PIT-based TSC calibration can fail and leave it
    // without a clock; telling it the (host) TSC rate skips that calibration.
    let khz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("cpu MHz")
                    .and_then(|v| v.split(':').nth(1))
                    .map(|v| v.trim().to_string())
            })
        })
        .and_then(|mhz| mhz.parse::<f64>().ok())
        .map_or(2_000_000, |mhz| (mhz * 1000.0) as u64);
    // The image's command line says `quiet`; `loglevel=7` after it brings back the kernel's own
    // lines checked below.
    let append = format!("{} loglevel=7 panic=-1 tsc_early_khz={khz}", get("cmdline"));

    // One boot under TCG: QEMU's serial output until the login prompt (or 120 s, or QEMU's exit).
    let boot = || -> String {
        let mut qemu = Command::new("qemu-system-x86_64")
            .args([
                "-M",
                "pc",
                "-accel",
                "tcg",
                "-m",
                "256",
                "-smp",
                "1",
                "-nographic",
                "-nodefaults",
                "-no-reboot",
            ])
            .args([
                "-serial",
                "stdio",
                "-kernel",
                &get("kernel"),
                "-initrd",
                &get("initrd"),
            ])
            .args(["-append", &append])
            .args([
                "-drive",
                &format!(
                    "id=root,file={},format=raw,if=none,snapshot=on",
                    get("disk_raw")
                ),
            ])
            .args(["-device", "virtio-blk-pci,drive=root"])
            .args([
                "-drive",
                &format!(
                    "id=seed,file={},format=raw,if=none,readonly=on",
                    seed.display()
                ),
            ])
            .args(["-device", "virtio-blk-pci,drive=seed"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 (apt qemu-system-x86)");
        let (tx, rx) = mpsc::channel();
        let out = qemu.stdout.take().unwrap();
        // Raw chunks, not lines: the login prompt ends without a newline.
        std::thread::spawn(move || {
            let mut out = out;
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut raw = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline && !String::from_utf8_lossy(&raw).contains("login:") {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(chunk) => raw.extend_from_slice(&chunk),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = qemu.kill();
        let _ = qemu.wait();
        String::from_utf8_lossy(&raw).replace('\r', "")
    };
    // The machine is `pc`, not `microvm`: under TCG, QEMU 10.0.2 (bookworm-backports) with the
    // Debian 6.1.192 kernel, microvm (HW-reduced ACPI, no HPET) died with a "divide error" in
    // start_kernel before the console came up in about three boots of four (40 tried), pc in
    // none of 10; this test is about corral's artifacts, not the machine. On a loaded host the
    // TSC calibration against the PIT can also fail (6 boots in 10 hung after "tsc: Unable to
    // calibrate against PIT" beside two busy-looping processes); `tsc_early_khz` above skips
    // it. A boot that dies before the initrd is booted once more, and that is said and counted
    // (target/nested/retries.log).
    let mut log = String::new();
    for attempt in 1..=2 {
        log = boot();
        let died_early = log.contains("Kernel panic") && !log.contains("initrd:");
        if !died_early || attempt == 2 {
            break;
        }
        let why = log
            .lines()
            .find(|l| l.contains("divide error") || l.contains("Kernel panic"))
            .unwrap_or("?")
            .trim()
            .to_string();
        let line = format!("images_qemu: the kernel died before the initrd ({why}); booting again");
        corral_tests::nested::announce(&line);
        let _ = std::fs::create_dir_all(corral_tests::nested::root());
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(corral_tests::nested::root().join("retries.log"))
            .and_then(|mut f| {
                use std::io::Write as _;
                writeln!(f, "{line}")
            });
    }
    let _ = std::fs::write(std::env::temp_dir().join("corral-images-qemu.log"), &log);
    let want = [
        "Linux version ".to_string(),
        format!("Kernel command line: {append}"),
        "initrd: mounted LABEL=cirros-rootfs (/dev/vda1) on /".to_string(),
        "instance-id=iid-corral-e2e-0001".to_string(),
        "USERDATA: ran on corral-e2e kernel ".to_string(),
        "cidata: user-data exit=0".to_string(),
        "corral-e2e login:".to_string(),
    ];
    for w in want {
        assert!(log.contains(&w), "guest output lacks {w:?}:\n{log}");
    }
}
