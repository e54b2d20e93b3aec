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
    /// The root filesystem's kind: `ext2`, `ext3` or `ext4` (from its superblock's features).
    #[serde(default)]
    pub root_fs_type: Option<String>,
    /// Default command line: the root filesystem's `/etc/kernel/cmdline` if it has one, else
    /// the default entry of the disk's GRUB config (`/boot/grub/grub.cfg`, `/boot/grub/menu.lst`),
    /// else `root=LABEL=<label>` (or `root=/dev/vdaN`) `ro console=ttyS0`. Always has
    /// `console=ttyS0` (appended when the image names only other consoles: corral's console is
    /// the serial port).
    pub cmdline: String,
    /// Where `cmdline` came from, e.g. `/boot/grub/menu.lst (partition 1)`,
    /// `/etc/kernel/cmdline (partition 1)` or `default: root=LABEL=<label> ...`.
    #[serde(default)]
    pub cmdline_source: String,
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
    /// `ext2`, `ext3` or `ext4`.
    kind: &'static str,
    ext4: Ext4,
}

impl Fs {
    /// `partition 1`, or `whole disk`.
    fn place(&self) -> String {
        match self.number {
            Some(n) => format!("partition {n}"),
            None => "whole disk".to_string(),
        }
    }
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
        let Some(kind) = ext_kind(&reader) else {
            searched.push(format!("partition {name}: not ext2/3/4"));
            continue;
        };
        match Ext4::load(Box::new(reader)) {
            Ok(ext4) => filesystems.push(Fs {
                number,
                name,
                kind,
                ext4,
            }),
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
    let mut loader_initrd: Option<String> = None;
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
        boot.root_fs_type = Some(fs.kind.to_string());
        // The image's own command line (systemd kernel-install's `/etc/kernel/cmdline`) wins;
        // then the boot loader's (CirrOS: GRUB legacy's menu.lst); then root by label.
        let (cmdline, source) = if let Some(line) = image_cmdline(&fs.ext4) {
            (line, format!("/etc/kernel/cmdline ({})", fs.place()))
        } else if let Some((i, path, entry)) = loader_entry(&filesystems, r) {
            let mut source = format!("{path} ({})", filesystems[i].place());
            let mut line = entry.args.clone();
            if !line.split_whitespace().any(|w| w.starts_with("root=")) {
                line = format!("root={root} {line}").trim_end().to_string();
                source.push_str(", root= added");
            }
            // The entry's kernel (and initrd) if it exists: what the boot loader would boot.
            if let Some(c) = loader_kernel(&filesystems[i], &entry.kernel) {
                best = Some((i, c));
                loader_initrd = entry
                    .initrd
                    .as_deref()
                    .and_then(|p| regular_file(&filesystems[i].ext4, p));
            }
            (line, source)
        } else {
            let line = format!("root={root} ro console=ttyS0");
            let source = format!(
                "default: {line} ({}, no /etc/kernel/cmdline or GRUB config)",
                fs.place()
            );
            (line, source)
        };
        (boot.cmdline, boot.cmdline_source) = (cmdline, source);
    } else {
        boot.cmdline = "console=ttyS0".to_string();
        boot.cmdline_source = "default: no ext2/3/4 root filesystem".to_string();
    }
    if !has_serial_console(&boot.cmdline) {
        // The image names only other consoles (CirrOS-style `console=tty1` alone): corral's
        // console is the serial port, so ttyS0 is added, last (it becomes /dev/console).
        boot.cmdline.push_str(" console=ttyS0");
        boot.cmdline_source.push_str(", console=ttyS0 appended");
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

    if let Some(initrd) = loader_initrd.or_else(|| find_initrd(fs, &cand)) {
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

/// `ext2`, `ext3` or `ext4` from the superblock (magic, then feature flags: a journal makes
/// ext3; extents, 64-bit, flex_bg, checksums and the other ext4-only features make ext4).
fn ext_kind(r: &PartReader) -> Option<&'static str> {
    let mut sb = [0u8; 0x68];
    if r.len < 2048 || r.file.read_exact_at(&mut sb, r.start + 1024).is_err() {
        return None;
    }
    if sb[56..58] != [0x53, 0xEF] {
        return None;
    }
    let le32 = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    let (compat, incompat, ro_compat) = (le32(0x5C), le32(0x60), le32(0x64));
    // incompat: extents, 64bit, mmp, flex_bg, ea_inode, dirdata, csum_seed, largedir,
    // inline_data, encrypt, casefold; ro_compat: huge_file, gdt_csum, dir_nlink, extra_isize,
    // quota, bigalloc, metadata_csum, project, verity.
    const EXT4_INCOMPAT: u32 = 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x1000 | 0x2000 | 0x4000;
    const EXT4_INCOMPAT_HI: u32 = 0x8000 | 0x10000 | 0x20000;
    const EXT4_RO_COMPAT: u32 = 0x8 | 0x10 | 0x20 | 0x40 | 0x100 | 0x200 | 0x400 | 0x2000 | 0x8000;
    Some(
        if incompat & (EXT4_INCOMPAT | EXT4_INCOMPAT_HI) != 0 || ro_compat & EXT4_RO_COMPAT != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        },
    )
}

/// True when the command line sends a console to the first serial port.
fn has_serial_console(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|w| w == "console=ttyS0" || w.starts_with("console=ttyS0,"))
}

