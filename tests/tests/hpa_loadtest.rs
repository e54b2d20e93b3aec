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
