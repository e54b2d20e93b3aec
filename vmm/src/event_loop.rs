//! The device event loop: one thread running an `event_manager::EventManager`.
//!
//! Its [`DeviceEvents`] subscriber owns every host-side file descriptor of the VM: the signalfd
//! (SIGTERM/SIGINT → stop), stdin and console connections (→ serial input), the serial
//! "receive FIFO drained" EventFd, the control socket listener and its connections. Each
//! virtio-blk device has its own subscriber (its queue-notify EventFd), and so does each
//! virtio-net device (its queue-notify EventFd and its tap), passed to [`spawn`];
//! more can be added later through the manager's remote endpoint (see [`EventLoop::endpoint`]).
//!
//! Serial input: bytes from stdin and every console connection join one queue in arrival order
//! (several writers interleave byte-wise) and move into the UART's 64-byte FIFO as the guest
//! drains it. The queue holds at most [`MAX_PENDING_INPUT`] bytes; beyond that input is dropped.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{
    EventManager, EventOps, Events, MutEventSubscriber, RemoteEndpoint, SubscriberOps,
};
use thiserror::Error;
use vmm_sys_util::epoll::EventSet;

use crate::control::{self, Action};
use crate::devices::serial::Serial;
use crate::lifecycle::{EventSender, VmEvent, VmState};
use crate::signals::{self, TerminationSignals};

/// Most serial input bytes waiting for FIFO room.
pub const MAX_PENDING_INPUT: usize = 1 << 20;
/// Longest control request line.
const MAX_REQUEST: usize = 4096;

/// The subscriber type the event manager holds.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Errors while starting the event loop.
#[derive(Debug, Error)]
pub enum EventLoopError {
    #[error("creating the event manager")]
    Manager(#[source] event_manager::Error),
    #[error("spawning the event loop thread")]
    Spawn(#[source] io::Error),
}

/// A connection on the control socket.
enum Conn {
    /// Waiting for its request line.
    Request { stream: UnixStream, buf: Vec<u8> },
    /// Attached to the console.
    Console { stream: UnixStream, id: u64 },
}

/// Everything the device subscriber needs.
pub struct DeviceEvents {
    serial: Arc<Serial>,
    state: Arc<VmState>,
    events: EventSender,
    signals: TerminationSignals,
    stdin: Option<std::fs::File>,
    listener: Option<UnixListener>,
    conns: HashMap<RawFd, Conn>,
    pending: VecDeque<u8>,
    next_console_id: u64,
}

impl DeviceEvents {
    pub fn new(
        serial: Arc<Serial>,
        state: Arc<VmState>,
        events: EventSender,
        signals: TerminationSignals,
        stdin: bool,
        listener: Option<UnixListener>,
    ) -> Self {
        DeviceEvents {
            serial,
            state,
            events,
            signals,
            // A dup of fd 0, read directly (std's Stdin buffers, which would hide bytes from epoll).
            stdin: stdin
                .then(|| io::stdin().as_fd().try_clone_to_owned().ok())
                .flatten()
                .map(std::fs::File::from),
            listener,
            conns: HashMap::new(),
            pending: VecDeque::new(),
            next_console_id: 1,
        }
    }

    fn queue_input(&mut self, bytes: &[u8]) {
        let room = MAX_PENDING_INPUT.saturating_sub(self.pending.len());
        if bytes.len() > room {
            tracing::warn!(
                "serial input queue full: dropping {} bytes",
                bytes.len() - room
            );
        }
        self.pending.extend(&bytes[..bytes.len().min(room)]);
        self.pump_input();
    }

    fn pump_input(&mut self) {
        while !self.pending.is_empty() {
            let n = self.serial.enqueue(self.pending.make_contiguous());
            if n == 0 {
                break; // wait for the guest to drain the FIFO
            }
            self.pending.drain(..n);
        }
    }

    fn on_signal(&mut self) {
        while let Some(signo) = self.signals.read() {
            self.request_stop(signals::name(signo).to_string(), 0);
        }
    }

    fn request_stop(&mut self, reason: String, grace_ms: u64) {
        self.state.set_stopping();
        self.events.send(VmEvent::Stop { reason, grace_ms });
    }

    fn on_stdin(&mut self, ops: &mut EventOps) {
        let mut buf = [0u8; 4096];
        let n = match self.stdin.as_mut().map(|s| s.read(&mut buf)) {
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => return,
            _ => 0,
        };
        if n == 0 {
            // EOF (or error): the guest keeps running without host input.
            if let Some(stdin) = self.stdin.take() {
                let _ = ops.remove(Events::empty(&stdin));
            }
            return;
        }
        self.queue_input(&buf[..n]);
    }

    fn on_accept(&mut self, ops: &mut EventOps) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    if ops.add(Events::new_raw(fd, EventSet::IN)).is_ok() {
                        self.conns.insert(
                            fd,
                            Conn::Request {
                                stream,
                                buf: Vec::new(),
                            },
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("control socket accept: {e}");
                    break;
                }
            }
        }
    }

