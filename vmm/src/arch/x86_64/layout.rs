//! Every guest-physical address, port and interrupt line the VMM uses, in one place.
//!
//! Low memory (below 1 MiB) holds the boot structures the VMM writes before the first
//! instruction runs; the kernel is loaded at 1 MiB; RAM above 3 GiB continues at 4 GiB so that
//! the 32-bit MMIO window (PCI BARs and ECAM, IOAPIC, LAPIC, virtio-mmio devices) stays below
//! 4 GiB.

/// Global descriptor table used for the first entry (null, code64, data, TSS, code32).
pub const GDT_ADDR: u64 = 0x500;
/// Empty interrupt descriptor table (limit 0) loaded with the GDT.
pub const IDT_ADDR: u64 = 0x540;
/// PVH `hvm_start_info` (RBX at the PVH entry).
pub const PVH_START_INFO_ADDR: u64 = 0x6000;
/// PVH memory map (array of `hvm_memmap_table_entry`), right after the start info.
pub const PVH_MEMMAP_ADDR: u64 = 0x6040;
/// PVH module list (one entry: the initrd).
pub const PVH_MODLIST_ADDR: u64 = 0x6f00;
/// Linux zero page (`boot_params`, RSI at the 64-bit entry).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer of the boot CPU (grows down, below the page tables).
pub const BOOT_STACK_TOP: u64 = 0x8ff0;
/// Identity page tables: PML4, one PDPT, four page directories of 2 MiB pages (4 GiB mapped).
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// First of the four page directories (0xb000..0xf000).
pub const PD_ADDR: u64 = 0xb000;
/// Number of page directories (each maps 1 GiB).
pub const PD_COUNT: u64 = 4;
/// Kernel command line (NUL-terminated).
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Longest command line we pass (Linux x86 `COMMAND_LINE_SIZE` is 2048).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the Extended BIOS Data Area: usable RAM below 1 MiB ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables (RSDP first, as the BIOS area a guest may scan); not RAM in the e820 map.
pub const ACPI_START: u64 = 0xe0000;
/// End of the ACPI table area (the reset vector follows it).
pub const ACPI_END: u64 = RESET_VECTOR_ADDR;
/// The real-mode reset vector `F000:FFF0`: where a guest jumps to have "the BIOS" restart the
/// machine (Linux's last reboot method, reached on a hardware-reduced ACPI machine without EFI).
pub const RESET_VECTOR_ADDR: u64 = 0xf_fff0;
/// Kernel load address and start of high memory (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole: RAM beyond this moves above 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio device window; device `i` has the 4 KiB window `VIRTIO_MMIO_START + i * 4 KiB`.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Size of each virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// PCI: the host bridge's 32-bit memory window, where the VMM places every function's BAR
/// (firmware-style; the guest keeps them). Below the virtio-mmio windows.
pub const PCI_MMIO_START: u64 = 0xc000_0000;
/// Size of the PCI memory window (256 MiB).
pub const PCI_MMIO_SIZE: u64 = 0x1000_0000;
/// PCI Express enhanced configuration space (ECAM, the MCFG table's base) of bus 0.
pub const PCI_MMCONFIG_START: u64 = 0xe000_0000;
/// ECAM size of one bus: 32 devices x 8 functions x 4 KiB.
pub const PCI_MMCONFIG_SIZE: u64 = 0x10_0000;
/// Type-1 configuration access: the address port (the data port is `+ 4`).
pub const PCI_CONFIG_ADDRESS_PORT: u16 = 0xcf8;
/// Type-1 configuration data port (4 bytes).
pub const PCI_CONFIG_DATA_PORT: u16 = 0xcfc;
/// Size of BAR0 of each virtio-pci function.
pub const VIRTIO_PCI_BAR_SIZE: u64 = 0x8000;
/// First GSI routed to MSI-X vectors (above the IOAPIC pins).
pub const FIRST_MSI_GSI: u32 = IOAPIC_PINS;
/// Last GSI we hand out to MSI-X vectors.
pub const MAX_MSI_GSI: u32 = 1023;
/// IOAPIC register window (KVM's in-kernel IOAPIC).
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC register window (KVM's in-kernel LAPIC).
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// KVM's TSS area (three pages) for real-mode emulation on Intel.
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;
/// Highest address an initrd may end at (bzImage `initrd_addr_max` default, 896 MiB).
pub const INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// COM1, the 8250 UART (8 ports).
pub const SERIAL_PORT: u16 = 0x3f8;
/// i8042 data port; the command port is `I8042_PORT + 4`.
pub const I8042_PORT: u16 = 0x60;
/// i8042 command port.
pub const I8042_COMMAND_PORT: u16 = I8042_PORT + 4;
/// The i8042 command that pulses the CPU reset line.
pub const I8042_RESET_COMMAND: u8 = 0xfe;
/// ACPI hardware-reduced sleep control register (FADT `SLEEP_CONTROL_REG`, 1 byte).
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
/// ACPI hardware-reduced sleep status register (FADT `SLEEP_STATUS_REG`, 1 byte).
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
/// ACPI reset register (FADT `RESET_REG`, 1 byte); writing [`ACPI_RESET_VALUE`] reboots.
pub const ACPI_RESET_PORT: u16 = 0x602;
/// Value the guest writes to the reset register.
pub const ACPI_RESET_VALUE: u8 = 0x1;
/// `SLP_TYP` value of S5 (soft off) in the DSDT's `_S5` package.
pub const ACPI_S5_SLP_TYP: u8 = 5;

/// IRQ (= IOAPIC GSI) of the serial port.
pub const SERIAL_IRQ: u32 = 4;
/// First GSI handed to virtio-mmio devices; device `i` gets `FIRST_DEVICE_IRQ + i` (5..=22).
pub const FIRST_DEVICE_IRQ: u32 = 5;
/// Most virtio-mmio devices: one GSI each between the serial port and the power button.
pub const MAX_VIRTIO_DEVICES: usize = (POWER_BUTTON_GSI - FIRST_DEVICE_IRQ) as usize;
/// GSI of the ACPI generic event device (GED) that signals the power button.
pub const POWER_BUTTON_GSI: u32 = 23;
/// Number of IOAPIC pins of KVM's in-kernel IOAPIC.
pub const IOAPIC_PINS: u32 = 24;

/// Window base and GSI of virtio-mmio device `index` (< [`MAX_VIRTIO_DEVICES`]).
pub fn virtio_mmio_slot(index: usize) -> (u64, u32) {
    (
        VIRTIO_MMIO_START + index as u64 * VIRTIO_MMIO_SIZE,
        FIRST_DEVICE_IRQ + index as u32,
    )
}

/// PCI device number and BAR0 address of virtio-pci device `index` (device 0 is the host bridge).
pub fn virtio_pci_slot(index: usize) -> (u8, u64) {
    (
        index as u8 + 1,
        PCI_MMIO_START + index as u64 * VIRTIO_PCI_BAR_SIZE,
    )
}

/// One usable-RAM range of the guest, `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    pub start: u64,
    pub len: u64,
}

