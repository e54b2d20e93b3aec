//! `corral vmm` booting the test guest on the real /dev/kvm: what the guest sees (the PCI bus
//! and the disks over both virtio transports included), its console and its
//! power-off/reboot/crash paths.

use std::time::Duration;

use corral_tests::per_transport;
use corral_tests::transport::Transport;
use corral_tests::vmm::{STEP, Vm, VmArgs, expected_e820_lines, lines_with};

per_transport!(the_guest_finds_its_disks_on_the_pci_bus_or_in_the_dsdt);

const READY: &str = "TESTGUEST READY";

fn report(out: &str, key: &str) -> String {
    lines_with(out, &format!("testguest: {key}"))
        .first()
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{out}"))
        .to_string()
}

/// Boots with `args`, powers off through ACPI, and returns the console output.
fn boot_and_poweroff(args: VmArgs) -> String {
    let mut vm = Vm::spawn(args.no_stdin());
    let code = vm.exit_code(STEP);
    let out = vm.output();
    assert_eq!(
        code,
        0,
        "exit code; output:\n{out}\nstderr:\n{}",
        vm.stderr()
    );
    assert!(out.contains(READY), "{out}");
    assert!(out.contains("testguest: poweroff"), "{out}");
    out
}

#[test]
fn one_vcpu_64bit_protocol_sees_what_the_vmm_configured() {
    let cmdline = "console=ttyS0 mode=poweroff some.param=1";
    let out = boot_and_poweroff(VmArgs::testguest(cmdline).args([
        "--memory",
        "256Mi",
        "--boot-protocol",
        "linux",
    ]));
    let mem = 256u64 << 20;
    assert_eq!(report(&out, "boot "), "testguest: boot protocol=linux64");
    assert_eq!(
        report(&out, "cmdline="),
        format!("testguest: cmdline=\"{cmdline}\"")
    );
    assert_eq!(
        lines_with(&out, "testguest: e820 "),
        expected_e820_lines(mem)
    );
    assert_eq!(
        report(&out, "memory "),
        format!(
            "testguest: memory ram_bytes={} ram_top={:#x}",
            mem - 0x10_0000 + 0x9fc00,
            mem
        )
    );
    assert_eq!(
        report(&out, "acpi rsdp"),
        "testguest: acpi rsdp=0xe0000 oem=CORRAL hw_reduced=1 s5_slp_typ=5"
    );
    assert_eq!(
        report(&out, "acpi power"),
        "testguest: acpi power_button_gsi=23"
    );
    assert!(
        report(&out, "madt ").starts_with("testguest: madt cpus=1 apic_ids=0 "),
        "{out}"
    );
    assert_eq!(report(&out, "cpus online"), "testguest: cpus online=1");
}

#[test]
fn two_vcpus_pvh_start_the_ap_with_init_sipi() {
    let out = boot_and_poweroff(
        VmArgs::testguest("mode=poweroff").args(["--cpus", "2", "--memory", "512M"]),
    );
    // 512M = 512,000,000 bytes, a whole number of pages.
    assert_eq!(report(&out, "boot "), "testguest: boot protocol=pvh");
    assert_eq!(
        lines_with(&out, "testguest: e820 "),
        expected_e820_lines(512_000_000)
    );
    assert!(
        report(&out, "madt ").starts_with("testguest: madt cpus=2 apic_ids=0,1 "),
        "{out}"
    );
    assert!(out.contains("testguest: cpu apic_id=1 online"), "{out}");
    assert_eq!(report(&out, "cpus online"), "testguest: cpus online=2");
}

#[test]
fn memory_above_the_mmio_hole_moves_to_4gib() {
    let out = boot_and_poweroff(
        VmArgs::testguest("mode=poweroff").args(["--cpus", "3", "--memory", "3.5Gi"]),
    );
    let e820 = lines_with(&out, "testguest: e820 ");
    assert_eq!(e820, expected_e820_lines(7 << 29));
    assert_eq!(e820.len(), 3);
    assert_eq!(
        e820[2],
        "testguest: e820 addr=0x100000000 size=0x20000000 type=1"
    );
    assert_eq!(report(&out, "cpus online"), "testguest: cpus online=3");
}

#[test]
fn echo_mode_echoes_serial_input() {
    let mut vm = Vm::spawn(VmArgs::testguest("mode=echo"));
    vm.wait_for(READY, STEP);
    vm.send("hello world\n");
    vm.wait_for("testguest: echo hello world\n", STEP);
    vm.send("second line\r\n");
    vm.wait_for("testguest: echo second line\n", STEP);
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0);
    let out = vm.output();
    assert_eq!(lines_with(&out, "testguest: echo ").len(), 3, "{out}");
}

