//! The NoCloud seed, read from a virtio-blk disk: a FAT12/16/32 file system labelled `cidata`
//! (or `CIDATA`). The guest walks the root directory (long names included), reads the first
//! cluster of `meta-data` and `user-data`, prints the `instance-id:` value and the first line of
//! user-data. If the directory walk finds no `meta-data`, the first sectors are scanned for
//! `instance-id:` instead. meta-data's `local-hostname:` is kept for [`hostname`] (the network
//! mode's HTTP server names the guest with it).

use crate::acpi::AcpiInfo;
use crate::blk::{T_IN, data, request};
use crate::io::{phys_slice, read_u32};
use crate::println;
use crate::virtio::Device;

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Reads `count` sectors at `sector` into the shared buffer; returns them.
fn read(
    d: &mut Device,
    sector: u64,
    count: usize,
    acpi: Option<&AcpiInfo>,
) -> Option<&'static [u8]> {
    let len = count * 512;
    let addr = data().as_ptr() as u64;
    (request(d, T_IN, sector, addr, len as u32, acpi) == 0).then(|| phys_slice(addr, len))
}

struct Fat {
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    root_dir_sector: u64,
    root_dir_sectors: u64,
    first_data_sector: u64,
}

impl Fat {
    fn cluster_sector(&self, cluster: u64) -> u64 {
        self.first_data_sector + (cluster.saturating_sub(2)) * self.sectors_per_cluster
    }
}

/// The boot sector's BPB if this is a FAT volume labelled cidata.
fn parse_boot(b: &[u8]) -> Option<Fat> {
    if b[510] != 0x55 || b[511] != 0xaa {
        return None;
    }
    let bps = u64::from(u16_at(b, 11));
    let spc = u64::from(b[13]);
    let reserved = u64::from(u16_at(b, 14));
    let fats = u64::from(b[16]);
    let root_entries = u64::from(u16_at(b, 17));
    let fat16 = u64::from(u16_at(b, 22));
    let (fat_size, label_at, root_cluster) = if fat16 != 0 {
        (fat16, 43, 0)
    } else {
        (u64::from(read_u32(b, 36)), 71, u64::from(read_u32(b, 44)))
    };
    let label = &b[label_at..label_at + 6];
    if bps != 512 || spc == 0 || !label.eq_ignore_ascii_case(b"cidata") {
        return None;
    }
    let root_dir_sectors = (root_entries * 32).div_ceil(bps);
    let first_data_sector = reserved + fats * fat_size + root_dir_sectors;
    let mut fat = Fat {
        bytes_per_sector: bps,
        sectors_per_cluster: spc,
        root_dir_sector: reserved + fats * fat_size,
        root_dir_sectors,
        first_data_sector,
    };
    if root_cluster != 0 {
        fat.root_dir_sector = fat.cluster_sector(root_cluster);
        fat.root_dir_sectors = spc;
    }
    Some(fat)
}

/// (first cluster, size) of `name` in the root directory `dir` (long or 8.3 names).
fn find(dir: &[u8], name: &str) -> Option<(u64, u64)> {
    let mut lfn = [0u8; 64];
    let mut lfn_len = 0;
    for e in dir.chunks_exact(32) {
        if e[0] == 0 {
            break;
        }
        if e[0] == 0xe5 {
            lfn_len = 0;
            continue;
        }
        if e[11] == 0x0f {
            // Long-name entry: sequence number (1-based, 0x40 = last), 13 UTF-16 chars.
            let seq = usize::from(e[0] & 0x1f);
            if seq == 0 || seq > 4 {
                continue;
            }
            for (k, off) in [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]
                .iter()
                .enumerate()
            {
                let c = u16_at(e, *off);
                let at = (seq - 1) * 13 + k;
                if c == 0 || c == 0xffff {
                    continue;
                }
                lfn[at] = c as u8;
                lfn_len = lfn_len.max(at + 1);
            }
            continue;
        }
        let long = &lfn[..lfn_len];
        let short_base = core::str::from_utf8(&e[0..8]).unwrap_or("").trim_end();
        let matches = long == name.as_bytes() || short_base.eq_ignore_ascii_case(name);
        lfn_len = 0;
        lfn = [0; 64];
        if matches && e[11] & 0x18 == 0 {
            let cluster = u64::from(u16_at(e, 26)) | (u64::from(u16_at(e, 20)) << 16);
            return Some((cluster, u64::from(read_u32(e, 28))));
        }
    }
    None
}

