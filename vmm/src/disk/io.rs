//! Positioned vectored I/O between a file and [`VolatileSlice`]s (guest memory or host buffers):
//! `preadv`/`pwritev` in batches of at most `IOV_MAX` buffers, resumed after short transfers.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vm_memory::VolatileSlice;

/// Most buffers per `preadv`/`pwritev` call (Linux `UIO_MAXIOV`).
pub(crate) const IOV_MAX: usize = 1024;

/// The buffers as `iovec`s, consumed from the front as bytes move.
struct IoVecs {
    iovs: Vec<libc::iovec>,
    first: usize,
}

impl IoVecs {
    fn new(bufs: &[VolatileSlice<'_>]) -> Self {
        let iovs = bufs
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| libc::iovec {
                iov_base: b.ptr_guard_mut().as_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        IoVecs { iovs, first: 0 }
    }

    fn is_empty(&self) -> bool {
        self.first == self.iovs.len()
    }

    fn batch(&self) -> &[libc::iovec] {
        let end = self.iovs.len().min(self.first + IOV_MAX);
        &self.iovs[self.first..end]
    }

    /// Drops `n` transferred bytes from the front.
    fn advance(&mut self, mut n: usize) {
        while n > 0 && !self.is_empty() {
            let iov = &mut self.iovs[self.first];
            if n < iov.iov_len {
                // SAFETY: n < iov_len, so the new base stays inside the same buffer.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(n) }.cast();
                iov.iov_len -= n;
                return;
            }
            n -= iov.iov_len;
            self.first += 1;
        }
    }

    /// Zero-fills what is left (a read that hit the end of the file).
    fn zero_rest(&mut self) {
        for iov in &self.iovs[self.first..] {
            // SAFETY: every iovec describes a live, writable buffer of iov_len bytes (a
            // VolatileSlice the caller holds for the duration of the call).
            unsafe { std::ptr::write_bytes(iov.iov_base.cast::<u8>(), 0, iov.iov_len) };
        }
        self.first = self.iovs.len();
    }
}

/// Reads `file` at `offset` into `bufs`; bytes past the end of the file read as zero.
pub fn read_at(file: &File, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
    transfer(offset, bufs, |iovs, at| {
        // SAFETY: the iovecs point to buffers owned by `bufs`, valid and writable for their
        // length until `transfer` returns; preadv writes at most that many bytes.
        syscall(unsafe {
            libc::preadv(
                file.as_raw_fd(),
                iovs.as_ptr(),
                iovs.len() as libc::c_int,
                at as libc::off_t,
            )
        })
    })
}

/// Writes `bufs` to `file` at `offset`.
pub fn write_at(file: &File, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
    transfer(offset, bufs, |iovs, at| {
        // SAFETY: the iovecs point to buffers owned by `bufs`, valid for reading for their
        // length until `transfer` returns.
        let n = syscall(unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iovs.as_ptr(),
                iovs.len() as libc::c_int,
                at as libc::off_t,
            )
        })?;
        // No progress on a write: report it rather than retry forever.
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        Ok(n)
    })
}

/// A byte count from a system call, or its errno.
fn syscall(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Runs `op(batch, offset)` (a `preadv`/`pwritev`) until every byte of `bufs` moved: resumes
/// after short transfers and EINTR; `Ok(0)` (end of file: reads only) zero-fills the rest.
fn transfer(
    mut offset: u64,
    bufs: &[VolatileSlice<'_>],
    mut op: impl FnMut(&[libc::iovec], u64) -> io::Result<usize>,
) -> io::Result<()> {
    let mut iovs = IoVecs::new(bufs);
    while !iovs.is_empty() {
        match op(iovs.batch(), offset) {
            Ok(0) => iovs.zero_rest(),
            Ok(n) => {
                iovs.advance(n);
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `fallocate(mode, offset, len)`.
pub fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate only acts on the file descriptor; no memory is passed.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes `len` bytes at `offset` read as zero: punches a hole (keeping the size), else writes
/// zeroes.
pub fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match fallocate(
        file,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    ) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
            ) =>
        {
            write_zeroes(file, offset, len)
        }
        Err(e) => Err(e),
    }
}

/// Writes `len` zero bytes at `offset`.
pub fn write_zeroes(file: &File, mut offset: u64, len: u64) -> io::Result<()> {
    let mut zeroes = vec![0u8; (len.min(1 << 20)) as usize];
    let end = offset + len;
    while offset < end {
        let n = ((end - offset) as usize).min(zeroes.len());
        write_at(file, offset, &[VolatileSlice::from(&mut zeroes[..n])])?;
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn vectored_round_trip_and_zero_past_eof() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let (mut a, mut b) = ([0u8; 3], [0u8; 4]);
        read_at(
            &file,
            2,
            &[
                VolatileSlice::from(&mut a[..]),
                VolatileSlice::from(&mut b[..]),
            ],
        )
        .unwrap();
        assert_eq!((&a, &b), (b"234", b"5678"));
        let mut c = [0xffu8; 6];
        read_at(&file, 7, &[VolatileSlice::from(&mut c[..])]).unwrap();
        assert_eq!(&c, b"789\0\0\0");
        let (mut x, mut y) = (*b"ab", *b"cd");
        write_at(
            &file,
            8,
            &[
                VolatileSlice::from(&mut x[..]),
                VolatileSlice::from(&mut y[..]),
            ],
        )
        .unwrap();
        assert_eq!(
            std::fs::read(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap(),
            b"01234567abcd"
        );
        zero_range(&file, 1, 2).unwrap();
        let mut d = [0xffu8; 4];
        read_at(&file, 0, &[VolatileSlice::from(&mut d[..])]).unwrap();
        assert_eq!(d, [b'0', 0, 0, b'3']);
    }

    #[test]
    fn more_buffers_than_iov_max() {
        let file = tempfile::tempfile().unwrap();
        let mut src: Vec<[u8; 1]> = (0..3000u32).map(|i| [i as u8]).collect();
        let bufs: Vec<VolatileSlice> = src
            .iter_mut()
            .map(|b| VolatileSlice::from(&mut b[..]))
            .collect();
        write_at(&file, 0, &bufs).unwrap();
        let mut back = vec![0u8; 3000];
        read_at(&file, 0, &[VolatileSlice::from(&mut back[..])]).unwrap();
        assert!(back.iter().enumerate().all(|(i, b)| *b == i as u8));
    }
}
