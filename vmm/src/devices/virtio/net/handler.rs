//! Moving frames: the device event loop calls [`NetHandler`] when the guest notifies (either
//! queue: the transport has one notify EventFd) or the tap is readable/writable.
//!
//! * **TX** pops every available transmit chain (at most [`TX_BUDGET`] per wake-up, then it
//!   re-kicks itself) and writes it to the tap as one frame, straight from guest memory. A tap that cannot take
//!   more (`EAGAIN`) keeps the chain: TX stops and waits for the tap to be writable (`EPOLLOUT`).
//! * **RX** reads a frame from the tap only once the guest has posted a receive buffer, then
//!   fills one chain, or with `MRG_RXBUF` as many as the frame needs (`num_buffers` in its
//!   header). When the buffers run out the frame is kept, the chains taken for it are put back,
//!   and the tap is no longer watched (flow control: the kernel queues, then drops, while the
//!   guest is behind) until the guest notifies again. Never a busy poll: the tap is watched
//!   level-triggered only while the device can take a frame. A frame no buffer layout can ever
//!   hold (bigger than one chain without `MRG_RXBUF`, bigger than the whole ring with it) is
//!   dropped and counted.
//!
//! Notification suppression is the block device's: TX with notifications off while draining,
//! back on and re-checked; RX asks for a notification (`avail_event` with `RING_EVENT_IDX`) only
//! when it runs out of buffers. A broken ring (available index running away, an unreadable
//! entry, failing used-ring writes) stops the device until the driver resets it
//! (`NEEDS_RESET`).

use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use event_manager::{EventOps, Events, MutEventSubscriber};
use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::buffers::{self, RxChain, TxChain};
use super::tap::{IOV_MAX, Tap};
use super::{MAX_FRAME, NUM_BUFFERS_OFFSET, VNET_HDR_LEN};
use crate::devices::virtio::interrupt::VirtioInterrupt;
use crate::devices::virtio::queue::wants_interrupt;

/// Most transmit chains per wake-up.
pub const TX_BUDGET: usize = 256;
/// Most received frames per wake-up.
pub const RX_BUDGET: usize = 256;

/// The ring is broken; the device stops.
#[derive(Debug, Error)]
pub enum QueueFault {
    #[error("{queue} queue: available index {avail} is more than a queue ahead of {next}")]
    AvailIndex {
        queue: &'static str,
        avail: u16,
        next: u16,
    },
    #[error("{queue} queue: available ring entry {next} cannot be read")]
    Unreadable { queue: &'static str, next: u16 },
    #[error("virtqueue")]
    Queue(#[from] virtio_queue::Error),
}

/// Both started queues and the memory they live in.
#[derive(Debug)]
pub struct ActiveNet {
    pub mem: GuestMemoryMmap,
    pub rx: Queue,
    pub tx: Queue,
    /// `VIRTIO_NET_F_MRG_RXBUF` was negotiated.
    pub mergeable: bool,
}

/// Counters (for tests and diagnostics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames no buffer layout of the guest could hold, or malformed from the tap.
    pub rx_dropped: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames the tap refused.
    pub tx_dropped: u64,
    /// Chains returned unused (malformed).
    pub bad_chains: u64,
}

/// Outcome of one pass over a queue.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Chains returned to the driver.
    pub used: usize,
    /// The driver wants an interrupt.
    pub notify: bool,
    /// The budget ran out with work left.
    pub more: bool,
}

/// Everything the handler works on, shared with the device (activation, reset).
pub struct NetState {
    pub tap: Tap,
    pub active: Option<ActiveNet>,
    /// Set when a fault stopped the device; cleared by reset.
    pub broken: bool,
    pub stats: NetStats,
    /// RX stopped: the guest has no (or not enough) receive buffers.
    pub rx_wait: bool,
    /// TX stopped: the tap returned `EAGAIN`.
    pub tx_wait: bool,
    /// The tap failed (interface gone): it is no longer watched.
    pub tap_failed: bool,
    rx_frame: Vec<u8>,
    /// Length of the frame in `rx_frame` still to be delivered.
    rx_pending: Option<usize>,
    tx_frame: Vec<u8>,
}

/// Number of chains available to the device on `q`.
fn pending(queue: &'static str, mem: &GuestMemoryMmap, q: &Queue) -> Result<u16, QueueFault> {
    let avail = q.avail_idx(mem, Ordering::Acquire)?;
    let next = q.next_avail();
    let pending = (avail - Wrapping(next)).0;
    if pending > q.size() {
        return Err(QueueFault::AvailIndex {
            queue,
            avail: avail.0,
            next,
        });
    }
    Ok(pending)
}

