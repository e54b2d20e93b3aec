//! A tiny HTTP/1.1 server on port 80 for the tests: `GET /` answers 200 with
//! `hello from HOSTNAME` (the NoCloud seed's `local-hostname`, else `testguest`), and
//! `GET /burn?ms=N` first spins N ms (at most 10 s) of guest CPU on the PIT clock, then answers
//! `burned N ms on HOSTNAME`; `GET /stats` answers `requests=N up_us=U busy_us=B halts=H virtio_irqs=I`
//! (requests answered before this one; µs since the network mode started and µs of them not
//! halted — under QEMU `-icount shift=0` busy µs are thousands of guest instructions; halts of
//! the main loop; virtio interrupts taken). Anything else is 404
//! (unknown path) or 405 (not GET).
//!
//! Every answer has a Content-Length. Connections are persistent (HTTP/1.1) unless the request
//! says `Connection: close`, is HTTP/1.0 without `Connection: keep-alive`, or may carry a body
//! (not GET, or a Content-Length / Transfer-Encoding header: bodies are not read); then the
//! server closes after the answer. A request head larger than [`REQ_MAX`] gets 431 and a close.
//! Each of the [`SOCKETS`] listening sockets serves one connection at a time; a socket whose
//! connection ended (closed, or in TIME-WAIT after our close) listens again at once, so
//! sequential one-request connections never wait for TIME-WAIT to expire.

use core::fmt::Write as _;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

use crate::acpi::AcpiInfo;

pub const PORT: u16 = 80;
/// Connections served at once. A SYN that finds every socket busy gets a RST (smoltcp has no
/// backlog): the Service load test (10 new connections/s, ~0.3 s each through the emulator)
/// had up to 4 open and then saw one "connection refused" in 90.
pub const SOCKETS: usize = 12;
const REQ_MAX: usize = 1024;
const RX_BUF: usize = 4096;
const TX_BUF: usize = 4096;
/// Longest answer (head + body).
const RESP_MAX: usize = 512;
const BURN_MAX_MS: u64 = 10_000;

static mut RX: [[u8; RX_BUF]; SOCKETS] = [[0; RX_BUF]; SOCKETS];
static mut TX: [[u8; TX_BUF]; SOCKETS] = [[0; TX_BUF]; SOCKETS];

struct Conn {
    handle: SocketHandle,
    req: [u8; REQ_MAX],
    len: usize,
}

pub struct Http {
    conns: [Conn; SOCKETS],
    name: &'static str,
    /// Requests answered (all connections).
    pub served: u64,
}

/// `core::fmt::Write` into a byte slice; overflow is cut off (answers are far below the size).
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

/// Where the request head ends (the index of the blank line's `\r\n\r\n`), if it is complete.
/// One byte test per byte (this runs on every received segment; PVM emulates each instruction).
fn head_end(req: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(i) = req[at..].iter().position(|b| *b == b'\n') {
        let nl = at + i;
        if nl >= 3 && &req[nl - 3..=nl] == b"\r\n\r\n" {
            return Some(nl - 3);
        }
        at = nl + 1;
    }
    None
}

/// What the answer needs from a request head, found in one pass over its bytes.
struct Head<'a> {
    method: &'a [u8],
    target: &'a str,
    version: &'a [u8],
    /// `Connection: close` / `Connection: keep-alive`.
    close: bool,
    keep_alive: bool,
    /// A Content-Length or Transfer-Encoding header (a body may follow).
    body: bool,
}

fn parse_head(head: &[u8]) -> Head<'_> {
    let mut lines = head.split(|b| *b == b'\n');
    let mut first = lines
        .next()
        .unwrap_or(b"")
        .trim_ascii()
        .splitn(3, |b| *b == b' ');
    let method = first.next().unwrap_or(b"");
    let target = core::str::from_utf8(first.next().unwrap_or(b"")).unwrap_or("");
    let version = first.next().unwrap_or(b"");
    let mut h = Head {
        method,
        target,
        version,
        close: false,
        keep_alive: false,
        body: false,
    };
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (key, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        if key.eq_ignore_ascii_case(b"connection") {
            h.close |= value.eq_ignore_ascii_case(b"close");
            h.keep_alive |= value.eq_ignore_ascii_case(b"keep-alive");
        } else if key.eq_ignore_ascii_case(b"content-length")
            || key.eq_ignore_ascii_case(b"transfer-encoding")
        {
            h.body = true;
        }
    }
    h
}