    fn close(&mut self, fd: RawFd, ops: &mut EventOps) {
        let _ = ops.remove(Events::empty_raw(fd));
        if let Some(Conn::Console { id, .. }) = self.conns.remove(&fd) {
            if let Some(dropped) = self.serial.hub().detach(id) {
                if dropped > 0 {
                    tracing::info!(
                        "console connection {id} closed; {dropped} output bytes dropped for it"
                    );
                }
            }
        }
    }

    /// Console connections with buffered output: also wait until their socket is writable.
    fn watch_writable(&mut self, ops: &mut EventOps) {
        let pending = self.serial.hub().pending();
        for (fd, conn) in &self.conns {
            if let Conn::Console { id, .. } = conn {
                if pending.contains(id) {
                    let _ = ops.modify(Events::new_raw(*fd, EventSet::IN | EventSet::OUT));
                }
            }
        }
    }

    fn on_writable(&mut self, fd: RawFd, ops: &mut EventOps) {
        if let Some(Conn::Console { id, .. }) = self.conns.get(&fd) {
            if !self.serial.hub().flush(*id) {
                let _ = ops.modify(Events::new_raw(fd, EventSet::IN));
            }
        }
    }

    fn on_conn(&mut self, fd: RawFd, ops: &mut EventOps) {
        let mut buf = [0u8; 4096];
        let Some(conn) = self.conns.get_mut(&fd) else {
            let _ = ops.remove(Events::empty_raw(fd));
            return;
        };
        let stream = match conn {
            Conn::Request { stream, .. } | Conn::Console { stream, .. } => stream,
        };
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => 0,
        };
        if n == 0 {
            self.close(fd, ops);
            return;
        }
        match conn {
            Conn::Console { .. } => self.queue_input(&buf[..n]),
            Conn::Request { buf: line, .. } => {
                line.extend_from_slice(&buf[..n]);
                let Some(end) = line.iter().position(|b| *b == b'\n') else {
                    if line.len() > MAX_REQUEST {
                        self.close(fd, ops);
                    }
                    return;
                };
                let rest = line.split_off(end + 1);
                let request = String::from_utf8_lossy(line).into_owned();
                self.on_request(fd, &request, rest, ops);
            }
        }
    }

    fn on_request(&mut self, fd: RawFd, request: &str, rest: Vec<u8>, ops: &mut EventOps) {
        let Some(Conn::Request { stream, .. }) = self.conns.remove(&fd) else {
            return;
        };
        let reply = |mut stream: &UnixStream, text: &str| {
            // Replies are tiny; a fresh socket buffer always takes them.
            let _ = stream.write_all(text.as_bytes());
        };
        match control::handle(request, &self.state) {
            Action::Reply(text) => {
                reply(&stream, &text);
                let _ = ops.remove(Events::empty_raw(fd));
            }
            Action::Stop {
                reply: text,
                grace_ms,
            } => {
                reply(&stream, &text);
                let _ = ops.remove(Events::empty_raw(fd));
                self.request_stop("control socket stop".to_string(), grace_ms);
            }
            Action::Console(text) => {
                reply(&stream, &text);
                let id = self.next_console_id;
                self.next_console_id += 1;
                match stream
                    .try_clone()
                    .and_then(|out| self.serial.hub().attach(id, out))
                {
                    Ok(()) => {
                        self.conns.insert(fd, Conn::Console { stream, id });
                        if !rest.is_empty() {
                            self.queue_input(&rest);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("attaching console connection: {e}");
                        let _ = ops.remove(Events::empty_raw(fd));
                    }
                }
            }
        }
    }
}