/// The guest memory regions to allocate for `mem_bytes` of RAM: one below the MMIO hole and, for
/// large guests, one above 4 GiB.
pub fn memory_regions(mem_bytes: u64) -> Vec<RamRange> {
    let low = mem_bytes.min(MMIO_GAP_START);
    let mut regions = vec![RamRange { start: 0, len: low }];
    if mem_bytes > MMIO_GAP_START {
        regions.push(RamRange {
            start: MMIO_GAP_END,
            len: mem_bytes - MMIO_GAP_START,
        });
    }
    regions
}

/// The e820 map the guest sees (all entries are usable RAM; everything else is a hole).
pub fn e820_ram(mem_bytes: u64) -> Vec<RamRange> {
    let mut map = vec![RamRange {
        start: 0,
        len: EBDA_START,
    }];
    for r in memory_regions(mem_bytes) {
        let start = r.start.max(HIMEM_START);
        let end = r.start + r.len;
        if end > start {
            map.push(RamRange {
                start,
                len: end - start,
            });
        }
    }
    map
}

/// End of RAM below the MMIO hole.
pub fn low_ram_end(mem_bytes: u64) -> u64 {
    mem_bytes.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_region_and_two_e820_entries() {
        let mem = 256 << 20;
        assert_eq!(memory_regions(mem), vec![RamRange { start: 0, len: mem }]);
        assert_eq!(
            e820_ram(mem),
            vec![
                RamRange {
                    start: 0,
                    len: 0x9fc00
                },
                RamRange {
                    start: 0x10_0000,
                    len: mem - 0x10_0000
                },
            ]
        );
    }

    #[test]
    fn large_guest_skips_the_mmio_hole() {
        let mem = 4 << 30;
        let regions = memory_regions(mem);
        assert_eq!(regions.len(), 2);
        assert_eq!(
            regions[1],
            RamRange {
                start: 4 << 30,
                len: 1 << 30
            }
        );
        let total: u64 = regions.iter().map(|r| r.len).sum();
        assert_eq!(total, mem);
        assert_eq!(
            e820_ram(mem)[2],
            RamRange {
                start: 4 << 30,
                len: 1 << 30
            }
        );
    }

    #[test]
    fn virtio_slots_fit_between_serial_and_power_button() {
        assert_eq!(MAX_VIRTIO_DEVICES, 18);
        assert_eq!(virtio_mmio_slot(0), (0xd000_0000, 5));
        let (base, gsi) = virtio_mmio_slot(MAX_VIRTIO_DEVICES - 1);
        assert_eq!(gsi, 22);
        assert!(base + VIRTIO_MMIO_SIZE <= u64::from(IOAPIC_ADDR));
        assert!(gsi < POWER_BUTTON_GSI && FIRST_DEVICE_IRQ > SERIAL_IRQ);
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut areas = [
            (GDT_ADDR, 5 * 8),
            (IDT_ADDR, 8),
            (PVH_START_INFO_ADDR, 0x40),
            (PVH_MEMMAP_ADDR, 8 * 24),
            (PVH_MODLIST_ADDR, 32),
            (ZERO_PAGE_ADDR, 0x1000),
            (BOOT_STACK_TOP - 0x100, 0x100),
            (PML4_ADDR, 0x1000),
            (PDPT_ADDR, 0x1000),
            (PD_ADDR, PD_COUNT * 0x1000),
            (CMDLINE_ADDR, CMDLINE_MAX_SIZE as u64),
        ];
        areas.sort();
        for w in areas.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{w:x?}");
        }
        assert!(CMDLINE_ADDR + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    }
}
