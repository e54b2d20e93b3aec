//! A guest-initiated HTTP/1.0 client, so tests can prove guest → host and VM → VM traffic.
//!
//! Console command `net get A.B.C.D[:PORT][/PATH]` (port 80, path `/` by default): [`command`]
//! parks the request in [`PENDING`]; the network loop's [`Client::poll`] connects one smoltcp
//! socket (local port 49152 + counter), sends `GET /PATH HTTP/1.0` with `Connection: close`,
//! keeps the first [`KEEP`] bytes of the answer until the peer closes (at most [`TIMEOUT_US`]),
//! then prints one line:
//! ```text
//! testguest: net get status=200 bytes=N body=FIRST BODY LINE (<= 80 chars)
//! testguest: net get error=REASON   (refused, reset, timeout, bad address, bad response, busy, no network)
//! ```
//! `bytes` counts the whole answer, head included. Without the network mode: `error=no network`.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, Ordering};

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::Ipv4Address;

use crate::{println, time};

const KEEP: usize = 512;
const TIMEOUT_US: u64 = 10_000_000;
const PATH_MAX: usize = 128;

/// The network mode runs (set by [`Client::new`]).
static RUNNING: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy)]
struct Request {
    addr: Ipv4Address,
    port: u16,
    path: [u8; PATH_MAX],
    path_len: usize,
}

/// The request typed on the console, taken by the next [`Client::poll`].
static mut PENDING: Option<Request> = None;
static mut RX: [u8; 2048] = [0; 2048];
static mut TX: [u8; 512] = [0; 512];

/// Parses `A.B.C.D[:PORT][/PATH]`.
fn parse(arg: &str) -> Option<Request> {
    let (hostport, path) = match arg.find('/') {
        Some(i) => (&arg[..i], &arg[i + 1..]),
        None => (arg, ""),
    };
    let (host, port) = match hostport.split_once(':') {
        Some((h, p)) => (h, p.parse().ok().filter(|p| *p != 0)?),
        None => (hostport, 80),
    };
    if path.len() > PATH_MAX || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return None;
    }
    let mut req = Request {
        addr: host.parse().ok()?,
        port,
        path: [0; PATH_MAX],
        path_len: path.len(),
    };
    req.path[..path.len()].copy_from_slice(path.as_bytes());
    Some(req)
}

/// Console `net ARGS`.
pub fn command(args: &str) {
    let Some(arg) = args.strip_prefix("get ") else {
        println!("testguest: unknown command \"net {args}\"");
        return;
    };
    if !RUNNING.load(Ordering::Relaxed) {
        println!("testguest: net get error=no network");
        return;
    }
    match parse(arg.trim()) {
        // SAFETY: single CPU, and the loop touches PENDING only between console lines.
        Some(req) => unsafe { *&raw mut PENDING = Some(req) },
        None => println!("testguest: net get error=bad address"),
    }
}

struct Active {
    deadline_us: u64,
    /// The request, sent once the connection is up (smoltcp refuses data before).
    head: [u8; 256],
    /// Request bytes not sent yet (the TX buffer holds them all); 0 once connected.
    head_len: usize,
    kept: [u8; KEEP],
    total: usize,
}

pub struct Client {
    handle: SocketHandle,
    next_port: u16,
    active: Option<Active>,
}

impl Client {
    pub fn new(sockets: &mut SocketSet<'static>) -> Client {
        // SAFETY: called once; the buffers belong to the socket for the rest of the run.
        let (rx, tx) = unsafe { (&mut *(&raw mut RX), &mut *(&raw mut TX)) };
        let s = tcp::Socket::new(
            tcp::SocketBuffer::new(&mut rx[..]),
            tcp::SocketBuffer::new(&mut tx[..]),
        );
        RUNNING.store(true, Ordering::Relaxed);
        Client {
            handle: sockets.add(s),
            next_port: 0,
            active: None,
        }
    }

