//! TCP echo (RFC 862) on port 7: [`SOCKETS`] listening sockets, each echoing what it receives
//! until the peer closes, then listening again.

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

pub const PORT: u16 = 7;
pub const SOCKETS: usize = 2;
const BUF: usize = 4096;

static mut BUFFERS: [[[u8; BUF]; 2]; SOCKETS] = [[[0; BUF]; 2]; SOCKETS];

pub struct Echo {
    handles: [SocketHandle; SOCKETS],
}

impl Echo {
    pub fn new(sockets: &mut SocketSet<'static>) -> Echo {
        // SAFETY: called once; the buffers are handed to the sockets for the rest of the run.
        let bufs = unsafe { &mut *(&raw mut BUFFERS) };
        let mut it = bufs.iter_mut().map(|[rx, tx]| {
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(&mut rx[..]),
                tcp::SocketBuffer::new(&mut tx[..]),
            );
            let _ = s.listen(PORT);
            sockets.add(s)
        });
        let handles = core::array::from_fn(|_| it.next().expect("socket"));
        Echo { handles }
    }

    /// Moves received bytes to the send side; returns whether anything happened.
    pub fn poll(&mut self, sockets: &mut SocketSet<'_>) -> bool {
        let mut worked = false;
        for h in self.handles {
            let s = sockets.get_mut::<tcp::Socket>(h);
            match s.state() {
                tcp::State::Closed | tcp::State::TimeWait => {
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
            while s.can_recv() && s.can_send() {
                let room = s.send_capacity() - s.send_queue();
                let mut tmp = [0u8; 1024];
                let n = s.recv_slice(&mut tmp[..room.min(1024)]).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let _ = s.send_slice(&tmp[..n]);
                worked = true;
            }
        }
        worked
    }
}
