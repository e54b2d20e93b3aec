//! ACPI tables (built with `acpi_tables`): RSDP, XSDT, FADT (hardware-reduced), MADT, DSDT, and
//! MCFG when the VM has a PCI bus.
//!
//! The guest powers off by writing `SLP_TYP(S5) | SLP_EN` to the FADT sleep control register
//! and reboots through the FADT reset register; both are port-IO registers handled by
//! `devices::acpi_pm`. Devices appear in the DSDT under `\_SB_`: the builder passes one
//! AML blob per device ([`DsdtDevice`]), so virtio-mmio devices are added the same way as COM1.
//! With PCI, the DSDT holds the host bridge `PCI0` (bus 0, the type-1 ports, the BAR window)
//! and a motherboard-resources device reserving the ECAM, which Linux wants before it trusts the
//! MCFG.

use acpi_tables::Aml;
use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};
use zerocopy::{Immutable, IntoBytes};

use super::layout::{
    ACPI_END, ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_S5_SLP_TYP, ACPI_SLEEP_CONTROL_PORT,
    ACPI_SLEEP_STATUS_PORT, ACPI_START, IOAPIC_ADDR, LAPIC_ADDR, PCI_CONFIG_ADDRESS_PORT,
    PCI_MMCONFIG_SIZE, PCI_MMCONFIG_START, PCI_MMIO_SIZE, PCI_MMIO_START, POWER_BUTTON_GSI,
    SERIAL_IRQ, SERIAL_PORT,
};

/// OEM id written into every table.
pub const OEM_ID: [u8; 6] = *b"CORRAL";
const OEM_REVISION: u32 = 1;
/// FADT `IAPC_BOOT_ARCH`: no VGA (bit 2), no CMOS RTC (bit 5). No 8042 bit: the i8042 exists
/// only as a reset line, so Linux should not probe a keyboard.
const IAPC_BOOT_ARCH: u16 = (1 << 2) | (1 << 5);
/// `IAPC_BOOT_ARCH` bit "MSI not supported" (set without PCI: there is nothing to use MSI).
const IAPC_NO_MSI: u16 = 1 << 3;
/// MADT `Flags` would carry PCAT_COMPAT; acpi_tables leaves it 0 (no legacy PIC use), as we want.
const TABLE_ALIGN: u64 = 64;

