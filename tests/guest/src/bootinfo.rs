//! What the VMM (or firmware) tells the guest at entry: the Linux zero page (`boot_params`) or
//! the PVH `hvm_start_info`. Both are copied into a [`BootInfo`] before anything else runs, so
//! low memory can be reused afterwards.

use crate::io::{phys_slice, read_u32, read_u64};

pub const MAX_E820: usize = 32;
pub const MAX_CMDLINE: usize = 2048;
pub const E820_RAM: u32 = 1;

#[derive(Clone, Copy, Default)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

pub struct BootInfo {
    pub protocol: &'static str,
    pub e820: [E820Entry; MAX_E820],
    pub e820_len: usize,
    pub cmdline: [u8; MAX_CMDLINE],
    pub cmdline_len: usize,
    /// RSDP address given by the loader (0 = not given: scan the BIOS area).
    pub rsdp: u64,
    /// Initial ramdisk (address, size), if the loader passed one.
    pub initrd: Option<(u64, u64)>,
}

impl BootInfo {
    pub fn e820(&self) -> &[E820Entry] {
        &self.e820[..self.e820_len]
    }

    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("<not utf-8>")
    }

    fn empty(protocol: &'static str) -> Self {
        BootInfo {
            protocol,
            e820: [E820Entry::default(); MAX_E820],
            e820_len: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            rsdp: 0,
            initrd: None,
        }
    }

    fn set_cmdline(&mut self, addr: u64, max: usize) {
        if addr == 0 {
            return;
        }
        let bytes = phys_slice(addr, max.min(MAX_CMDLINE));
        let len = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        self.cmdline[..len].copy_from_slice(&bytes[..len]);
        self.cmdline_len = len;
    }

    fn push_e820(&mut self, addr: u64, size: u64, kind: u32) {
        if self.e820_len < MAX_E820 {
            self.e820[self.e820_len] = E820Entry { addr, size, kind };
            self.e820_len += 1;
        }
    }
}

// boot_params offsets (Documentation/arch/x86/zero-page.rst, boot.rst).
const BP_ACPI_RSDP_ADDR: usize = 0x070;
const BP_E820_ENTRIES: usize = 0x1e8;
const BP_RAMDISK_IMAGE: usize = 0x218;
const BP_RAMDISK_SIZE: usize = 0x21c;
const BP_CMD_LINE_PTR: usize = 0x228;
const BP_CMDLINE_SIZE: usize = 0x238;
const BP_E820_TABLE: usize = 0x2d0;

/// Reads the Linux zero page at `addr`.
pub fn from_zero_page(addr: u64) -> BootInfo {
    let zp = phys_slice(addr, 4096);
    let mut info = BootInfo::empty("linux64");
    let entries = usize::from(zp[BP_E820_ENTRIES]).min(MAX_E820);
    for i in 0..entries {
        let off = BP_E820_TABLE + 20 * i;
        info.push_e820(
            read_u64(zp, off),
            read_u64(zp, off + 8),
            read_u32(zp, off + 16),
        );
    }
    let size = read_u32(zp, BP_CMDLINE_SIZE) as usize;
    info.set_cmdline(
        u64::from(read_u32(zp, BP_CMD_LINE_PTR)),
        if size == 0 { MAX_CMDLINE } else { size + 1 },
    );
    info.rsdp = read_u64(zp, BP_ACPI_RSDP_ADDR);
    let size = read_u32(zp, BP_RAMDISK_SIZE);
    if size != 0 {
        info.initrd = Some((u64::from(read_u32(zp, BP_RAMDISK_IMAGE)), u64::from(size)));
    }
    info
}

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Reads the PVH `hvm_start_info` at `addr`.
pub fn from_pvh(addr: u64) -> BootInfo {
    let si = phys_slice(addr, 56);
    let mut info = BootInfo::empty("pvh");
    if read_u32(si, 0) != XEN_HVM_START_MAGIC {
        return info;
    }
    info.set_cmdline(read_u64(si, 24), MAX_CMDLINE);
    info.rsdp = read_u64(si, 32);
    if read_u32(si, 12) > 0 {
        let module = phys_slice(read_u64(si, 16), 16);
        info.initrd = Some((read_u64(module, 0), read_u64(module, 8)));
    }
    let version = read_u32(si, 4);
    if version >= 1 {
        let memmap = read_u64(si, 40);
        let entries = (read_u32(si, 48) as usize).min(MAX_E820);
        let table = phys_slice(memmap, entries * 24);
        for i in 0..entries {
            let off = 24 * i;
            info.push_e820(
                read_u64(table, off),
                read_u64(table, off + 8),
                read_u32(table, off + 16),
            );
        }
    }
    info
}
