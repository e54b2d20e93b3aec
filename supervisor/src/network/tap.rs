//! The pod's persistent tap: created once inside the pod namespace (owned by the VMM's uid/gid so
//! the jailed VMM may attach to it), and reopened by [`open`] for each VMM start.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Size of `struct virtio_net_hdr_v1` (what the VMM's virtio-net device exchanges with the tap).
pub const VNET_HDR_LEN: libc::c_int = 12;

const TAP_FLAGS: libc::c_short =
    (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;

fn attach(name: &str, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut opts = OpenOptions::new();
    opts.read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 });
    let file = opts.open("/dev/net/tun")?;
    let mut req = super::netns::ifreq(name.as_bytes())?;
    req.ifr_ifru.ifru_flags = TAP_FLAGS;
    // SAFETY: TUNSETIFF reads/writes the ifreq we own.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file.into())
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
    let fd = attach(name, false)?;
    tun_ioctl(&fd, libc::TUNSETOWNER, uid.into())?;
    tun_ioctl(&fd, libc::TUNSETGROUP, gid.into())?;
    tun_ioctl(&fd, libc::TUNSETPERSIST, 1)
}

/// Opens the existing tap `name` (calling thread's namespace): non-blocking, vnet header of
/// [`VNET_HDR_LEN`] bytes.
pub fn open(name: &str) -> io::Result<OwnedFd> {
    let fd = attach(name, true)?;
    let len = VNET_HDR_LEN;
    // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
