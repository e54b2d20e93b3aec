//! Build steps of the `corral` binary:
//!
//! * Links with packed relative relocations (`DT_RELR`, glibc ≥ 2.36): every `corral vmm`
//!   process starts from this binary, and its ~29,000 relative relocations as plain `RELA`
//!   entries are ~0.7 MiB the dynamic loader reads (and keeps resident) in each one before
//!   `main`; packed, they take a few KiB. The binary stays position-independent (ASLR).
//! * Builds the web console (`ui/`, npm packages bundled by esbuild) into `OUT_DIR/ui`, which
//!   `src/ui.rs` embeds: `npm ci` once if `ui/node_modules` is missing (the lock file pins every
//!   package), then `node build.mjs`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rustc-link-arg-bin=corral=-Wl,-z,pack-relative-relocs");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let ui = manifest.parent().expect("workspace").join("ui");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("ui");
    for f in [
        "package.json",
        "package-lock.json",
        "build.mjs",
        "index.html",
        "src",
    ] {
        println!("cargo:rerun-if-changed={}", ui.join(f).display());
    }
    if let Err(e) = build_ui(&ui, &out) {
        panic!(
            "building the web console ({}): {e}\n\
             It needs node and npm (Debian: apt-get install nodejs npm) and, the first time, \
             the npm registry; `bash .ci/install-deps.sh` installs both and runs `npm ci`.",
            ui.display()
        );
    }
}

fn build_ui(ui: &Path, out: &Path) -> Result<(), String> {
    if !newer(
        &ui.join("node_modules/.package-lock.json"),
        &ui.join("package-lock.json"),
    ) {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(ui))?;
    }
    run(Command::new("node")
        .arg("build.mjs")
        .arg("--outdir")
        .arg(out)
        .current_dir(ui))?;
    for f in ["index.html", "app.js", "app.css"] {
        if !out.join(f).is_file() {
            return Err(format!("build.mjs wrote no {f}"));
        }
    }
    Ok(())
}

/// Whether `a` exists and was modified after `b` (npm writes its copy of the lock on install).
fn newer(a: &Path, b: &Path) -> bool {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (m(a), m(b)) {
        (Some(a), Some(b)) => a >= b,
        (Some(_), None) => true,
        _ => false,
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let what = format!("{cmd:?}");
    let st = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{what}: {st}"))
    }
}
