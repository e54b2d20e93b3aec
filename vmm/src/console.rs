//! The guest console's output side: every byte the guest writes to the serial port goes to
//! stdout, the console log file and every attached control-socket console connection.
//!
//! Writes happen on the vCPU thread that executed the `out` instruction. A console connection
//! never blocks the guest: its socket is non-blocking and bytes that do not fit are dropped and
//! counted (per connection and in `VmState::console_dropped`).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::lifecycle::VmState;

/// One attached console connection.
#[derive(Debug)]
struct Client {
    id: u64,
    stream: UnixStream,
    dropped: u64,
}

/// Fan-out of guest console output.
#[derive(Debug)]
pub struct ConsoleHub {
    to_stdout: bool,
    log: Option<Mutex<File>>,
    clients: Mutex<Vec<Client>>,
    state: Arc<VmState>,
}

impl ConsoleHub {
    pub fn new(to_stdout: bool, log: Option<File>, state: Arc<VmState>) -> Self {
        ConsoleHub {
            to_stdout,
            log: log.map(Mutex::new),
            clients: Mutex::new(Vec::new()),
            state,
        }
    }

    /// Attaches a console connection (its socket is made non-blocking).
    pub fn attach(&self, id: u64, stream: UnixStream) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        lock(&self.clients).push(Client {
            id,
            stream,
            dropped: 0,
        });
        Ok(())
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
        clients.retain_mut(|c| match (&c.stream).write(buf) {
            Ok(n) => {
                self.count_drop(c, buf.len() - n);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.count_drop(c, buf.len());
                true
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => false, // the peer went away; the event loop notices the EOF too
        });
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
        let hub = ConsoleHub::new(false, None, state.clone());
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
        assert_eq!(got + dropped, 64 * 64 * 1024);
        assert_eq!(hub.detach(7), Some(dropped));
        assert_eq!(hub.attached(), 0);
    }

    #[test]
    fn every_client_gets_output_and_log_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let log = File::create(&path).unwrap();
        let hub = ConsoleHub::new(false, Some(log), Arc::new(VmState::new(1, 0)));
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        hub.attach(1, a).unwrap();
        hub.attach(2, b).unwrap();
        ConsoleWriter(Arc::new(ConsoleHub::new(
            false,
            None,
            Arc::new(VmState::new(1, 0)),
        )))
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
