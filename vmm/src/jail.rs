//! The VMM's jail (`--jail-uid`): what a guest that escaped into the VMM process could reach.
//!
//! `corral vmm` starts as root, opens everything it needs (KVM, kernel and initrd, disks, the
//! console log, its bound control socket; see `vm::run`), then [`enter`]s the jail while it is
//! still single-threaded:
//!
//! 1. a private mount namespace whose root is an empty, read-only tmpfs holding only the
//!    directories the VMM still writes to after start (the parents of its exit file, console log
//!    and control socket: in the daemon, the VM's run directory), bind-mounted at their own paths
//!    (`nosuid,nodev,noexec`); no `/proc`, `/dev`, `/sys`, state directory or other VM is
//!    reachable by any path;
//! 2. no supplementary groups, then the jail's gid and uid (real, effective and saved), which
//!    clears every capability; the capability bounding set is emptied first;
//! 3. `PR_SET_DUMPABLE 0` (no ptrace or /proc access by the same uid, no core dump) and
//!    `PR_SET_NO_NEW_PRIVS`;
//! 4. the seccomp filter of the main thread ([`crate::seccomp`]); every thread started later adds
//!    the filter of its kind.
//!
//! The jail needs root (CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID). Without `--jail-uid` none of
//! this happens (`corral vmm` run by hand).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::seccomp::{self, Filters, SeccompError, ThreadKind};

/// First uid/gid of the range that daemon-assigned per-VM identities come from.
pub const DYNAMIC_ID_BASE: u32 = 0x7c00_0000;
/// Size of that range.
pub const DYNAMIC_ID_RANGE: u32 = 1 << 20;

/// Who the jailed VMM runs as, and test hooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailSpec {
    pub uid: u32,
    pub gid: u32,
    /// Test hook: a thread of this kind makes a forbidden system call once filtered.
    pub selftest: Option<ThreadKind>,
}

impl JailSpec {
    /// A jail running as `uid:gid`.
    pub fn new(uid: u32, gid: u32) -> Self {
        JailSpec {
            uid,
            gid,
            selftest: None,
        }
    }

    /// A per-VM identity from the dynamic range, derived from `key` (the VMI's uid): the same
    /// VMI always gets the same uid and gid, different VMIs almost always different ones (see
    /// [`dynamic_free`](Self::dynamic_free) for never).
    pub fn dynamic(key: &str) -> Self {
        Self::dynamic_free(key, |_| false)
    }

    /// The dynamic identity of `key`, or if `taken` says another VMM has it, the next free one
    /// in the range (wrapping): two live VMMs never share a uid, which would let one signal or
    /// trace the other.
    pub fn dynamic_free(key: &str, taken: impl Fn(u32) -> bool) -> Self {
        // FNV-1a: stable across releases (the standard library's hasher is not).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let start = (h % u64::from(DYNAMIC_ID_RANGE)) as u32;
        let id = (0..DYNAMIC_ID_RANGE)
            .map(|i| DYNAMIC_ID_BASE + (start + i) % DYNAMIC_ID_RANGE)
            .find(|id| !taken(*id))
            .unwrap_or(DYNAMIC_ID_BASE + start);
        JailSpec::new(id, id)
    }

    /// Root may not be the jail's identity.
    pub fn validate(&self) -> Result<(), JailError> {
        if self.uid == 0 || self.gid == 0 {
            return Err(JailError::RootIdentity);
        }
        Ok(())
    }
}

