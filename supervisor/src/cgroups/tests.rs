use std::path::Path;
use std::time::Duration;

use super::testutil::*;
use super::*;

const HYBRID: &str = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
const UNIFIED: &str = "28 22 0:25 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate";

fn names(b: &dyn Backend) -> String {
    b.name()
}

#[test]
fn chooses_the_hierarchy_and_paths() {
    let own = "4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    let b = choose(&CgroupConfig::default(), HYBRID, own).unwrap();
    assert_eq!(
        names(b.as_ref()),
        "cgroup v1 (cpu /sys/fs/cgroup/cpu/vms, cpuacct /sys/fs/cgroup/cpuacct/vms, memory /sys/fs/cgroup/memory/process_api/abc/vms)"
    );
    let b = choose(
        &CgroupConfig {
            mode: Mode::Auto,
            root: Some("/corral".into()),
        },
        HYBRID,
        own,
    )
    .unwrap();
    assert!(names(b.as_ref()).contains("memory /sys/fs/cgroup/memory/corral)"));
    // Hybrid hosts can be told to use the unified hierarchy.
    let b = choose(
        &CgroupConfig {
            mode: Mode::V2,
            root: None,
        },
        HYBRID,
        own,
    )
    .unwrap();
    assert_eq!(names(b.as_ref()), "cgroup v2 (/sys/fs/cgroup/unified/vms)");
    let none = CgroupConfig {
        mode: Mode::None,
        root: None,
    };
    assert!(choose(&none, HYBRID, own).is_err());
}

#[test]
fn v2_under_systemd_delegation_moves_the_daemon_into_a_leaf() {
    let own = "0::/system.slice/corral.service\n";
    let b = choose(&CgroupConfig::default(), UNIFIED, own).unwrap();
    assert_eq!(
        names(b.as_ref()),
        "cgroup v2 (/sys/fs/cgroup/system.slice/corral.service/vms)"
    );
    // Restarted inside its leaf (or placed there by `DelegateSubgroup=supervisor`).
    let again = choose(
        &CgroupConfig::default(),
        UNIFIED,
        "0::/system.slice/corral.service/supervisor\n",
    )
    .unwrap();
    assert_eq!(names(again.as_ref()), names(b.as_ref()));
    // The same through the concrete type: the enable chain and the daemon's leaf.
    let mounts = mounts::parse_mountinfo(UNIFIED);
    let m = &mounts[0];
    let v = v2::V2 {
        parent: mounts::dir_of(m, "/system.slice/corral.service/vms"),
        enable: vec![mounts::dir_of(m, "/system.slice/corral.service")],
        leaf_for_self: Some(mounts::dir_of(m, "/system.slice/corral.service/supervisor")),
    };
    assert_eq!(
        v.enable[0],
        Path::new("/sys/fs/cgroup/system.slice/corral.service")
    );
}

/// A fake cgroup2 directory: what the kernel would create on `mkdir`.
fn fake_v2_dir(dir: &Path, controllers: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for f in [
        "cgroup.procs",
        "cgroup.subtree_control",
        "cpu.max",
        "cpu.weight",
        "memory.max",
    ] {
        std::fs::write(dir.join(f), "").unwrap();
    }
    std::fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
}