/// Errors while building or writing the tables.
#[derive(Debug, Error)]
pub enum AcpiError {
    #[error("ACPI tables need {needed} bytes, only {available} fit below 1 MiB")]
    TooLarge { needed: u64, available: u64 },
    #[error("writing the ACPI tables into guest memory")]
    Write(#[source] GuestMemoryError),
    #[error("{0} vCPUs do not fit in the MADT (max 254)")]
    TooManyCpus(u16),
}

/// What the platform has besides the fixed devices: DSDT devices, and whether there is a PCI
/// bus (MCFG, MSI allowed).
#[derive(Clone, Debug, Default)]
pub struct Platform {
    pub devices: Vec<DsdtDevice>,
    pub pci: bool,
}

/// One device in the DSDT's `\_SB_` scope, as AML (`Device(...) { ... }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsdtDevice(pub Vec<u8>);

/// One serialized table and where it lives in guest memory.
#[derive(Clone, Debug)]
pub struct AcpiTable {
    /// Signature (`RSD PTR ` is shortened to `RSDP`).
    pub signature: String,
    pub addr: u64,
    pub bytes: Vec<u8>,
}

/// The full set of tables, laid out from [`ACPI_START`].
#[derive(Clone, Debug)]
pub struct AcpiTables {
    pub tables: Vec<AcpiTable>,
}

impl AcpiTables {
    /// Builds every table for `cpus` vCPUs and `platform` (COM1 is always present).
    pub fn build(cpus: u16, platform: &Platform) -> Result<Self, AcpiError> {
        let cpus = u8::try_from(cpus)
            .ok()
            .filter(|c| *c <= 254)
            .ok_or(AcpiError::TooManyCpus(cpus))?;
        let mut devices = vec![serial_device(), power_button(), generic_event_device()];
        devices.extend_from_slice(&platform.devices);
        let dsdt = dsdt(&devices);

        let mut cursor = ACPI_START + TABLE_ALIGN; // RSDP first, at the start of the area
        let mut place = |len: usize| {
            let addr = cursor;
            cursor += (len as u64).div_ceil(TABLE_ALIGN) * TABLE_ALIGN;
            addr
        };
        let dsdt_addr = place(dsdt.len());
        let fadt = to_bytes(&fadt(dsdt_addr, platform.pci));
        let fadt_addr = place(fadt.len());
        let madt = to_bytes(&madt(cpus));
        let madt_addr = place(madt.len());
        let mcfg = platform.pci.then(|| to_bytes(&mcfg()));
        let mcfg_addr = mcfg.as_ref().map(|m| place(m.len()));
        let mut xsdt = XSDT::new(OEM_ID, *b"CORRALXS", OEM_REVISION);
        xsdt.add_entry(fadt_addr);
        xsdt.add_entry(madt_addr);
        if let Some(addr) = mcfg_addr {
            xsdt.add_entry(addr);
        }
        let xsdt = to_bytes(&xsdt);
        let xsdt_addr = place(xsdt.len());
        if cursor > ACPI_END {
            return Err(AcpiError::TooLarge {
                needed: cursor - ACPI_START,
                available: ACPI_END - ACPI_START,
            });
        }
        let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr));
        let table = |signature: &str, addr, bytes| AcpiTable {
            signature: signature.to_string(),
            addr,
            bytes,
        };
        let mut tables = vec![
            table("RSDP", ACPI_START, rsdp),
            table("DSDT", dsdt_addr, dsdt),
            table("FACP", fadt_addr, fadt),
            table("APIC", madt_addr, madt),
            table("XSDT", xsdt_addr, xsdt),
        ];
        if let (Some(bytes), Some(addr)) = (mcfg, mcfg_addr) {
            tables.push(table("MCFG", addr, bytes));
        }
        Ok(AcpiTables { tables })
    }

    /// Guest-physical address of the RSDP (for `boot_params.acpi_rsdp_addr` / PVH `rsdp_paddr`).
    pub fn rsdp_addr(&self) -> u64 {
        ACPI_START
    }

    /// Copies every table into guest memory.
    pub fn write(&self, mem: &GuestMemoryMmap) -> Result<(), AcpiError> {
        for t in &self.tables {
            mem.write_slice(&t.bytes, GuestAddress(t.addr))
                .map_err(AcpiError::Write)?;
        }
        Ok(())
    }
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

fn io_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

fn fadt(dsdt_addr: u64, pci: bool) -> acpi_tables::fadt::FADT {
    let mut fadt = FADTBuilder::new(OEM_ID, *b"CORRALFA", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .preferred_pm_profile(PmProfile::Unspecified);
    let boot_arch = if pci {
        IAPC_BOOT_ARCH
    } else {
        IAPC_BOOT_ARCH | IAPC_NO_MSI
    };
    fadt.iapc_boot_arch = boot_arch.into();
    fadt.reset_reg = io_register(ACPI_RESET_PORT);
    fadt.reset_value = ACPI_RESET_VALUE;
    fadt.sleep_control_reg = io_register(ACPI_SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io_register(ACPI_SLEEP_STATUS_PORT);
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"CORRAL\0\0").into();
    fadt.finalize()
}

/// MADT interrupt source override (type 2): ISA `source` arrives on `gsi`.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, Immutable)]
struct InterruptSourceOverride {
    r#type: u8,
    length: u8,
    bus: u8,
    source: u8,
    gsi: u32,
    flags: u16,
}

impl Aml for InterruptSourceOverride {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(self.as_bytes());
    }
}

