//! The L1 machine's initramfs: busybox, the cloud kernel's kvm/kvm-amd/virtio modules, the
//! `corral` binary, curl and jq with their shared libraries, the CA bundle, the scenario
//! scripts (`tests/nested/`) and the fixtures the scenarios use. One uncompressed newc archive,
//! cached under `target/nested/cache/` by the hash of everything in it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::cpio;

/// Where an entry's bytes come from.
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

enum Entry {
    Dir,
    Symlink(String),
    File { perm: u32, src: Source },
}

/// The archive's contents, by path inside L1 (no leading `/`).
#[derive(Default)]
pub struct Contents {
    entries: Vec<(String, Entry)>,
    dirs: BTreeSet<String>,
    names: BTreeSet<String>,
}

/// The modules L1 loads, in dependency order (`/etc/l1-modules`).
pub const L1_MODULES: &[&str] = &[
    "irqbypass",
    "kvm",
    "kvm-amd",
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "virtio-rng",
];

/// The modules pod networks need (tun, bridge, veth, nf_tables NAT, the xtables targets the
/// bridge plugin's iptables rules use) and vhost-net (bench/net's ceiling), in dependency
/// order (`/etc/l1-net-modules`).
pub const L1_NET_MODULES: &[&str] = &[
    "tun",
    "llc",
    "stp",
    "bridge",
    "veth",
    "nfnetlink",
    "libcrc32c",
    "x_tables",
    "nf_defrag_ipv4",
    "nf_defrag_ipv6",
    "nf_conntrack",
    "nf_nat",
    "nf_tables",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_ct",
    "nft_compat",
    // Services (table ip corral_services): fib, numgen, reject.
    "nft_fib",
    "nft_fib_ipv4",
    "nft_numgen",
    "nf_reject_ipv4",
    "nft_reject",
    "nft_reject_ipv4",
    "xt_MASQUERADE",
    "xt_comment",
    "xt_addrtype",
    "xt_conntrack",
    "xt_mark",
    "vhost_iotlb",
    "vhost",
    "tap",
    "vhost_net",
];

impl Contents {
    fn parent_dirs(&mut self, path: &str) {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(p);
            if self.dirs.insert(acc.clone()) {
                self.entries.push((acc.clone(), Entry::Dir));
            }
        }
    }

    fn push(&mut self, path: &str, e: Entry) {
        let path = path.trim_start_matches('/').to_string();
        if !self.names.insert(path.clone()) {
            return; // first one wins (a library named by two binaries)
        }
        self.parent_dirs(&path);
        if matches!(e, Entry::Dir) {
            if self.dirs.insert(path.clone()) {
                self.entries.push((path, e));
            }
            return;
        }
        self.entries.push((path, e));
    }

    pub fn dir(&mut self, path: &str) {
        self.push(path, Entry::Dir);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.push(path, Entry::Symlink(target.to_string()));
    }

    pub fn file(&mut self, path: &str, perm: u32, src: &Path) {
        assert!(src.exists(), "nested L1 image: {} missing", src.display());
        self.push(
            path,
            Entry::File {
                perm,
                src: Source::File(src.to_path_buf()),
            },
        );
    }

    pub fn bytes(&mut self, path: &str, perm: u32, data: impl Into<Vec<u8>>) {
        self.push(
            path,
            Entry::File {
                perm,
                src: Source::Bytes(data.into()),
            },
        );
    }

    /// A dynamically linked program at the same path in L1, with every library `ldd` names.
    pub fn program(&mut self, path: &Path) {
        self.file(&path.display().to_string(), 0o755, path);
        self.libraries(path);
    }

    /// The shared libraries of `binary` (as `ldd` resolves them), at the paths `ldd` prints.
    pub fn libraries(&mut self, binary: &Path) {
        let out = Command::new("ldd")
            .arg(binary)
            .output()
            .unwrap_or_else(|e| panic!("ldd {}: {e}", binary.display()));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/')),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                let real = std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p));
                self.file(p, 0o755, &real);
            }
        }
    }

    /// sha256 over every entry: path, kind, permissions and content.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for (path, e) in &self.entries {
            h.update(path.as_bytes());
            h.update([0]);
            match e {
                Entry::Dir => h.update(b"d"),
                Entry::Symlink(t) => {
                    h.update(b"l");
                    h.update(t.as_bytes());
                }
                Entry::File { perm, src } => {
                    h.update(format!("f{perm:o}").as_bytes());
                    match src {
                        Source::Bytes(b) => h.update(b),
                        Source::File(p) => {
                            let mut f = File::open(p)
                                .unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                            let mut buf = vec![0u8; 1 << 20];
                            loop {
                                let n = f.read(&mut buf).unwrap();
                                if n == 0 {
                                    break;
                                }
                                h.update(&buf[..n]);
                            }
                        }
                    }
                }
            }
            h.update([0xff]);
        }
        hex::encode(h.finalize())
    }

    /// Writes the archive to `out` (via a temporary file renamed into place).
    pub fn write(&self, out: &Path) -> std::io::Result<()> {
        let tmp = out.with_extension("tmp");
        let mut w = cpio::Writer::new(BufWriter::new(File::create(&tmp)?));
        for (path, e) in &self.entries {
            match e {
                Entry::Dir => w.dir(path)?,
                Entry::Symlink(t) => w.symlink(path, t)?,
                Entry::File { perm, src } => match src {
                    Source::Bytes(b) => w.file(path, *perm, b.len() as u64, &b[..])?,
                    Source::File(p) => {
                        let f = File::open(p)?;
                        let len = f.metadata()?.len();
                        w.file(path, *perm, len, f)?;
                    }
                },
            }
        }
        w.finish()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        std::fs::rename(tmp, out)
    }
}

