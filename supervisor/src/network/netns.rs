//! Named network namespaces without `ip netns`: a short-lived thread unshares `CLONE_NEWNET` and
//! bind-mounts its `/proc/thread-self/ns/net` onto a file, which keeps the namespace alive after
//! the thread is gone. Work "inside" a namespace also runs on a short-lived thread that `setns`es
//! into it (a namespace is a per-thread property; processes that thread spawns inherit it).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Creates a new network namespace bound to `path` (which must not exist; its parent must).
/// Loopback is brought up. On failure nothing is left at `path`.
pub fn create(path: &Path) -> io::Result<()> {
    OpenOptions::new().write(true).create_new(true).open(path)?;
    let target = cstring(path)?;
    let res = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            // SAFETY: plain syscall; it only changes this (short-lived) thread's namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let src = c"/proc/thread-self/ns/net";
            // SAFETY: both paths are valid NUL-terminated strings; no fs type or data.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            set_loopback_up()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
    });
    if let Err(e) = res {
        let _ = remove(path);
        return Err(e);
    }
    Ok(())
}

/// Unmounts and deletes a namespace file. Missing or never-mounted files are fine (idempotent).
pub fn remove(path: &Path) -> io::Result<()> {
    let target = cstring(path)?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        let err = io::Error::last_os_error();
        // EINVAL: not a mount point; ENOENT: already gone.
        if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
            return Err(err);
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether `path` is a mounted network namespace (an nsfs file, not the empty placeholder).
pub fn is_netns(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(f) = File::open(path) else {
        return false;
    };
    // SAFETY: fstatfs fills a zeroed statfs for a valid fd.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    (unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } == 0) && st.f_type as i64 == NSFS_MAGIC
}

/// Runs `f` on a new thread that has joined the network namespace at `path`.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let ns = File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: a valid namespace fd; only this thread moves.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            drop(ns);
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
    })
}

/// Runs a command in the namespace at `path`; a non-zero exit is an error carrying its stderr.
pub fn command_in(
    path: &Path,
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> io::Result<String> {
    run_in(path, || run_command(program, args, stdin))
}

/// Runs a command in the calling thread's namespace (see [`command_in`]).
pub fn run_command(program: &str, args: &[&str], stdin: Option<&[u8]>) -> io::Result<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("spawn {program}: {e}")))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn set_loopback_up() -> io::Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(b"lo")?;
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read/write the ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The MTU of `ifname` in the calling thread's namespace.
pub fn link_mtu(ifname: &str) -> io::Result<u32> {
    let sock = inet_socket()?;
    let mut req = ifreq(ifname.as_bytes())?;
    // SAFETY: SIOCGIFMTU fills the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU wrote ifru_mtu.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

pub(crate) fn inet_socket() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn ifreq(name: &[u8]) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}
