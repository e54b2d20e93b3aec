//! Disk formats: qcow2 vs raw detection by content, and qcow2 → sparse raw conversion.
//!
//! Conversion runs in-process on `imago` (a maintained qcow2 implementation by a QEMU block-layer
//! developer: v2/v3, deflate and zstd compressed clusters, zero clusters). Before imago sees the
//! file, the header is checked here: backing files, external data files and encryption are
//! refused, and the virtual size must fit the store's size limit. imago is opened with its
//! deny-all gate, so it can never open another file either. `bench/images` compares this with
//! `qemu-img convert`.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use imago::{
    DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, Mapping, Storage, StorageOpenOptions,
};

/// Why a disk could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot read disk {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("qcow2 image is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("qcow2 image has a backing file {backing:?}; container disks must be self-contained")]
    BackingFile { path: PathBuf, backing: String },
    #[error("qcow2 image uses an external data file")]
    DataFile { path: PathBuf },
    #[error("qcow2 image is encrypted")]
    Encrypted { path: PathBuf },
    #[error("unsupported qcow2 version {version}")]
    Version { path: PathBuf, version: u32 },
    #[error("{format} image: only qcow2 and raw are supported")]
    Unsupported { path: PathBuf, format: &'static str },
    #[error("virtual size of {size} bytes is over the size limit of {limit} bytes")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("cannot read the qcow2 image")]
    Imago {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Guest bytes requested from imago at once.
const CHUNK: u64 = 4 << 20;
/// Guest range handed to one conversion thread at a time.
const STRIPE: u64 = 64 << 20;

/// A disk file's format, detected from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl std::fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        })
    }
}

/// The fields of a qcow2 header that decide whether corral accepts it.
#[derive(Debug, PartialEq, Eq)]
pub struct Qcow2Header {
    pub version: u32,
    pub virtual_size: u64,
    pub cluster_bits: u32,
}

/// Detects qcow2 (and refuses the other hypervisor formats) by magic number.
pub fn detect(path: &Path) -> Result<DiskFormat, ConvertError> {
    let mut head = [0u8; 512];
    let n = read_head(path, &mut head)?;
    let head = &head[..n];
    let unsupported = |format| {
        Err(ConvertError::Unsupported {
            path: path.into(),
            format,
        })
    };
    if head.starts_with(b"QFI\xfb") {
        Ok(DiskFormat::Qcow2)
    } else if head.starts_with(b"KDMV") || head.starts_with(b"# Disk DescriptorFile") {
        unsupported("VMDK")
    } else if head.starts_with(b"conectix") {
        unsupported("VHD")
    } else if head.starts_with(b"vhdxfile") {
        unsupported("VHDX")
    } else if head.len() >= 68 && &head[64..68] == b"\x7f\x10\xda\xbe" {
        unsupported("VDI")
    } else {
        Ok(DiskFormat::Raw)
    }
}