// ---------------------------------------------------------------- boot loader configs
//
// CirrOS (and other images built for BIOS boot) carry no `/etc/kernel/cmdline`: the command
// line is in the boot loader's config. Only the default entry's kernel line is read: no
// variables are expanded, no scripts run. Files are bounded, lines are plain text.

/// GRUB configs read, per filesystem, in this order (GRUB 2 first: when both exist, GRUB 2 is
/// the loader that boots; `/grub/...` for a separate `/boot` partition).
const LOADER_CONFIGS: [&str; 4] = [
    "/boot/grub/grub.cfg",
    "/boot/grub/menu.lst",
    "/grub/grub.cfg",
    "/grub/menu.lst",
];

/// Largest boot loader config read.
const MAX_LOADER_CONFIG: u64 = 256 << 10;

/// Longest path taken from a boot loader config.
const MAX_LOADER_PATH: usize = 1024;

/// A boot loader config's default entry.
#[derive(Debug, Default, PartialEq, Eq)]
struct LoaderEntry {
    /// The kernel's path as written (a GRUB device prefix like `(hd0,0)` removed).
    kernel: String,
    initrd: Option<String>,
    /// The kernel's arguments, whitespace-normalised (words with `$` variables dropped).
    args: String,
}

/// An entry while a config is parsed.
#[derive(Default)]
struct Partial {
    /// The `title` / `menuentry` line (GRUB 2's `default` may name an entry by title or id).
    title: String,
    kernel: Option<String>,
    initrd: Option<String>,
    args: String,
}

impl Partial {
    fn done(&self) -> Option<LoaderEntry> {
        Some(LoaderEntry {
            kernel: self.kernel.clone()?,
            initrd: self.initrd.clone(),
            args: self.args.clone(),
        })
    }
}

/// The first usable boot loader config: the root filesystem's, then the others'. Returns the
/// filesystem's index, the config's path and its default entry.
fn loader_entry(filesystems: &[Fs], root: usize) -> Option<(usize, &'static str, LoaderEntry)> {
    let order = std::iter::once(root).chain((0..filesystems.len()).filter(|i| *i != root));
    for i in order {
        for path in LOADER_CONFIGS {
            let Some(text) = small_text(&filesystems[i].ext4, path, MAX_LOADER_CONFIG) else {
                continue;
            };
            let entry = if path.ends_with("menu.lst") {
                parse_menu_lst(&text)
            } else {
                parse_grub_cfg(&text)
            };
            if let Some(e) = entry.filter(|e| usable_args(&e.args)) {
                return Some((i, path, e));
            }
        }
    }
    None
}

