//! The guest console's output side: every byte the guest writes to the serial port goes to
//! stdout, the console log file and every attached control-socket console connection.
//!
//! Writes happen on the vCPU thread that executed the `out` instruction. A console connection
//! never blocks the guest: its socket is non-blocking; what the socket does not take waits in a
//! per-connection buffer of [`CLIENT_BUFFER`] bytes that the event loop flushes when the socket
//! becomes writable (the hub signals [`ConsoleHub::flush_fd`]); bytes beyond that are dropped and
//! counted (per connection and in `VmState::console_dropped`).
//!
//! The console log is capped: [`ConsoleLog`] keeps at most two files of `max_bytes` each, the
//! current one and its predecessor (`PATH.1`), renaming the current one when it is full. A
//! failing log write (a full file system) is reported once and the guest keeps running.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::lifecycle::VmState;

/// Output bytes kept for a console connection whose socket is full.
pub const CLIENT_BUFFER: usize = 64 * 1024;

/// Default size of one console log file (the current one and `.1`: 2 MiB in all).
pub const DEFAULT_LOG_MAX_BYTES: u64 = 1 << 20;
/// Smallest console log file size accepted.
pub const MIN_LOG_MAX_BYTES: u64 = 4096;
/// Largest console log file size accepted.
pub const MAX_LOG_MAX_BYTES: u64 = 1 << 30;

/// The rotated console log's name: `PATH.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".1");
    PathBuf::from(name)
}

/// The console log file, capped at `max_bytes` and rotated to `PATH.1` when full.
///
/// Only regular files rotate; a log that is something else (a FIFO, `/dev/null`) is written as
/// is, non-blocking: a FIFO nobody reads loses bytes instead of stalling the vCPU. The size is counted here (one `fstat` at open), so a write costs what it did before the
/// cap: one `write(2)`, plus a `rename(2)` and an `open(2)` each `max_bytes`.
#[derive(Debug)]
pub struct ConsoleLog {
    path: PathBuf,
    file: Option<File>,
    /// Bytes in the current file (attempted: failed writes count too, so a broken log still
    /// retries a rotation, and reopening, every `max_bytes`).
    size: u64,
    max_bytes: u64,
    rotates: bool,
    /// Whether a failure has been reported (once per VMM).
    reported: bool,
    /// Bytes that could not be written.
    lost: u64,
}

impl ConsoleLog {
    /// Opens (appends to) `path`; a regular file already at or over `max_bytes` is rotated at
    /// the first write.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            set_nonblocking(&file)?;
        }
        Ok(ConsoleLog {
            path: path.to_path_buf(),
            size: if meta.is_file() { meta.len() } else { 0 },
            rotates: meta.is_file(),
            file: Some(file),
            max_bytes: max_bytes.max(1),
            reported: false,
            lost: 0,
        })
    }

    /// Bytes that could not be written (full disk, failed rotation).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Appends `buf`; never fails (a failure is logged once and the bytes are counted lost).
    pub fn write(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            if self.rotates && self.size >= self.max_bytes {
                self.rotate();
            }
            let room = if self.rotates {
                usize::try_from(self.max_bytes - self.size).unwrap_or(usize::MAX)
            } else {
                buf.len()
            };
            let (now, rest) = buf.split_at(room.min(buf.len()));
            let (done, result) = match &mut self.file {
                Some(f) => write_some(f, now),
                None => (0, Err(io::Error::other("the console log is not open"))),
            };
            if let Err(e) = result {
                self.lost += (now.len() - done) as u64;
                self.report(&e);
            }
            self.size += now.len() as u64;
            buf = rest;
        }
    }

    /// Renames the current file to `PATH.1` (replacing it) and starts an empty one.
    fn rotate(&mut self) {
        self.size = 0;
        self.file = None;
        match std::fs::rename(&self.path, rotated_path(&self.path)) {
            Ok(()) => {}
            // Someone removed it: start a new one all the same.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => self.report(&e),
        }
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(f) => self.file = Some(f),
            Err(e) => self.report(&e),
        }
    }

    fn report(&mut self, e: &io::Error) {
        if !self.reported {
            self.reported = true;
            tracing::warn!(
                path = %self.path.display(),
                "console log: {e}; guest output that cannot be logged is dropped (reported once)"
            );
        }
    }
}

/// One attached console connection.
#[derive(Debug)]
struct Client {
    id: u64,
    stream: UnixStream,
    pending: VecDeque<u8>,
    dropped: u64,
}

/// Fan-out of guest console output.
#[derive(Debug)]
pub struct ConsoleHub {
    to_stdout: bool,
    log: Option<Mutex<ConsoleLog>>,
    clients: Mutex<Vec<Client>>,
    flush: EventFd,
    state: Arc<VmState>,
}

impl ConsoleHub {
    pub fn new(to_stdout: bool, log: Option<ConsoleLog>, state: Arc<VmState>) -> io::Result<Self> {
        Ok(ConsoleHub {
            to_stdout,
            log: log.map(Mutex::new),
            clients: Mutex::new(Vec::new()),
            flush: EventFd::new(libc::EFD_NONBLOCK)?,
            state,
        })
    }