/// A jail that could not be entered.
#[derive(Debug, Error)]
pub enum JailError {
    #[error("the jail's uid and gid must not be 0")]
    RootIdentity,
    #[error("the jail needs root (it runs as uid {0})")]
    NotRoot(u32),
    #[error("{path}: a directory kept in the jail")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{step}")]
    Step {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("seccomp")]
    Seccomp(#[source] SeccompError),
    #[error("the process already runs {0} threads; the jail must be entered by the only one")]
    Threads(usize),
}

fn step(step: &'static str) -> impl FnOnce(io::Error) -> JailError {
    move |source| JailError::Step { step, source }
}

fn check(rc: libc::c_int, what: &'static str) -> Result<(), JailError> {
    if rc < 0 {
        Err(JailError::Step {
            step: what,
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(())
    }
}

fn cstring(path: &Path) -> Result<CString, JailError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| JailError::Dir {
        path: path.to_path_buf(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

/// The directories to keep, canonical, without any that lies inside another.
fn keep_list(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, JailError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let c = d.canonicalize().map_err(|source| JailError::Dir {
            path: d.clone(),
            source,
        })?;
        out.push(c);
    }
    if let Some(root) = out.iter().find(|p| p.parent().is_none()) {
        return Err(JailError::Dir {
            path: root.clone(),
            source: io::Error::other("the jail cannot keep the whole file system"),
        });
    }
    out.sort_by_key(|p| p.as_os_str().len());
    let mut kept: Vec<PathBuf> = Vec::new();
    for p in out {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    Ok(kept)
}

fn open_path(dir: &Path) -> Result<OwnedFd, JailError> {
    let c = cstring(dir)?;
    // SAFETY: a NUL-terminated path; O_PATH opens take no other pointer.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(JailError::Dir {
            path: dir.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mount(
    source: Option<&CString>,
    target: &CString,
    fstype: Option<&CString>,
    flags: libc::c_ulong,
    data: Option<&CString>,
    what: &'static str,
) -> Result<(), JailError> {
    let ptr = |s: Option<&CString>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    check(rc, what)
}

/// Name of the old root while it is being detached (inside the new root, removed after).
const OLD_ROOT: &str = ".corral-old-root";
const OLD_ROOT_C: &std::ffi::CStr = c".corral-old-root";
const OLD_ROOT_ABS: &std::ffi::CStr = c"/.corral-old-root";

/// Enters the jail (see the module documentation). `keep` are the directories the VMM still
/// writes to; the calling process must be single-threaded.
pub fn enter(spec: &JailSpec, keep: &[PathBuf]) -> Result<(), JailError> {
    spec.validate()?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(JailError::NotRoot(euid));
    }
    // Mount namespace and root are per thread: a thread started earlier would stay outside.
    let threads = thread_count();
    if threads != Some(1) {
        return Err(JailError::Threads(threads.unwrap_or(0)));
    }
    let filters = Filters::compile(spec.selftest).map_err(JailError::Seccomp)?;
    let keep = keep_list(keep)?;
    limit_malloc_arenas();
    build_root(&keep)?;
    drop_privileges(spec)?;
    seccomp::prepare(filters).map_err(JailError::Seccomp)
}

/// The process' thread count (`Threads:` of /proc/self/status).
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// glibc sizes its per-thread malloc arenas by the CPU count, which a thread reads from
/// `/sys` the first time it allocates: not something a filtered thread may do (nor is `/sys`
/// in the jail). A fixed arena limit skips that.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator tunable.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// Mount namespace, tmpfs root with the kept directories, pivot_root.
fn build_root(keep: &[PathBuf]) -> Result<(), JailError> {
    // SAFETY: unshare takes flags only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    check(rc, "unshare(CLONE_NEWNS)")?;
    // Opened in the new namespace: a bind mount's source must be one of its mounts.
    let fds = keep
        .iter()
        .map(|d| open_path(d))
        .collect::<Result<Vec<_>, _>>()?;
    let root = c"/".to_owned();
    // Nothing we mount from now on propagates back to the host.
    mount(
        None,
        &root,
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
        "making mounts private",
    )?;
    // The new root is a tmpfs mounted over an existing directory (the first kept one; the
    // kept directories are reached through their O_PATH fds, not through that path).
    let base = match keep.first() {
        Some(d) => d.clone(),
        None => std::env::temp_dir()
            .canonicalize()
            .map_err(step("the temporary directory"))?,
    };
    let base_c = cstring(&base)?;
    mount(
        Some(&c"tmpfs".to_owned()),
        &base_c,
        Some(&c"tmpfs".to_owned()),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(&c"mode=0755,size=64k,nr_inodes=256".to_owned()),
        "mounting the jail's tmpfs",
    )?;
    for (dir, fd) in keep.iter().zip(&fds) {
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        let target = base.join(rel);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&target)
            .map_err(|source| JailError::Dir {
                path: dir.clone(),
                source,
            })?;
        // The umask may have narrowed the mode; every level must stay traversable.
        let mut p = target.as_path();
        while p != base {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
                .map_err(step("chmod in the jail's tmpfs"))?;
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
        let source = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|_| {
            JailError::Step {
                step: "fd path",
                source: io::Error::from(io::ErrorKind::InvalidInput),
            }
        })?;
        let target_c = cstring(&target)?;
        mount(
            Some(&source),
            &target_c,
            None,
            libc::MS_BIND,
            None,
            "bind-mounting a kept directory",
        )?;
        mount(
            None,
            &target_c,
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
            "remounting a kept directory nosuid,nodev,noexec",
        )?;
    }
    std::env::set_current_dir(&base).map_err(step("chdir to the jail's root"))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(OLD_ROOT)
        .map_err(step("creating the old root's mount point"))?;
    // SAFETY: two NUL-terminated paths.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), OLD_ROOT_C.as_ptr()) };
    let pivot = if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    match pivot {
        Ok(()) => {
            std::env::set_current_dir("/").map_err(step("chdir to /"))?;
            // SAFETY: a NUL-terminated path.
            let rc = unsafe { libc::umount2(OLD_ROOT_ABS.as_ptr(), libc::MNT_DETACH) };
            check(rc, "detaching the host's root")?;
        }
        // A host running from its initramfs (rootfs) cannot pivot_root; do what switch_root
        // does: move the jail's tmpfs over / and chroot into it. The host's root stays mounted
        // underneath in this namespace only, unreachable once the capabilities (CAP_SYS_CHROOT
        // among them) are dropped below.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            mount(
                Some(&c".".to_owned()),
                &root,
                None,
                libc::MS_MOVE,
                None,
                "moving the jail's root over / (no pivot_root from rootfs)",
            )?;
            // SAFETY: a NUL-terminated path.
            let rc = unsafe { libc::chroot(c".".as_ptr()) };
            check(rc, "chroot into the jail's root")?;
            std::env::set_current_dir("/").map_err(step("chdir to /"))?;
        }
        Err(source) => {
            return Err(JailError::Step {
                step: "pivot_root",
                source,
            });
        }
    }
    std::fs::remove_dir(format!("/{OLD_ROOT}")).map_err(step("removing the old root"))?;
    mount(
        None,
        &root,
        None,
        libc::MS_REMOUNT
            | libc::MS_BIND
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        None,
        "making the jail's root read-only",
    )
}

/// Capability bounding set, groups, gid, uid, dumpable, no_new_privs.
fn drop_privileges(spec: &JailSpec) -> Result<(), JailError> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments. Capabilities past the kernel's last one fail
        // with EINVAL, which ends the loop.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(JailError::Step {
                step: "emptying the capability bounding set",
                source: e,
            });
        }
    }
    // SAFETY: no groups: a zero length and a null list.
    let rc = unsafe { libc::setgroups(0, std::ptr::null()) };
    check(rc, "setgroups")?;
    // SAFETY: integer arguments.
    let rc = unsafe { libc::setresgid(spec.gid, spec.gid, spec.gid) };
    check(rc, "setresgid")?;
    // Leaving uid 0 for good (real, effective and saved) clears the permitted, effective and
    // ambient capability sets.
    // SAFETY: integer arguments.
    let rc = unsafe { libc::setresuid(spec.uid, spec.uid, spec.uid) };
    check(rc, "setresuid")?;
    // SAFETY: prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    check(rc, "PR_SET_DUMPABLE")?;
    // SAFETY: prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(rc, "PR_SET_NO_NEW_PRIVS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_ids_are_stable_and_in_range() {
        let a = JailSpec::dynamic("0b6c3e1e-uid-a");
        assert_eq!(a, JailSpec::dynamic("0b6c3e1e-uid-a"));
        assert_ne!(a.uid, JailSpec::dynamic("0b6c3e1e-uid-b").uid);
        assert!((DYNAMIC_ID_BASE..DYNAMIC_ID_BASE + DYNAMIC_ID_RANGE).contains(&a.uid));
        assert_eq!(a.uid, a.gid);
        let b = JailSpec::dynamic_free("0b6c3e1e-uid-a", |id| id == a.uid);
        assert_eq!(b.uid, a.uid + 1);
        let last = DYNAMIC_ID_BASE + DYNAMIC_ID_RANGE - 1;
        let mut key = 0u32;
        let wraps = loop {
            let k = key.to_string();
            if JailSpec::dynamic(&k).uid == last {
                break k;
            }
            key += 1;
        };
        assert_eq!(
            JailSpec::dynamic_free(&wraps, |id| id == last).uid,
            DYNAMIC_ID_BASE
        );
        assert!(matches!(
            JailSpec::new(0, 5).validate(),
            Err(JailError::RootIdentity)
        ));
    }

    #[test]
    fn nested_kept_directories_collapse() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a");
        std::fs::create_dir(&sub).unwrap();
        let kept = keep_list(&[sub.clone(), dir.path().to_path_buf(), sub]).unwrap();
        assert_eq!(kept, vec![dir.path().canonicalize().unwrap()]);
        assert!(keep_list(&[dir.path().join("missing")]).is_err());
        assert!(keep_list(&[PathBuf::from("/")]).is_err());
    }
}
