//! `scripts/loadtest.sh` (curl + jq) against a fresh daemon with a shortened stabilization
//! window: it must reproduce the lab's HPA part and exit 0.

use std::process::Command;

use corral_tests::lab;

#[test]
fn loadtest_script_reproduces_the_lab() {
    let reg = lab::testguest_registry();
    let d = lab::daemon(&reg, 5, 5, 30);
    let script = corral_tests::bin::workspace().join("scripts/loadtest.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--socket")
        .arg(&d.socket)
        .args(["--image", &reg.reference(lab::TESTGUEST)])
        .args(["--window", "30", "--up-timeout", "120"])
        .output()
        .expect("run scripts/loadtest.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "loadtest.sh failed:\n{text}\ndaemon log:\n{}",
        d.log()
    );
    for needle in [
        "SCALED UP",
        "SCALED DOWN",
        "scaled 1 → 2",
        "scaled 2 → 1",
        "PASS",
    ] {
        assert!(text.contains(needle), "missing {needle:?}:\n{text}");
    }
}

/// `--service`: the same lab driven by curl load through a NodePort Service alone, in a network
/// namespace this test makes (the daemon's pods, the Service's rules and the load stay there).
#[test]
fn loadtest_service_mode_scales_on_curl_load_alone() {
    corral_tests::netns::enter_private().expect("a private network namespace (needs root)");
    let cni = corral_tests::netns::CniDir::new();
    let conf_dir = cni.conf_dir();
    let reg = lab::testguest_registry();
    let d = corral_tests::daemon::Daemon::start_networked(&[
        "--insecure-registry",
        &reg.addr,
        "--cni-conf-dir",
        conf_dir.to_str().unwrap(),
        "--hpa-sync-period",
        "5s",
        "--metrics-resolution",
        "5s",
        "--hpa-downscale-stabilization",
        "30s",
    ]);
    let script = corral_tests::bin::workspace().join("scripts/loadtest.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--socket")
        .arg(&d.socket)
        .args(["--image", &reg.reference(lab::TESTGUEST)])
        .args(["--window", "30", "--up-timeout", "120"])
        .args([
            "--service",
            "--rate",
            "10",
            "--burn",
            "20",
            "--max-load",
            "180",
        ])
        .output()
        .expect("run scripts/loadtest.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "loadtest.sh --service failed:\n{text}\ndaemon log:\n{}",
        d.log()
    );
    for needle in [
        "exposed lab05-cirros-replicaset as Service",
        "SCALED UP",
        "the new VMI takes its share",
        " 0 failed",
        "SCALED DOWN",
        "PASS",
    ] {
        assert!(text.contains(needle), "missing {needle:?}:\n{text}");
    }
}