/// MADT local APIC NMI (type 4): LINT1 of every processor is the NMI line.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, Immutable)]
struct LocalApicNmi {
    r#type: u8,
    length: u8,
    processor_uid: u8,
    flags: u16,
    lint: u8,
}

impl Aml for LocalApicNmi {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(self.as_bytes());
    }
}

fn madt(cpus: u8) -> MADT {
    let mut madt = MADT::new(
        OEM_ID,
        *b"CORRALAP",
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for cpu in 0..cpus {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(0, IOAPIC_ADDR, 0));
    // KVM routes the PIT (ISA IRQ 0) to IOAPIC pin 2, like a PC.
    madt.add_structure(InterruptSourceOverride {
        r#type: 2,
        length: 10,
        bus: 0,
        source: 0,
        gsi: 2,
        flags: 0,
    });
    madt.add_structure(LocalApicNmi {
        r#type: 4,
        length: 6,
        processor_uid: 0xff,
        flags: 0,
        lint: 1,
    });
    madt
}

/// COM1 as an ACPI device (`PNP0501`), so the OS knows its port and IRQ.
fn serial_device() -> DsdtDevice {
    DsdtDevice(to_bytes(&aml::Device::new(
        aml::Path::new("COM1"),
        vec![
            &aml::Name::new(aml::Path::new("_HID"), &aml::EISAName::new("PNP0501")),
            &aml::Name::new(aml::Path::new("_UID"), &aml::ZERO),
            &aml::Name::new(
                aml::Path::new("_CRS"),
                &aml::ResourceTemplate::new(vec![
                    &aml::IO::new(SERIAL_PORT, SERIAL_PORT, 1, 8),
                    &aml::Interrupt::new(true, true, false, false, SERIAL_IRQ),
                ]),
            ),
        ],
    )))
}

/// The ACPI power button (`PNP0C0C`), a control-method button notified by the GED.
fn power_button() -> DsdtDevice {
    DsdtDevice(to_bytes(&aml::Device::new(
        aml::Path::new("PWRB"),
        vec![
            &aml::Name::new(aml::Path::new("_HID"), &aml::EISAName::new("PNP0C0C")),
            &aml::Name::new(aml::Path::new("_UID"), &aml::ZERO),
        ],
    )))
}

/// The hardware-reduced generic event device (`ACPI0013`): an edge interrupt on
/// [`POWER_BUTTON_GSI`] whose `_EVT` notifies `PWRB` (0x80: "button pressed").
fn generic_event_device() -> DsdtDevice {
    let gsi = POWER_BUTTON_GSI;
    DsdtDevice(to_bytes(&aml::Device::new(
        aml::Path::new("GED0"),
        vec![
            &aml::Name::new(aml::Path::new("_HID"), &"ACPI0013"),
            &aml::Name::new(aml::Path::new("_UID"), &aml::ZERO),
            &aml::Name::new(
                aml::Path::new("_CRS"),
                &aml::ResourceTemplate::new(vec![&aml::Interrupt::new(
                    true, true, false, false, gsi,
                )]),
            ),
            &aml::Method::new(
                aml::Path::new("_EVT"),
                1,
                true,
                vec![&aml::If::new(
                    &aml::Equal::new(&aml::Arg(0), &gsi),
                    vec![&aml::Notify::new(&aml::Path::new("\\_SB_.PWRB"), &0x80u8)],
                )],
            ),
        ],
    )))
}

/// A virtio-mmio device window (`LNRO0005`), as Linux's virtio_mmio driver discovers it.
pub fn virtio_mmio_device(index: u8, base: u32, len: u32, gsi: u32) -> DsdtDevice {
    let name = format!("V{index:03X}");
    let uid = u32::from(index);
    DsdtDevice(to_bytes(&aml::Device::new(
        aml::Path::new(&name),
        vec![
            &aml::Name::new(aml::Path::new("_HID"), &"LNRO0005"),
            &aml::Name::new(aml::Path::new("_UID"), &uid),
            &aml::Name::new(aml::Path::new("_CCA"), &aml::ONE),
            &aml::Name::new(
                aml::Path::new("_CRS"),
                &aml::ResourceTemplate::new(vec![
                    &aml::Memory32Fixed::new(true, base, len),
                    &aml::Interrupt::new(true, true, false, false, gsi),
                ]),
            ),
        ],
    )))
}

/// The ECAM of bus 0.
fn mcfg() -> MCFG {
    let mut mcfg = MCFG::new(OEM_ID, *b"CORRALMC", OEM_REVISION);
    mcfg.add_ecam(PCI_MMCONFIG_START, 0, 0, 0);
    mcfg
}

/// The PCI host bridge (`PNP0A08`, bus 0 only: its resources are the type-1 ports and the BAR
/// window) and a motherboard-resources device (`PNP0C02`) reserving the ECAM.
pub fn pci_devices() -> Vec<DsdtDevice> {
    let bridge = to_bytes(&aml::Device::new(
        aml::Path::new("PCI0"),
        vec![
            &aml::Name::new(aml::Path::new("_HID"), &aml::EISAName::new("PNP0A08")),
            &aml::Name::new(aml::Path::new("_CID"), &aml::EISAName::new("PNP0A03")),
            &aml::Name::new(aml::Path::new("_ADR"), &aml::ZERO),
            &aml::Name::new(aml::Path::new("_SEG"), &aml::ZERO),
            &aml::Name::new(aml::Path::new("_UID"), &aml::ZERO),
            &aml::Name::new(aml::Path::new("_BBN"), &aml::ZERO),
            &aml::Name::new(
                aml::Path::new("_CRS"),
                &aml::ResourceTemplate::new(vec![
                    &aml::AddressSpace::new_bus_number(0u16, 0u16),
                    &aml::IO::new(PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_ADDRESS_PORT, 1, 8),
                    &aml::AddressSpace::new_memory(
                        aml::AddressSpaceCacheable::NotCacheable,
                        true,
                        PCI_MMIO_START as u32,
                        (PCI_MMIO_START + PCI_MMIO_SIZE - 1) as u32,
                        None,
                    ),
                ]),
            ),
        ],
    ));
    let reserved = to_bytes(&aml::Device::new(
        aml::Path::new("MRES"),
        vec![
            &aml::Name::new(aml::Path::new("_HID"), &aml::EISAName::new("PNP0C02")),
            &aml::Name::new(aml::Path::new("_UID"), &aml::ONE),
            &aml::Name::new(
                aml::Path::new("_CRS"),
                &aml::ResourceTemplate::new(vec![&aml::Memory32Fixed::new(
                    false,
                    PCI_MMCONFIG_START as u32,
                    PCI_MMCONFIG_SIZE as u32,
                )]),
            ),
        ],
    ));
    vec![DsdtDevice(bridge), DsdtDevice(reserved)]
}

fn dsdt(devices: &[DsdtDevice]) -> Vec<u8> {
    struct Raw<'a>(&'a [u8]);
    impl Aml for Raw<'_> {
        fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
            sink.vec(self.0);
        }
    }
    let raws: Vec<Raw> = devices.iter().map(|d| Raw(&d.0)).collect();
    let children: Vec<&dyn Aml> = raws.iter().map(|r| r as &dyn Aml).collect();
    let mut body = Vec::new();
    aml::Scope::new(aml::Path::new("\\_SB_"), children).to_aml_bytes(&mut body);
    let s5_typ = ACPI_S5_SLP_TYP;
    aml::Name::new(
        aml::Path::new("_S5_"),
        &aml::Package::new(vec![&s5_typ, &aml::ZERO, &aml::ZERO, &aml::ZERO]),
    )
    .to_aml_bytes(&mut body);
    let mut sdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, *b"CORRALDS", OEM_REVISION);
    sdt.append_slice(&body);
    sdt.as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    #[test]
    fn tables_are_consistent() {
        let platform = Platform {
            devices: vec![virtio_mmio_device(0, 0xd000_0000, 0x1000, 5)],
            pci: false,
        };
        let t = AcpiTables::build(2, &platform).unwrap();
        let get = |sig: &str| t.tables.iter().find(|x| x.signature == sig).unwrap();
        for table in &t.tables {
            let len = if table.signature == "RSDP" {
                20
            } else {
                u32::from_le_bytes(table.bytes[4..8].try_into().unwrap()) as usize
            };
            assert!(checksum_ok(&table.bytes[..len]), "{}", table.signature);
            assert!(table.addr >= ACPI_START && table.addr + table.bytes.len() as u64 <= ACPI_END);
        }
        let rsdp = get("RSDP");
        let xsdt_addr = u64::from_le_bytes(rsdp.bytes[24..32].try_into().unwrap());
        assert_eq!(xsdt_addr, get("XSDT").addr);
        let fadt = &get("FACP").bytes;
        let x_dsdt = u64::from_le_bytes(fadt[140..148].try_into().unwrap());
        assert_eq!(x_dsdt, get("DSDT").addr);
        // Sleep control register: GAS at offset 244, SystemIo, port 0x600.
        assert_eq!(fadt[244], 1);
        assert_eq!(
            u64::from_le_bytes(fadt[248..256].try_into().unwrap()),
            0x600
        );
        let madt = &get("APIC").bytes;
        let lapics = madt[44..].chunks(1).count(); // length sanity below
        assert!(lapics > 0);
        assert_eq!(madt[44], 0); // first entry: processor local APIC
        assert_eq!(madt[44 + 8], 0);
        assert_eq!(madt[44 + 16], 1); // then the IOAPIC
        let dsdt = &get("DSDT").bytes;
        assert!(dsdt.windows(8).any(|w| w == b"LNRO0005"));
        assert!(dsdt.windows(4).any(|w| w == b"_S5_"));
        assert!(dsdt.windows(8).any(|w| w == b"ACPI0013"));
        assert!(t.tables.iter().all(|x| x.signature != "MCFG"));
        // IAPC_BOOT_ARCH at offset 109: no MSI without PCI.
        assert_ne!(fadt[109] & (IAPC_NO_MSI as u8), 0);
    }

    #[test]
    fn a_pci_platform_has_mcfg_the_host_bridge_and_msi() {
        let platform = Platform {
            devices: pci_devices(),
            pci: true,
        };
        let t = AcpiTables::build(1, &platform).unwrap();
        let get = |sig: &str| t.tables.iter().find(|x| x.signature == sig).unwrap();
        let mcfg = &get("MCFG").bytes;
        assert_eq!(mcfg.len(), 44 + 16);
        assert!(checksum_ok(mcfg));
        assert_eq!(
            u64::from_le_bytes(mcfg[44..52].try_into().unwrap()),
            PCI_MMCONFIG_START
        );
        assert_eq!((mcfg[54], mcfg[55]), (0, 0), "bus 0 only");
        let xsdt = &get("XSDT").bytes;
        let entries: Vec<u64> = xsdt[36..]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(entries.contains(&get("MCFG").addr));
        assert_eq!(get("FACP").bytes[109] & (IAPC_NO_MSI as u8), 0);
        let dsdt = &get("DSDT").bytes;
        assert!(dsdt.windows(4).any(|w| w == b"PCI0"));
        assert!(!dsdt.windows(8).any(|w| w == b"LNRO0005"));
    }

    #[test]
    fn rejects_too_many_cpus() {
        assert!(matches!(
            AcpiTables::build(255, &Platform::default()),
            Err(AcpiError::TooManyCpus(255))
        ));
    }
}