fn read_head(path: &Path, buf: &mut [u8]) -> Result<usize, ConvertError> {
    let read_err = |source| ConvertError::Read {
        path: path.into(),
        source,
    };
    let mut f = File::open(path).map_err(read_err)?;
    let mut n = 0;
    while n < buf.len() {
        let got = f.read(&mut buf[n..]).map_err(read_err)?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(n)
}

/// Parses and vets a qcow2 header.
pub fn check_qcow2(path: &Path, limit: u64) -> Result<Qcow2Header, ConvertError> {
    let mut h = [0u8; 112];
    let n = read_head(path, &mut h)?;
    let corrupt = |reason: &str| ConvertError::Corrupt {
        path: path.into(),
        reason: reason.into(),
    };
    if n < 72 {
        return Err(corrupt("header truncated"));
    }
    let be32 = |o: usize| u32::from_be_bytes(h[o..o + 4].try_into().expect("4 bytes"));
    let be64 = |o: usize| u64::from_be_bytes(h[o..o + 8].try_into().expect("8 bytes"));
    let version = be32(4);
    if version != 2 && version != 3 {
        return Err(ConvertError::Version {
            path: path.into(),
            version,
        });
    }
    let backing_offset = be64(8);
    let backing_len = be32(16) as usize;
    if backing_offset != 0 {
        let mut name = vec![0u8; backing_len.min(1023)];
        let f = File::open(path).map_err(|source| ConvertError::Read {
            path: path.into(),
            source,
        })?;
        let backing = match f.read_exact_at(&mut name, backing_offset) {
            Ok(()) => String::from_utf8_lossy(&name).into_owned(),
            Err(_) => "(unreadable)".to_string(),
        };
        return Err(ConvertError::BackingFile {
            path: path.into(),
            backing,
        });
    }
    let cluster_bits = be32(20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(corrupt(&format!(
            "cluster_bits {cluster_bits} out of range"
        )));
    }
    let virtual_size = be64(24);
    if virtual_size > limit {
        return Err(ConvertError::TooLarge {
            path: path.into(),
            size: virtual_size,
            limit,
        });
    }
    let file_len = std::fs::metadata(path)
        .map_err(|source| ConvertError::Read {
            path: path.into(),
            source,
        })?
        .len();
    let cluster = 1u64 << cluster_bits;
    let l1_size = be32(36) as u64;
    let l1_offset = be64(40);
    let l2_entries = cluster / 8;
    let needed_l1 = virtual_size.div_ceil(cluster).div_ceil(l2_entries);
    if l1_size < needed_l1 {
        return Err(corrupt(&format!(
            "L1 table has {l1_size} entries, {needed_l1} needed"
        )));
    }
    if l1_size > 0 && (l1_offset % cluster != 0 || l1_offset.saturating_add(l1_size * 8) > file_len)
    {
        return Err(corrupt(&format!(
            "L1 table at {l1_offset:#x} lies outside the {file_len}-byte file"
        )));
    }
    let refcount_offset = be64(48);
    if refcount_offset % cluster != 0 || refcount_offset.saturating_add(cluster) > file_len {
        return Err(corrupt(&format!(
            "refcount table at {refcount_offset:#x} lies outside the file"
        )));
    }
    if be32(32) != 0 {
        return Err(ConvertError::Encrypted { path: path.into() });
    }
    if version == 3 {
        if n < 104 {
            return Err(corrupt("v3 header truncated"));
        }
        let incompatible = be64(72);
        if incompatible & (1 << 2) != 0 {
            return Err(ConvertError::DataFile { path: path.into() });
        }
        if incompatible & !0b1_1111 != 0 {
            return Err(corrupt(&format!(
                "unknown incompatible features {incompatible:#x}"
            )));
        }
    }
    Ok(Qcow2Header {
        version,
        virtual_size,
        cluster_bits,
    })
}

/// Converts a vetted qcow2 file to a sparse raw file at `dst`; returns the virtual size.
pub fn qcow2_to_raw(src: &Path, dst: &Path, limit: u64) -> Result<u64, ConvertError> {
    let header = check_qcow2(src, limit)?;
    let imago_err = |source| ConvertError::Imago {
        path: src.into(),
        source,
    };
    let storage = imago::file::File::open(StorageOpenOptions::new().filename(src).write(false))
        .map_err(imago_err)?;
    let qcow2 = imago::qcow2::Qcow2::<imago::file::File>::builder(storage)
        .write(false)
        .open(DenyImplicitOpenGate::default())
        .map_err(imago_err)?;
    let disk = FormatAccess::new(qcow2);
    let size = disk.size();
    if size != header.virtual_size {
        return Err(ConvertError::Corrupt {
            path: src.into(),
            reason: "size mismatch".into(),
        });
    }
    let file_len = std::fs::metadata(src)
        .map_err(|source| ConvertError::Read {
            path: src.into(),
            source,
        })?
        .len();
    let write_err = |source| ConvertError::Write {
        path: dst.into(),
        source,
    };
    let out = File::create(dst).map_err(write_err)?;
    // Stripes of the virtual disk go to a few threads (decompression is CPU-bound).
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4) as u64;
    let next = std::sync::atomic::AtomicU64::new(0);
    let stripes = size.div_ceil(STRIPE);
    let result: Result<(), ConvertError> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(stripes.max(1)))
            .map(|_| {
                scope.spawn(|| -> Result<(), ConvertError> {
                    let mut buf = vec![0u8; CHUNK as usize];
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= stripes {
                            return Ok(());
                        }
                        let (lo, hi) = (i * STRIPE, ((i + 1) * STRIPE).min(size));
                        copy_range(&disk, &out, lo, hi, file_len, &mut buf, src, dst)?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("conversion thread panicked"))
    });
    result?;
    out.set_len(size).map_err(write_err)?;
    Ok(size)
}

