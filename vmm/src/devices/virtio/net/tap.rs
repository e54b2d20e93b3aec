//! A tap device: `/dev/net/tun` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, non-blocking, with a
//! 12-byte `virtio_net_hdr_v1` in front of every frame (`TUNSETVNETHDRSZ`).
//!
//! Two ways in: [`Tap::open`] attaches to (or creates) the interface by name, which needs
//! `CAP_NET_ADMIN` unless the tap is persistent and owned by the caller; [`Tap::inherit`] takes an
//! already attached tap file descriptor from the parent (how the daemon hands one to a jailed
//! VMM, which never needs `CAP_NET_ADMIN`; the daemon opens it with [`Tap::open_fd`], after
//! creating a persistent tap from [`attach`]). Both run before the jail: the jail's seccomp filters
//! only let the vCPU threads issue `TUNSETOFFLOAD` (the guest's offloads, applied when the
//! driver starts the device).
//!
//! Every `ioctl` here is `unsafe` with its justification; reads and writes go through `File`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use thiserror::Error;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};

use vm_memory::VolatileSlice;

use super::VNET_HDR_LEN;
pub(crate) use crate::disk::io::IOV_MAX;

/// Longest interface name (`IFNAMSIZ` minus the NUL).
pub const MAX_NAME_LEN: usize = 15;

/// Offload flags of `TUNSETOFFLOAD`.
pub mod offload {
    pub const CSUM: u32 = libc::TUN_F_CSUM;
    pub const TSO4: u32 = libc::TUN_F_TSO4;
    pub const TSO6: u32 = libc::TUN_F_TSO6;
    pub const UFO: u32 = libc::TUN_F_UFO;
}

