//! Loading the kernel and initrd and writing the boot information the kernel reads: the Linux
//! zero page (`boot_params`) for the 64-bit boot protocol, or `hvm_start_info` for PVH.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::elf::start_info::{
    XEN_HVM_MEMMAP_TYPE_RAM, XEN_HVM_START_MAGIC_VALUE, hvm_memmap_table_entry, hvm_modlist_entry,
    hvm_start_info,
};
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use thiserror::Error;
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use super::layout::{
    CMDLINE_ADDR, CMDLINE_MAX_SIZE, HIMEM_START, INITRD_ADDR_MAX, PVH_MEMMAP_ADDR,
    PVH_MODLIST_ADDR, PVH_START_INFO_ADDR, RamRange, ZERO_PAGE_ADDR,
};

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const E820_RAM: u32 = 1;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
const XLF_KERNEL_64: u16 = 1 << 0;
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const PAGE_SIZE: u64 = 0x1000;

/// Errors while loading the kernel/initrd or writing boot information.
#[derive(Debug, Error)]
pub enum BootError {
    #[error("opening {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a 64-bit ELF kernel")]
    Elf {
        path: String,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("{path} is neither an ELF kernel nor a bzImage")]
    BzImage {
        path: String,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("{path} has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64)")]
    No64BitEntry { path: String },
    #[error("{path} has no PVH entry note, but PVH boot was requested")]
    NoPvhEntry { path: String },
    #[error("initrd {path} ({size} bytes) does not fit in guest memory below {limit:#x}")]
    InitrdTooLarge { path: String, size: u64, limit: u64 },
    #[error("command line is {len} bytes, the limit is {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("writing boot information into guest memory")]
    Write(#[source] GuestMemoryError),
}

/// Which entry protocol to use for an ELF kernel that carries a PVH note.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH when the ELF has the note, else the 64-bit entry.
    #[default]
    Auto,
    /// Always the Linux 64-bit boot protocol (zero page in RSI).
    Linux64,
    /// Always PVH (fails if the ELF has no PVH note).
    Pvh,
}

/// Where and how the loaded kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelEntry {
    /// 64-bit entry with a zero page; `header` is the bzImage setup header, if any.
    Linux64 {
        entry: u64,
        header: Option<setup_header>,
    },
    /// PVH 32-bit entry with `hvm_start_info`.
    Pvh { entry: u64 },
}

/// A kernel in guest memory: how to enter it and where its image ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadedKernel {
    pub entry: KernelEntry,
    pub end: u64,
}

/// The initrd's place in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Initrd {
    pub addr: u64,
    pub size: u64,
}

fn open(path: &Path) -> Result<File, BootError> {
    File::open(path).map_err(|source| BootError::Open {
        path: path.display().to_string(),
        source,
    })
}

/// Loads an ELF `vmlinux` or a bzImage at 1 MiB and returns its entry.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
    protocol: BootProtocol,
) -> Result<LoadedKernel, BootError> {
    load_kernel_file(mem, &open(path)?, &path.display().to_string(), protocol)
}

/// [`load_kernel`] from an open file (read from its start; `name` is for errors). The VMM keeps
/// the kernel open across boots: a jailed VMM cannot open it again after a guest reset.
pub fn load_kernel_file(
    mem: &GuestMemoryMmap,
    kernel: &File,
    name: &str,
    protocol: BootProtocol,
) -> Result<LoadedKernel, BootError> {
    let name = name.to_string();
    let mut file = kernel.try_clone().map_err(|source| BootError::Read {
        path: name.clone(),
        source,
    })?;
    file.seek(SeekFrom::Start(0))
        .map_err(|source| BootError::Read {
            path: name.clone(),
            source,
        })?;
    let mut magic = [0u8; 4];
    let read_err = |source| BootError::Read {
        path: name.clone(),
        source,
    };
    file.read_exact(&mut magic).map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    if magic == ELF_MAGIC {
        let loaded =
            Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|source| {
                BootError::Elf {
                    path: name.clone(),
                    source,
                }
            })?;
        let pvh = match loaded.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => Some(addr.0),
            _ => None,
        };
        let entry = match (protocol, pvh) {
            (BootProtocol::Auto | BootProtocol::Pvh, Some(entry)) => KernelEntry::Pvh { entry },
            (BootProtocol::Pvh, None) => return Err(BootError::NoPvhEntry { path: name }),
            _ => KernelEntry::Linux64 {
                entry: loaded.kernel_load.0,
                header: None,
            },
        };
        return Ok(LoadedKernel {
            entry,
            end: loaded.kernel_end,
        });
    }
    let loaded =
        BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|source| {
            BootError::BzImage {
                path: name.clone(),
                source,
            }
        })?;
    let header = loaded.setup_header;
    if header.is_some_and(|h| h.xloadflags & XLF_KERNEL_64 == 0) {
        return Err(BootError::No64BitEntry { path: name });
    }
    Ok(LoadedKernel {
        entry: KernelEntry::Linux64 {
            entry: loaded.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
            header,
        },
        end: loaded.kernel_end,
    })
}

/// Copies the initrd to the top of low RAM (page aligned, below `INITRD_ADDR_MAX`).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    low_ram_end: u64,
    kernel_end: u64,
) -> Result<Initrd, BootError> {
    load_initrd_file(
        mem,
        &open(path)?,
        &path.display().to_string(),
        low_ram_end,
        kernel_end,
    )
}

