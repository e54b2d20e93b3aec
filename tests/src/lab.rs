//! The seed lab on the test guest: a registry serving the test guest's container disk and a
//! daemon that pulls from it with the autoscaler's periods shortened.

use crate::daemon::Daemon;
use crate::registry::Registry;

/// Repository and tag of the test guest in the lab registry.
pub const TESTGUEST: &str = "corral/testguest:latest";

/// A registry with the test guest's container disk pushed as [`TESTGUEST`].
pub fn testguest_registry() -> Registry {
    let reg = Registry::start();
    let layout = crate::bin::fixtures().join("images/testguest/oci");
    reg.push(&format!("oci:{}:latest", layout.display()), TESTGUEST);
    reg
}

/// A daemon pulling from `reg`, with the HPA sync and metrics periods and the downscale
/// stabilization window set (in seconds).
pub fn daemon(reg: &Registry, sync: u64, resolution: u64, window: u64) -> Daemon {
    Daemon::start(&[
        "--insecure-registry",
        &reg.addr,
        "--hpa-sync-period",
        &format!("{sync}s"),
        "--metrics-resolution",
        &format!("{resolution}s"),
        "--hpa-downscale-stabilization",
        &format!("{window}s"),
    ])
}

/// The seed lab's VMIRS YAML with its image swapped for the test guest in `reg`.
pub fn seed_set(reg: &Registry) -> String {
    std::fs::read_to_string(crate::bin::workspace().join("tests/fixtures/seed/vmirs.yaml"))
        .expect("tests/fixtures/seed/vmirs.yaml")
        .replace(
            "quay.io/kubevirt/cirros-container-disk-demo",
            &reg.reference(TESTGUEST),
        )
}