    /// Becomes readable when some connection has buffered output to flush.
    pub fn flush_fd(&self) -> &EventFd {
        &self.flush
    }

    /// Attaches a console connection (its socket is made non-blocking).
    pub fn attach(&self, id: u64, stream: UnixStream) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        lock(&self.clients).push(Client {
            id,
            stream,
            pending: VecDeque::new(),
            dropped: 0,
        });
        Ok(())
    }

    /// Ids of connections with buffered output.
    pub fn pending(&self) -> Vec<u64> {
        lock(&self.clients)
            .iter()
            .filter(|c| !c.pending.is_empty())
            .map(|c| c.id)
            .collect()
    }

    /// Writes buffered output of connection `id`; returns whether some is still left.
    pub fn flush(&self, id: u64) -> bool {
        let mut clients = lock(&self.clients);
        let Some(pos) = clients.iter().position(|c| c.id == id) else {
            return false;
        };
        let client = &mut clients[pos];
        while !client.pending.is_empty() {
            let (chunk, _) = client.pending.as_slices();
            match (&client.stream).write(chunk) {
                Ok(n) => {
                    client.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => {
                    clients.remove(pos);
                    return false;
                }
            }
        }
        false
    }

    /// Detaches a connection; returns how many bytes it missed.
    pub fn detach(&self, id: u64) -> Option<u64> {
        let mut clients = lock(&self.clients);
        let pos = clients.iter().position(|c| c.id == id)?;
        Some(clients.remove(pos).dropped)
    }

    /// Number of attached console connections.
    pub fn attached(&self) -> usize {
        lock(&self.clients).len()
    }

    /// Sends guest output everywhere.
    pub fn output(&self, buf: &[u8]) {
        if self.to_stdout {
            // A closed or broken stdout must not stop the guest.
            let mut out = io::stdout().lock();
            let _ = out.write_all(buf).and_then(|()| out.flush());
        }
        if let Some(log) = &self.log {
            lock(log).write(buf);
        }
        let mut clients = lock(&self.clients);
        let mut notify = false;
        clients.retain_mut(|c| {
            let mut rest = buf;
            if c.pending.is_empty() {
                match (&c.stream).write(buf) {
                    Ok(n) => rest = &buf[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false, // the peer went away; the event loop sees the EOF too
                }
                notify |= !rest.is_empty();
            }
            let keep = rest.len().min(CLIENT_BUFFER - c.pending.len());
            c.pending.extend(&rest[..keep]);
            self.count_drop(c, rest.len() - keep);
            true
        });
        if notify {
            let _ = self.flush.write(1);
        }
    }

    fn count_drop(&self, client: &mut Client, n: usize) {
        if n > 0 {
            client.dropped += n as u64;
            self.state
                .console_dropped
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Writes as much of `buf` as `file` takes; returns how much, and the error that stopped it.
fn write_some(file: &mut File, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut done = 0;
    while done < buf.len() {
        match file.write(&buf[done..]) {
            Ok(0) => return (done, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own; no pointers are passed.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The serial device's output sink (cheap to clone: a new serial is made at every boot).
#[derive(Debug, Clone)]
pub struct ConsoleWriter(pub Arc<ConsoleHub>);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.output(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn slow_reader_loses_bytes_but_never_blocks() {
        let state = Arc::new(VmState::new(1, 0));
        let hub = ConsoleHub::new(false, None, state.clone()).unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        hub.attach(7, ours).unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            hub.output(&chunk); // 4 MiB: far more than a socket buffer holds
        }
        let dropped = state.console_dropped.load(Ordering::Relaxed);
        assert!(dropped > 0);
        theirs.set_nonblocking(true).unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = theirs.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        assert_eq!(hub.pending(), vec![7]);
        assert_eq!(hub.flush_fd().read().unwrap(), 1);
        while hub.flush(7) {
            while let Ok(n) = theirs.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
        }
        while let Ok(n) = theirs.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        assert_eq!(got + dropped, 64 * 64 * 1024);
        assert!(got >= CLIENT_BUFFER as u64);
        assert_eq!(hub.detach(7), Some(dropped));
        assert_eq!(hub.attached(), 0);
    }

    #[test]
    fn every_client_gets_output_and_log_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let log = ConsoleLog::open(&path, DEFAULT_LOG_MAX_BYTES).unwrap();
        let hub = ConsoleHub::new(false, Some(log), Arc::new(VmState::new(1, 0))).unwrap();
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        hub.attach(1, a).unwrap();
        hub.attach(2, b).unwrap();
        let other = ConsoleHub::new(false, None, Arc::new(VmState::new(1, 0))).unwrap();
        ConsoleWriter(Arc::new(other))
            .write_all(b"ignored")
            .unwrap();
        hub.output(b"hello\n");
        let mut buf = [0u8; 6];
        a_peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello\n");
        b_peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\n");
        drop(a_peer);
        hub.output(b"x");
        hub.output(b"y");
        assert_eq!(hub.attached(), 1, "a closed peer is dropped");
    }

    /// A byte stream that shows where each byte came from (offset modulo a prime).
    fn pattern(start: u64, len: usize) -> Vec<u8> {
        (start..start + len as u64)
            .map(|i| b'!' + (i % 89) as u8)
            .collect()
    }

    #[test]
    fn log_rotates_at_the_cap_and_keeps_the_newest_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let cap = 64 * 1024;
        let mut log = ConsoleLog::open(&path, cap).unwrap();
        // 6 MiB in writes of every shape: single bytes (the serial port), odd sizes, and writes
        // larger than the cap itself.
        let sizes = [
            1usize, 1, 1, 7, 4096, 65_535, 1, 100_000, 3, 200_000, 65_536,
        ];
        let mut written = 0u64;
        let mut i = 0;
        while written < 6 << 20 {
            let n = sizes[i % sizes.len()];
            log.write(&pattern(written, n));
            written += n as u64;
            i += 1;
            let current = std::fs::metadata(&path).unwrap().len();
            assert!(current <= cap, "current file {current} > cap {cap}");
        }
        assert_eq!(log.lost(), 0);
        let old = std::fs::read(rotated_path(&path)).unwrap();
        let new = std::fs::read(&path).unwrap();
        assert_eq!(old.len() as u64, cap, "the rotated file is exactly one cap");
        assert!(new.len() as u64 <= cap);
        let kept = [old, new].concat();
        assert_eq!(
            kept,
            pattern(written - kept.len() as u64, kept.len()),
            "the two files hold the stream's last bytes, in order"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "only console.log and console.log.1");
    }

    #[test]
    fn a_full_log_left_by_an_earlier_run_rotates_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, vec![b'o'; 5000]).unwrap();
        let mut log = ConsoleLog::open(&path, 4096).unwrap();
        log.write(b"new");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read(rotated_path(&path)).unwrap().len(), 5000);
        // Below the cap, an earlier run's log is appended to.
        std::fs::write(&path, b"old ").unwrap();
        let mut log = ConsoleLog::open(&path, 4096).unwrap();
        log.write(b"new");
        assert_eq!(std::fs::read(&path).unwrap(), b"old new");
    }

    #[test]
    fn a_failing_log_loses_bytes_but_never_the_guest_output() {
        // ENOSPC on every write; a character device is never renamed.
        let state = Arc::new(VmState::new(1, 0));
        let log = ConsoleLog::open(Path::new("/dev/full"), MIN_LOG_MAX_BYTES).unwrap();
        let hub = ConsoleHub::new(false, Some(log), state).unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        hub.attach(1, ours).unwrap();
        for _ in 0..3 {
            hub.output(&[b'z'; 3000]);
        }
        let mut buf = vec![0u8; 9000];
        theirs.read_exact(&mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == b'z'));
        let log = lock(hub.log.as_ref().unwrap());
        assert_eq!(log.lost(), 9000);
        assert!(log.reported);
        assert!(Path::new("/dev/full").exists());
        assert!(!Path::new("/dev/full.1").exists());
    }

    #[test]
    fn a_removed_log_directory_is_survived_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("run");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("console.log");
        let mut log = ConsoleLog::open(&path, 4096).unwrap();
        log.write(&[b'a'; 100]);
        std::fs::remove_dir_all(&sub).unwrap();
        // The open file takes writes until the cap; rotation then cannot reopen.
        log.write(&[b'b'; 10_000]);
        assert_eq!(log.lost(), 10_100 - 4096);
        assert!(log.reported);
        // The directory is back: the next rotation reopens the log.
        std::fs::create_dir(&sub).unwrap();
        log.write(&[b'c'; 4096 * 2]);
        // 1908 bytes still counted against the lost file, then one full file, then the rest.
        assert_eq!(
            std::fs::read(rotated_path(&path)).unwrap(),
            vec![b'c'; 4096]
        );
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'c'; 1908]);
    }

    #[test]
    fn a_fifo_log_is_never_renamed_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.fifo");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates the file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let mut log = ConsoleLog::open(&path, MIN_LOG_MAX_BYTES).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 8192];
        for _ in 0..4 {
            log.write(&[b'f'; 3000]);
            let n = reader.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, vec![b'f'; 12_000]);
        assert_eq!(log.lost(), 0);
        assert!(path.exists());
        assert!(!rotated_path(&path).exists());
        // Nobody reads any more: the writes lose bytes instead of blocking.
        for _ in 0..64 {
            log.write(&[b'g'; 4096]);
        }
        let mut kept = 0;
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept += n as u64;
        }
        assert!(kept > 0 && log.lost() > 0);
        assert_eq!(
            kept + log.lost(),
            64 * 4096,
            "every byte is written or counted lost"
        );
        assert!(log.reported);
    }
}
