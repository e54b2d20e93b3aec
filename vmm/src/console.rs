//! The guest console's output side: every byte the guest writes to the serial port goes to
//! stdout, the console log file and every attached control-socket console connection.
//!
//! Writes happen on the vCPU thread that executed the `out` instruction. A console connection
//! never blocks the guest: its socket is non-blocking; what the socket does not take waits in a
//! per-connection buffer of [`CLIENT_BUFFER`] bytes that the event loop flushes when the socket
//! becomes writable (the hub signals [`ConsoleHub::flush_fd`]); bytes beyond that are dropped and
//! counted (per connection and in `VmState::console_dropped`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::lifecycle::VmState;

/// Output bytes kept for a console connection whose socket is full.
pub const CLIENT_BUFFER: usize = 64 * 1024;

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
    log: Option<Mutex<File>>,
    clients: Mutex<Vec<Client>>,
    flush: EventFd,
    state: Arc<VmState>,
}

impl ConsoleHub {
    pub fn new(to_stdout: bool, log: Option<File>, state: Arc<VmState>) -> io::Result<Self> {
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
            let _ = lock(log).write_all(buf);
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
        let log = File::create(&path).unwrap();
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
}
