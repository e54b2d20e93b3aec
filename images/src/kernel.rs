//! Finds the guest's kernel and initrd inside the disk (partition table → ext2/3/4 read-only →
//! `/boot/vmlinuz*`, `/boot/initrd.img*`, root symlinks `/vmlinuz`, `/initrd.img`; newest
//! version wins), writes an ELF `vmlinux` and the initrd, and derives the default command line.

use std::cmp::Ordering;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use ext4_view::{Ext4, Ext4Read};

use crate::decompress::{DecompressError, KernelFormat, to_vmlinux};
use crate::partition::{self, PartitionError, Table};

/// Why the kernel could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read disk {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("disk {path}")]
    Partition {
        path: PathBuf,
        #[source]
        source: PartitionError,
    },
    #[error("no kernel in the disk; searched {0}")]
    NoKernel(String),
    #[error("partition {partition}: cannot read {file}")]
    Ext4 {
        partition: String,
        file: String,
        #[source]
        source: ext4_view::Ext4Error,
    },
    #[error("partition {partition}: {file} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        partition: String,
        file: String,
        size: u64,
        limit: u64,
    },
    #[error("partition {partition}")]
    Decompress {
        partition: String,
        #[source]
        source: DecompressError,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Largest kernel file (bzImage or ELF) read from a disk.
const MAX_KERNEL_FILE: u64 = 256 << 20;

/// What was found in the disk; paths of the outputs are fixed by the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskBoot {
    /// The kernel's path in its filesystem, e.g. `/boot/vmlinuz-6.1.0-56-cloud-amd64`.
    pub kernel_path: Option<String>,
    pub kernel_format: Option<KernelFormat>,
    pub version: Option<String>,
    pub initrd_path: Option<String>,
    /// Partition number (1-based) holding the kernel; `None` for an unpartitioned disk.
    pub kernel_partition: Option<u32>,
    /// The root filesystem's label, and its partition number.
    pub root_label: Option<String>,
    pub root_partition: Option<u32>,
    /// Default command line: the root filesystem's `/etc/kernel/cmdline` if it has one, else
    /// `root=LABEL=<label>` (or `root=/dev/vdaN`) `ro console=ttyS0`.
    pub cmdline: String,
    /// What was searched, for the "no kernel" error.
    pub searched: String,
}

/// Byte window of a partition, for ext4-view.
struct PartReader {
    file: File,
    start: u64,
    len: u64,
}

impl Ext4Read for PartReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let end = start_byte
            .checked_add(dst.len() as u64)
            .filter(|e| *e <= self.len);
        if end.is_none() {
            return Err(Box::new(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the partition",
            )));
        }
        self.file
            .read_exact_at(dst, self.start + start_byte)
            .map_err(|e| Box::new(e) as _)
    }
}

struct Fs {
    number: Option<u32>,
    name: String,
    ext4: Ext4,
}

/// Kernel candidate in one filesystem.
struct Candidate {
    path: String,
    version: Option<String>,
}