/// What became of a frame offered to the receive queue.
enum Delivery {
    /// Written; this many chains used (bad ones included).
    Done(usize),
    /// Not enough buffers yet: the chains are put back (bad ones already returned are
    /// counted in `used`); `seen` is the available index they end at.
    NeedBuffers { used: usize, seen: u16 },
    /// No layout of the guest's buffers can hold it.
    TooBig(usize),
}

impl NetState {
    pub fn new(tap: Tap) -> Self {
        NetState {
            tap,
            active: None,
            broken: false,
            stats: NetStats::default(),
            rx_wait: false,
            tx_wait: false,
            tap_failed: false,
            rx_frame: vec![0; MAX_FRAME],
            rx_pending: None,
            tx_frame: vec![0; MAX_FRAME],
        }
    }

    /// Stops using the queues; a frame read but not delivered is dropped.
    pub fn reset(&mut self) {
        self.active = None;
        self.broken = false;
        self.rx_wait = false;
        self.tx_wait = false;
        self.rx_pending = None;
    }

    /// What the event loop should wait for on the tap.
    pub fn interest(&self) -> EventSet {
        let mut set = EventSet::empty();
        if self.active.is_none() || self.tap_failed {
            return set;
        }
        if !self.rx_wait {
            set |= EventSet::IN;
        }
        if self.tx_wait {
            set |= EventSet::OUT;
        }
        set
    }

    /// Sends up to `budget` available transmit chains to the tap.
    pub fn process_tx(&mut self, budget: usize) -> Result<Pass, QueueFault> {
        let mut out = Pass::default();
        let NetState {
            tap,
            active,
            stats,
            tx_wait,
            tx_frame,
            ..
        } = self;
        let Some(a) = active.as_mut().filter(|a| a.tx.ready()) else {
            return Ok(out);
        };
        if *tx_wait {
            return Ok(out);
        }
        'drain: loop {
            a.tx.disable_notification(&a.mem)?;
            loop {
                if pending("transmit", &a.mem, &a.tx)? == 0 {
                    break;
                }
                if out.used == budget {
                    out.more = true;
                    break 'drain;
                }
                let next = a.tx.next_avail();
                let Some(chain) = a.tx.pop_descriptor_chain(&a.mem) else {
                    return Err(QueueFault::Unreadable {
                        queue: "transmit",
                        next,
                    });
                };
                let head = chain.head_index();
                match buffers::tx_buffers(chain) {
                    Ok(c) => match write_frame(tap, &a.mem, &c, tx_frame) {
                        Ok(()) => {
                            stats.tx_frames += 1;
                            stats.tx_bytes += (c.len - VNET_HDR_LEN) as u64;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            // Keep the chain; resume when the tap is writable.
                            a.tx.set_next_avail(next);
                            *tx_wait = true;
                            break 'drain;
                        }
                        Err(e) => {
                            tracing::debug!("virtio-net: tap write of {} bytes: {e}", c.len);
                            stats.tx_dropped += 1;
                        }
                    },
                    Err(e) => {
                        tracing::debug!("virtio-net: transmit chain {head}: {e}");
                        stats.bad_chains += 1;
                    }
                }
                a.tx.add_used(&a.mem, head, 0)?;
                out.used += 1;
            }
            if !a.tx.enable_notification(&a.mem)? {
                break;
            }
        }
        out.notify = out.used > 0 && wants_interrupt(&a.mem, &mut a.tx)?;
        Ok(out)
    }

    /// Delivers up to `budget` frames from the tap (reading only while the guest has buffers).
    pub fn process_rx(&mut self, budget: usize) -> Result<Pass, QueueFault> {
        let mut out = Pass::default();
        let NetState {
            tap,
            active,
            stats,
            rx_wait,
            rx_frame,
            rx_pending,
            tap_failed,
            ..
        } = self;
        let Some(a) = active.as_mut() else {
            return Ok(out);
        };
        if !a.rx.ready() || *tap_failed {
            *rx_wait = true;
            return Ok(out);
        }
        *rx_wait = false;
        let mut frames = 0;
        loop {
            if frames == budget {
                out.more = true;
                break;
            }
            if rx_pending.is_none() {
                if pending("receive", &a.mem, &a.rx)? == 0 {
                    // Ask for a kick when buffers come; they may have come meanwhile.
                    if a.rx.enable_notification(&a.mem)? {
                        continue;
                    }
                    *rx_wait = true;
                    break;
                }
                match tap.read(rx_frame) {
                    Ok(n) if !(VNET_HDR_LEN..=MAX_FRAME).contains(&n) => {
                        tracing::debug!("virtio-net: dropped a {n}-byte frame from the tap");
                        stats.rx_dropped += 1;
                        frames += 1;
                        continue;
                    }
                    Ok(n) => *rx_pending = Some(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(
                            "virtio-net: reading tap {}: {e}; not read again",
                            tap.name()
                        );
                        *tap_failed = true;
                        break;
                    }
                }
            }
            let Some(len) = *rx_pending else { break };
            match deliver(a, &mut rx_frame[..len], stats)? {
                Delivery::Done(used) => {
                    out.used += used;
                    *rx_pending = None;
                    stats.rx_frames += 1;
                    stats.rx_bytes += (len - VNET_HDR_LEN) as u64;
                    frames += 1;
                }
                Delivery::TooBig(used) => {
                    out.used += used;
                    tracing::debug!("virtio-net: a {len}-byte frame fits no receive buffers");
                    *rx_pending = None;
                    stats.rx_dropped += 1;
                    frames += 1;
                }
                Delivery::NeedBuffers { used, seen } => {
                    out.used += used;
                    // Ask for a kick at the next buffer after those seen (the chains put back
                    // are still available, so `avail_event` must point past them).
                    let restart = a.rx.next_avail();
                    a.rx.set_next_avail(seen);
                    let more = a.rx.enable_notification(&a.mem);
                    a.rx.set_next_avail(restart);
                    if more? {
                        continue;
                    }
                    *rx_wait = true;
                    break;
                }
            }
        }
        out.notify = out.used > 0 && wants_interrupt(&a.mem, &mut a.rx)?;
        Ok(out)
    }
}