#[test]
fn interactive_commands_and_burn_until_next_line() {
    let mut vm = Vm::spawn(VmArgs::testguest("console=ttyS0"));
    vm.wait_for(READY, STEP);
    vm.send("echo marker-1234\n");
    vm.wait_for("\nmarker-1234\n", STEP);
    vm.send("frobnicate\n");
    vm.wait_for("testguest: unknown command \"frobnicate\"", STEP);
    // The lab's `load() { dd if=/dev/zero of=/dev/null & }; load; read; killall dd`.
    vm.send("load() { dd if=/dev/zero of=/dev/null & }; load\n");
    vm.wait_for("testguest: burn started", STEP);
    std::thread::sleep(Duration::from_millis(300));
    vm.send("\n");
    let ms: u64 = vm
        .wait_for_line("testguest: burn stopped ms=", STEP)
        .parse()
        .unwrap();
    assert!(ms >= 200, "burned only {ms} ms of guest time");
    vm.send("killall dd\n");
    vm.wait_for("testguest: idle", STEP);
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0);
}

/// `net=dhcp` without a virtio-net device (the VMM has none yet): the network mode calibrates its
/// clocks on this /dev/kvm (TSC and local APIC timer against the PIT), says there is no device,
/// and the guest stays interactive. Until the VMM has a NIC, the network mode itself is tested
/// under QEMU (tests/guest_net_qemu.rs).
#[test]
fn network_mode_without_a_nic_calibrates_and_stays_interactive() {
    let mut vm = Vm::spawn(VmArgs::testguest("console=ttyS0 net=dhcp"));
    vm.wait_for(READY, STEP);
    let line = vm.wait_for_line("testguest: net: no virtio-net device (tsc_khz=", STEP);
    let (tsc, lapic) = line
        .trim_end_matches(')')
        .split_once(" lapic_per_ms=")
        .map(|(t, l)| (t.parse::<u64>().unwrap(), l.parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("{line:?}"));
    // Sane rates: a TSC between 0.5 and 10 GHz; KVM's APIC timer runs at 1 GHz / 16.
    assert!((500_000..10_000_000).contains(&tsc), "tsc_khz={tsc}");
    assert!((50_000..75_000).contains(&lapic), "lapic_per_ms={lapic}");
    vm.send("echo still-here\n");
    vm.wait_for("\nstill-here\n", STEP);
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0);
}

#[test]
fn burn_on_the_command_line_then_poweroff() {
    let out = boot_and_poweroff(VmArgs::testguest("burn=150 mode=poweroff"));
    assert!(out.contains("testguest: burn done ms=150"), "{out}");
}

#[test]
fn i8042_reboot_boots_again_in_the_same_process() {
    let mut vm = Vm::spawn(VmArgs::testguest("mode=reboot").no_stdin());
    let out = vm.wait_for_n(READY, 3, STEP);
    assert!(out.contains("testguest: reboot via=i8042"), "{out}");
    assert!(!out.contains("did not take effect"), "{out}");
    vm.signal(libc::SIGTERM);
    assert_eq!(vm.exit_code(STEP), 5);
}

#[test]
fn acpi_reset_register_reboots_and_then_console_poweroff_ends() {
    let mut vm = Vm::spawn(VmArgs::testguest("console=ttyS0"));
    vm.wait_for(READY, STEP);
    vm.send("reboot acpi\n");
    vm.wait_for("testguest: reboot via=acpi", STEP);
    vm.wait_for_n(READY, 2, STEP);
    vm.send("reboot\n");
    vm.wait_for_n(READY, 3, STEP);
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0);
}

#[test]
fn triple_fault_is_a_guest_crash() {
    let mut vm = Vm::spawn(VmArgs::testguest("mode=crash").no_stdin());
    assert_eq!(vm.exit_code(STEP), 3);
    assert!(
        vm.stderr().contains("guest crashed: vCPU 0: triple fault"),
        "{}",
        vm.stderr()
    );
}

#[test]
fn emulation_failure_is_a_kvm_internal_error() {
    let mut vm = Vm::spawn(VmArgs::testguest("mode=internal-error").no_stdin());
    assert_eq!(vm.exit_code(STEP), 4);
    assert!(
        vm.stderr().contains("KVM internal error"),
        "{}",
        vm.stderr()
    );
}

#[test]
fn sigterm_and_sigint_stop_the_vm_with_exit_5() {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mut vm = Vm::spawn(VmArgs::testguest("console=ttyS0").args(["--cpus", "2"]));
        vm.wait_for(READY, STEP);
        vm.signal(sig);
        assert_eq!(vm.exit_code(STEP), 5, "{name}");
        assert!(
            vm.stderr().contains(&format!("stopped: {name}")),
            "{}",
            vm.stderr()
        );
    }
}