/// Arguments short enough for the boot protocol (with room for corral's additions), printable.
fn usable_args(args: &str) -> bool {
    args.len() <= MAX_IMAGE_CMDLINE as usize - 64 && !args.chars().any(char::is_control)
}

/// A regular file of at most `limit` bytes as text (invalid UTF-8 replaced); None otherwise.
fn small_text(fs: &Ext4, path: &str, limit: u64) -> Option<String> {
    let meta = fs.metadata(path).ok()?;
    if !meta.file_type().is_regular_file() || meta.len() > limit {
        return None;
    }
    Some(String::from_utf8_lossy(&fs.read(path).ok()?).into_owned())
}

/// `path` resolved (symlinks followed) to a regular file in `fs`.
fn regular_file(fs: &Ext4, path: &str) -> Option<String> {
    let real = fs.canonicalize(path).ok()?;
    let real = real.to_str().ok()?.to_string();
    fs.metadata(real.as_str())
        .is_ok_and(|m| m.file_type().is_regular_file())
        .then_some(real)
}

/// The kernel a loader entry names, if it is a regular file in `fs`.
fn loader_kernel(fs: &Fs, path: &str) -> Option<Candidate> {
    let real = regular_file(&fs.ext4, path)?;
    let base = real.rsplit('/').next().unwrap_or("");
    let version = base
        .strip_prefix("vmlinuz-")
        .or_else(|| base.strip_prefix("vmlinux-"))
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    Some(Candidate {
        path: real,
        version,
    })
}

/// `(hd0,0)/boot/x` or `/boot/x` → `/boot/x`; None for anything but a plain absolute path.
fn loader_path(word: &str) -> Option<String> {
    let word = unquote(word);
    let p = match word.strip_prefix('(') {
        Some(rest) => &rest[rest.find(')')? + 1..],
        None => word,
    };
    (p.starts_with('/') && p.len() <= MAX_LOADER_PATH && !p.contains('$') && !p.contains('\0'))
        .then(|| p.to_string())
}

fn unquote(w: &str) -> &str {
    for q in ['\'', '"'] {
        if let Some(inner) = w.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    w
}

/// Kernel arguments: quotes removed, words holding `$` variables (unknown here) dropped.
fn loader_args<'a>(words: impl Iterator<Item = &'a str>) -> String {
    words
        .filter(|w| !w.contains('$'))
        .map(unquote)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The line's command (up to a blank or `=`, GRUB legacy allows both) and the rest.
fn split_command(line: &str) -> (&str, &str) {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let rest = line[end..].trim_start_matches(|c: char| c.is_whitespace() || c == '=');
    (&line[..end], rest)
}

/// GRUB legacy (`menu.lst`): the `default` entry (a number, before the first `title`; else
/// 0), its `kernel` line (options `--...` skipped; path, then the arguments) and `initrd`. An
/// entry without a kernel (chainloader, ...) falls back to the first one with one.
fn parse_menu_lst(text: &str) -> Option<LoaderEntry> {
    let mut default = 0usize;
    let mut entries: Vec<Partial> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (cmd, rest) = split_command(line);
        match cmd {
            "title" => entries.push(Partial::default()),
            "default" if entries.is_empty() => default = rest.trim().parse().unwrap_or(0),
            "kernel" => {
                if let Some(e) = entries.last_mut().filter(|e| e.kernel.is_none()) {
                    let mut words = rest.split_whitespace().skip_while(|w| w.starts_with("--"));
                    if let Some(k) = words.next().and_then(loader_path) {
                        e.kernel = Some(k);
                        e.args = loader_args(words);
                    }
                }
            }
            "initrd" => {
                if let Some(e) = entries.last_mut().filter(|e| e.initrd.is_none()) {
                    e.initrd = rest.split_whitespace().next().and_then(loader_path);
                }
            }
            _ => {}
        }
    }
    entries
        .get(default)
        .and_then(Partial::done)
        .or_else(|| entries.iter().find_map(Partial::done))
}

