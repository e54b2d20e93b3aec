//! `scripts/loadtest.sh` (curl + jq) against a fresh daemon with a shortened stabilization
//! window: it must reproduce the lab's HPA part and exit 0.

use std::process::Command;

use corral_tests::daemon::Daemon;
use corral_tests::registry::Registry;

#[test]
fn loadtest_script_reproduces_the_lab() {
    let reg = Registry::start();
    let fixtures = corral_tests::bin::fixtures();
    reg.push(
        &format!(
            "oci:{}:latest",
            fixtures.join("images/testguest/oci").display()
        ),
        "corral/testguest:latest",
    );
    let d = Daemon::start(&[
        "--insecure-registry",
        &reg.addr,
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
        .args(["--image", &reg.reference("corral/testguest:latest")])
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