/// Writes a checked transmit chain to the tap as one frame: one `writev` straight from guest
/// memory, or through `bounce` when it has more parts than a `writev` takes.
fn write_frame(
    tap: &Tap,
    mem: &GuestMemoryMmap,
    chain: &TxChain,
    bounce: &mut [u8],
) -> std::io::Result<()> {
    let mut parts = Vec::with_capacity(chain.buffers.len());
    for &(addr, len) in &chain.buffers {
        for part in GuestMemoryBackend::get_slices(mem, addr, len as usize) {
            // Checked by `tx_buffers`: guest memory does not shrink.
            parts.push(part.map_err(std::io::Error::other)?);
        }
    }
    if parts.len() <= IOV_MAX {
        tap.write_slices(&parts)?;
    } else {
        let n = buffers::gather(mem, chain, bounce);
        tap.write(&bounce[..n])?;
    }
    Ok(())
}

/// Offers the frame in `frame` (header + data) to the receive queue.
fn deliver(
    a: &mut ActiveNet,
    frame: &mut [u8],
    stats: &mut NetStats,
) -> Result<Delivery, QueueFault> {
    // Chains taken for this frame, and malformed ones seen after the first good one (returned
    // only if the frame is delivered: putting chains back re-reads them).
    let mut good: Vec<RxChain> = Vec::new();
    let mut bad: Vec<u16> = Vec::new();
    let mut returned = 0;
    let mut restart = a.rx.next_avail();
    let mut capacity = 0usize;
    while capacity < frame.len() {
        if !a.mergeable && !good.is_empty() {
            a.rx.set_next_avail(restart);
            return Ok(Delivery::TooBig(returned));
        }
        if pending("receive", &a.mem, &a.rx)? == 0 {
            let next_seen = a.rx.next_avail();
            a.rx.set_next_avail(restart);
            // The whole ring is taken and still too small: it can never hold this frame.
            let taken = good.len() + bad.len();
            if taken >= usize::from(a.rx.size()) {
                return Ok(Delivery::TooBig(returned));
            }
            return Ok(Delivery::NeedBuffers {
                used: returned,
                seen: next_seen,
            });
        }
        let next = a.rx.next_avail();
        let Some(chain) = a.rx.pop_descriptor_chain(&a.mem) else {
            return Err(QueueFault::Unreadable {
                queue: "receive",
                next,
            });
        };
        let head = chain.head_index();
        match buffers::rx_buffers(chain) {
            Ok(c) => {
                capacity += c.capacity;
                good.push(c);
            }
            Err(e) => {
                tracing::debug!("virtio-net: receive chain {head}: {e}");
                stats.bad_chains += 1;
                if good.is_empty() {
                    a.rx.add_used(&a.mem, head, 0)?;
                    returned += 1;
                    restart = a.rx.next_avail();
                } else {
                    bad.push(head);
                }
            }
        }
    }
    for head in &bad {
        a.rx.add_used(&a.mem, *head, 0)?;
    }
    let count = good.len() as u16;
    frame[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2].copy_from_slice(&count.to_le_bytes());
    let mut at = 0;
    for chain in &good {
        let n = buffers::scatter(&a.mem, chain, &frame[at..]);
        at += n;
        a.rx.add_used(&a.mem, chain.head, n as u32)?;
    }
    Ok(Delivery::Done(returned + bad.len() + good.len()))
}

