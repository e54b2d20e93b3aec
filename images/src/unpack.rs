//! Applies image layers in order, safely, without ever writing the image's filesystem out.
//!
//! The layers are replayed into an in-memory tree (whiteouts and opaque directories included);
//! only the files a caller selects (the disk under `/disk/`, or a kernel-boot container's
//! kernel and initrd) are written, to staging files the caller owns. Entries that could escape
//! the root or smuggle special files are rejected, whatever their path: absolute names, `..`,
//! symlinks whose target leaves the root, paths through symlinks, and device/fifo nodes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader};

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot read layer {layer} (corrupt or truncated)")]
    Read {
        layer: Digest,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: absolute path {path:?} is not allowed")]
    Absolute { layer: Digest, path: String },
    #[error("layer {layer}: path {path:?} contains \"..\"")]
    ParentDir { layer: Digest, path: String },
    #[error("layer {layer}: link {path:?} -> {target:?} escapes the image root")]
    LinkEscape {
        layer: Digest,
        path: String,
        target: String,
    },
    #[error("layer {layer}: {path:?} goes through the symlink {link:?}")]
    ThroughSymlink {
        layer: Digest,
        path: String,
        link: String,
    },
    #[error("layer {layer}: {path:?} is a {kind}, which container disks may not contain")]
    Special {
        layer: Digest,
        path: String,
        kind: &'static str,
    },
    #[error("layer {layer}: {path:?} is {size} bytes, over the size limit of {limit} bytes")]
    TooLarge {
        layer: Digest,
        path: String,
        size: u64,
        limit: u64,
    },
    #[error("layer {layer} expands past the size limit of {limit} bytes")]
    LayerTooLarge { layer: Digest, limit: u64 },
    #[error(
        "layer {layer}: uncompressed digest {actual} does not match the config's diff_id {expected}"
    )]
    DiffId {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("layer {layer}: hard link {path:?} -> {target:?} is not supported here")]
    HardLink {
        layer: Digest,
        path: String,
        target: String,
    },
    #[error("no disk file under /disk/")]
    NoDisk,
    #[error("more than one file under /disk/: {0}")]
    ManyDisks(String),
    #[error("/{path} is a {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    #[error("{0} is not in the image")]
    Missing(String),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One layer blob on disk, in application order.
pub struct LayerInput<'a> {
    pub digest: &'a Digest,
    pub path: &'a Path,
    /// The uncompressed digest the image config promises, verified when present.
    pub diff_id: Option<&'a Digest>,
}

/// Size limits: per selected file, and per uncompressed layer.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub file: u64,
    pub layer: u64,
}

/// The disk file found under `/disk/`, staged at `path`.
#[derive(Debug)]
pub struct StagedDisk {
    pub path: PathBuf,
    /// Its name in the image, e.g. `/disk/disk.qcow2`.
    pub name: String,
    pub size: u64,
}

#[derive(Debug)]
enum Kind {
    Dir,
    File { staged: Option<PathBuf>, size: u64 },
    Symlink(String),
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    layer: usize,
}

/// The image's file tree as the layers build it up.
struct Tree<'w> {
    nodes: BTreeMap<String, Node>,
    work: &'w Path,
    seq: u64,
}