impl Http {
    pub fn new(sockets: &mut SocketSet<'static>) -> Http {
        // SAFETY: called once; the buffers belong to the sockets for the rest of the run.
        let (rx, tx) = unsafe { (&mut *(&raw mut RX), &mut *(&raw mut TX)) };
        let mut bufs = rx.iter_mut().zip(tx.iter_mut());
        let conns = core::array::from_fn(|_| {
            let (r, t) = bufs.next().expect("buffers");
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(&mut r[..]),
                tcp::SocketBuffer::new(&mut t[..]),
            );
            s.set_nagle_enabled(false);
            let _ = s.listen(PORT);
            Conn {
                handle: sockets.add(s),
                req: [0; REQ_MAX],
                len: 0,
            }
        });
        Http {
            conns,
            name: crate::cidata::hostname().unwrap_or("testguest"),
            served: 0,
        }
    }

    /// Reads requests and answers complete ones; returns whether anything happened.
    pub fn poll(&mut self, sockets: &mut SocketSet<'_>, acpi: Option<&AcpiInfo>) -> bool {
        let mut worked = false;
        for c in &mut self.conns {
            let s = sockets.get_mut::<tcp::Socket>(c.handle);
            match s.state() {
                tcp::State::Closed | tcp::State::TimeWait => {
                    c.len = 0;
                    let _ = s.listen(PORT);
                    continue;
                }
                tcp::State::CloseWait if !s.can_recv() => {
                    s.close();
                    worked = true;
                    continue;
                }
                _ => {}
            }
            while s.can_recv() && c.len < REQ_MAX {
                match s.recv_slice(&mut c.req[c.len..]) {
                    Ok(n) if n > 0 => c.len += n,
                    _ => break,
                }
            }
            while s.may_send() && s.send_capacity() - s.send_queue() >= RESP_MAX {
                let Some(end) = head_end(&c.req[..c.len]) else {
                    if c.len == REQ_MAX {
                        let _ = s.send_slice(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        s.close();
                        c.len = 0;
                        worked = true;
                    }
                    break;
                };
                let keep = answer(s, &parse_head(&c.req[..end]), self.name, self.served, acpi);
                self.served += 1;
                worked = true;
                c.req.copy_within(end + 4..c.len, 0);
                c.len -= end + 4;
                if !keep {
                    s.close();
                    c.len = 0;
                    break;
                }
            }
        }
        worked
    }
}

/// Answers one request head; returns whether the connection stays open.
fn answer(
    s: &mut tcp::Socket,
    head: &Head,
    name: &str,
    served: u64,
    acpi: Option<&AcpiInfo>,
) -> bool {
    let (method, target) = (head.method, head.target);
    // A request body is never read: a request that may have one ends the connection.
    let keep = method == b"GET"
        && !head.body
        && if head.version == b"HTTP/1.0" {
            head.keep_alive
        } else {
            !head.close
        };
    let mut body = [0u8; 256];
    let mut b = Cursor {
        buf: &mut body,
        at: 0,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let status = match (method, path) {
        (b"GET", "/") => {
            let _ = writeln!(b, "hello from {name}");
            "200 OK"
        }
        (b"GET", "/burn") => {
            let ms = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ms="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                .min(BURN_MAX_MS);
            crate::commands::burn_for(ms, acpi);
            let _ = writeln!(b, "burned {ms} ms on {name}");
            "200 OK"
        }
        (b"GET", "/stats") => {
            let (up, busy, halts, irqs) = super::busy();
            let _ = writeln!(
                b,
                "requests={served} up_us={up} busy_us={busy} halts={halts} virtio_irqs={irqs}"
            );
            "200 OK"
        }
        (b"GET", _) => {
            let _ = writeln!(b, "not found");
            "404 Not Found"
        }
        _ => {
            let _ = writeln!(b, "method not allowed");
            "405 Method Not Allowed"
        }
    };
    let body_len = b.at;
    let mut out = [0u8; RESP_MAX];
    let mut o = Cursor {
        buf: &mut out,
        at: 0,
    };
    let _ = write!(
        o,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {body_len}\r\nConnection: {}\r\n\r\n",
        if keep { "keep-alive" } else { "close" }
    );
    let _ = o.write_str(core::str::from_utf8(&body[..body_len]).unwrap_or(""));
    let n = o.at;
    let _ = s.send_slice(&out[..n]);
    keep
}