/// Scans `disk` for a kernel; writes `vmlinux` (and `initrd`) into `out_dir` when found.
/// With `require`, a disk without a kernel is an error naming what was searched.
pub fn extract(disk: &Path, out_dir: &Path, require: bool) -> Result<DiskBoot, KernelError> {
    let read_err = |source| KernelError::Read {
        path: disk.into(),
        source,
    };
    let file = File::open(disk).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    let table = partition::read(&file, len).map_err(|source| KernelError::Partition {
        path: disk.into(),
        source,
    })?;
    let mut searched = Vec::new();
    let mut filesystems = Vec::new();
    let windows: Vec<(Option<u32>, u64, u64, bool)> = match &table {
        Table::None => vec![(None, 0, len, true)],
        t => t
            .partitions()
            .iter()
            .map(|p| (Some(p.number), p.start, p.len, p.linux))
            .collect(),
    };
    // Linux-typed partitions first, then the rest, each in table order.
    let mut order: Vec<_> = windows
        .iter()
        .filter(|w| w.3)
        .chain(windows.iter().filter(|w| !w.3))
        .collect();
    order.dedup_by_key(|w| w.0);
    for &(number, start, plen, _) in order {
        let name = match number {
            Some(n) => format!("{n}"),
            None => "(whole disk)".to_string(),
        };
        let reader = PartReader {
            file: file.try_clone().map_err(read_err)?,
            start,
            len: plen,
        };
        if !has_ext_magic(&reader) {
            searched.push(format!("partition {name}: not ext2/3/4"));
            continue;
        }
        match Ext4::load(Box::new(reader)) {
            Ok(ext4) => filesystems.push(Fs { number, name, ext4 }),
            Err(e) => searched.push(format!("partition {name}: unreadable ext filesystem ({e})")),
        }
    }
    if matches!(table, Table::Mbr(ref p) | Table::Gpt(ref p) if p.is_empty()) {
        searched.push("an empty partition table".to_string());
    }

    let mut best: Option<(usize, Candidate)> = None;
    for (i, fs) in filesystems.iter().enumerate() {
        let label = fs.ext4.label().to_str().unwrap_or("").to_string();
        searched.push(format!(
            "partition {} (ext, label {label:?}): /boot/vmlinuz*, /vmlinuz*",
            fs.name
        ));
        for c in candidates(fs)? {
            let better = match &best {
                None => true,
                Some((_, b)) => {
                    compare_versions(c.version.as_deref(), b.version.as_deref())
                        == Ordering::Greater
                }
            };
            if better {
                best = Some((i, c));
            }
        }
    }

    // The root filesystem: the first one that looks like an OS root, else the kernel's.
    let root_idx = filesystems
        .iter()
        .position(|fs| exists(&fs.ext4, "/sbin/init") || exists(&fs.ext4, "/etc/fstab"))
        .or(best.as_ref().map(|b| b.0))
        .or(if filesystems.is_empty() {
            None
        } else {
            Some(0)
        });
    let mut boot = DiskBoot {
        searched: searched.join("; "),
        ..Default::default()
    };
    if let Some(r) = root_idx {
        let fs = &filesystems[r];
        let label = fs.ext4.label().to_str().unwrap_or("").trim().to_string();
        boot.root_partition = fs.number;
        let root = if !label.is_empty() && !label.contains(char::is_whitespace) {
            format!("LABEL={label}")
        } else {
            format!(
                "/dev/vda{}",
                fs.number.map(|n| n.to_string()).unwrap_or_default()
            )
        };
        boot.root_label = (!label.is_empty()).then_some(label);
        // The image's own command line (systemd kernel-install's `/etc/kernel/cmdline`) wins.
        boot.cmdline =
            image_cmdline(&fs.ext4).unwrap_or_else(|| format!("root={root} ro console=ttyS0"));
    } else {
        boot.cmdline = "console=ttyS0".to_string();
    }

    let Some((idx, cand)) = best else {
        if require {
            return Err(KernelError::NoKernel(boot.searched));
        }
        return Ok(boot);
    };
    let fs = &filesystems[idx];
    let part = fs.name.clone();
    let ext_err = |file: &str, source| KernelError::Ext4 {
        partition: part.clone(),
        file: file.to_string(),
        source,
    };
    let meta = fs
        .ext4
        .metadata(cand.path.as_str())
        .map_err(|e| ext_err(&cand.path, e))?;
    if meta.len() > MAX_KERNEL_FILE {
        return Err(KernelError::TooLarge {
            partition: part,
            file: cand.path,
            size: meta.len(),
            limit: MAX_KERNEL_FILE,
        });
    }
    let bytes = fs
        .ext4
        .read(cand.path.as_str())
        .map_err(|e| ext_err(&cand.path, e))?;
    let (vmlinux, format) =
        to_vmlinux(&bytes, &cand.path).map_err(|source| KernelError::Decompress {
            partition: part.clone(),
            source,
        })?;
    drop(bytes);
    write_file(&out_dir.join("vmlinux"), &vmlinux)?;
    drop(vmlinux);

    if let Some(initrd) = find_initrd(fs, &cand) {
        let mut src = fs
            .ext4
            .open(initrd.as_str())
            .map_err(|e| ext_err(&initrd, e))?;
        let dst = out_dir.join("initrd");
        let mut out = File::create(&dst).map_err(|source| KernelError::Write {
            path: dst.clone(),
            source,
        })?;
        io::copy(&mut src, &mut out).map_err(|source| KernelError::Write {
            path: dst.clone(),
            source,
        })?;
        out.sync_all().map_err(|source| KernelError::Write {
            path: dst.clone(),
            source,
        })?;
        boot.initrd_path = Some(initrd);
    }
    boot.kernel_partition = fs.number;
    boot.kernel_format = Some(format);
    boot.version = cand.version;
    boot.kernel_path = Some(cand.path);
    Ok(boot)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), KernelError> {
    let err = |source| KernelError::Write {
        path: path.into(),
        source,
    };
    let f = File::create(path).map_err(err)?;
    // fsynced with the whole artifact directory before it is committed (build::sync_tree)
    f.write_all_at(bytes, 0).map_err(err)
}