/// Extracts the single regular file under `/disk/` into `work`.
pub fn extract_disk(
    layers: &[LayerInput<'_>],
    work: &Path,
    limits: Limits,
) -> Result<StagedDisk, UnpackError> {
    let tree = apply_layers(layers, work, limits, &|p: &str| p.starts_with("disk/"))?;
    let under_disk: Vec<(&String, &Node)> = tree
        .nodes
        .range("disk/".to_string()..)
        .take_while(|(k, _)| k.starts_with("disk/"))
        .collect();
    let mut files = Vec::new();
    for (path, node) in &under_disk {
        match &node.kind {
            Kind::Dir => {}
            Kind::File { staged, size } => files.push((path.to_string(), staged.clone(), *size)),
            Kind::Symlink(_) => {
                return Err(UnpackError::NotRegular {
                    path: path.to_string(),
                    kind: "symlink",
                });
            }
        }
    }
    match files.len() {
        0 => Err(UnpackError::NoDisk),
        1 => {
            let (name, staged, size) = files.pop().expect("one file");
            let path = staged.ok_or_else(|| UnpackError::Missing(format!("/{name}")))?;
            Ok(StagedDisk {
                path,
                name: format!("/{name}"),
                size,
            })
        }
        _ => Err(UnpackError::ManyDisks(
            files
                .iter()
                .map(|f| format!("/{}", f.0))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Extracts the files at `wanted` (absolute paths; symlinks inside the image are followed) into
/// `work`, for a KubeVirt kernel-boot container. Returns the staged file of each wanted path.
pub fn extract_files(
    layers: &[LayerInput<'_>],
    wanted: &[String],
    work: &Path,
    limits: Limits,
) -> Result<Vec<PathBuf>, UnpackError> {
    // Symlinks usually point at siblings (/boot/vmlinuz -> vmlinuz-6.1...): stage whole dirs.
    let dirs: Vec<String> = wanted
        .iter()
        .map(|w| {
            let n = lexical(w.trim_start_matches('/'));
            n.rsplit_once('/')
                .map(|(d, _)| format!("{d}/"))
                .unwrap_or_default()
        })
        .collect();
    let select = |p: &str| {
        dirs.iter()
            .any(|d| p.starts_with(d.as_str()) && !p[d.len()..].contains('/'))
    };
    let tree = apply_layers(layers, work, limits, &select)?;
    wanted.iter().map(|w| tree.resolve_file(w)).collect()
}

fn apply_layers<'w>(
    layers: &[LayerInput<'_>],
    work: &'w Path,
    limits: Limits,
    select: &dyn Fn(&str) -> bool,
) -> Result<Tree<'w>, UnpackError> {
    let mut tree = Tree {
        nodes: BTreeMap::new(),
        work,
        seq: 0,
    };
    for (i, layer) in layers.iter().enumerate() {
        let read_err = |source| UnpackError::Read {
            layer: layer.digest.clone(),
            source,
        };
        let file = File::open(layer.path).map_err(read_err)?;
        let stream = decompressor(BufReader::with_capacity(1 << 20, file)).map_err(read_err)?;
        let exceeded = std::rc::Rc::new(std::cell::Cell::new(false));
        let limited = LimitReader {
            inner: stream,
            left: limits.layer,
            exceeded: exceeded.clone(),
        };
        let mut hashing = HashingReader::new(limited);
        let tree_read_err = |e: io::Error| {
            if exceeded.get() {
                return UnpackError::LayerTooLarge {
                    layer: layer.digest.clone(),
                    limit: limits.layer,
                };
            }
            UnpackError::Read {
                layer: layer.digest.clone(),
                source: e,
            }
        };
        {
            let mut archive = tar::Archive::new(&mut hashing);
            let entries = archive.entries().map_err(read_err)?;
            for entry in entries {
                let entry = entry.map_err(tree_read_err)?;
                tree.apply(i, layer.digest, entry, limits, select)
                    .map_err(|e| match e {
                        UnpackError::Read { .. } if exceeded.get() => UnpackError::LayerTooLarge {
                            layer: layer.digest.clone(),
                            limit: limits.layer,
                        },
                        e => e,
                    })?;
            }
        }
        let (actual, _) = hashing.drain_and_finish().map_err(tree_read_err)?;
        if let Some(expected) = layer.diff_id
            && *expected != actual
        {
            return Err(UnpackError::DiffId {
                layer: layer.digest.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(tree)
}

/// gzip, zstd or plain tar, by magic number (media types are not always right).
fn decompressor<R: BufRead + Send + 'static>(mut r: R) -> io::Result<Box<dyn Read + Send>> {
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else {
        Ok(Box::new(r))
    }
}

/// Fails (and raises `exceeded`) once more than `left` bytes were read.
struct LimitReader<R> {
    inner: R,
    left: u64,
    exceeded: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for LimitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.exceeded.set(true);
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "layer exceeds the size limit",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Normalises `a/./b//c` to `a/b/c` (no `..` handling: callers reject it first).
fn lexical(p: &str) -> String {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Resolves `target` (of a link at `link_path`) inside the root; `None` if it escapes.
fn resolve_link(link_path: &str, target: &str) -> Option<String> {
    let mut stack: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        stack.extend(link_path.split('/').filter(|c| !c.is_empty()));
        stack.pop();
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                stack.pop()?;
            }
            c => stack.push(c),
        }
    }
    Some(stack.join("/"))
}

impl Tree<'_> {
    fn apply<R: Read>(
        &mut self,
        layer_idx: usize,
        layer: &Digest,
        mut entry: tar::Entry<'_, R>,
        limits: Limits,
        select: &dyn Fn(&str) -> bool,
    ) -> Result<(), UnpackError> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if raw.starts_with('/') {
            return Err(UnpackError::Absolute {
                layer: layer.clone(),
                path: raw,
            });
        }
        if raw.split('/').any(|c| c == "..") {
            return Err(UnpackError::ParentDir {
                layer: layer.clone(),
                path: raw,
            });
        }
        let path = lexical(&raw);
        if path.is_empty() {
            return Ok(());
        }
        let etype = entry.header().entry_type();
        let kind = match etype {
            tar::EntryType::Char => Some("character device"),
            tar::EntryType::Block => Some("block device"),
            tar::EntryType::Fifo => Some("fifo"),
            _ => None,
        };
        if let Some(kind) = kind {
            return Err(UnpackError::Special {
                layer: layer.clone(),
                path: raw,
                kind,
            });
        }
        // A path must not traverse a symlink that an earlier entry planted.
        let mut prefix = String::new();
        for c in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, d)| d)
            .unwrap_or(&[])
        {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            if let Some(Node {
                kind: Kind::Symlink(_),
                ..
            }) = self.nodes.get(&prefix)
            {
                return Err(UnpackError::ThroughSymlink {
                    layer: layer.clone(),
                    path: raw,
                    link: prefix,
                });
            }
        }
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if name == ".wh..wh..opq" {
            let dir = format!("{parent}/");
            self.remove_under(&dir, |n| n.layer < layer_idx);
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if !hidden.starts_with(".wh.") {
                let target = if parent.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{parent}/{hidden}")
                };
                self.remove(&target);
            }
            return Ok(());
        }
        match etype {
            tar::EntryType::Directory => {
                if !matches!(
                    self.nodes.get(&path),
                    Some(Node {
                        kind: Kind::Dir,
                        ..
                    })
                ) {
                    self.replace(path, Kind::Dir, layer_idx);
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if resolve_link(&path, &target).is_none() {
                    return Err(UnpackError::LinkEscape {
                        layer: layer.clone(),
                        path: raw,
                        target,
                    });
                }
                self.replace(path, Kind::Symlink(target), layer_idx);
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if target.split('/').any(|c| c == "..") {
                    return Err(UnpackError::LinkEscape {
                        layer: layer.clone(),
                        path: raw,
                        target,
                    });
                }
                let tpath = lexical(&target);
                let (staged, size) = match self.nodes.get(&tpath) {
                    Some(Node {
                        kind: Kind::File { staged, size },
                        ..
                    }) => (staged.clone(), *size),
                    _ => {
                        return Err(UnpackError::HardLink {
                            layer: layer.clone(),
                            path: raw,
                            target,
                        });
                    }
                };
                let copy = if select(&path) {
                    let Some(src) = staged else {
                        return Err(UnpackError::HardLink {
                            layer: layer.clone(),
                            path: raw,
                            target,
                        });
                    };
                    let dst = self.next_staging();
                    std::fs::hard_link(&src, &dst).map_err(|source| UnpackError::Write {
                        path: dst.clone(),
                        source,
                    })?;
                    Some(dst)
                } else {
                    None
                };
                self.replace(path, Kind::File { staged: copy, size }, layer_idx);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let size = entry.size();
                let staged = if select(&path) {
                    if size > limits.file {
                        return Err(UnpackError::TooLarge {
                            layer: layer.clone(),
                            path: raw,
                            size,
                            limit: limits.file,
                        });
                    }
                    let dst = self.next_staging();
                    write_sparse(&mut entry, &dst, size).map_err(|e| match e {
                        WriteErr::Read(source) => UnpackError::Read {
                            layer: layer.clone(),
                            source,
                        },
                        WriteErr::Write(source) => UnpackError::Write {
                            path: dst.clone(),
                            source,
                        },
                    })?;
                    Some(dst)
                } else {
                    None
                };
                self.replace(path, Kind::File { staged, size }, layer_idx);
            }
            // pax/GNU metadata records are consumed by the tar crate; anything else is ignored.
            other => tracing::debug!(?other, %path, "ignoring tar entry type"),
        }
        Ok(())
    }

    fn next_staging(&mut self) -> PathBuf {
        self.seq += 1;
        self.work.join(format!("entry-{}", self.seq))
    }

    /// Removes `path` and, if it is a directory, everything under it.
    /// Puts `kind` at `path`, discarding what an earlier layer had there.
    fn replace(&mut self, path: String, kind: Kind, layer: usize) {
        self.remove(&path);
        self.nodes.insert(path, Node { kind, layer });
    }

    fn remove(&mut self, path: &str) {
        if let Some(n) = self.nodes.remove(path) {
            discard(&n);
        }
        self.remove_under(&format!("{path}/"), |_| true);
    }

    fn remove_under(&mut self, dir: &str, pred: impl Fn(&Node) -> bool) {
        let keys: Vec<String> = if dir == "/" {
            self.nodes
                .iter()
                .filter(|(_, n)| pred(n))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            self.nodes
                .range(dir.to_string()..)
                .take_while(|(k, _)| k.starts_with(dir))
                .filter(|(_, n)| pred(n))
                .map(|(k, _)| k.clone())
                .collect()
        };
        for k in keys {
            if let Some(n) = self.nodes.remove(&k) {
                discard(&n);
            }
        }
    }

    /// The staged file at `wanted`, following symlinks (at most 16 hops).
    fn resolve_file(&self, wanted: &str) -> Result<PathBuf, UnpackError> {
        if wanted.split('/').any(|c| c == "..") {
            return Err(UnpackError::Missing(wanted.to_string()));
        }
        let mut path = lexical(wanted);
        for _ in 0..16 {
            match self.nodes.get(&path).map(|n| &n.kind) {
                Some(Kind::File {
                    staged: Some(s), ..
                }) => return Ok(s.clone()),
                Some(Kind::Symlink(t)) => {
                    path = resolve_link(&path, t)
                        .ok_or_else(|| UnpackError::Missing(wanted.to_string()))?;
                }
                Some(Kind::Dir) => {
                    return Err(UnpackError::NotRegular {
                        path,
                        kind: "directory",
                    });
                }
                _ => break,
            }
        }
        Err(UnpackError::Missing(wanted.to_string()))
    }
}

fn discard(n: &Node) {
    if let Kind::File {
        staged: Some(p), ..
    } = &n.kind
    {
        let _ = std::fs::remove_file(p);
    }
}

enum WriteErr {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `size` bytes into a new file at `dst`, leaving holes where the data is zero.
fn write_sparse(src: &mut impl Read, dst: &Path, size: u64) -> Result<(), WriteErr> {
    const BLOCK: usize = 64 << 10;
    let out = File::create(dst).map_err(WriteErr::Write)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = src.read(&mut buf[filled..]).map_err(WriteErr::Read)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        for chunk in buf[..filled].chunks(BLOCK) {
            if !crate::convert::is_zero(chunk) {
                out.write_all_at(chunk, off).map_err(WriteErr::Write)?;
            }
            off += chunk.len() as u64;
        }
    }
    if off != size {
        return Err(WriteErr::Read(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("entry ended after {off} of {size} bytes"),
        )));
    }
    // No fsync: staged files are temporary; the artifacts that stay are synced at commit.
    out.set_len(size).map_err(WriteErr::Write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// A raw ustar header, so tests can build the hostile archives the tar crate refuses to.
    fn entry(out: &mut Vec<u8>, name: &str, kind: u8, data: &[u8], link: &str) {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn finish(mut t: Vec<u8>) -> Vec<u8> {
        t.extend_from_slice(&[0u8; 1024]);
        t
    }

    struct Fixture {
        dir: tempfile::TempDir,
        layers: Vec<(Digest, PathBuf)>,
    }

    impl Fixture {
        fn new(tars: Vec<Vec<u8>>, gzip: bool) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let mut layers = Vec::new();
            for t in tars {
                let bytes = if gzip {
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    enc.write_all(&t).unwrap();
                    enc.finish().unwrap()
                } else {
                    t
                };
                let d = Digest::of(&bytes);
                let p = dir.path().join(d.hex());
                std::fs::write(&p, &bytes).unwrap();
                layers.push((d, p));
            }
            std::fs::create_dir(dir.path().join("work")).unwrap();
            Self { dir, layers }
        }

        fn inputs(&self) -> Vec<LayerInput<'_>> {
            self.layers
                .iter()
                .map(|(d, p)| LayerInput {
                    digest: d,
                    path: p,
                    diff_id: None,
                })
                .collect()
        }

        fn disk(&self) -> Result<StagedDisk, UnpackError> {
            extract_disk(
                &self.inputs(),
                &self.dir.path().join("work"),
                Limits {
                    file: 1 << 30,
                    layer: 1 << 30,
                },
            )
        }
    }

    #[test]
    fn finds_the_disk_in_a_gzip_layer() {
        let mut t = Vec::new();
        entry(&mut t, "disk/", b'5', b"", "");
        entry(&mut t, "disk/disk.img", b'0', b"DISKDATA", "");
        let f = Fixture::new(vec![finish(t)], true);
        let d = f.disk().unwrap();
        assert_eq!(d.name, "/disk/disk.img");
        assert_eq!(std::fs::read(d.path).unwrap(), b"DISKDATA");
    }

    #[test]
    fn later_layers_and_whiteouts_win() {
        let mut l1 = Vec::new();
        entry(&mut l1, "disk/old.img", b'0', b"old", "");
        entry(&mut l1, "disk/keep.img", b'0', b"keep", "");
        let mut l2 = Vec::new();
        entry(&mut l2, "disk/.wh.old.img", b'0', b"", "");
        entry(&mut l2, "disk/keep.img", b'0', b"new", "");
        let f = Fixture::new(vec![finish(l1), finish(l2)], false);
        let d = f.disk().unwrap();
        assert_eq!(d.name, "/disk/keep.img");
        assert_eq!(std::fs::read(d.path).unwrap(), b"new");
        // staged copies of replaced files are deleted
        assert_eq!(
            std::fs::read_dir(f.dir.path().join("work"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn opaque_dirs_hide_lower_layers() {
        let mut l1 = Vec::new();
        entry(&mut l1, "disk/a.img", b'0', b"a", "");
        let mut l2 = Vec::new();
        entry(&mut l2, "disk/.wh..wh..opq", b'0', b"", "");
        entry(&mut l2, "disk/b.img", b'0', b"b", "");
        let f = Fixture::new(vec![finish(l1), finish(l2)], false);
        assert_eq!(f.disk().unwrap().name, "/disk/b.img");
    }

    #[test]
    fn rejects_hostile_entries() {
        let cases: Vec<(&str, u8, &str, &str)> = vec![
            ("../evil", b'0', "", "contains \"..\""),
            ("disk/../../evil", b'0', "", "contains \"..\""),
            ("/etc/passwd", b'0', "", "absolute path"),
            (
                "disk/link",
                b'2',
                "../../../etc/shadow",
                "escapes the image root",
            ),
            ("dev/sda", b'4', "", "block device"),
            ("dev/tty", b'3', "", "character device"),
            ("x/hard", b'1', "../y", "escapes"),
        ];
        for (name, kind, link, want) in cases {
            let mut t = Vec::new();
            entry(&mut t, name, kind, b"", link);
            let f = Fixture::new(vec![finish(t)], false);
            let err = f.disk().unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
            assert!(
                err.contains(&f.layers[0].0.to_string()),
                "names the layer: {err}"
            );
        }
    }

    #[test]
    fn rejects_writes_through_symlinks() {
        let mut t = Vec::new();
        entry(&mut t, "disk", b'2', b"", "/etc");
        entry(&mut t, "disk/x.img", b'0', b"x", "");
        let f = Fixture::new(vec![finish(t)], false);
        assert!(matches!(f.disk(), Err(UnpackError::ThroughSymlink { .. })));
    }

    #[test]
    fn zero_or_many_disks_are_errors() {
        let mut t = Vec::new();
        entry(&mut t, "etc/hostname", b'0', b"x", "");
        assert!(matches!(
            Fixture::new(vec![finish(t)], false).disk(),
            Err(UnpackError::NoDisk)
        ));
        let mut t = Vec::new();
        entry(&mut t, "disk/a.img", b'0', b"a", "");
        entry(&mut t, "disk/b.qcow2", b'0', b"b", "");
        let err = Fixture::new(vec![finish(t)], false)
            .disk()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/disk/a.img") && err.contains("/disk/b.qcow2"),
            "{err}"
        );
    }

    #[test]
    fn truncated_gzip_is_a_read_error() {
        let mut t = Vec::new();
        entry(&mut t, "disk/a.img", b'0', &vec![7u8; 100_000], "");
        let f = Fixture::new(vec![finish(t)], true);
        let bytes = std::fs::read(&f.layers[0].1).unwrap();
        std::fs::write(&f.layers[0].1, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(f.disk(), Err(UnpackError::Read { .. })));
    }

    #[test]
    fn enforces_the_size_limit_and_diff_ids() {
        let mut t = Vec::new();
        entry(&mut t, "disk/a.img", b'0', &[1u8; 4096], "");
        let f = Fixture::new(vec![finish(t)], false);
        let work = f.dir.path().join("work");
        let err = extract_disk(
            &f.inputs(),
            &work,
            Limits {
                file: 100,
                layer: 1 << 20,
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, UnpackError::TooLarge { size: 4096, .. }),
            "{err}"
        );
        let err = extract_disk(
            &f.inputs(),
            &work,
            Limits {
                file: 1 << 20,
                layer: 1000,
            },
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::LayerTooLarge { .. }), "{err}");
        let wrong = Digest::of(b"other");
        let inputs = vec![LayerInput {
            digest: &f.layers[0].0,
            path: &f.layers[0].1,
            diff_id: Some(&wrong),
        }];
        let err = extract_disk(
            &inputs,
            &work,
            Limits {
                file: 1 << 20,
                layer: 1 << 20,
            },
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::DiffId { .. }), "{err}");
    }

    #[test]
    fn sparse_output_keeps_zero_blocks_as_holes() {
        let mut data = vec![0u8; 4 << 20];
        data[3 << 20] = 9;
        let mut t = Vec::new();
        entry(&mut t, "disk/a.img", b'0', &data, "");
        let f = Fixture::new(vec![finish(t)], false);
        let d = f.disk().unwrap();
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(&d.path).unwrap();
        assert_eq!(m.len(), 4 << 20);
        assert!(
            m.blocks() * 512 < 1 << 20,
            "allocated {} bytes",
            m.blocks() * 512
        );
        assert_eq!(std::fs::read(&d.path).unwrap(), data);
    }

    #[test]
    fn extracts_named_files_following_symlinks() {
        let mut t = Vec::new();
        entry(&mut t, "boot/vmlinuz-1.0", b'0', b"KERNEL", "");
        entry(&mut t, "boot/vmlinuz", b'2', b"", "vmlinuz-1.0");
        entry(&mut t, "boot/initrd.img", b'0', b"INITRD", "");
        let f = Fixture::new(vec![finish(t)], false);
        let work = f.dir.path().join("work");
        let got = extract_files(
            &f.inputs(),
            &["/boot/vmlinuz".into(), "/boot/initrd.img".into()],
            &work,
            Limits {
                file: 1 << 20,
                layer: 1 << 20,
            },
        )
        .unwrap();
        assert_eq!(std::fs::read(&got[0]).unwrap(), b"KERNEL");
        assert_eq!(std::fs::read(&got[1]).unwrap(), b"INITRD");
        let err = extract_files(
            &f.inputs(),
            &["/boot/nope".into()],
            &work,
            Limits {
                file: 1 << 20,
                layer: 1 << 20,
            },
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::Missing(_)));
    }

    #[test]
    fn link_resolution() {
        assert_eq!(resolve_link("a/b/l", "c").as_deref(), Some("a/b/c"));
        assert_eq!(resolve_link("a/b/l", "../c").as_deref(), Some("a/c"));
        assert_eq!(resolve_link("a/l", "/etc/x").as_deref(), Some("etc/x"));
        assert_eq!(resolve_link("a/l", "../../x"), None);
        assert_eq!(resolve_link("l", "/../x"), None);
    }
}
