//! The `corral` binary under test: the one next to the test executable (same profile), built on
//! first use if it is missing.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of the `corral` binary of the profile the tests were built with.
pub fn corral() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CORRAL_BIN") {
            return PathBuf::from(p);
        }
        let profile_dir = profile_dir();
        let bin = profile_dir.join("corral");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(workspace())
            .args(["build", "--bin", "corral"]);
        if release {
            cmd.arg("--release");
        }
        // tests/run.sh builds the binary first. Build here only when it is missing: running cargo
        // from a test would rebuild the workspace with the test crates' feature set each time.
        if bin.exists() {
            return bin;
        }
        let st = cmd.status().expect("run cargo build");
        assert!(st.success(), "cargo build --bin corral failed");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// `target/<profile>`: where cargo puts the binaries of the profile this executable was built
/// with (tests run from `target/<profile>/deps/`, the crate's own tools from the profile dir).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable's directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The fixtures directory (`target/fixtures`, built by `tests/fixtures/build.sh`).
pub fn fixtures() -> PathBuf {
    std::env::var_os("FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/fixtures"))
}
