//! ACPI, read-only: RSDP (given or found in the BIOS area) → XSDT/RSDT → FADT (power-off and
//! reset registers, DSDT → `_S5`, the power button's GED, virtio-mmio `LNRO0005` devices), MADT
//! (local APIC ids, IOAPICs with their first GSI), MCFG (the PCI Express ECAM window; without an
//! MCFG, the DSDT host bridge's `_CBA`, as QEMU microvm with `pcie=on` has it).

use crate::entry::MAX_CPUS;
use crate::io::{outb, outw, phys_slice, read_u32, read_u64};

/// A generic address structure (only system IO and system memory are used).
#[derive(Clone, Copy, Default)]
pub struct Gas {
    pub space: u8,
    pub addr: u64,
}

impl Gas {
    fn parse(b: &[u8], off: usize) -> Option<Gas> {
        let gas = Gas {
            space: b[off],
            addr: read_u64(b, off + 4),
        };
        (gas.addr != 0 && (gas.space == 0 || gas.space == 1)).then_some(gas)
    }

    /// Writes one byte to the register.
    pub fn write8(&self, value: u8) {
        match self.space {
            1 => outb(self.addr as u16, value),
            // SAFETY: a firmware-described register inside the identity-mapped 4 GiB.
            _ => unsafe { core::ptr::write_volatile(self.addr as *mut u8, value) },
        }
    }
}

/// Most IOAPICs remembered (QEMU microvm has two).
pub const MAX_IOAPICS: usize = 4;
/// Most virtio-mmio devices remembered from the DSDT (QEMU microvm lists 24 windows).
pub const MAX_MMIO_DEVICES: usize = 32;

/// An IOAPIC: register window and the first GSI it serves.
#[derive(Clone, Copy, Default)]
pub struct IoApic {
    pub addr: u64,
    pub gsi_base: u32,
}

/// A virtio-mmio window described by an `LNRO0005` device.
#[derive(Clone, Copy, Default)]
pub struct MmioDevice {
    pub base: u64,
    pub gsi: u32,
    pub level: bool,
    pub active_low: bool,
}

/// The first MCFG entry: PCI Express configuration space (ECAM) for buses `start_bus..=end_bus`
/// of `segment`, bus `b` at `base + (b << 20)`.
#[derive(Clone, Copy)]
pub struct Ecam {
    pub base: u64,
    pub segment: u16,
    pub start_bus: u8,
    pub end_bus: u8,
}

pub struct AcpiInfo {
    pub rsdp: u64,
    pub oem: [u8; 6],
    pub cpus: usize,
    pub apic_ids: [u8; MAX_CPUS],
    pub lapic: u64,
    pub ioapic: u64,
    pub hw_reduced: bool,
    pub sleep_control: Option<Gas>,
    pub pm1a_control: u16,
    pub reset: Option<(Gas, u8)>,
    pub s5_slp_typ: u8,
    /// GSI of the generic event device (`ACPI0013`, the power button), if the DSDT has one.
    pub ged_gsi: Option<u32>,
    pub ioapics: [IoApic; MAX_IOAPICS],
    pub ioapic_count: usize,
    pub mmio: [MmioDevice; MAX_MMIO_DEVICES],
    pub mmio_count: usize,
    pub ecam: Option<Ecam>,
    /// The DSDT host bridge's 32-bit memory window (first, last address) for BARs.
    pub pci_window: Option<(u64, u64)>,
}

impl AcpiInfo {
    pub fn apic_ids(&self) -> &[u8] {
        &self.apic_ids[..self.cpus.min(MAX_CPUS)]
    }

    pub fn ioapics(&self) -> &[IoApic] {
        &self.ioapics[..self.ioapic_count]
    }

    pub fn mmio_devices(&self) -> &[MmioDevice] {
        &self.mmio[..self.mmio_count]
    }

    pub fn oem(&self) -> &str {
        core::str::from_utf8(&self.oem).unwrap_or("?")
    }
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x)) == 0
}

fn scan_rsdp(start: u64, len: u64) -> Option<u64> {
    let area = phys_slice(start, len as usize);
    (0..area.len() - 20)
        .step_by(16)
        .find(|&off| &area[off..off + 8] == b"RSD PTR " && checksum_ok(&area[off..off + 20]))
        .map(|off| start + off as u64)
}

/// A table (header + body) at `addr`, if its checksum holds.
fn table(addr: u64) -> Option<&'static [u8]> {
    if addr == 0 {
        return None;
    }
    let len = read_u32(phys_slice(addr, 36), 4) as usize;
    let t = phys_slice(addr, len);
    (len >= 36 && checksum_ok(t)).then_some(t)
}

