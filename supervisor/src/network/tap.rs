//! The pod's persistent tap: created once inside the pod namespace (owned by the VMM's uid/gid so
//! the jailed VMM may attach to it), and reopened by [`open`] for each VMM start.
//!
//! Attaching (`TUNSETIFF`) and the vnet header size are the VMM crate's ([`vmm_tap`]); what is
//! only the daemon's is making the tap persistent and giving it to the VMM's uid/gid.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use vmm::devices::virtio::net::tap::{self as vmm_tap, Tap, TapError};

/// A [`TapError`] as an `io::Error` of the kind of the OS error behind it (the callers run in
/// [`super::netns::run_in`], which speaks `io::Result`).
fn io_error(e: TapError) -> io::Error {
    let kind = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .map_or(io::ErrorKind::InvalidInput, io::Error::kind);
    io::Error::new(kind, e)
}

fn tun_ioctl(fd: &OwnedFd, req: libc::Ioctl, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: TUNSET* integer ioctls take their argument by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates the persistent tap `name` in the calling thread's namespace, owned by `uid`/`gid`.
pub fn create_persistent(name: &str, uid: u32, gid: u32) -> io::Result<()> {
    let fd = vmm_tap::attach(name, false).map_err(io_error)?;
    tun_ioctl(&fd, libc::TUNSETOWNER, uid.into())?;
    tun_ioctl(&fd, libc::TUNSETGROUP, gid.into())?;
    tun_ioctl(&fd, libc::TUNSETPERSIST, 1)
}

/// Opens the existing tap `name` (calling thread's namespace) for the VMM to inherit:
/// non-blocking, close-on-exec, 12-byte vnet header ([`Tap::open_fd`]).
pub fn open(name: &str) -> io::Result<OwnedFd> {
    Tap::open_fd(name).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_errors_keep_their_os_error_kind() {
        let e = open("a/b").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = io_error(TapError::OpenTun(io::ErrorKind::NotFound.into()));
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("/dev/net/tun"), "{e}");
    }
}
