//! SIGTERM/SIGINT as file-descriptor events: the signals are blocked in every thread (the mask is
//! set before any thread starts and inherited) and read from a signalfd by the event loop.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// A signalfd for SIGTERM and SIGINT.
#[derive(Debug)]
pub struct TerminationSignals {
    fd: File,
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the local set they are given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

impl TerminationSignals {
    /// Blocks SIGTERM/SIGINT in the calling thread (call before spawning threads) and opens the
    /// signalfd that receives them.
    pub fn block() -> io::Result<Self> {
        let set = termination_set();
        // SAFETY: `set` is a valid signal set; a null old-set pointer is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: -1 asks for a new fd; `set` is valid; flags are valid signalfd flags.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
        let fd = unsafe { File::from_raw_fd(fd) };
        Ok(TerminationSignals { fd })
    }

    /// Reads one pending signal, if any; returns its number.
    pub fn read(&mut self) -> Option<i32> {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        match self.fd.read(&mut info) {
            Ok(n) if n == info.len() => {
                Some(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32)
            }
            _ => None,
        }
    }
}

impl AsRawFd for TerminationSignals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A signal's conventional name.
pub fn name(signo: i32) -> &'static str {
    match signo {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}