/// Up to 4 KiB of the start of file `name`.
fn file_head(
    d: &mut Device,
    fat: &Fat,
    dir: &[u8],
    name: &str,
    acpi: Option<&AcpiInfo>,
) -> Option<([u8; 4096], usize)> {
    let (cluster, size) = find(dir, name)?;
    let len = size
        .min(4096)
        .min(fat.sectors_per_cluster * fat.bytes_per_sector) as usize;
    let sectors = len.div_ceil(512).max(1);
    let bytes = read(d, fat.cluster_sector(cluster), sectors, acpi)?;
    let mut out = [0u8; 4096];
    out[..len].copy_from_slice(&bytes[..len]);
    Some((out, len))
}

fn first_line(b: &[u8]) -> &str {
    let end = b
        .iter()
        .position(|c| *c == b'\n' || *c == b'\r')
        .unwrap_or(b.len());
    core::str::from_utf8(&b[..end]).unwrap_or("?")
}

fn meta_value<'a>(b: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let at = b.windows(key.len()).position(|w| w == key)?;
    let rest = &b[at + key.len()..];
    let v = first_line(rest)
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    Some(v)
}

fn instance_id(b: &[u8]) -> Option<&str> {
    meta_value(b, b"instance-id:")
}

static mut HOSTNAME: ([u8; 64], usize) = ([0; 64], 0);

fn set_hostname(name: &str) {
    let n = name.len().min(64);
    // SAFETY: written once at boot on the boot CPU, before anything reads it.
    unsafe {
        let h = &mut *(&raw mut HOSTNAME);
        h.0[..n].copy_from_slice(&name.as_bytes()[..n]);
        h.1 = n;
    }
}

/// meta-data's `local-hostname`, if the seed had one.
pub fn hostname() -> Option<&'static str> {
    // SAFETY: only written at boot (`set_hostname`), before the network mode reads it.
    let h = unsafe { &*(&raw const HOSTNAME) };
    core::str::from_utf8(&h.0[..h.1])
        .ok()
        .filter(|s| !s.is_empty())
}

/// Prints the seed's instance-id and user-data first line if `d` holds a cidata volume.
pub fn report(index: usize, d: &mut Device, acpi: Option<&AcpiInfo>) -> bool {
    let Some(boot) = read(d, 0, 1, acpi) else {
        return false;
    };
    let Some(fat) = parse_boot(boot) else {
        return false;
    };
    let dir_sectors = fat.root_dir_sectors.clamp(1, 16) as usize;
    let Some(dir) = read(d, fat.root_dir_sector, dir_sectors, acpi) else {
        return false;
    };
    let mut root = [0u8; 16 * 512];
    root[..dir.len()].copy_from_slice(dir);
    let dir = &root[..dir_sectors * 512];
    match file_head(d, &fat, dir, "meta-data", acpi) {
        Some((meta, len)) => {
            let meta = &meta[..len];
            if let Some(h) = meta_value(meta, b"local-hostname:") {
                set_hostname(h);
            }
            match instance_id(meta) {
                Some(id) => println!("testguest: cidata dev={index} instance-id={id}"),
                None => println!("testguest: cidata dev={index} meta-data has no instance-id"),
            }
        }
        None => {
            // No directory entry: look for the key in the first sectors themselves.
            let found = read(d, 0, 64, acpi).and_then(|s| {
                instance_id(s).map(|v| {
                    let mut copy = [0u8; 128];
                    let n = v.len().min(128);
                    copy[..n].copy_from_slice(&v.as_bytes()[..n]);
                    (copy, n)
                })
            });
            match found {
                Some((v, n)) => println!(
                    "testguest: cidata dev={index} instance-id={} (sector scan)",
                    core::str::from_utf8(&v[..n]).unwrap_or("?")
                ),
                None => println!("testguest: cidata dev={index} no meta-data"),
            }
        }
    }
    match file_head(d, &fat, dir, "user-data", acpi) {
        Some((user, len)) => println!(
            "testguest: cidata dev={index} user-data first-line=\"{}\"",
            first_line(&user[..len])
        ),
        None => println!("testguest: cidata dev={index} no user-data"),
    }
    true
}