#[test]
fn console_log_gets_the_guest_output_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    std::fs::write(&log, "previous run\n").unwrap();
    let out = boot_and_poweroff(
        VmArgs::testguest("mode=poweroff").args(["--console-log", log.to_str().unwrap()]),
    );
    let logged = std::fs::read_to_string(&log).unwrap().replace('\r', "");
    assert!(logged.starts_with("previous run\n"));
    assert_eq!(&logged["previous run\n".len()..], out);
}

#[test]
fn idle_guest_costs_the_host_almost_no_cpu_and_burn_costs_a_core() {
    let mut vm = Vm::spawn(VmArgs::testguest("console=ttyS0"));
    vm.wait_for(READY, STEP);
    std::thread::sleep(Duration::from_millis(300));
    let hz = corral_tests::vmm::ticks_per_second();
    let window = Duration::from_secs(2);
    let before = vm.cpu_ticks();
    std::thread::sleep(window);
    let idle = vm.cpu_ticks() - before;
    let idle_share = idle as f64 / (hz as f64 * window.as_secs_f64());
    assert!(
        idle_share < 0.02,
        "idle guest used {:.1}% of a core",
        idle_share * 100.0
    );
    // The same measurement sees a burning guest, so the bound above is meaningful (the margin
    // allows for a machine shared with other work).
    vm.send("burn\n");
    vm.wait_for("testguest: burn started", STEP);
    let before = vm.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let busy = vm.cpu_ticks() - before;
    vm.send("stop\n");
    vm.wait_for("testguest: burn stopped", STEP);
    assert!(
        busy as f64 > 0.15 * hz as f64,
        "burning guest used only {busy} ticks in 1 s"
    );
    vm.send("poweroff\n");
    assert_eq!(vm.exit_code(STEP), 0);
    eprintln!(
        "idle: {:.2}% of a core; burning: {busy}/{hz} ticks per second",
        idle_share * 100.0
    );
}

#[test]
fn initrd_is_loaded_at_the_top_of_ram_through_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.img");
    let mut bytes = b"\x07\x07\x07CORRAL".to_vec();
    bytes.resize(12_345, 0x42);
    std::fs::write(&initrd, &bytes).unwrap();
    let mem = 64u64 << 20;
    let addr = (mem - 12_345) & !0xfff;
    for protocol in ["linux", "pvh"] {
        let out = boot_and_poweroff(VmArgs::testguest("mode=poweroff").args([
            "--memory",
            "64Mi",
            "--initrd",
            initrd.to_str().unwrap(),
            "--boot-protocol",
            protocol,
        ]));
        assert_eq!(
            report(&out, "initrd "),
            format!("testguest: initrd addr={addr:#x} size=12345 head=070707434f525241"),
            "{protocol}"
        );
    }
}

/// With virtio-pci the guest finds an ECAM window in the MCFG, the host bridge at 00:00.0 and one
/// virtio-blk function per disk from 00:01.0 on (MSI-X, BAR0 pre-assigned); with virtio-mmio
/// there is no PCI bus and the disks are DSDT devices. Either way the disks work alike.
fn the_guest_finds_its_disks_on_the_pci_bus_or_in_the_dsdt(t: Transport) {
    let out = boot_and_poweroff(VmArgs::testguest("mode=poweroff").args(t.args()).args([
        "--disk",
        "empty=1Mi",
        "--disk",
        "empty=2Mi,serial=second",
    ]));
    let pci = lines_with(&out, "testguest: pci ");
    match t {
        Transport::Mmio => assert!(pci.is_empty(), "{out}"),
        Transport::Pci => {
            assert_eq!(pci.len(), 4, "{out}");
            assert_eq!(pci[0], "testguest: pci ecam=0xe0000000 segment=0 buses=0-0");
            assert!(
                pci[1].starts_with("testguest: pci 00:00.0 id=1b36:0008 class=0x060000 "),
                "{out}"
            );
            for (i, line) in pci[2..].iter().enumerate() {
                let want = format!("testguest: pci 00:{:02x}.0 id=1af4:1042 class=", i + 1);
                assert!(line.starts_with(&want) && line.ends_with(" rev=1"), "{out}");
            }
        }
    }
    assert!(out.contains("testguest: virtio devices=2"), "{out}");
    assert_eq!(
        lines_with(&out, "testguest: blk dev="),
        [
            format!(
                "testguest: blk dev=0 {} capacity=2048 ro=0 serial=\"\"",
                t.location(0, 1)
            ),
            format!(
                "testguest: blk dev=1 {} capacity=4096 ro=0 serial=\"second\"",
                t.location(1, 1)
            ),
        ],
        "{out}"
    );
}