#[test]
fn v2_writes_the_kubernetes_values() {
    let tmp = tempfile::tempdir().unwrap();
    let own = tmp.path().join("corral.service");
    let parent = own.join("vms");
    fake_v2_dir(&own, "cpuset cpu io memory pids");
    fake_v2_dir(&parent, "cpu memory");
    let b = v2::V2 {
        parent: parent.clone(),
        enable: vec![own.clone()],
        leaf_for_self: None,
    };
    b.prepare().unwrap();
    assert_eq!(
        std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
        "+cpu +memory"
    );
    // The kernel reports enabled controllers without the `+`.
    std::fs::write(parent.join("cgroup.subtree_control"), "cpu memory").unwrap();
    let vm = "0f0e0d0c-0b0a-4908-8706-050403020100";
    b.create(vm).unwrap();
    fake_v2_dir(&parent.join(vm), "cpu memory");
    let s = Settings::for_vm(Some(100), Some(300), 1, 265 << 20, None, 24 << 20);
    b.apply(vm, &s).unwrap();
    b.attach(vm, 4242).unwrap();
    let read = |f: &str| std::fs::read_to_string(parent.join(vm).join(f)).unwrap();
    assert_eq!(read("cpu.max"), "30000 100000");
    assert_eq!(read("cpu.weight"), "4");
    assert_eq!(
        read("memory.max"),
        ((289u64 << 20) + (265 << 20) / 256).to_string()
    );
    assert_eq!(read("cgroup.procs"), "4242");
    let mem = (289u64 << 20) + (265 << 20) / 256;
    assert_eq!(b.limits(vm).unwrap(), (Some(30_000), Some(mem)));
    // No limit: `max`.
    let open = Settings::for_vm(None, None, 1, 64 << 20, None, 0);
    b.apply(vm, &open).unwrap();
    assert_eq!(read("cpu.max"), "max 100000");
    // Without the memory controller the CPU limits are still written, and the error says so.
    std::fs::write(parent.join("cgroup.subtree_control"), "cpu").unwrap();
    let err = b.apply(vm, &s).unwrap_err();
    assert!(
        matches!(&err, CgroupError::ControllerMissing { controllers, .. } if controllers == "memory"),
        "{err}"
    );
    assert_eq!(read("cpu.max"), "30000 100000");
    // Stats parsing.
    std::fs::write(
        parent.join(vm).join("cpu.stat"),
        "usage_usec 1500\nuser_usec 1000\n",
    )
    .unwrap();
    std::fs::write(parent.join(vm).join("memory.current"), "1000000\n").unwrap();
    std::fs::write(
        parent.join(vm).join("memory.stat"),
        "anon 600000\ninactive_file 250000\n",
    )
    .unwrap();
    assert_eq!(b.cpu_usage_ns(vm).unwrap(), 1_500_000);
    assert_eq!(
        b.memory(vm).unwrap(),
        MemoryUsage {
            usage: 1_000_000,
            working_set: 750_000
        }
    );
}

// ---- real cgroups -------------------------------------------------------------------------