fn has_ext_magic(r: &PartReader) -> bool {
    let mut m = [0u8; 2];
    r.len >= 2048 && r.file.read_exact_at(&mut m, r.start + 1024 + 56).is_ok() && m == [0x53, 0xEF]
}

/// Longest `/etc/kernel/cmdline` taken (the x86 boot protocol allows 2 KiB).
const MAX_IMAGE_CMDLINE: u64 = 2048;

/// `/etc/kernel/cmdline` of a root filesystem, its lines joined by spaces; None when absent,
/// empty, too long or not plain text.
fn image_cmdline(fs: &Ext4) -> Option<String> {
    let path = "/etc/kernel/cmdline";
    let meta = fs.metadata(path).ok()?;
    if !meta.file_type().is_regular_file() || meta.len() > MAX_IMAGE_CMDLINE {
        return None;
    }
    let text = String::from_utf8(fs.read(path).ok()?).ok()?;
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!line.is_empty() && !line.chars().any(char::is_control)).then_some(line)
}

fn exists(fs: &Ext4, path: &str) -> bool {
    fs.exists(path).unwrap_or(false)
}

/// Kernel files in `/boot` and at the root (symlinks resolved, duplicates removed).
fn candidates(fs: &Fs) -> Result<Vec<Candidate>, KernelError> {
    let mut out: Vec<Candidate> = Vec::new();
    for dir in ["/boot", "/"] {
        let Ok(entries) = fs.ext4.read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().as_str().unwrap_or("").to_string();
            if !(name.starts_with("vmlinuz") || name.starts_with("vmlinux")) {
                continue;
            }
            let path = if dir == "/" {
                format!("/{name}")
            } else {
                format!("{dir}/{name}")
            };
            // Follow symlinks (absolute targets resolve inside this filesystem).
            let Ok(real) = fs.ext4.canonicalize(path.as_str()) else {
                continue;
            };
            let Ok(real) = real.to_str().map(str::to_string) else {
                continue;
            };
            match fs.ext4.metadata(real.as_str()) {
                Ok(m) if m.file_type().is_regular_file() => {}
                _ => continue,
            }
            if out.iter().any(|c| c.path == real) {
                continue;
            }
            let base = real.rsplit('/').next().unwrap_or("");
            let version = base
                .strip_prefix("vmlinuz-")
                .or_else(|| base.strip_prefix("vmlinux-"))
                .filter(|v| !v.is_empty())
                .map(str::to_string);
            out.push(Candidate {
                path: real,
                version,
            });
        }
    }
    Ok(out)
}