/// Reads the ACPI tables; `given` is the loader's RSDP address (0 = scan for it).
pub fn probe(given: u64) -> Option<AcpiInfo> {
    let rsdp = if given != 0 {
        Some(given)
    } else {
        scan_rsdp(0xe0000, 0x20000)
    }?;
    let r = phys_slice(rsdp, 36);
    if &r[0..8] != b"RSD PTR " {
        return None;
    }
    let mut info = AcpiInfo {
        rsdp,
        oem: [0; 6],
        cpus: 0,
        apic_ids: [0; MAX_CPUS],
        lapic: 0xfee0_0000,
        ioapic: 0xfec0_0000,
        hw_reduced: false,
        sleep_control: None,
        pm1a_control: 0,
        reset: None,
        s5_slp_typ: 5,
        ged_gsi: None,
        ioapics: [IoApic::default(); MAX_IOAPICS],
        ioapic_count: 0,
        mmio: [MmioDevice::default(); MAX_MMIO_DEVICES],
        mmio_count: 0,
        ecam: None,
        pci_window: None,
    };
    info.oem.copy_from_slice(&r[9..15]);
    // Revision 2+: XSDT with 64-bit entries; else RSDT with 32-bit entries.
    let (root, entry_size) = if r[15] >= 2 && read_u64(r, 24) != 0 {
        (table(read_u64(r, 24))?, 8)
    } else {
        (table(u64::from(read_u32(r, 16)))?, 4)
    };
    let mut off = 36;
    while off + entry_size <= root.len() {
        let addr = if entry_size == 8 {
            read_u64(root, off)
        } else {
            u64::from(read_u32(root, off))
        };
        off += entry_size;
        let Some(t) = table(addr) else { continue };
        match &t[0..4] {
            b"FACP" => parse_fadt(t, &mut info),
            b"APIC" => parse_madt(t, &mut info),
            // The MCFG wins over a DSDT `_CBA`, whichever comes first.
            b"MCFG" => info.ecam = parse_mcfg(t).or(info.ecam),
            _ => {}
        }
    }
    Some(info)
}

fn parse_fadt(f: &[u8], info: &mut AcpiInfo) {
    let flags = if f.len() >= 116 { read_u32(f, 112) } else { 0 };
    info.hw_reduced = flags & (1 << 20) != 0;
    info.pm1a_control = if f.len() >= 68 {
        read_u32(f, 64) as u16
    } else {
        0
    };
    if flags & (1 << 10) != 0 && f.len() >= 129 {
        info.reset = Gas::parse(f, 116).map(|g| (g, f[128]));
    }
    if f.len() >= 256 {
        info.sleep_control = Gas::parse(f, 244);
    }
    let x_dsdt = if f.len() >= 148 { read_u64(f, 140) } else { 0 };
    let dsdt = if x_dsdt != 0 {
        x_dsdt
    } else {
        u64::from(read_u32(f, 40))
    };
    if let Some(typ) = table(dsdt).and_then(s5_slp_typ) {
        info.s5_slp_typ = typ;
    }
    info.ged_gsi = table(dsdt).and_then(ged_gsi);
    if let Some(t) = table(dsdt) {
        virtio_mmio_devices(t, info);
        if info.ecam.is_none() {
            info.ecam = host_bridge_cba(t);
        }
        info.pci_window = host_bridge_window(t);
    }
}

/// Every `LNRO0005` device: its `Memory32Fixed` window (descriptor 0x86) and its interrupt
/// (Extended Interrupt descriptor 0x89), both searched between its `_HID` and the next one.
fn virtio_mmio_devices(dsdt: &[u8], info: &mut AcpiInfo) {
    const HID: &[u8] = b"LNRO0005";
    let mut at = 0;
    while let Some(pos) = dsdt[at..].windows(HID.len()).position(|w| w == HID) {
        let start = at + pos + HID.len();
        let end = dsdt[start..]
            .windows(HID.len())
            .position(|w| w == HID)
            .map_or(dsdt.len(), |p| start + p);
        at = start;
        let body = &dsdt[start..end];
        let mem = body.windows(3).position(|w| w == [0x86, 0x09, 0x00]);
        let irq = body.windows(2).position(|w| w[0] == 0x89 && w[1] >= 6);
        let (Some(m), Some(i)) = (mem, irq) else {
            continue;
        };
        if m + 12 > body.len() || i + 9 > body.len() || info.mmio_count >= MAX_MMIO_DEVICES {
            continue;
        }
        let flags = body[i + 3];
        info.mmio[info.mmio_count] = MmioDevice {
            base: u64::from(read_u32(body, m + 4)),
            gsi: read_u32(body, i + 5),
            level: flags & 0x02 == 0,
            active_low: flags & 0x04 != 0,
        };
        info.mmio_count += 1;
    }
}

/// The ECAM base a `PNP0A08` host bridge returns from `_CBA` (`Method (_CBA) { Return (DWord or
/// QWord constant) }` in AML: MethodOp, PkgLength, name, flags, ReturnOp, prefix, value), taken
/// as bus 0 only.
fn host_bridge_cba(dsdt: &[u8]) -> Option<Ecam> {
    dsdt.windows(7).position(|w| w == b"PNP0A08")?;
    let at = dsdt.windows(4).position(|w| w == b"_CBA")? + 5;
    let base = match dsdt.get(at..at + 2)? {
        [0xa4, 0x0c] if at + 6 <= dsdt.len() => u64::from(read_u32(dsdt, at + 2)),
        [0xa4, 0x0e] if at + 10 <= dsdt.len() => read_u64(dsdt, at + 2),
        _ => return None,
    };
    (base != 0).then_some(Ecam {
        base,
        segment: 0,
        start_bus: 0,
        end_bus: 0,
    })
}