/// GRUB 2 (`grub.cfg`): the entry `set default=` picks (`N`, `N>M` into a submenu, or an
/// entry's title or id; values with variables ignored), else the first; its first `linux` line
/// (path, then the arguments) and `initrd` line. Braces track menuentry and submenu bodies.
fn parse_grub_cfg(text: &str) -> Option<LoaderEntry> {
    // Top-level items: a menuentry is one entry, a submenu holds its menuentries.
    let mut items: Vec<Vec<Partial>> = Vec::new();
    let mut default: Option<String> = None;
    let mut depth = 0usize;
    // The depth the current menuentry's body is at.
    let mut entry_depth: Option<usize> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("");
        match cmd {
            "set" if entry_depth.is_none() => {
                if let Some(v) = words.next().and_then(|w| w.strip_prefix("default=")) {
                    let v = unquote(v);
                    if !v.contains('$') {
                        default = Some(v.to_string());
                    }
                }
            }
            "menuentry" if entry_depth.is_none() => {
                if depth == 0 {
                    items.push(Vec::new());
                }
                if let Some(item) = items.last_mut() {
                    item.push(Partial {
                        title: line.to_string(),
                        ..Default::default()
                    });
                    entry_depth = Some(depth + 1);
                }
            }
            "submenu" if depth == 0 && entry_depth.is_none() => items.push(Vec::new()),
            "linux" | "linux16" | "linuxefi" if entry_depth.is_some() => {
                if let Some(e) = items
                    .last_mut()
                    .and_then(|i| i.last_mut())
                    .filter(|e| e.kernel.is_none())
                    && let Some(k) = words.next().and_then(loader_path)
                {
                    e.kernel = Some(k);
                    e.args = loader_args(words);
                }
            }
            "initrd" | "initrd16" | "initrdefi" if entry_depth.is_some() => {
                if let Some(e) = items
                    .last_mut()
                    .and_then(|i| i.last_mut())
                    .filter(|e| e.initrd.is_none())
                {
                    e.initrd = words.next().and_then(loader_path);
                }
            }
            _ => {}
        }
        if line.ends_with('{') {
            depth += 1;
        }
        if line.starts_with('}') {
            if entry_depth == Some(depth) {
                entry_depth = None;
            }
            depth = depth.saturating_sub(1);
        }
    }
    let chosen = default.as_deref().and_then(|d| {
        let index: Option<Vec<usize>> = d.split('>').map(|p| p.trim().parse().ok()).collect();
        match index.as_deref() {
            Some([item]) => items.get(*item)?.first(),
            Some([item, sub]) => items.get(*item)?.get(*sub),
            Some(_) => None,
            None => items.iter().flatten().find(|e| {
                e.title.contains(&format!("'{d}'")) || e.title.contains(&format!("\"{d}\""))
            }),
        }
    });
    chosen
        .and_then(Partial::done)
        .or_else(|| items.iter().flatten().find_map(Partial::done))
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
        disk_with_fs("mkfs.ext4", files, links, label)
    }

    /// `disk_with`, the filesystem made by `mkfs` (mkfs.ext2, mkfs.ext3, mkfs.ext4).
    fn disk_with_fs(
        mkfs: &str,
        files: &[(&str, &[u8])],
        links: &[(&str, &str)],
        label: &str,
    ) -> Option<(tempfile::TempDir, PathBuf)> {
        if !tool(mkfs) || !tool("sfdisk") {
            eprintln!("kernel: {mkfs}/sfdisk (apt e2fsprogs, fdisk) not installed; not run");
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
        let ok = Command::new(mkfs)
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
        assert_eq!(
            b.cmdline_source,
            "default: root=LABEL=cirros-rootfs ro console=ttyS0 (partition 1, no /etc/kernel/cmdline or GRUB config)"
        );
        assert_eq!(b.root_fs_type.as_deref(), Some("ext4"));
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
        assert_eq!(b.cmdline_source, "/etc/kernel/cmdline (partition 1)");
    }

    const CIRROS_MENU_LST: &str = "default 0\ntimeout 0\nhiddenmenu\n\n\
        title CirrOS\nroot (hd0,0)\n\
        kernel /boot/vmlinuz-4.4.0-28-generic ro root=LABEL=cirros-rootfs console=tty1 console=ttyS0\n\
        initrd /boot/initrd.img-4.4.0-28-generic\n";

    /// CirrOS 0.4.0's shape: ext3, no /etc/kernel/cmdline, GRUB legacy's menu.lst. The kernel
    /// menu.lst names wins over a newer one in /boot, with its initrd.
    #[test]
    fn cirros_menu_lst_names_kernel_initrd_and_cmdline() {
        let k = elf("cirros");
        let decoy = elf("newer");
        let Some((dir, disk)) = disk_with_fs(
            "mkfs.ext3",
            &[
                ("/boot/vmlinuz-4.4.0-28-generic", &k),
                ("/boot/initrd.img-4.4.0-28-generic", b"rd"),
                ("/boot/vmlinuz-9.9.9", &decoy),
                ("/boot/initrd.img-9.9.9", b"rd-newer"),
                ("/boot/grub/menu.lst", CIRROS_MENU_LST.as_bytes()),
                ("/sbin/init", b"#!/bin/sh"),
            ],
            &[],
            "cirros-rootfs",
        ) else {
            return;
        };
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let b = extract(&disk, &out, true).unwrap();
        assert_eq!(b.root_fs_type.as_deref(), Some("ext3"));
        assert_eq!(
            b.kernel_path.as_deref(),
            Some("/boot/vmlinuz-4.4.0-28-generic")
        );
        assert_eq!(
            b.initrd_path.as_deref(),
            Some("/boot/initrd.img-4.4.0-28-generic")
        );
        assert_eq!(
            b.cmdline,
            "ro root=LABEL=cirros-rootfs console=tty1 console=ttyS0"
        );
        assert_eq!(b.cmdline_source, "/boot/grub/menu.lst (partition 1)");
        assert_eq!(std::fs::read(out.join("vmlinux")).unwrap(), k);
        assert_eq!(std::fs::read(out.join("initrd")).unwrap(), b"rd");
    }

    /// /etc/kernel/cmdline beats the boot loader; a config with only tty1 gets ttyS0 appended;
    /// a config without root= gets the default root; ext2 is told apart.
    #[test]
    fn loader_config_precedence_and_additions() {
        let k = elf("k");
        let grub = b"menuentry 'Linux' {\n  linux /boot/vmlinuz-1 console=tty1 quiet\n}\n";
        let Some((dir, disk)) = disk_with_fs(
            "mkfs.ext2",
            &[
                ("/boot/vmlinuz-1", &k),
                ("/boot/grub/grub.cfg", grub),
                ("/sbin/init", b"#!/bin/sh"),
            ],
            &[],
            "r",
        ) else {
            return;
        };
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let b = extract(&disk, &out, true).unwrap();
        assert_eq!(b.root_fs_type.as_deref(), Some("ext2"));
        assert_eq!(b.cmdline, "root=LABEL=r console=tty1 quiet console=ttyS0");
        assert_eq!(
            b.cmdline_source,
            "/boot/grub/grub.cfg (partition 1), root= added, console=ttyS0 appended"
        );
        let Some((dir, disk)) = disk_with(
            &[
                ("/boot/vmlinuz-1", &k),
                ("/boot/grub/menu.lst", CIRROS_MENU_LST.as_bytes()),
                ("/etc/kernel/cmdline", b"root=/dev/vda1 console=tty0"),
                ("/sbin/init", b"#!/bin/sh"),
            ],
            &[],
            "r",
        ) else {
            return;
        };
        let b = extract(&disk, dir.path(), true).unwrap();
        assert_eq!(b.cmdline, "root=/dev/vda1 console=tty0 console=ttyS0");
        assert_eq!(
            b.cmdline_source,
            "/etc/kernel/cmdline (partition 1), console=ttyS0 appended"
        );
        // menu.lst names a kernel that is not there: the newest in /boot, menu.lst's arguments.
        assert_eq!(b.kernel_path.as_deref(), Some("/boot/vmlinuz-1"));
    }

    fn entry(kernel: &str, initrd: Option<&str>, args: &str) -> Option<LoaderEntry> {
        Some(LoaderEntry {
            kernel: kernel.to_string(),
            initrd: initrd.map(str::to_string),
            args: args.to_string(),
        })
    }

    #[test]
    fn menu_lst_table() {
        let cases: &[(&str, Option<LoaderEntry>)] = &[
            (
                CIRROS_MENU_LST,
                entry(
                    "/boot/vmlinuz-4.4.0-28-generic",
                    Some("/boot/initrd.img-4.4.0-28-generic"),
                    "ro root=LABEL=cirros-rootfs console=tty1 console=ttyS0",
                ),
            ),
            // default picks the second entry; `=` separators; device prefix; options skipped
            (
                "default=1\ntitle a\nkernel /a x\ntitle b\n  kernel --no-mem-option (hd0,1)/b  y\tz\n  initrd=(hd0,1)/rd\n",
                entry("/b", Some("/rd"), "y z"),
            ),
            // default out of range, or not a number: the first entry
            ("default 7\ntitle a\nkernel /a x\n", entry("/a", None, "x")),
            (
                "default saved\ntitle a\nkernel /a x\n",
                entry("/a", None, "x"),
            ),
            // the default entry chainloads: the first entry with a kernel
            (
                "default 0\ntitle win\nchainloader +1\ntitle l\nkernel /l r\n",
                entry("/l", None, "r"),
            ),
            // comments, a kernel line outside any entry, `default` after the first title
            (
                "# kernel /c\nkernel /outside\ntitle a\n#kernel /no\nkernel /a\ndefault 1\ntitle b\nkernel /b\n",
                entry("/a", None, ""),
            ),
            // variables dropped, quotes removed
            ("title a\nkernel /a 'x=1' $y z$\n", entry("/a", None, "x=1")),
            // no entry, no kernel path, a relative path, an unclosed device
            ("default 0\ntimeout 5\n", None),
            ("title a\nkernel\n", None),
            ("title a\nkernel vmlinuz ro\n", None),
            ("title a\nkernel (hd0,0/vmlinuz ro\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_menu_lst(text), want, "{text:?}");
        }
    }

    #[test]
    fn grub_cfg_table() {
        let debian = "set default=\"0\"\nif [ \"${next_entry}\" ] ; then\n   set default=\"${next_entry}\"\nfi\n\
            function load_video {\n  insmod all_video\n  linux /not/an/entry\n}\n\
            menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-1234' {\n\
            \tload_video\n\tsearch --no-floppy --fs-uuid --set=root 1234\n\
            \tlinux\t/boot/vmlinuz-6.1.0-9-cloud-amd64 root=PARTUUID=ab-01 ro  console=tty0 console=ttyS0,115200 $vt_handoff\n\
            \tinitrd\t/boot/initrd.img-6.1.0-9-cloud-amd64\n}\n\
            submenu 'Advanced options' $menuentry_id_option 'gnulinux-advanced-1234' {\n\
            \tmenuentry 'Debian, 6.1.0-8' $menuentry_id_option 'gnulinux-6.1.0-8-advanced-1234' {\n\
            \t\tlinux /boot/vmlinuz-6.1.0-8-cloud-amd64 root=PARTUUID=ab-01 ro single\n\t}\n\
            \tmenuentry 'Debian, 6.1.0-7' {\n\t\tlinux /boot/vmlinuz-6.1.0-7 root=/dev/vda1\n\t}\n}\n\
            menuentry 'Other' {\n  linux16 (hd0,msdos1)/other o=1\n  linux /second-linux-line\n}\n";
        let with_default =
            |d: &str| debian.replacen("set default=\"0\"", &format!("set default={d}"), 1);
        let cases: Vec<(String, Option<LoaderEntry>)> = vec![
            (
                debian.to_string(),
                entry(
                    "/boot/vmlinuz-6.1.0-9-cloud-amd64",
                    Some("/boot/initrd.img-6.1.0-9-cloud-amd64"),
                    "root=PARTUUID=ab-01 ro console=tty0 console=ttyS0,115200",
                ),
            ),
            (
                with_default("\"1>0\""),
                entry(
                    "/boot/vmlinuz-6.1.0-8-cloud-amd64",
                    None,
                    "root=PARTUUID=ab-01 ro single",
                ),
            ),
            (
                with_default("1>1"),
                entry("/boot/vmlinuz-6.1.0-7", None, "root=/dev/vda1"),
            ),
            // the first linux line of the entry
            (with_default("2"), entry("/other", None, "o=1")),
            // by title and by id
            (with_default("'Other'"), entry("/other", None, "o=1")),
            (
                with_default("gnulinux-6.1.0-8-advanced-1234"),
                entry(
                    "/boot/vmlinuz-6.1.0-8-cloud-amd64",
                    None,
                    "root=PARTUUID=ab-01 ro single",
                ),
            ),
            // out of range, unknown, a submenu's index alone: the first entry with a kernel
            (
                with_default("9"),
                entry(
                    "/boot/vmlinuz-6.1.0-9-cloud-amd64",
                    Some("/boot/initrd.img-6.1.0-9-cloud-amd64"),
                    "root=PARTUUID=ab-01 ro console=tty0 console=ttyS0,115200",
                ),
            ),
            (
                with_default("1>9>3"),
                entry(
                    "/boot/vmlinuz-6.1.0-9-cloud-amd64",
                    Some("/boot/initrd.img-6.1.0-9-cloud-amd64"),
                    "root=PARTUUID=ab-01 ro console=tty0 console=ttyS0,115200",
                ),
            ),
            // hostile shapes: unbalanced braces, no entries, linux outside entries
            (
                "}}}\nmenuentry 'x' {\nlinux /x a\n".to_string(),
                entry("/x", None, "a"),
            ),
            // an entry inside another block (a function body) is not a menu entry
            ("{\nmenuentry 'x' {\nlinux /x a\n}\n}\n".to_string(), None),
            ("linux /x a\n".to_string(), None),
            ("menuentry 'x' {\n linux\n}\n".to_string(), None),
            (String::new(), None),
        ];
        for (text, want) in &cases {
            assert_eq!(&parse_grub_cfg(text), want, "{text}");
        }
    }

    /// Random and adversarial bytes never panic the parsers.
    #[test]
    fn loader_parsers_survive_garbage() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet =
            b"menuentry submenu linux initrd kernel title default set {}()'\"$>=0123 /\n\t\xff";
        for len in [0usize, 1, 7, 64, 512, 4096] {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        alphabet[(x % alphabet.len() as u64) as usize]
                    })
                    .collect();
                let text = String::from_utf8_lossy(&bytes);
                let _ = parse_menu_lst(&text);
                let _ = parse_grub_cfg(&text);
            }
        }
        let deep = "{\n".repeat(10_000) + &"}\n".repeat(20_000);
        assert_eq!(parse_grub_cfg(&deep), None);
        assert_eq!(loader_path("("), None);
        assert_eq!(loader_path("()"), None);
        assert_eq!(loader_path("(hd0)/a"), Some("/a".to_string()));
        assert_eq!(loader_path(&format!("/{}", "a".repeat(2000))), None);
    }

    #[test]
    fn serial_console_detection() {
        for (line, want) in [
            ("console=ttyS0", true),
            ("a console=ttyS0,115200n8", true),
            ("console=ttyS01", false),
            ("console=tty1", false),
            ("xconsole=ttyS0", false),
            ("", false),
        ] {
            assert_eq!(has_serial_console(line), want, "{line:?}");
        }
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