/// The initrd matching the kernel's version (or the unversioned one for an unversioned kernel).
fn find_initrd(fs: &Fs, kernel: &Candidate) -> Option<String> {
    let dir = kernel
        .path
        .rsplit_once('/')
        .map(|(d, _)| if d.is_empty() { "/" } else { d })
        .unwrap_or("/");
    let names: Vec<String> = match &kernel.version {
        Some(v) => vec![
            format!("initrd.img-{v}"),
            format!("initrd-{v}.img"),
            format!("initramfs-{v}.img"),
            format!("initrd-{v}"),
        ],
        None => vec!["initrd.img".into(), "initrd".into(), "initramfs.img".into()],
    };
    let dirs = [dir, "/boot", "/"];
    for d in dirs {
        for n in &names {
            let p = if d == "/" {
                format!("/{n}")
            } else {
                format!("{d}/{n}")
            };
            if let Ok(real) = fs.ext4.canonicalize(p.as_str())
                && let Ok(real) = real.to_str()
                && fs
                    .ext4
                    .metadata(real)
                    .is_ok_and(|m| m.file_type().is_regular_file())
            {
                return Some(real.to_string());
            }
        }
    }
    None
}

/// `sort -V`-like comparison; a version beats no version.
pub fn compare_versions(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (Some(a), Some(b)) => {
            let (sa, sb) = (segments(a), segments(b));
            for (x, y) in sa.iter().zip(sb.iter()) {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            sa.len().cmp(&sb.len())
        }
    }
}