/// The first 32-bit memory range (DWord Address Space descriptor 0x87, resource type 0) after
/// the `PNP0A08` host bridge's name: its `_CRS` window for BARs.
fn host_bridge_window(dsdt: &[u8]) -> Option<(u64, u64)> {
    let at = dsdt.windows(7).position(|w| w == b"PNP0A08")?;
    let rest = &dsdt[at..];
    let d = rest
        .windows(4)
        .position(|w| w == [0x87, 0x17, 0x00, 0x00])?;
    if d + 26 > rest.len() {
        return None;
    }
    let (min, max) = (read_u32(rest, d + 10), read_u32(rest, d + 14));
    (min != 0 && min < max).then_some((u64::from(min), u64::from(max)))
}

/// `SLP_TYPa` of the `_S5_` package: `Name(_S5_, Package(){typ, ...})` in AML.
fn s5_slp_typ(dsdt: &[u8]) -> Option<u8> {
    let pos = dsdt.windows(4).position(|w| w == b"_S5_")?;
    let mut i = pos + 4;
    if dsdt.get(i) != Some(&0x12) {
        return None; // PackageOp
    }
    i += 1;
    i += 1 + usize::from(dsdt.get(i)? >> 6); // PkgLength: lead byte + extra bytes
    i += 1; // NumElements
    match *dsdt.get(i)? {
        0x00 => Some(0),                  // ZeroOp
        0x01 => Some(1),                  // OneOp
        0x0a => dsdt.get(i + 1).copied(), // BytePrefix
        _ => None,
    }
}

/// The interrupt of the `ACPI0013` device: the first Extended Interrupt descriptor (0x89, length
/// 6, one interrupt) after its `_HID` string.
fn ged_gsi(dsdt: &[u8]) -> Option<u32> {
    let hid = dsdt.windows(8).position(|w| w == b"ACPI0013")?;
    let rest = &dsdt[hid..];
    let desc = rest
        .windows(5)
        .position(|w| w[0] == 0x89 && w[1] == 6 && w[2] == 0 && w[4] == 1)?;
    let at = desc + 5;
    (at + 4 <= rest.len()).then(|| read_u32(rest, at))
}

/// MCFG: the 36-byte header, 8 reserved bytes, then 16-byte entries (base u64, segment u16,
/// start bus u8, end bus u8, reserved u32). Only the first entry is used.
fn parse_mcfg(t: &[u8]) -> Option<Ecam> {
    const ENTRY: usize = 44;
    if t.len() < ENTRY + 16 {
        return None;
    }
    let ecam = Ecam {
        base: read_u64(t, ENTRY),
        segment: u16::from_le_bytes([t[ENTRY + 8], t[ENTRY + 9]]),
        start_bus: t[ENTRY + 10],
        end_bus: t[ENTRY + 11],
    };
    (ecam.base != 0 && ecam.start_bus <= ecam.end_bus).then_some(ecam)
}

fn parse_madt(m: &[u8], info: &mut AcpiInfo) {
    info.lapic = u64::from(read_u32(m, 36));
    let mut off = 44;
    while off + 2 <= m.len() {
        let (kind, len) = (m[off], usize::from(m[off + 1]));
        if len < 2 || off + len > m.len() {
            break;
        }
        match kind {
            0 if read_u32(m, off + 4) & 1 != 0 => {
                if info.cpus < MAX_CPUS {
                    info.apic_ids[info.cpus] = m[off + 3];
                }
                info.cpus += 1;
            }
            1 => {
                let (addr, gsi_base) = (u64::from(read_u32(m, off + 4)), read_u32(m, off + 8));
                // The IOAPIC that serves GSI 0..23 (QEMU microvm has a second one from GSI 24).
                if gsi_base == 0 {
                    info.ioapic = addr;
                }
                if info.ioapic_count < MAX_IOAPICS {
                    info.ioapics[info.ioapic_count] = IoApic { addr, gsi_base };
                    info.ioapic_count += 1;
                }
            }
            9 if read_u32(m, off + 8) & 1 != 0 => {
                if info.cpus < MAX_CPUS {
                    info.apic_ids[info.cpus] = read_u32(m, off + 4) as u8;
                }
                info.cpus += 1;
            }
            _ => {}
        }
        off += len;
    }
}

/// Enters S5 through the FADT: the hardware-reduced sleep control register, else PM1a_CNT.
pub fn power_off(info: &AcpiInfo) {
    let typ = info.s5_slp_typ & 7;
    if let Some(reg) = info.sleep_control {
        reg.write8((typ << 2) | (1 << 5));
    } else if info.pm1a_control != 0 {
        outw(info.pm1a_control, (u16::from(typ) << 10) | (1 << 13));
    }
}

/// Resets through the FADT reset register, if there is one.
pub fn reset(info: &AcpiInfo) {
    if let Some((reg, value)) = info.reset {
        reg.write8(value);
    }
}