/// The event-loop subscriber of one net device: the queue-notify EventFd and the tap.
pub struct NetHandler {
    state: Arc<Mutex<NetState>>,
    notify: EventFd,
    interrupt: Arc<VirtioInterrupt>,
    tap_fd: RawFd,
    /// What the tap is registered for (empty: not registered).
    watching: EventSet,
}

impl NetHandler {
    pub fn new(
        state: Arc<Mutex<NetState>>,
        notify: EventFd,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Self {
        let tap_fd = state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tap
            .as_raw_fd();
        NetHandler {
            state,
            notify,
            interrupt,
            tap_fd,
            watching: EventSet::empty(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One turn: TX, then RX; signals the guest; returns what to watch on the tap.
    pub fn run(&self) -> EventSet {
        let mut state = self.lock();
        let result = state.process_tx(TX_BUDGET).and_then(|tx| {
            let rx = state.process_rx(RX_BUDGET)?;
            Ok((tx, rx))
        });
        match result {
            Ok((tx, rx)) => {
                // Queue 0 is receive, queue 1 transmit.
                let queues = u32::from(rx.notify) | (u32::from(tx.notify) << 1);
                if queues != 0 {
                    self.interrupt.signal_used(queues);
                }
                if tx.more {
                    let _ = self.notify.write(1);
                }
            }
            Err(fault) => {
                tracing::warn!("virtio-net: {fault}; the device needs a reset");
                state.active = None;
                state.broken = true;
                self.interrupt.signal_config();
            }
        }
        state.interest()
    }

    fn watch(&mut self, want: EventSet, ops: &mut EventOps) {
        if want == self.watching {
            return;
        }
        let result = if self.watching.is_empty() {
            ops.add(Events::new_raw(self.tap_fd, want))
        } else if want.is_empty() {
            ops.remove(Events::empty_raw(self.tap_fd))
        } else {
            ops.modify(Events::new_raw(self.tap_fd, want))
        };
        match result {
            Ok(()) => self.watching = want,
            Err(e) => tracing::error!("virtio-net: watching the tap: {e}"),
        }
    }
}

impl MutEventSubscriber for NetHandler {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.notify, EventSet::IN)) {
            tracing::error!("virtio-net: watching the notify EventFd: {e}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.notify.as_raw_fd() {
            let _ = self.notify.read();
        } else if events.fd() == self.tap_fd && events.event_set().contains(EventSet::OUT) {
            self.lock().tx_wait = false;
        }
        let want = self.run();
        self.watch(want, ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{GuestRing, W};
    use std::os::unix::net::UnixDatagram;
    use vm_memory::{Bytes, GuestAddress};

    const SIZE: u16 = 16;
    /// (descriptor table, available ring, used ring) of the receive and transmit queues.
    const RXQ: (u64, u64, u64) = (0x0, 0x1000, 0x2000);
    const TXQ: (u64, u64, u64) = (0x4000, 0x5000, 0x6000);

    /// A driver with its own ring layout, and the far end of the stand-in tap.
    struct Rig {
        mem: GuestMemoryMmap,
        state: NetState,
        peer: UnixDatagram,
        /// A second descriptor for the device's end of the stand-in tap (to fill its queue).
        ours: UnixDatagram,
        /// Indexed by queue ([`RX_Q`], [`TX_Q`]).
        rings: [GuestRing; 2],
    }

    impl Rig {
        fn new(mergeable: bool) -> Self {
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
            let (ours, peer) = UnixDatagram::pair().unwrap();
            ours.set_nonblocking(true).unwrap();
            peer.set_nonblocking(true).unwrap();
            let ours_too = ours.try_clone().unwrap();
            let mut state = NetState::new(Tap::stand_in(ours.into()));
            let rings: [GuestRing; 2] =
                std::array::from_fn(|queue| GuestRing::new(&mem, SIZE, Self::layout(queue)));
            state.active = Some(ActiveNet {
                mem: mem.clone(),
                rx: rings[RX_Q].regs().build(&mem, false).unwrap(),
                tx: rings[TX_Q].regs().build(&mem, false).unwrap(),
                mergeable,
            });
            Rig {
                mem,
                state,
                peer,
                ours: ours_too,
                rings,
            }
        }

        fn layout(queue: usize) -> (u64, u64, u64) {
            if queue == RX_Q { RXQ } else { TXQ }
        }

        /// Queues one chain of (addr, len, flags) on `queue`; returns its head.
        fn push(&mut self, queue: usize, descs: &[(u64, u32, u16)]) -> u16 {
            self.rings[queue].push(descs)
        }

        /// Used entries (head, len) added since the last call.
        fn used(&mut self, queue: usize) -> Vec<(u32, u32)> {
            self.rings[queue].used()
        }

        fn bytes(&self, at: u64, len: usize) -> Vec<u8> {
            let mut v = vec![0u8; len];
            self.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
            v
        }

        fn frame_from_peer(&self, bytes: &[u8]) {
            self.peer.send(bytes).unwrap();
        }

        fn frame_at_peer(&self) -> Option<Vec<u8>> {
            let mut buf = vec![0u8; MAX_FRAME];
            match self.peer.recv(&mut buf) {
                Ok(n) => Some(buf[..n].to_vec()),
                Err(_) => None,
            }
        }
    }

    const RX_Q: usize = super::super::RX_QUEUE;
    const TX_Q: usize = super::super::TX_QUEUE;

    /// A frame: a header with `num_buffers` 0 and `len` data bytes.
    fn frame(len: usize, seed: u8) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f[0] = 1; // NEEDS_CSUM, passed through untouched
        f.extend((0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed));
        f
    }

    #[test]
    fn a_transmit_chain_becomes_one_tap_frame() {
        let mut rig = Rig::new(true);
        let f = frame(1000, 3);
        rig.mem
            .write_slice(&f[..12], GuestAddress(0x10000))
            .unwrap();
        rig.mem
            .write_slice(&f[12..500], GuestAddress(0x20000))
            .unwrap();
        rig.mem
            .write_slice(&f[500..], GuestAddress(0x30000))
            .unwrap();
        let head = rig.push(
            TX_Q,
            &[(0x10000, 12, 0), (0x20000, 488, 0), (0x30000, 512, 0)],
        );
        let pass = rig.state.process_tx(TX_BUDGET).unwrap();
        assert_eq!((pass.used, pass.notify, pass.more), (1, true, false));
        assert_eq!(rig.frame_at_peer().unwrap(), f);
        assert_eq!(rig.used(TX_Q), [(u32::from(head), 0)]);
        assert_eq!(
            (rig.state.stats.tx_frames, rig.state.stats.tx_bytes),
            (1, 1000)
        );
    }

    #[test]
    fn malformed_transmit_chains_come_back_empty_and_send_nothing() {
        let mut rig = Rig::new(true);
        rig.push(TX_Q, &[(0x10000, 0, 0)]); // zero length
        rig.push(TX_Q, &[(0x10000, 12, 0), (0x20000, 100, W)]); // write-only descriptor
        rig.push(TX_Q, &[(0x10000, 12, 0), (0xffff_f000, 100, 0)]); // outside memory
        rig.push(TX_Q, &[(u64::MAX - 10, 100, 0)]); // wraps the address space
        rig.push(TX_Q, &[(0x10000, 8, 0)]); // shorter than the header
        rig.push(TX_Q, &[(0x10000, u32::MAX, 0)]); // longer than any frame
        let pass = rig.state.process_tx(TX_BUDGET).unwrap();
        assert_eq!(pass.used, 6);
        assert!(rig.used(TX_Q).iter().all(|&(_, len)| len == 0));
        assert_eq!(rig.state.stats.bad_chains, 6);
        assert_eq!(rig.frame_at_peer(), None);
    }

    #[test]
    fn transmit_budget_leaves_the_rest() {
        let mut rig = Rig::new(true);
        rig.mem
            .write_slice(&frame(60, 1), GuestAddress(0x10000))
            .unwrap();
        for _ in 0..5 {
            rig.push(TX_Q, &[(0x10000, 72, 0)]);
        }
        let pass = rig.state.process_tx(3).unwrap();
        assert_eq!((pass.used, pass.more), (3, true));
        let pass = rig.state.process_tx(3).unwrap();
        assert_eq!((pass.used, pass.more), (2, false));
        assert_eq!(rig.state.stats.tx_frames, 5);
    }

    #[test]
    fn a_full_tap_keeps_the_chains_until_it_is_writable() {
        let mut rig = Rig::new(true);
        // Fill the tap's queue (the peer reads nothing yet).
        let filler = [0u8; 64];
        let mut queued = 0;
        while rig.ours.send(&filler).is_ok() {
            queued += 1;
        }
        rig.mem
            .write_slice(&frame(100, 9), GuestAddress(0x10000))
            .unwrap();
        let heads: Vec<u16> = (0..3)
            .map(|_| rig.push(TX_Q, &[(0x10000, 112, 0)]))
            .collect();
        let pass = rig.state.process_tx(TX_BUDGET).unwrap();
        assert_eq!(
            (pass.used, pass.notify),
            (0, false),
            "nothing sent, nothing used"
        );
        assert!(rig.state.tx_wait);
        assert!(
            rig.state.interest().contains(EventSet::OUT),
            "waits for EPOLLOUT"
        );
        assert!(rig.used(TX_Q).is_empty());
        // Still waiting: another pass does not retry the write.
        assert_eq!(rig.state.process_tx(TX_BUDGET).unwrap().used, 0);
        // The peer drains the queue; the handler sees EPOLLOUT and sends all three.
        for _ in 0..queued {
            assert_eq!(rig.frame_at_peer().map(|f| f.len()), Some(64));
        }
        rig.state.tx_wait = false;
        let pass = rig.state.process_tx(TX_BUDGET).unwrap();
        assert_eq!(pass.used, 3);
        assert!(!rig.state.interest().contains(EventSet::OUT));
        let want: Vec<(u32, u32)> = heads.iter().map(|h| (u32::from(*h), 0)).collect();
        assert_eq!(rig.used(TX_Q), want);
        for _ in 0..3 {
            assert_eq!(rig.frame_at_peer().unwrap(), frame(100, 9));
        }
        assert_eq!(
            (rig.state.stats.tx_frames, rig.state.stats.tx_dropped),
            (3, 0)
        );
    }

    #[test]
    fn a_frame_spans_mergeable_buffers_with_num_buffers() {
        let mut rig = Rig::new(true);
        let heads: Vec<u16> = (0..3)
            .map(|i| rig.push(RX_Q, &[(0x40000 + i * 0x1000, 1000, W)]))
            .collect();
        rig.push(RX_Q, &[(0x48000, 1000, W)]); // one left over
        let f = frame(2488, 9); // 2500 bytes with the header
        rig.frame_from_peer(&f);
        let pass = rig.state.process_rx(RX_BUDGET).unwrap();
        assert_eq!((pass.used, pass.notify), (3, true));
        let used = rig.used(RX_Q);
        assert_eq!(
            used,
            [
                (u32::from(heads[0]), 1000),
                (u32::from(heads[1]), 1000),
                (u32::from(heads[2]), 500)
            ]
        );
        let mut got = rig.bytes(0x40000, 1000);
        got.extend(rig.bytes(0x41000, 1000));
        got.extend(rig.bytes(0x42000, 500));
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
        let mut want = f.clone();
        want[10..12].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(got, want);
        assert_eq!(
            (rig.state.stats.rx_frames, rig.state.stats.rx_bytes),
            (1, 2488)
        );
        // Nothing more to read: RX waits on the tap, not on the guest.
        assert!(!rig.state.rx_wait);
        assert!(rig.state.interest().contains(EventSet::IN));
    }

    /// A chain with more parts than one `writev` takes goes through the bounce buffer, whole.
    #[test]
    fn a_frame_in_more_parts_than_writev_takes_is_gathered() {
        let rig = Rig::new(true);
        let f = frame(1200, 7);
        for (i, b) in f.iter().enumerate() {
            rig.mem
                .write_obj(*b, GuestAddress(0x40000 + 2 * i as u64))
                .unwrap();
        }
        let chain = TxChain {
            buffers: (0..f.len() as u64)
                .map(|i| (GuestAddress(0x40000 + 2 * i), 1))
                .collect(),
            len: f.len(),
        };
        assert!(chain.buffers.len() > IOV_MAX);
        let mut bounce = vec![0; MAX_FRAME];
        write_frame(&rig.state.tap, &rig.mem, &chain, &mut bounce).unwrap();
        assert_eq!(rig.frame_at_peer().unwrap(), f);
    }

    #[test]
    fn without_buffers_the_tap_is_not_read_until_the_guest_posts_some() {
        let mut rig = Rig::new(true);
        rig.frame_from_peer(&frame(100, 1));
        let pass = rig.state.process_rx(RX_BUDGET).unwrap();
        assert_eq!(pass.used, 0);
        assert!(rig.state.rx_wait);
        assert!(
            !rig.state.interest().contains(EventSet::IN),
            "tap not watched"
        );
        // The frame stayed queued on the tap side (never read).
        assert_eq!(rig.state.rx_pending, None);
        // The guest posts buffers and kicks: delivered, and the tap is watched again.
        rig.push(RX_Q, &[(0x40000, 2048, W)]);
        rig.push(RX_Q, &[(0x41000, 2048, W)]);
        let pass = rig.state.process_rx(RX_BUDGET).unwrap();
        assert_eq!(pass.used, 1);
        assert!(!rig.state.rx_wait);
        assert!(rig.state.interest().contains(EventSet::IN));
        assert_eq!(rig.used(RX_Q)[0].1, 112);
        // The last buffer taken: the tap is not read again before the guest posts more.
        rig.frame_from_peer(&frame(100, 2));
        rig.frame_from_peer(&frame(100, 3));
        let pass = rig.state.process_rx(RX_BUDGET).unwrap();
        assert_eq!(pass.used, 1);
        assert!(rig.state.rx_wait);
        assert_eq!(rig.state.rx_pending, None);
    }

    #[test]
    fn too_few_mergeable_buffers_keep_the_frame_and_the_chains() {
        let mut rig = Rig::new(true);
        rig.push(RX_Q, &[(0x40000, 100, W)]);
        let f = frame(488, 5);
        rig.frame_from_peer(&f);
        let pass = rig.state.process_rx(RX_BUDGET).unwrap();
        assert_eq!(pass.used, 0);
        assert!(rig.state.rx_wait);
        assert!(rig.used(RX_Q).is_empty(), "the chain was put back");
        rig.push(RX_Q, &[(0x41000, 400, W)]);
        let pass = rig.state.process_rx(RX_BUDGET).unwrap();
        assert_eq!(pass.used, 2);
        let used = rig.used(RX_Q);
        assert_eq!((used[0].1, used[1].1), (100, 400));
        let mut got = rig.bytes(0x40000, 100);
        got.extend(rig.bytes(0x41000, 400));
        assert_eq!(got[12..], f[12..]);
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 2);
    }

    #[test]
    fn a_frame_bigger_than_one_chain_is_dropped_without_mergeable_buffers() {
        let mut rig = Rig::new(false);
        let head = rig.push(RX_Q, &[(0x40000, 100, W), (0x40100, 100, W)]);
        rig.frame_from_peer(&frame(500, 1));
        rig.frame_from_peer(&frame(150, 2));
        let pass = rig.state.process_rx(RX_BUDGET).unwrap();
        assert_eq!(rig.state.stats.rx_dropped, 1);
        assert_eq!(pass.used, 1);
        assert_eq!(rig.used(RX_Q), [(u32::from(head), 162)]);
        assert_eq!(rig.bytes(0x40000 + 12, 88), frame(150, 2)[12..100]);
        assert_eq!(
            u16::from_le_bytes([rig.bytes(0x4000a, 2)[0], rig.bytes(0x4000b, 1)[0]]),
            1
        );
    }

    #[test]
    fn a_frame_bigger_than_the_whole_ring_is_dropped() {
        let mut rig = Rig::new(true);
        for i in 0..u64::from(SIZE) {
            rig.push(RX_Q, &[(0x40000 + i * 0x100, 16, W)]);
        }
        rig.frame_from_peer(&frame(1000, 1));
        rig.frame_from_peer(&frame(20, 2));
        rig.state.process_rx(RX_BUDGET).unwrap();
        assert_eq!(rig.state.stats.rx_dropped, 1);
        assert_eq!(rig.state.stats.rx_frames, 1);
        let used = rig.used(RX_Q);
        assert_eq!(used.iter().map(|u| u.1).collect::<Vec<_>>(), [16, 16]);
    }

    #[test]
    fn malformed_receive_chains_come_back_empty() {
        let mut rig = Rig::new(true);
        let a = rig.push(RX_Q, &[(0x40000, 100, 0)]); // device-readable
        let b = rig.push(RX_Q, &[(0xffff_0000, 100, W)]); // outside memory
        let c = rig.push(RX_Q, &[(0x40000, 0, W)]); // no room
        let good = rig.push(RX_Q, &[(0x41000, 2048, W)]);
        rig.frame_from_peer(&frame(64, 4));
        rig.state.process_rx(RX_BUDGET).unwrap();
        let used = rig.used(RX_Q);
        assert_eq!(
            used,
            [
                (u32::from(a), 0),
                (u32::from(b), 0),
                (u32::from(c), 0),
                (u32::from(good), 76)
            ]
        );
        assert_eq!(rig.state.stats.bad_chains, 3);
    }

    #[test]
    fn a_runaway_available_index_is_a_fault() {
        let mut rig = Rig::new(true);
        rig.mem.write_obj(1000u16, GuestAddress(TXQ.1 + 2)).unwrap();
        assert!(matches!(
            rig.state.process_tx(TX_BUDGET),
            Err(QueueFault::AvailIndex { .. })
        ));
        rig.mem.write_obj(1000u16, GuestAddress(RXQ.1 + 2)).unwrap();
        rig.frame_from_peer(&frame(10, 0));
        assert!(rig.state.process_rx(RX_BUDGET).is_err());
    }

    #[test]
    fn an_inactive_device_watches_nothing_and_moves_nothing() {
        let mut rig = Rig::new(true);
        rig.state.reset();
        rig.frame_from_peer(&frame(10, 0));
        assert_eq!(rig.state.process_rx(RX_BUDGET).unwrap(), Pass::default());
        assert_eq!(rig.state.process_tx(TX_BUDGET).unwrap(), Pass::default());
        assert!(rig.state.interest().is_empty());
    }

    /// The subscriber on a real event manager: with no receive buffers the tap is not watched
    /// (a queued frame wakes nothing: no busy poll); a kick with buffers delivers it and
    /// interrupts the guest.
    #[test]
    fn the_handler_watches_the_tap_only_while_the_guest_has_buffers() {
        use crate::event_loop::Subscriber;
        use event_manager::{EventManager, SubscriberOps};
        let mut rig = Rig::new(true);
        let (spare, _) = UnixDatagram::pair().unwrap();
        let state = std::mem::replace(&mut rig.state, NetState::new(Tap::stand_in(spare.into())));
        let state = Arc::new(Mutex::new(state));
        let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(VirtioInterrupt::new().unwrap());
        let handler = NetHandler::new(
            state.clone(),
            notify.try_clone().unwrap(),
            interrupt.clone(),
        );
        let mut manager: EventManager<Subscriber> = EventManager::new().unwrap();
        manager.add_subscriber(Arc::new(Mutex::new(handler)));

        rig.frame_from_peer(&frame(100, 1));
        notify.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(100).unwrap(), 1, "the kick");
        assert!(state.lock().unwrap().rx_wait);
        // The frame is still queued, yet nothing wakes the loop.
        assert_eq!(
            manager.run_with_timeout(100).unwrap(),
            0,
            "the tap is not watched"
        );

        rig.push(RX_Q, &[(0x40000, 2048, W)]);
        rig.push(RX_Q, &[(0x41000, 2048, W)]);
        notify.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(100).unwrap(), 1);
        assert_eq!(rig.used(RX_Q).len(), 1);
        assert_eq!(interrupt.irq_fd().read().unwrap(), 1);
        // Buffers left: the tap is watched now, and a new frame is delivered on its own.
        rig.frame_from_peer(&frame(50, 2));
        assert_eq!(manager.run_with_timeout(100).unwrap(), 1, "the tap");
        assert_eq!(rig.used(RX_Q).len(), 1);
        assert_eq!(state.lock().unwrap().stats.rx_frames, 2);
        // A reset: the next tap event unregisters it, then nothing more wakes the loop.
        state.lock().unwrap().reset();
        rig.frame_from_peer(&frame(50, 3));
        assert!(manager.run_with_timeout(100).unwrap() <= 1);
        rig.frame_from_peer(&frame(50, 4));
        assert_eq!(manager.run_with_timeout(100).unwrap(), 0);
    }
}
