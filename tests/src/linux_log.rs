//! What a real Linux kernel's early-boot log must say about a `corral vmm` machine: our command
//! line (plus one `virtio_mmio.device=` per disk), exactly our e820 map, our ACPI tables (the
//! DSDT with one `LNRO0005` device per disk) and the CPU count from the MADT. Used on the PVM
//! host's early-boot console (vmm_linux) and on full boots in the nested tier (nested.rs, from
//! the guest's dmesg).

/// The machine a log came from.
pub struct Machine<'a> {
    /// The command line given to `corral vmm --cmdline`.
    pub cmdline: &'a str,
    pub memory: u64,
    pub cpus: u16,
    /// virtio-blk disks (with mmio, each adds a `virtio_mmio.device=` and a DSDT device).
    pub disks: usize,
    /// The virtio transport `corral vmm` was given (pci unless `--transport mmio`).
    pub transport: vmm::TransportKind,
    /// `pvh` for the PVH entry (Linux adds the ISA hole to the e820 map itself).
    pub pvh: bool,
}

/// The text after `marker` on each line that contains it (timestamps stripped).
pub fn lines_with_suffix(out: &str, marker: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            l.split_once(marker)
                .map(|(_, rest)| rest.trim_end().to_string())
        })
        .collect()
}

/// `[mem 0xSTART-0xEND] usable` for each range of our map (END inclusive, 16 hex digits).
fn expected_usable(memory: u64) -> Vec<String> {
    vmm::arch::x86_64::layout::e820_ram(memory)
        .iter()
        .map(|r| {
            format!(
                "[mem {:#018x}-{:#018x}] usable",
                r.start,
                r.start + r.len - 1
            )
        })
        .collect()
}

/// The DSDT line Linux prints for our tables: `DSDT 0x<addr> <len> (v02 CORRAL CORRALDS`.
pub fn dsdt_line(cpus: u16, disks: usize, transport: vmm::TransportKind) -> String {
    use vmm::arch::x86_64::acpi::{self, Platform};
    let platform = match transport {
        vmm::TransportKind::Mmio => Platform {
            devices: vmm::builder::virtio_dsdt_devices(disks),
            pci: false,
        },
        vmm::TransportKind::Pci => Platform {
            devices: acpi::pci_devices(),
            pci: true,
        },
    };
    let tables = acpi::AcpiTables::build(cpus, &platform).unwrap();
    let dsdt = tables
        .tables
        .iter()
        .find(|t| t.signature == "DSDT")
        .unwrap();
    format!(
        "DSDT 0x{:016X} {:06X} (v02 CORRAL CORRALDS",
        dsdt.addr,
        dsdt.bytes.len()
    )
}

/// The command line Linux reports: ours (with mmio, plus one `virtio_mmio.device=` per disk).
pub fn kernel_cmdline(m: &Machine) -> String {
    let mut c = m.cmdline.to_string();
    if m.transport == vmm::TransportKind::Pci {
        return c;
    }
    for i in 0..m.disks {
        let base = vmm::arch::x86_64::layout::VIRTIO_MMIO_START
            + i as u64 * vmm::arch::x86_64::layout::VIRTIO_MMIO_SIZE;
        let irq = vmm::arch::x86_64::layout::FIRST_DEVICE_IRQ + i as u32;
        c.push_str(&format!(" virtio_mmio.device=4K@{base:#x}:{irq}"));
    }
    c
}

/// Panics with the log unless it shows machine `m`.
pub fn check_early_boot(out: &str, m: &Machine) {
    assert!(out.contains("] Linux version 6."), "{out}");
    assert_eq!(
        lines_with_suffix(out, "Command line: "),
        vec![kernel_cmdline(m)],
        "{out}"
    );
    let e820 = lines_with_suffix(out, "BIOS-e820: ");
    let usable: Vec<String> = e820
        .iter()
        .filter(|l| l.ends_with("usable"))
        .cloned()
        .collect();
    assert_eq!(usable, expected_usable(m.memory), "{out}");
    let others: Vec<&String> = e820.iter().filter(|l| !l.ends_with("usable")).collect();
    if m.pvh {
        // Linux's PVH entry adds the legacy ISA hole itself (arch/x86/platform/pvh/enlighten.c).
        assert_eq!(
            others,
            vec!["[mem 0x00000000000a0000-0x00000000000fffff] reserved"],
            "{out}"
        );
    } else {
        assert!(others.is_empty(), "only our map: {out}");
    }
    assert!(
        out.contains("ACPI: RSDP 0x00000000000E0000 000024 (v02 CORRAL)"),
        "{out}"
    );
    for sig in ["XSDT", "FACP", "DSDT", "APIC"] {
        let line = lines_with_suffix(out, &format!("ACPI: {sig} "));
        assert_eq!(line.len(), 1, "{sig}: {out}");
        assert!(line[0].contains("CORRAL"), "{sig}: {line:?}");
    }
    // With mmio, the DSDT Linux found has one LNRO0005 device per disk: its length says so (each
    // device adds its own AML, so one device fewer would give another length). With pci it holds
    // the host bridge, and the MCFG table is there.
    let dsdt = dsdt_line(m.cpus, m.disks, m.transport);
    if m.transport == vmm::TransportKind::Mmio {
        assert_ne!(
            dsdt,
            dsdt_line(m.cpus, m.disks.saturating_sub(1), m.transport)
        );
    } else {
        let mcfg = lines_with_suffix(out, "ACPI: MCFG ");
        assert_eq!(mcfg.len(), 1, "MCFG: {out}");
    }
    assert!(
        out.contains(&format!("ACPI: {dsdt}")),
        "want {dsdt:?} in:\n{out}"
    );
    assert!(
        out.contains(&format!(
            "smpboot: Allowing {} CPUs, 0 hotplug CPUs",
            m.cpus
        )),
        "{out}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_lists_one_virtio_mmio_device_per_disk() {
        let m = Machine {
            cmdline: "console=ttyS0",
            memory: 256 << 20,
            cpus: 2,
            disks: 2,
            pvh: false,
            transport: vmm::TransportKind::Mmio,
        };
        assert_eq!(
            kernel_cmdline(&m),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
        let pci = Machine {
            transport: vmm::TransportKind::Pci,
            ..m
        };
        assert_eq!(kernel_cmdline(&pci), "console=ttyS0");
    }
}
