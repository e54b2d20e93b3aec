//! Partition tables: MBR (primary partitions) and GPT (with header CRC check). 512-byte sectors.

use std::fs::File;
use std::os::unix::fs::FileExt as _;

/// Why a partition table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("cannot read the partition table")]
    Read(#[source] std::io::Error),
    #[error("GPT header is corrupt: {0}")]
    Gpt(String),
}

const SECTOR: u64 = 512;
const LINUX_FS_GUID: [u8; 16] = guid_bytes(
    0x0FC63DAF,
    0x8483,
    0x4772,
    [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
);

/// One partition: its number (1-based, as Linux names it: vda1), byte range and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    pub start: u64,
    pub len: u64,
    /// True for MBR type 0x83 or the GPT "Linux filesystem" type: searched first.
    pub linux: bool,
}

/// The table kind found on a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Table {
    Mbr(Vec<Partition>),
    Gpt(Vec<Partition>),
    /// No partition table: the filesystem (if any) starts at byte 0.
    None,
}

impl Table {
    pub fn partitions(&self) -> &[Partition] {
        match self {
            Table::Mbr(p) | Table::Gpt(p) => p,
            Table::None => &[],
        }
    }
}

/// Reads the partition table of a disk image of `disk_len` bytes.
pub fn read(disk: &File, disk_len: u64) -> Result<Table, PartitionError> {
    let mut mbr = [0u8; 512];
    if disk_len < SECTOR {
        return Ok(Table::None);
    }
    disk.read_exact_at(&mut mbr, 0)
        .map_err(PartitionError::Read)?;
    if mbr[510..512] != [0x55, 0xAA] {
        return Ok(Table::None);
    }
    let mut parts = Vec::new();
    let mut protective = false;
    for i in 0..4u32 {
        let e = &mbr[446 + 16 * i as usize..][..16];
        let kind = e[4];
        let lba = u32::from_le_bytes(e[8..12].try_into().expect("4 bytes")) as u64;
        let sectors = u32::from_le_bytes(e[12..16].try_into().expect("4 bytes")) as u64;
        if kind == 0xEE {
            protective = true;
        }
        // Skip empty and extended-container entries.
        if kind == 0 || sectors == 0 || matches!(kind, 0x05 | 0x0F | 0x85) {
            continue;
        }
        // The boot sector of a bare FAT/ext filesystem can carry 55 AA too: sanity-check ranges.
        if lba == 0 || (lba + sectors) * SECTOR > disk_len {
            return Ok(Table::None);
        }
        parts.push(Partition {
            number: i + 1,
            start: lba * SECTOR,
            len: sectors * SECTOR,
            linux: kind == 0x83,
        });
    }
    if protective {
        return read_gpt(disk, disk_len).map(Table::Gpt);
    }
    Ok(Table::Mbr(parts))
}

fn read_gpt(disk: &File, disk_len: u64) -> Result<Vec<Partition>, PartitionError> {
    let mut hdr = [0u8; 512];
    disk.read_exact_at(&mut hdr, SECTOR)
        .map_err(PartitionError::Read)?;
    if &hdr[..8] != b"EFI PART" {
        return Err(PartitionError::Gpt(
            "no \"EFI PART\" signature in LBA 1".into(),
        ));
    }
    let le32 = |o: usize| u32::from_le_bytes(hdr[o..o + 4].try_into().expect("4 bytes"));
    let le64 = |o: usize| u64::from_le_bytes(hdr[o..o + 8].try_into().expect("8 bytes"));
    let hsize = le32(12) as usize;
    if !(92..=512).contains(&hsize) {
        return Err(PartitionError::Gpt(format!("header size {hsize}")));
    }
    let mut crc_copy = hdr[..hsize].to_vec();
    crc_copy[16..20].fill(0);
    if crc32fast::hash(&crc_copy) != le32(16) {
        return Err(PartitionError::Gpt("header CRC mismatch".into()));
    }
    let entries_lba = le64(72);
    let count = le32(80) as u64;
    let esize = le32(84) as u64;
    let end = entries_lba
        .saturating_mul(SECTOR)
        .saturating_add(count * esize);
    if !(128..=4096).contains(&esize) || count > 1024 || entries_lba < 2 || end > disk_len {
        return Err(PartitionError::Gpt(
            "partition entry array out of range".into(),
        ));
    }
    let mut arr = vec![0u8; (count * esize) as usize];
    disk.read_exact_at(&mut arr, entries_lba * SECTOR)
        .map_err(PartitionError::Read)?;
    if crc32fast::hash(&arr) != le32(88) {
        return Err(PartitionError::Gpt(
            "partition entry array CRC mismatch".into(),
        ));
    }
    let mut parts = Vec::new();
    for (i, e) in arr.chunks(esize as usize).enumerate() {
        let type_guid: [u8; 16] = e[..16].try_into().expect("16 bytes");
        if type_guid == [0; 16] {
            continue;
        }
        let first = u64::from_le_bytes(e[32..40].try_into().expect("8 bytes"));
        let last = u64::from_le_bytes(e[40..48].try_into().expect("8 bytes"));
        if last < first || last.saturating_add(1).saturating_mul(SECTOR) > disk_len {
            return Err(PartitionError::Gpt(format!(
                "partition {} out of range",
                i + 1
            )));
        }
        parts.push(Partition {
            number: i as u32 + 1,
            start: first * SECTOR,
            len: (last - first + 1) * SECTOR,
            linux: type_guid == LINUX_FS_GUID,
        });
    }
    Ok(parts)
}

/// A GUID's on-disk (mixed-endian) byte order.
const fn guid_bytes(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sfdisk(script: &str, size: u64) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk");
        File::create(&p).unwrap().set_len(size).unwrap();
        let mut child = match Command::new("sfdisk")
            .arg("-q")
            .arg(&p)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(_) => return None,
        };
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        Some((dir, p))
    }

    #[test]
    fn reads_mbr_written_by_sfdisk() {
        let Some((_d, p)) = sfdisk(
            "label: dos\nstart=2048, size=4096, type=c\nstart=6144, type=83\n",
            8 << 20,
        ) else {
            eprintln!("partition: sfdisk (apt fdisk) not installed; not run");
            return;
        };
        let t = read(&File::open(&p).unwrap(), 8 << 20).unwrap();
        let Table::Mbr(parts) = t else {
            panic!("{t:?}")
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            Partition {
                number: 1,
                start: 2048 * 512,
                len: 4096 * 512,
                linux: false
            }
        );
        assert_eq!(parts[1].number, 2);
        assert!(parts[1].linux);
    }

    #[test]
    fn reads_gpt_written_by_sfdisk() {
        let Some((_d, p)) = sfdisk(
            "label: gpt\nstart=2048, size=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nstart=4096, size=8192, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
            16 << 20,
        ) else {
            eprintln!("partition: sfdisk (apt fdisk) not installed; not run");
            return;
        };
        let f = File::open(&p).unwrap();
        let Table::Gpt(parts) = read(&f, 16 << 20).unwrap() else {
            panic!()
        };
        assert_eq!(parts.len(), 2);
        assert!(!parts[0].linux);
        assert_eq!(
            parts[1],
            Partition {
                number: 2,
                start: 4096 * 512,
                len: 8192 * 512,
                linux: true
            }
        );
        // corrupt the header: CRC check catches it
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[512 + 80] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let err = read(&File::open(&p).unwrap(), 16 << 20).unwrap_err();
        assert!(err.to_string().contains("CRC"), "{err}");
    }

    #[test]
    fn no_table() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        assert_eq!(read(&File::open(&p).unwrap(), 4096).unwrap(), Table::None);
    }
}