/// The cloud kernel package the fixtures unpacked (`target/fixtures/kernel-cloud`): L1's
/// kernel and modules come from the same package, so their versions match.
pub struct Kernel {
    pub dir: PathBuf,
    pub version: String,
}

impl Kernel {
    /// The kernel package unpacked in `dir` (`boot/vmlinuz-*`, `lib/modules/*`).
    pub fn find(dir: &Path) -> Kernel {
        let boot = dir.join("boot");
        let version = std::fs::read_dir(&boot)
            .unwrap_or_else(|e| panic!("{}: {e} (run tests/fixtures/build.sh)", boot.display()))
            .flatten()
            .find_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("vmlinuz-"))
                    .map(str::to_string)
            })
            .expect("boot/vmlinuz-*");
        Kernel {
            dir: dir.to_path_buf(),
            version,
        }
    }

    pub fn vmlinuz(&self) -> PathBuf {
        self.dir
            .join("boot")
            .join(format!("vmlinuz-{}", self.version))
    }

    fn modules_dir(&self) -> PathBuf {
        self.dir.join("lib/modules").join(&self.version)
    }

    /// The path of module `name` (`kvm-amd`, `virtio_blk`, ...), decompressed into `cache` if
    /// the package compresses its modules; None if the kernel has it built in.
    pub fn module(&self, name: &str, cache: &Path) -> Option<PathBuf> {
        let root = self.modules_dir();
        if let Some(p) = find_file(&root, &format!("{name}.ko")) {
            return Some(p);
        }
        for (ext, tool) in [("xz", "xz"), ("zst", "zstd")] {
            if let Some(p) = find_file(&root, &format!("{name}.ko.{ext}")) {
                let out = cache.join(format!("{}-{name}.ko", self.version));
                if !out.exists() {
                    std::fs::create_dir_all(cache).unwrap();
                    let data = Command::new(tool)
                        .arg("-dc")
                        .arg(&p)
                        .output()
                        .unwrap_or_else(|e| panic!("{tool} -dc {}: {e}", p.display()));
                    assert!(data.status.success(), "{tool} -dc {}", p.display());
                    std::fs::write(&out, data.stdout).unwrap();
                }
                return Some(out);
            }
        }
        let builtin = std::fs::read_to_string(root.join("modules.builtin")).unwrap_or_default();
        let want = format!("/{name}.ko");
        assert!(
            builtin.lines().any(|l| l.ends_with(&want)),
            "module {name} is neither under {} nor built in",
            root.display()
        );
        None
    }
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let ft = e.file_type().ok()?;
        if ft.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if e.file_name() == name {
            return Some(p);
        }
    }
    None
}

/// Adds busybox (static) and a symlink per applet under /bin.
pub fn busybox(c: &mut Contents) {
    let bb = Path::new("/bin/busybox");
    c.file("bin/busybox", 0o755, bb);
    let list = Command::new(bb)
        .arg("--list")
        .output()
        .expect("busybox-static (apt busybox-static)");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        // Never link busybox over itself (ELOOP at init).
        if !applet.is_empty() && applet != "busybox" {
            c.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
}

/// `cached(dir, contents)`: the archive for `contents` under `dir`, written if not there yet.
/// Older archives in `dir` are removed, but for the newest few.
pub fn cached(dir: &Path, c: &Contents) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let hash = c.hash();
    let path = dir.join(format!("l1-{}.cpio", &hash[..16]));
    if !path.exists() {
        c.write(&path)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        prune(dir, 4);
    }
    // Mark it used, for pruning by age.
    let _ = File::options()
        .append(true)
        .open(&path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    path
}

fn prune(dir: &Path, keep: usize) {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cpio"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    let n = files.len().saturating_sub(keep);
    for (_, p) in files.into_iter().take(n) {
        let _ = std::fs::remove_file(p);
    }
}

/// Fixtures only one scenario uses, kept out of the other scenarios' L1 images (and their
/// cache keys): `cirros-shape` imports the CirrOS-shape OCI layout (as a tar).
pub fn scenario_fixtures(c: &mut Contents, scenario: &str, fixtures: &Path) {
    if scenario == "cirros-shape" {
        c.file(
            "nested/fixtures/cirros-shape-oci.tar",
            0o644,
            &fixtures.join("images/cirros-shape/oci.tar"),
        );
    }
}
