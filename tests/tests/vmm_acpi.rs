//! The ACPI tables corral gives its guests, checked by ACPICA's disassembler (`iasl -d`).

use std::process::Command;

use vmm::arch::x86_64::acpi::{self, AcpiTables, Platform};
use vmm::arch::x86_64::layout::MAX_VIRTIO_DEVICES;

#[test]
fn iasl_disassembles_every_table_without_errors_mmio() {
    // Two vCPUs and the most virtio-mmio devices a VM can have, as the builder describes them.
    let platform = Platform {
        devices: vmm::builder::virtio_dsdt_devices(MAX_VIRTIO_DEVICES),
        pci: false,
    };
    check_tables("mmio", &platform);
}

#[test]
fn iasl_disassembles_every_table_without_errors_pci() {
    let platform = Platform {
        devices: acpi::pci_devices(),
        pci: true,
    };
    check_tables("pci", &platform);
}

fn check_tables(name: &str, platform: &Platform) {
    // Kept under target/ for inspection (`iasl -d` writes the .dsl files next to them).
    let dir = corral_tests::vmm::root().join(format!("target/acpi-tables/{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tables = AcpiTables::build(2, platform).unwrap();
    let mut dumped = Vec::new();
    for t in &tables.tables {
        let path = dir.join(format!("{}.dat", t.signature.to_lowercase()));
        std::fs::write(&path, &t.bytes).unwrap();
        dumped.push((t.signature.clone(), path));
    }
    for (sig, path) in &dumped {
        if sig == "RSDP" {
            // iasl cannot take an RSDP on its own (it has no standard table header: "Binary
            // file does not contain a valid ACPI table"); check it by hand instead.
            check_rsdp(&std::fs::read(path).unwrap(), &tables);
            continue;
        }
        let out = Command::new("iasl")
            .arg("-d")
            .arg(path)
            .current_dir(&dir)
            .output()
            .expect("iasl (Debian package acpica-tools) must be installed");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "iasl -d {sig} failed:\n{text}");
        let lower = text.to_lowercase();
        assert!(
            !lower.contains("error ") && !lower.contains("checksum is incorrect"),
            "iasl -d {sig}:\n{text}"
        );
        let dsl = std::fs::read_to_string(path.with_extension("dsl")).unwrap();
        match sig.as_str() {
            "FACP" => {
                assert!(dsl.contains("Hardware Reduced (V5) : 1"), "{dsl}");
                assert!(dsl.contains("Sleep Control Register"), "{dsl}");
                assert!(dsl.contains("0000000000000600"), "{dsl}");
                assert!(dsl.contains("0000000000000602"), "reset register: {dsl}");
                let no_msi = if platform.pci { ": 0" } else { ": 1" };
                assert!(
                    dsl.lines()
                        .any(|l| l.contains("MSI Not Supported") && l.trim_end().ends_with(no_msi)),
                    "MSI flag: {dsl}"
                );
            }
            "MCFG" => {
                assert!(platform.pci);
                assert!(dsl.contains("00000000E0000000"), "ECAM base: {dsl}");
                assert!(dsl.contains("Start Bus Number : 00"), "{dsl}");
                assert!(dsl.contains("End Bus Number : 00"), "{dsl}");
            }
            "DSDT" if platform.pci => {
                assert!(dsl.contains("PNP0501"), "{dsl}");
                assert!(dsl.contains("EisaId (\"PNP0A08\")"), "host bridge: {dsl}");
                assert!(
                    dsl.contains("EisaId (\"PNP0C02\")"),
                    "ECAM reservation: {dsl}"
                );
                assert!(dsl.contains("0xE0000000"), "{dsl}");
                assert!(
                    dsl.contains("0xC0000000") && dsl.contains("0xCFFFFFFF"),
                    "{dsl}"
                );
                assert!(dsl.contains("0x0CF8"), "type-1 ports: {dsl}");
                assert!(!dsl.contains("LNRO0005"), "{dsl}");
                assert!(dsl.contains("_S5_"), "{dsl}");
            }
            "APIC" => {
                assert_eq!(
                    dsl.matches("Subtable Type : 00 [Processor Local APIC]")
                        .count(),
                    2,
                    "{dsl}"
                );
                assert!(dsl.contains("[I/O APIC]"), "{dsl}");
                assert!(dsl.contains("[Interrupt Source Override]"), "{dsl}");
            }
            "DSDT" => {
                assert!(dsl.contains("PNP0501"), "{dsl}");
                assert_eq!(
                    dsl.matches("\"LNRO0005\"").count(),
                    MAX_VIRTIO_DEVICES,
                    "{dsl}"
                );
                // The last window and its interrupt (GSI 22, edge, active high).
                assert!(dsl.contains("0xD0011000"), "{dsl}");
                assert!(dsl.contains("0x00000016,"), "{dsl}");
                assert!(
                    dsl.contains("Interrupt (ResourceConsumer, Edge, ActiveHigh"),
                    "{dsl}"
                );
                assert!(dsl.contains("_S5_"), "{dsl}");
            }
            "XSDT" => assert!(dsl.contains("ACPI Table Address"), "{dsl}"),
            other => panic!("unexpected table {other}"),
        }
        eprintln!("iasl -d {sig}: ok");
    }
}

fn check_rsdp(rsdp: &[u8], tables: &AcpiTables) {
    let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
    assert_eq!(rsdp.len(), 36);
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
    assert_eq!(sum(rsdp), 0, "extended checksum");
    assert_eq!(rsdp[15], 2, "revision 2 (XSDT)");
    let xsdt = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
    let xsdt_table = tables
        .tables
        .iter()
        .find(|t| t.signature == "XSDT")
        .unwrap();
    assert_eq!(xsdt, xsdt_table.addr);
    assert_eq!(tables.rsdp_addr(), tables.tables[0].addr);
}