/// Why a tap cannot be used.
#[derive(Debug, Error)]
pub enum TapError {
    #[error(
        "tap name {0:?} is empty, longer than 15 bytes or contains '/', ':', ',' or whitespace"
    )]
    Name(String),
    #[error("opening /dev/net/tun")]
    OpenTun(#[source] io::Error),
    #[error("TUNSETIFF {0}")]
    SetIff(String, #[source] io::Error),
    #[error("file descriptor {0} is not an open tun/tap device")]
    NotTun(RawFd, #[source] io::Error),
    #[error(
        "file descriptor {fd} ({name}) is not a tap with IFF_NO_PI and IFF_VNET_HDR (flags {flags:#x})"
    )]
    WrongFlags { fd: RawFd, name: String, flags: u16 },
    #[error("TUNSETVNETHDRSZ on {0}")]
    VnetHdrSize(String, #[source] io::Error),
    #[error("making {0} non-blocking")]
    NonBlocking(String, #[source] io::Error),
    #[error("TUNSETOFFLOAD {flags:#x} on {name}")]
    Offload {
        name: String,
        flags: u32,
        #[source]
        source: io::Error,
    },
}

/// `struct ifreq` with the `ifr_flags` member of its union (40 bytes on 64-bit Linux).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

impl IfReq {
    fn named(name: &str, flags: i16) -> Self {
        let mut r = IfReq {
            flags,
            ..Default::default()
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        r
    }

    fn name(&self) -> String {
        let end = self.name.iter().position(|b| *b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// `struct ifreq` with the `ifr_mtu` member of its union.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IfReqMtu {
    name: [u8; 16],
    mtu: i32,
    _pad: [u8; 20],
}

/// The MTU of interface `name` (`SIOCGIFMTU` on a throwaway socket), if it can be read and is
/// usable (68..=65535).
fn interface_mtu(name: &str) -> Option<u16> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    let mut req = IfReqMtu::default();
    req.name[..name.len().min(MAX_NAME_LEN)]
        .copy_from_slice(&name.as_bytes()[..name.len().min(MAX_NAME_LEN)]);
    // SAFETY: SIOCGIFMTU reads the name from and writes the MTU into a `struct ifreq` (our
    // `IfReqMtu` has its size and layout); `sock` is an open socket.
    let rc = unsafe { ioctl_with_mut_ref(&sock, libc::SIOCGIFMTU, &mut req) };
    check(rc).ok()?;
    u16::try_from(req.mtu).ok().filter(|m| *m >= 68)
}

/// An fd number borrowed only to ask the kernel what it is.
struct Probe(RawFd);

impl AsRawFd for Probe {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Whether `name` is a usable interface name (what `dev_valid_name` accepts, minus commas).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == ',' || c == '=' || c.is_whitespace())
}

/// One open tap queue.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    /// A stand-in (a datagram socket in tests and fuzzing): no ioctls.
    stand_in: bool,
    /// The offloads it accepts, probed when opened (before the jail).
    offloads: u32,
    /// The interface's MTU when it was opened.
    mtu: Option<u16>,
}

/// Result of an ioctl wrapper: negative means errno.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens `/dev/net/tun` (close-on-exec, and non-blocking if `nonblocking`) and attaches it to tap
/// `name` with `TUNSETIFF` (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`), creating the interface if it
/// does not exist and the caller may. Nothing else is set: this is the first step of
/// [`Tap::open`] and [`Tap::open_fd`], and what a caller that only configures the interface
/// itself (e.g. `TUNSETPERSIST`) needs.
pub fn attach(name: &str, nonblocking: bool) -> Result<OwnedFd, TapError> {
    if !valid_name(name) {
        return Err(TapError::Name(name.to_string()));
    }
    let flags = libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open("/dev/net/tun")
        .map_err(TapError::OpenTun)?;
    let req = IfReq::named(
        name,
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16,
    );
    // SAFETY: TUNSETIFF reads a `struct ifreq` (our `IfReq` has its size and layout) and `file`
    // is an open /dev/net/tun.
    let rc = unsafe { ioctl_with_ref(&file, libc::TUNSETIFF, &req) };
    check(rc).map_err(|e| TapError::SetIff(name.to_string(), e))?;
    Ok(file.into())
}

/// `TUNSETVNETHDRSZ` to [`VNET_HDR_LEN`] on the attached tap `file` (named `name` in errors).
fn set_vnet_hdr_size(file: &File, name: &str) -> Result<(), TapError> {
    let size = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int from `size`; `file` is an attached tap.
    let rc = unsafe { ioctl_with_ref(file, libc::TUNSETVNETHDRSZ, &size) };
    check(rc).map_err(|e| TapError::VnetHdrSize(name.to_string(), e))
}

impl Tap {
    /// Opens `/dev/net/tun` and attaches to tap `name` (created if it does not exist and the
    /// caller may).
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let file = File::from(attach(name, true)?);
        let mut tap = Self::finish(file, name.to_string())?;
        // Only for a tap opened here: an inherited one may live in another network namespace,
        // where its name means another interface.
        tap.mtu = interface_mtu(name);
        Ok(tap)
    }

    /// Opens tap `name` for another process to [`inherit`](Tap::inherit): attached
    /// ([`attach`]), non-blocking, close-on-exec, with the 12-byte vnet header size set, and
    /// nothing more. Unlike [`Tap::open`] it neither probes nor resets the offloads (they belong to
    /// the interface, which a running VMM may be using) nor reads the MTU: the inheriting VMM does
    /// both.
    pub fn open_fd(name: &str) -> Result<OwnedFd, TapError> {
        let file = File::from(attach(name, true)?);
        set_vnet_hdr_size(&file, name)?;
        Ok(file.into())
    }

    /// Takes ownership of the inherited tap file descriptor `fd` (already attached with
    /// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`) and makes it non-blocking. The caller must pass
    /// each inherited descriptor at most once (the configuration refuses duplicates).
    pub fn inherit(fd: RawFd) -> Result<Tap, TapError> {
        let mut req = IfReq::default();
        // SAFETY: TUNGETIFF writes a `struct ifreq` into `req` (same size and layout); on any fd
        // that is not a tun device the kernel fails the call without touching memory.
        let rc = unsafe { ioctl_with_mut_ref(&Probe(fd), libc::TUNGETIFF, &mut req) };
        check(rc).map_err(|e| TapError::NotTun(fd, e))?;
        let want = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        if req.flags & want != want {
            return Err(TapError::WrongFlags {
                fd,
                name: req.name(),
                flags: req.flags as u16,
            });
        }
        // SAFETY: TUNGETIFF just succeeded, so `fd` is an open tun file descriptor; it was
        // inherited for this VMM alone and is taken here once, so nothing else owns or closes it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let file = File::from(owned);
        let name = req.name();
        let on: libc::c_int = 1;
        // SAFETY: FIONBIO reads one int from `on`; `file` is open.
        let rc = unsafe { ioctl_with_ref(&file, libc::FIONBIO, &on) };
        check(rc).map_err(|e| TapError::NonBlocking(name.clone(), e))?;
        Self::finish(file, name)
    }

    fn finish(file: File, name: String) -> Result<Tap, TapError> {
        set_vnet_hdr_size(&file, &name)?;
        let mut tap = Tap {
            file,
            name,
            stand_in: false,
            offloads: 0,
            mtu: None,
        };
        tap.offloads = tap.probe_offloads();
        // The guest has not negotiated any offload yet: nothing partial or segmented for it.
        tap.set_offloads(0)?;
        Ok(tap)
    }

    /// A datagram socket standing in for a tap (unit tests, fuzzing): frames are datagrams,
    /// offloads are accepted and ignored. `fd` must be non-blocking.
    pub fn stand_in(fd: OwnedFd) -> Tap {
        use offload::*;
        Tap {
            file: File::from(fd),
            name: "stand-in".into(),
            stand_in: true,
            offloads: CSUM | TSO4 | TSO6 | UFO,
            mtu: None,
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Applies the guest's offloads (`offload::*` flags).
    pub fn set_offloads(&self, flags: u32) -> Result<(), TapError> {
        if self.stand_in {
            return Ok(());
        }
        let arg = libc::c_ulong::from(flags);
        // SAFETY: TUNSETOFFLOAD takes its flags by value (no memory is read or written); `file`
        // is an attached tap.
        let rc =
            unsafe { vmm_sys_util::ioctl::ioctl_with_val(&self.file, libc::TUNSETOFFLOAD, arg) };
        check(rc).map_err(|source| TapError::Offload {
            name: self.name.clone(),
            flags,
            source,
        })
    }

    /// The offloads this tap accepts (`offload::*`, probed when it was opened).
    pub fn supported_offloads(&self) -> u32 {
        self.offloads
    }

    /// The interface's MTU (read when it was opened), if known.
    pub fn mtu(&self) -> Option<u16> {
        self.mtu
    }

    /// Tries the offload sets from most to least.
    fn probe_offloads(&self) -> u32 {
        use offload::*;
        [CSUM | TSO4 | TSO6 | UFO, CSUM | TSO4 | TSO6, CSUM]
            .into_iter()
            .find(|f| self.set_offloads(*f).is_ok())
            .unwrap_or(0)
    }

    /// Reads one frame (with its vnet header) into `buf`; `WouldBlock` when none is queued.
    /// A frame longer than `buf` is cut, and the full length returned.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame (with its vnet header).
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }

    /// Writes one frame (with its vnet header) from `parts` in order, in one `writev`: straight
    /// from guest memory. At most [`IOV_MAX`] parts.
    pub fn write_slices(&self, parts: &[VolatileSlice<'_>]) -> io::Result<usize> {
        if parts.len() > IOV_MAX {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let iovs: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.ptr_guard().as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: each iovec describes a readable buffer of `iov_len` bytes inside a
        // `VolatileSlice` the caller holds for the call (guest memory stays mapped while the
        // VMM runs); writev only reads them, and `iovs` outlives the call.
        let n = unsafe {
            libc::writev(
                self.file.as_raw_fd(),
                iovs.as_ptr(),
                iovs.len() as libc::c_int,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl std::os::fd::IntoRawFd for Tap {
    fn into_raw_fd(self) -> RawFd {
        self.file.into_raw_fd()
    }
}

impl std::os::fd::AsFd for Tap {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["tap0", "vm-1_a", "x", "123456789012345"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a,b",
            "a b",
            "a=b",
            "1234567890123456",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(matches!(Tap::open("a/b"), Err(TapError::Name(_))));
        assert!(matches!(Tap::open_fd("a b"), Err(TapError::Name(_))));
        assert!(matches!(attach("", false), Err(TapError::Name(_))));
    }

    #[test]
    fn ifreq_layout() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<IfReqMtu>(), 40);
        let r = IfReq::named("tap7", 3);
        assert_eq!(r.name(), "tap7");
    }

    /// `attach`/`open_fd` against the real driver, on a thread that first moves into a network
    /// namespace of its own (nothing is created in the host's); skipped without root.
    #[test]
    fn open_fd_in_a_private_network_namespace() {
        if !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("skipped: no /dev/net/tun");
            return;
        }
        let res = std::thread::spawn(|| -> Result<(), String> {
            // SAFETY: unshare takes flags only; it moves this test thread alone.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!("unshare: {}", io::Error::last_os_error()));
            }
            let fd = Tap::open_fd("ctapfd0").unwrap();
            let mut req = IfReq::default();
            // SAFETY: TUNGETIFF writes a `struct ifreq` into `req` (same size and layout).
            let rc = unsafe { ioctl_with_mut_ref(&fd, libc::TUNGETIFF, &mut req) };
            check(rc).unwrap();
            assert_eq!(req.name(), "ctapfd0");
            let want = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
            assert_eq!(req.flags & want, want);
            let mut size: libc::c_int = 0;
            // SAFETY: TUNGETVNETHDRSZ writes one int into `size`.
            let rc = unsafe { ioctl_with_mut_ref(&fd, libc::TUNGETVNETHDRSZ, &mut size) };
            check(rc).unwrap();
            assert_eq!(size as usize, VNET_HDR_LEN);
            let status = |fd: &OwnedFd| {
                // SAFETY: F_GETFL and F_GETFD take no argument; `fd` is open.
                unsafe {
                    (
                        libc::fcntl(fd.as_raw_fd(), libc::F_GETFL),
                        libc::fcntl(fd.as_raw_fd(), libc::F_GETFD),
                    )
                }
            };
            let (fl, fdfl) = status(&fd);
            assert_ne!(fl & libc::O_NONBLOCK, 0);
            assert_ne!(fdfl & libc::FD_CLOEXEC, 0);
            drop(fd);
            let fd = attach("ctapfd1", false).unwrap();
            let (fl, fdfl) = status(&fd);
            assert_eq!(fl & libc::O_NONBLOCK, 0);
            assert_ne!(fdfl & libc::FD_CLOEXEC, 0);
            Ok(())
        })
        .join()
        .unwrap();
        if let Err(e) = res {
            eprintln!("skipped: {e} (needs CAP_SYS_ADMIN)");
        }
    }

    #[test]
    fn inheriting_something_else_is_refused() {
        let f = File::open("/proc/self/exe").unwrap();
        let fd = f.as_raw_fd();
        assert!(matches!(Tap::inherit(fd), Err(TapError::NotTun(..))));
        drop(f);
    }
}