/// [`load_initrd`] from an open file (read from its start; `name` is for errors).
pub fn load_initrd_file(
    mem: &GuestMemoryMmap,
    initrd: &File,
    name: &str,
    low_ram_end: u64,
    kernel_end: u64,
) -> Result<Initrd, BootError> {
    let name = name.to_string();
    let mut file = initrd.try_clone().map_err(|source| BootError::Read {
        path: name.clone(),
        source,
    })?;
    file.seek(SeekFrom::Start(0))
        .map_err(|source| BootError::Read {
            path: name.clone(),
            source,
        })?;
    let size = file
        .metadata()
        .map_err(|source| BootError::Read {
            path: name.clone(),
            source,
        })?
        .len();
    let limit = low_ram_end.min(INITRD_ADDR_MAX + 1);
    let addr = limit
        .checked_sub(size)
        .map(|a| a & !(PAGE_SIZE - 1))
        .filter(|a| *a >= kernel_end)
        .ok_or(BootError::InitrdTooLarge {
            path: name.clone(),
            size,
            limit,
        })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(BootError::Write)?;
    Ok(Initrd { addr, size })
}

/// Writes the NUL-terminated command line at [`CMDLINE_ADDR`].
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), BootError> {
    if cmdline.len() + 1 > CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: CMDLINE_MAX_SIZE - 1,
        });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(BootError::Write)
}

/// Everything the boot information describes.
#[derive(Clone, Debug)]
pub struct BootInfo<'a> {
    pub cmdline: &'a str,
    pub initrd: Option<Initrd>,
    pub e820: &'a [RamRange],
    pub rsdp_addr: u64,
}

/// Builds the zero page for the 64-bit boot protocol.
pub fn zero_page(header: Option<setup_header>, info: &BootInfo) -> boot_params {
    let mut params = boot_params::default();
    if let Some(hdr) = header {
        params.hdr = hdr;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = info.cmdline.len() as u32;
    if let Some(initrd) = info.initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    params.acpi_rsdp_addr = info.rsdp_addr;
    for (slot, range) in params.e820_table.iter_mut().zip(info.e820) {
        *slot = boot_e820_entry {
            addr: range.start,
            size: range.len,
            r#type: E820_RAM,
        };
    }
    params.e820_entries = info.e820.len().min(params.e820_table.len()) as u8;
    params
}

/// Writes the zero page at [`ZERO_PAGE_ADDR`] and returns its address.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    header: Option<setup_header>,
    info: &BootInfo,
) -> Result<u64, BootError> {
    mem.write_obj(zero_page(header, info), GuestAddress(ZERO_PAGE_ADDR))
        .map_err(BootError::Write)?;
    Ok(ZERO_PAGE_ADDR)
}

/// Writes `hvm_start_info`, its memory map and module list; returns the start info address.
pub fn write_pvh_start_info(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<u64, BootError> {
    let mut start = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: info.rsdp_addr,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: info.e820.len() as u32,
        ..Default::default()
    };
    for (i, range) in info.e820.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: range.start,
            size: range.len,
            type_: XEN_HVM_MEMMAP_TYPE_RAM,
            reserved: 0,
        };
        let at = PVH_MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_slice(entry.as_slice(), GuestAddress(at))
            .map_err(BootError::Write)?;
    }
    if let Some(initrd) = info.initrd {
        let module = hvm_modlist_entry {
            paddr: initrd.addr,
            size: initrd.size,
            ..Default::default()
        };
        mem.write_slice(module.as_slice(), GuestAddress(PVH_MODLIST_ADDR))
            .map_err(BootError::Write)?;
        start.nr_modules = 1;
        start.modlist_paddr = PVH_MODLIST_ADDR;
    }
    mem.write_slice(start.as_slice(), GuestAddress(PVH_START_INFO_ADDR))
        .map_err(BootError::Write)?;
    Ok(PVH_START_INFO_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::e820_ram;

    #[test]
    fn zero_page_carries_cmdline_e820_initrd_rsdp() {
        let e820 = e820_ram(256 << 20);
        let info = BootInfo {
            cmdline: "console=ttyS0",
            initrd: Some(Initrd {
                addr: 0x0f00_0000,
                size: 1234,
            }),
            e820: &e820,
            rsdp_addr: 0xe0000,
        };
        let p = zero_page(None, &info);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ p.hdr.cmdline_size }, 13);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.ramdisk_image }, 0x0f00_0000);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(p.e820_entries, 2);
        let second = p.e820_table[1];
        assert_eq!(
            ({ second.addr }, { second.size }),
            (0x10_0000, (256 << 20) - 0x10_0000)
        );
    }

    #[test]
    fn rejects_bad_kernels() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
        assert!(matches!(
            load_kernel(&mem, &junk, BootProtocol::Auto),
            Err(BootError::BzImage { .. })
        ));
        let fake_elf = dir.path().join("elf");
        std::fs::write(&fake_elf, b"\x7fELF\x01junk").unwrap();
        assert!(matches!(
            load_kernel(&mem, &fake_elf, BootProtocol::Auto),
            Err(BootError::Elf { .. })
        ));
        assert!(matches!(
            load_kernel(&mem, &dir.path().join("missing"), BootProtocol::Auto),
            Err(BootError::Open { .. })
        ));
    }

    #[test]
    fn cmdline_limit() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_cmdline(&mem, "a b c").unwrap();
        let long = "x".repeat(CMDLINE_MAX_SIZE);
        assert!(matches!(
            write_cmdline(&mem, &long),
            Err(BootError::CmdlineTooLong { .. })
        ));
    }
}