/// Copies guest range `[lo, hi)` of `disk` into `out`, skipping zero clusters and zero blocks.
#[allow(clippy::too_many_arguments)]
fn copy_range(
    disk: &FormatAccess<imago::file::File>,
    out: &File,
    lo: u64,
    hi: u64,
    file_len: u64,
    buf: &mut [u8],
    src: &Path,
    dst: &Path,
) -> Result<(), ConvertError> {
    const BLOCK: usize = 64 << 10;
    let imago_err = |source| ConvertError::Imago {
        path: src.into(),
        source,
    };
    let write_err = |source| ConvertError::Write {
        path: dst.into(),
        source,
    };
    let mut off = lo;
    while off < hi {
        let (mapping, len) = disk
            .get_mapping(off, (hi - off).min(CHUNK))
            .map_err(imago_err)?;
        let len = len.min(hi - off);
        if len == 0 {
            return Err(ConvertError::Corrupt {
                path: src.into(),
                reason: format!("empty mapping at {off}"),
            });
        }
        match mapping {
            Mapping::Zero { .. } => {}
            Mapping::Eof { .. } => break,
            Mapping::Raw { offset, .. } if offset.saturating_add(len) > file_len => {
                return Err(ConvertError::Corrupt {
                    path: src.into(),
                    reason: format!(
                        "data for guest offset {off:#x} lies past the end of the file (truncated?)"
                    ),
                });
            }
            _ => {
                let chunk = &mut buf[..len as usize];
                disk.read(&mut *chunk, off).map_err(imago_err)?;
                let mut o = off;
                for block in chunk.chunks(BLOCK) {
                    if !is_zero(block) {
                        out.write_all_at(block, o).map_err(write_err)?;
                    }
                    o += block.len() as u64;
                }
            }
        }
        off += len;
    }
    Ok(())
}

/// True when every byte is zero (OR-folds 64-byte lanes, which the compiler vectorises).
pub fn is_zero(block: &[u8]) -> bool {
    let mut lanes = block.chunks_exact(64);
    let lanes_zero = lanes
        .by_ref()
        .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0);
    lanes_zero && lanes.remainder().iter().all(|&b| b == 0)
}

