//! `corral vmm` refusing to run: clear messages and the documented exit codes
//! (1 VMM/host error, 2 bad arguments).

use std::process::{Command, Output};

use corral_tests::vmm::{corral, testguest};

fn vmm(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(corral());
    cmd.arg("vmm").args(args).arg("--no-stdin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn absurd_memory_is_a_bad_argument() {
    let guest = testguest();
    for mem in ["1Ei", "1Ki", "0"] {
        let o = vmm(&["--kernel", guest.to_str().unwrap(), "--memory", mem], &[]);
        assert_eq!(o.status.code(), Some(2), "{mem}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("corral: error: memory"),
            "{mem}: {}",
            stderr(&o)
        );
    }
    let o = vmm(
        &["--kernel", guest.to_str().unwrap(), "--memory", "12parsecs"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown suffix \"parsecs\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_cpu_count_and_missing_kernel_are_bad_arguments() {
    let guest = testguest();
    let o = vmm(&["--kernel", guest.to_str().unwrap(), "--cpus", "0"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = vmm(&["--kernel", "/nonexistent/vmlinux"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/vmlinux: no such file"),
        "{}",
        stderr(&o)
    );
    let o = vmm(&[], &[]);
    assert_eq!(o.status.code(), Some(2), "clap usage error");
    assert!(stderr(&o).contains("--kernel"), "{}", stderr(&o));
}

#[test]
fn a_file_that_is_not_a_kernel_is_a_vmm_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0x5au8; 64 * 1024]).unwrap();
    let o = vmm(&["--kernel", junk.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("loading the kernel"), "{err}");
    assert!(
        err.contains(&format!(
            "{} is neither an ELF kernel nor a bzImage",
            junk.display()
        )),
        "{err}"
    );
    assert_eq!(
        err.matches("corral: error:").count(),
        1,
        "the chain is printed once: {err}"
    );
}

#[test]
fn missing_kvm_device_is_a_vmm_error() {
    let guest = testguest();
    let o = vmm(
        &["--kernel", guest.to_str().unwrap()],
        &[("CORRAL_KVM_DEVICE", "/nonexistent/kvm")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot open /nonexistent/kvm"),
        "{}",
        stderr(&o)
    );
}