impl MutEventSubscriber for DeviceEvents {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.signals, EventSet::IN));
        let _ = ops.add(Events::new(self.serial.drained_fd(), EventSet::IN));
        let _ = ops.add(Events::new(self.serial.hub().flush_fd(), EventSet::IN));
        if let Some(listener) = &self.listener {
            let _ = ops.add(Events::new(listener, EventSet::IN));
        }
        let stdin_ok = self
            .stdin
            .as_ref()
            .is_none_or(|stdin| ops.add(Events::new(stdin, EventSet::IN)).is_ok());
        if !stdin_ok {
            // e.g. /dev/null or a regular file: epoll cannot watch it.
            tracing::debug!("stdin cannot be polled; guest input from stdin disabled");
            self.stdin = None;
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        let hangup = events
            .event_set()
            .intersects(EventSet::HANG_UP | EventSet::ERROR | EventSet::READ_HANG_UP);
        if fd == self.signals.as_raw_fd() {
            self.on_signal();
        } else if fd == self.serial.hub().flush_fd().as_raw_fd() {
            let _ = self.serial.hub().flush_fd().read();
            self.watch_writable(ops);
        } else if fd == self.serial.drained_fd().as_raw_fd() {
            let _ = self.serial.drained_fd().read();
            self.pump_input();
        } else if self.stdin.as_ref().is_some_and(|s| s.as_raw_fd() == fd) {
            self.on_stdin(ops);
        } else if self.listener.as_ref().is_some_and(|l| l.as_raw_fd() == fd) {
            self.on_accept(ops);
        } else if self.conns.contains_key(&fd) {
            if events.event_set().contains(EventSet::OUT) {
                self.on_writable(fd, ops);
            }
            if events.event_set().intersects(!EventSet::OUT) {
                self.on_conn(fd, ops);
            }
        } else if hangup {
            let _ = ops.remove(Events::empty_raw(fd));
        }
    }
}

/// The running event loop thread.
pub struct EventLoop {
    endpoint: RemoteEndpoint<Subscriber>,
    _thread: JoinHandle<()>,
}

impl EventLoop {
    /// Lets other threads add subscribers (e.g. devices created at boot) to the running loop.
    pub fn endpoint(&self) -> &RemoteEndpoint<Subscriber> {
        &self.endpoint
    }
}

/// Starts the event loop thread with `devices` as its first subscriber, then `others`.
pub fn spawn(devices: DeviceEvents, others: Vec<Subscriber>) -> Result<EventLoop, EventLoopError> {
    let mut manager: EventManager<Subscriber> =
        EventManager::new().map_err(EventLoopError::Manager)?;
    manager.add_subscriber(Arc::new(Mutex::new(devices)));
    for subscriber in others {
        manager.add_subscriber(subscriber);
    }
    let endpoint = manager.remote_endpoint();
    let thread = std::thread::Builder::new()
        .name("devices".into())
        .spawn(move || {
            crate::seccomp::enter_thread_or_abort(crate::seccomp::ThreadKind::EventLoop);
            loop {
                if let Err(e) = manager.run() {
                    tracing::error!("event loop: {e}");
                    break;
                }
            }
        })
        .map_err(EventLoopError::Spawn)?;
    Ok(EventLoop {
        endpoint,
        _thread: thread,
    })
}