/// Makes `src` (qcow2 or raw) into a sparse raw disk at `dst`. Raw files are renamed (they were
/// written sparse by the unpacker); qcow2 is converted. Returns (original format, virtual size).
pub fn to_raw(src: &Path, dst: &Path, limit: u64) -> Result<(DiskFormat, u64), ConvertError> {
    match detect(src)? {
        DiskFormat::Qcow2 => {
            let size = qcow2_to_raw(src, dst, limit)?;
            let _ = std::fs::remove_file(src);
            Ok((DiskFormat::Qcow2, size))
        }
        DiskFormat::Raw => {
            std::fs::rename(src, dst).map_err(|source| ConvertError::Write {
                path: dst.into(),
                source,
            })?;
            let size = std::fs::metadata(dst)
                .map_err(|source| ConvertError::Read {
                    path: dst.into(),
                    source,
                })?
                .len();
            Ok((DiskFormat::Raw, size))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn qemu_img() -> bool {
        Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn header(version: u32, backing: bool, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&version.to_be_bytes());
        if backing {
            h[8..16].copy_from_slice(&200u64.to_be_bytes());
            h[16..20].copy_from_slice(&9u32.to_be_bytes());
            h[200..209].copy_from_slice(b"base.qcow");
        }
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        h
    }

    #[test]
    fn zero_detection() {
        let mut v = vec![0u8; 64 * 1024 + 7];
        assert!(is_zero(&v));
        for i in [0, 63, 64, 65_000, v.len() - 1] {
            v[i] = 1;
            assert!(!is_zero(&v), "byte {i}");
            v[i] = 0;
        }
    }

    #[test]
    fn header_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        std::fs::write(&p, header(3, true, 1 << 20)).unwrap();
        let err = check_qcow2(&p, 1 << 30).unwrap_err();
        assert!(
            err.to_string().contains("backing file \"base.qcow\""),
            "{err}"
        );
        std::fs::write(&p, header(4, false, 1 << 20)).unwrap();
        assert!(matches!(
            check_qcow2(&p, 1 << 30),
            Err(ConvertError::Version { version: 4, .. })
        ));
        std::fs::write(&p, header(2, false, 1 << 40)).unwrap();
        assert!(matches!(
            check_qcow2(&p, 1 << 30),
            Err(ConvertError::TooLarge { .. })
        ));
        std::fs::write(&p, &header(2, false, 1 << 20)[..40]).unwrap();
        assert!(matches!(
            check_qcow2(&p, 1 << 30),
            Err(ConvertError::Corrupt { .. })
        ));
        std::fs::write(&p, b"KDMV....").unwrap();
        assert!(matches!(
            detect(&p),
            Err(ConvertError::Unsupported { format: "VMDK", .. })
        ));
        std::fs::write(&p, [0u8; 4096]).unwrap();
        assert_eq!(detect(&p).unwrap(), DiskFormat::Raw);
    }

    #[test]
    fn corrupt_tables_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        let mut h = header(3, false, 1 << 20);
        // L1 table pointing far past the end of the file, refcount table garbage.
        h[36..40].copy_from_slice(&1u32.to_be_bytes());
        h[40..48].copy_from_slice(&(1u64 << 50).to_be_bytes());
        h[48..56].copy_from_slice(&0xdead_0000u64.to_be_bytes());
        std::fs::write(&p, h).unwrap();
        let err = qcow2_to_raw(&p, &dir.path().join("out"), 1 << 30).unwrap_err();
        assert!(
            matches!(
                err,
                ConvertError::Imago { .. } | ConvertError::Corrupt { .. }
            ),
            "{err}"
        );
    }

    /// Compares against qemu-img on v2, v3 and compressed images (skips only if qemu-img is missing).
    #[test]
    fn matches_qemu_img() {
        if !qemu_img() {
            eprintln!(
                "convert::matches_qemu_img: qemu-img not installed (apt qemu-utils); not run"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("in.raw");
        let mut data = vec![0u8; 8 << 20];
        for (i, b) in data.iter_mut().enumerate().skip(1 << 20).take(3 << 20) {
            *b = (i * 7 % 251) as u8;
        }
        data[7 << 20] = 0x55;
        std::fs::write(&raw, &data).unwrap();
        for (compat, compress) in [("0.10", false), ("1.1", false), ("1.1", true)] {
            let q = dir.path().join(format!("d-{compat}-{compress}.qcow2"));
            let mut cmd = Command::new("qemu-img");
            cmd.args([
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                &format!("compat={compat}"),
            ]);
            if compress {
                cmd.arg("-c");
            }
            assert!(cmd.arg(&raw).arg(&q).status().unwrap().success());
            let out = dir.path().join("out.raw");
            let (fmt, size) = (
                detect(&q).unwrap(),
                qcow2_to_raw(&q, &out, 1 << 30).unwrap(),
            );
            assert_eq!((fmt, size), (DiskFormat::Qcow2, data.len() as u64));
            assert!(
                std::fs::read(&out).unwrap() == data,
                "compat={compat} compress={compress}"
            );
            // Cut in half: the data clusters now lie past the end of the file.
            let bytes = std::fs::read(&q).unwrap();
            std::fs::write(&q, &bytes[..bytes.len() / 2]).unwrap();
            let err = qcow2_to_raw(&q, &out, 1 << 30).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConvertError::Corrupt { .. } | ConvertError::Imago { .. }
                ),
                "{err}"
            );
        }
    }
}