#[test]
fn real_v1_quota_is_enforced_and_accounted() {
    if let Some(why) = real_cgroups_unavailable() {
        println!("SKIP real_v1_quota_is_enforced_and_accounted: {why}");
        return;
    }
    let root = match v1_test_root() {
        Ok(r) => r,
        Err(why) => {
            println!("SKIP real_v1_quota_is_enforced_and_accounted: no cgroup v1 here ({why})");
            return;
        }
    };
    let cg = &root.cg;
    let vm = test_vm_name();
    let busy = Busy::spawn();
    let s = Settings::for_vm(Some(100), Some(300), 1, 64 << 20, None, 24 << 20);
    cg.place(&vm, busy.pid(), &s).unwrap();
    assert!(cg.contains(&vm, busy.pid()));
    assert_eq!(
        cg.limits(&vm).unwrap(),
        (Some(30_000), Some((88 << 20) + (64 << 20) / 256))
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut last = (0.0, 0.0, 0.0);
    for _ in 0..3 {
        let ((cgroup_m, proc_m), idle) =
            idle_cores_during(|| measure(cg, &vm, &busy, Duration::from_secs(3)));
        last = (cgroup_m, proc_m, idle);
        println!(
            "busy loop under a 300m quota: cgroup {cgroup_m:.0}m, /proc {proc_m:.0}m, host idle {idle:.2} cores"
        );
        assert!(
            cgroup_m <= 330.0,
            "the quota is not enforced: {cgroup_m:.0}m"
        );
        assert!(
            (cgroup_m - proc_m).abs() <= 0.05 * cgroup_m + 10.0,
            "cgroup and process counters disagree: {cgroup_m:.0}m vs {proc_m:.0}m"
        );
        if cgroup_m >= 270.0 {
            break;
        }
    }
    assert!(
        last.0 >= 270.0,
        "a spinning process got only {:.0}m of its 300m (host idle {:.2} cores)",
        last.0,
        last.2
    );
    drop(busy);
    // Removed only once found empty twice.
    assert!(cg.sweep().is_empty());
    assert_eq!(cg.sweep(), vec![vm.clone()]);
    assert!(!cg.list().contains(&vm));
}

#[test]
fn real_v1_cgroup_is_found_again_by_a_new_manager() {
    if let Some(why) = real_cgroups_unavailable() {
        println!("SKIP real_v1_cgroup_is_found_again_by_a_new_manager: {why}");
        return;
    }
    let Ok(root) = v1_test_root() else {
        println!("SKIP real_v1_cgroup_is_found_again_by_a_new_manager: no cgroup v1 here");
        return;
    };
    let vm = test_vm_name();
    let busy = Busy::spawn();
    let s = Settings::for_vm(Some(100), Some(200), 1, 64 << 20, None, 0);
    root.cg.place(&vm, busy.pid(), &s).unwrap();
    // A "restarted daemon": a fresh manager over the same paths sees the VM and its usage.
    let backend = v1::V1 {
        cpu: root.dirs[0].clone(),
        cpuacct: root.dirs[1].clone(),
        memory: root.dirs[2].clone(),
    };
    let again = Cgroups::with_backend(Box::new(backend)).unwrap();
    assert!(again.list().contains(&vm));
    assert!(again.contains(&vm, busy.pid()));
    // Readable (a moved process's earlier pages stay charged where they were: usage may be 0).
    again.memory(&vm).unwrap();
    assert!(
        again.sweep().is_empty() && again.sweep().is_empty(),
        "a running VM's cgroup stays"
    );
    drop(busy);
    again.sweep();
    assert_eq!(again.sweep(), vec![vm]);
}

#[test]
fn real_v2_accounting_on_the_unified_hierarchy() {
    if let Some(why) = real_cgroups_unavailable() {
        println!("SKIP real_v2_accounting_on_the_unified_hierarchy: {why}");
        return;
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(m) = mounts::parse_mountinfo(&mi).into_iter().find(|m| m.v2) else {
        println!("SKIP real_v2_accounting_on_the_unified_hierarchy: no cgroup2 mount");
        return;
    };
    let pc = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = mounts::v2_own_path(&mounts::parse_proc_cgroup(&pc)).unwrap_or_else(|| "/".into());
    let parent = mounts::dir_of(
        &m,
        &format!("{}/{}", own.trim_end_matches('/'), unique("corral-test")),
    );
    let backend = v2::V2 {
        parent: parent.clone(),
        enable: vec![],
        leaf_for_self: None,
    };
    let cg = Cgroups::with_backend(Box::new(backend)).unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = Rm(parent.clone());
    let vm = test_vm_name();
    let busy = Busy::spawn();
    let s = Settings::for_vm(Some(100), Some(300), 1, 64 << 20, None, 24 << 20);
    match cg.place(&vm, busy.pid(), &s) {
        Ok(()) => {
            let (cgroup_m, _) = measure(&cg, &vm, &busy, Duration::from_secs(3));
            println!("cgroup v2 enforced here: {cgroup_m:.0}m under a 300m quota");
            assert!(cgroup_m <= 330.0);
        }
        Err(CgroupError::ControllerMissing { controllers, .. }) => {
            let avail =
                std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
            println!(
                "cgroup v2 at {}: accounting only; {controllers} not available (controllers here: {:?}), so enforcement is tested on v1",
                m.point.display(),
                avail.trim()
            );
            assert!(
                cg.contains(&vm, busy.pid()),
                "the process is placed even without limits"
            );
            let (cgroup_m, proc_m) = measure(&cg, &vm, &busy, Duration::from_secs(2));
            println!("unlimited busy loop in cgroup v2: cgroup {cgroup_m:.0}m, /proc {proc_m:.0}m");
            assert!(
                cgroup_m > 300.0,
                "cpu.stat usage_usec does not account: {cgroup_m:.0}m"
            );
            assert!((cgroup_m - proc_m).abs() <= 0.05 * cgroup_m + 10.0);
        }
        Err(e) => panic!("{}", crate::error_chain(&e)),
    }
    drop(busy);
    cg.sweep();
    assert_eq!(cg.sweep(), vec![vm]);
}
