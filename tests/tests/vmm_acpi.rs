//! The ACPI tables corral gives its guests, checked by ACPICA's disassembler (`iasl -d`).

use std::process::Command;

use vmm::arch::x86_64::acpi::AcpiTables;
use vmm::arch::x86_64::layout::MAX_VIRTIO_DEVICES;

#[test]
fn iasl_disassembles_every_table_without_errors() {
    // Kept under target/ for inspection (`iasl -d` writes the .dsl files next to them).
    let dir = corral_tests::vmm::root().join("target/acpi-tables");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Two vCPUs and the most virtio-mmio devices a VM can have, as the builder describes them.
    let devices = vmm::builder::virtio_dsdt_devices(MAX_VIRTIO_DEVICES);
    let tables = AcpiTables::build(2, &devices).unwrap();
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