    /// Time until the running request times out, for the loop's halt.
    pub fn delay(&self) -> Option<Duration> {
        let a = self.active.as_ref()?;
        Some(Duration::from_micros(
            a.deadline_us.saturating_sub(time::now_us()),
        ))
    }

    /// Starts a pending request, advances the running one; returns whether anything happened.
    pub fn poll(&mut self, iface: &mut Interface, sockets: &mut SocketSet<'_>) -> bool {
        // SAFETY: as in `command`.
        let pending = unsafe { (*&raw mut PENDING).take() };
        let s = sockets.get_mut::<tcp::Socket>(self.handle);
        if let Some(req) = pending {
            if self.active.is_some() {
                println!("testguest: net get error=busy");
            } else {
                self.start(&req, iface, s);
                return true;
            }
        }
        let Some(a) = self.active.as_mut() else {
            return false;
        };
        let mut worked = false;
        if a.head_len > 0 && s.may_send() {
            let _ = s.send_slice(&a.head[..a.head_len]);
            a.head_len = 0;
            worked = true;
        }
        while s.can_recv() {
            let mut tmp = [0u8; 512];
            let n = s.recv_slice(&mut tmp).unwrap_or(0);
            if n == 0 {
                break;
            }
            let room = KEEP.saturating_sub(a.total).min(n);
            a.kept[a.total.min(KEEP)..][..room].copy_from_slice(&tmp[..room]);
            a.total += n;
            worked = true;
        }
        match s.state() {
            tcp::State::CloseWait if !s.can_recv() => {
                report(&a.kept[..a.total.min(KEEP)], a.total);
                s.close();
                self.active = None;
                return true;
            }
            tcp::State::Closed => {
                println!(
                    "testguest: net get error={}",
                    if a.head_len == 0 { "reset" } else { "refused" }
                );
                self.active = None;
                return true;
            }
            _ => {}
        }
        if time::now_us() >= a.deadline_us {
            println!("testguest: net get error=timeout");
            s.abort();
            self.active = None;
            return true;
        }
        worked
    }

    fn start(&mut self, req: &Request, iface: &mut Interface, s: &mut tcp::Socket<'_>) {
        if s.state() != tcp::State::Closed {
            s.abort(); // the previous connection's LAST-ACK / TIME-WAIT
        }
        let local = 49152 + self.next_port;
        self.next_port = (self.next_port + 1) % 16384;
        if s.connect(iface.context(), (req.addr, req.port), local)
            .is_err()
        {
            println!("testguest: net get error=no network");
            return;
        }
        let path = core::str::from_utf8(&req.path[..req.path_len]).unwrap_or("");
        let mut head = [0u8; 256];
        let mut c = Cursor {
            buf: &mut head,
            at: 0,
        };
        let _ = write!(
            c,
            "GET /{path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
            req.addr
        );
        let head_len = c.at;
        self.active = Some(Active {
            deadline_us: time::now_us() + TIMEOUT_US,
            head,
            head_len,
            kept: [0; KEEP],
            total: 0,
        });
    }
}

/// Prints the result line for an answer (`kept` = its first bytes, `total` = its length).
fn report(kept: &[u8], total: usize) {
    let status = kept
        .strip_prefix(b"HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|d| core::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<u16>().ok());
    let Some(status) = status else {
        println!("testguest: net get error=bad response");
        return;
    };
    let body = kept
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&[][..], |i| &kept[i + 4..]);
    let line = &body[..body.iter().position(|b| *b == b'\n').unwrap_or(body.len())];
    let line = &line[..line.len().min(80)];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = match core::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => core::str::from_utf8(&line[..e.valid_up_to()]).unwrap_or(""),
    };
    println!("testguest: net get status={status} bytes={total} body={text}");
}

/// `core::fmt::Write` into a byte slice; overflow is cut off.
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.at);
        self.buf[self.at..self.at + n].copy_from_slice(&s.as_bytes()[..n]);
        self.at += n;
        Ok(())
    }
}