fn segments(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = v.as_bytes();
    for i in 1..=b.len() {
        if i == b.len()
            || b[i].is_ascii_digit() != b[i - 1].is_ascii_digit()
            || !b[i].is_ascii_alphanumeric()
        {
            let s = &v[start..i];
            if !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric()) {
                out.push(s);
            }
            start = if i < b.len() && !b[i].is_ascii_alphanumeric() {
                i + 1
            } else {
                i
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn version_order() {
        let c = |a, b| compare_versions(Some(a), Some(b));
        assert_eq!(
            c("6.1.0-56-cloud-amd64", "6.1.0-9-cloud-amd64"),
            Ordering::Greater
        );
        assert_eq!(c("5.15.0", "6.1.0"), Ordering::Less);
        assert_eq!(c("6.1.0", "6.1.0"), Ordering::Equal);
        assert_eq!(c("6.1.0-rc1", "6.1.0"), Ordering::Greater);
        assert_eq!(compare_versions(None, Some("1")), Ordering::Less);
    }

    fn tool(name: &str) -> bool {
        Command::new(name)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// Builds an MBR disk whose partition 1 is ext4 with `files` (written with mkfs.ext4 -d).
    fn disk_with(
        files: &[(&str, &[u8])],
        links: &[(&str, &str)],
        label: &str,
    ) -> Option<(tempfile::TempDir, PathBuf)> {
        if !tool("mkfs.ext4") || !tool("sfdisk") {
            eprintln!("kernel: mkfs.ext4/sfdisk (apt e2fsprogs, fdisk) not installed; not run");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for (p, data) in files {
            let full = root.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, data).unwrap();
        }
        for (p, target) in links {
            let full = root.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, full).unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        let part = dir.path().join("part");
        File::create(&part).unwrap().set_len(8 << 20).unwrap();
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-d"])
            .arg(&root)
            .arg(&part)
            .status()
            .unwrap();
        assert!(ok.success());
        let disk = dir.path().join("disk.raw");
        File::create(&disk).unwrap().set_len(10 << 20).unwrap();
        let mut child = Command::new("sfdisk")
            .arg("-q")
            .arg(&disk)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: dos\nstart=2048, type=83\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
        let bytes = std::fs::read(&part).unwrap();
        File::options()
            .write(true)
            .open(&disk)
            .unwrap()
            .write_all_at(&bytes, 1 << 20)
            .unwrap();
        Some((dir, disk))
    }

    fn elf(tag: &str) -> Vec<u8> {
        let mut v = b"\x7fELF".to_vec();
        v.extend_from_slice(tag.as_bytes());
        v
    }

    #[test]
    fn newest_versioned_kernel_and_its_initrd_win() {
        let k1 = elf("old");
        let k2 = elf("new");
        let Some((dir, disk)) = disk_with(
            &[
                ("/boot/vmlinuz-6.1.0-9-cloud-amd64", &k1),
                ("/boot/vmlinuz-6.1.0-56-cloud-amd64", &k2),
                ("/boot/initrd.img-6.1.0-9-cloud-amd64", b"i-old"),
                ("/boot/initrd.img-6.1.0-56-cloud-amd64", b"i-new"),
                ("/sbin/init", b"#!/bin/sh"),
            ],
            &[("/vmlinuz", "boot/vmlinuz-6.1.0-9-cloud-amd64")],
            "cirros-rootfs",
        ) else {
            return;
        };
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let b = extract(&disk, &out, true).unwrap();
        assert_eq!(
            b.kernel_path.as_deref(),
            Some("/boot/vmlinuz-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            b.initrd_path.as_deref(),
            Some("/boot/initrd.img-6.1.0-56-cloud-amd64")
        );
        assert_eq!(b.kernel_partition, Some(1));
        assert_eq!(b.cmdline, "root=LABEL=cirros-rootfs ro console=ttyS0");
        assert_eq!(std::fs::read(out.join("vmlinux")).unwrap(), k2);
        assert_eq!(std::fs::read(out.join("initrd")).unwrap(), b"i-new");
    }

    #[test]
    fn the_images_etc_kernel_cmdline_is_the_default() {
        let k = elf("k");
        let Some((dir, disk)) = disk_with(
            &[
                ("/boot/vmlinuz-6.1.0-56-cloud-amd64", &k),
                ("/sbin/init", b"#!/bin/sh"),
                (
                    "/etc/kernel/cmdline",
                    b"root=LABEL=cirros-rootfs ro\n  console=ttyS0 quiet\n",
                ),
            ],
            &[],
            "cirros-rootfs",
        ) else {
            return;
        };
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let b = extract(&disk, &out, true).unwrap();
        assert_eq!(b.cmdline, "root=LABEL=cirros-rootfs ro console=ttyS0 quiet");
    }

    #[test]
    fn root_symlinks_are_followed() {
        let k = elf("only");
        let Some((dir, disk)) = disk_with(
            &[("/boot/kernel-image", &k), ("/boot/ramdisk", b"rd")],
            &[
                ("/vmlinuz", "/boot/kernel-image"),
                ("/initrd.img", "/boot/ramdisk"),
            ],
            "",
        ) else {
            return;
        };
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let b = extract(&disk, &out, true).unwrap();
        assert_eq!(b.kernel_path.as_deref(), Some("/boot/kernel-image"));
        assert_eq!(b.initrd_path.as_deref(), Some("/boot/ramdisk"));
        assert_eq!(b.cmdline, "root=/dev/vda1 ro console=ttyS0");
    }

    #[test]
    fn no_kernel_names_what_was_searched() {
        let Some((dir, disk)) = disk_with(&[("/etc/fstab", b"")], &[], "data") else {
            return;
        };
        let err = extract(&disk, dir.path(), true).unwrap_err().to_string();
        assert!(
            err.contains("no kernel") && err.contains("/boot/vmlinuz*") && err.contains("\"data\""),
            "{err}"
        );
        let b = extract(&disk, dir.path(), false).unwrap();
        assert!(b.kernel_path.is_none());
        assert_eq!(b.root_label.as_deref(), Some("data"));
    }
}
