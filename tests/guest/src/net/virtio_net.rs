//! virtio-net on top of [`crate::virtio`]: receive queue 0 and transmit queue 1, features
//! VERSION_1 and MAC only (so every buffer starts with the 12-byte `virtio_net_hdr_v1`, all zero
//! on transmit, and a frame never spans buffers).
//!
//! Buffers are static 2 KiB slots; descriptor `i` of a queue always points at slot `i`, so no
//! free list of descriptors is needed. All receive slots stay posted: a slot consumed by the
//! stack is re-posted at once. Transmit slots come from a small free stack refilled from the
//! used ring when the free stack is empty; the transmit queue does not interrupt (its
//! completions are not worth a wake-up) except while the loop halts for a free slot. Notifications are batched: [`Nic::flush`] kicks each
//! queue that got buffers.

use crate::virtio::{self, DESC_F_WRITE, Device, ID_NET};

/// Feature bit VIRTIO_NET_F_MAC: the MAC address is in config space bytes 0..6.
pub const F_MAC: u64 = 1 << 5;
/// `virtio_net_hdr_v1` (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers).
pub const HDR_LEN: usize = 12;
/// One buffer: header + the largest Ethernet frame (1514) fits.
const BUF_SIZE: usize = 2048;
const RX_BUFS: usize = 64;
pub const TX_BUFS: usize = 32;
const RXQ: usize = 0;
const TXQ: usize = 1;
/// Largest frame handed to or taken from the stack.
pub const MAX_FRAME: usize = 1514;

#[repr(C, align(4096))]
struct Bufs<const N: usize>([[u8; BUF_SIZE]; N]);

static mut RX: Bufs<RX_BUFS> = Bufs([[0; BUF_SIZE]; RX_BUFS]);
static mut TX: Bufs<TX_BUFS> = Bufs([[0; BUF_SIZE]; TX_BUFS]);

fn rx_slot(i: u16) -> *mut u8 {
    // SAFETY: in-bounds element pointer of a static array (callers pass i < RX_BUFS).
    unsafe { (&raw mut RX).cast::<u8>().add(usize::from(i) * BUF_SIZE) }
}

fn tx_slot(i: u16) -> *mut u8 {
    // SAFETY: in-bounds element pointer of a static array (callers pass i < TX_BUFS).
    unsafe { (&raw mut TX).cast::<u8>().add(usize::from(i) * BUF_SIZE) }
}

/// The network device and its buffer bookkeeping.
pub struct Nic {
    index: usize,
    pub mac: [u8; 6],
    tx_free: [u16; TX_BUFS],
    tx_free_n: usize,
    kick_rx: bool,
    kick_tx: bool,
}

/// Whether a virtio-net device started.
pub fn present() -> bool {
    virtio::devices()
        .iter()
        .any(|d| d.is_some_and(|d| d.device_id == ID_NET))
}

impl Nic {
    /// The first virtio-net device that started, with every receive buffer posted.
    pub fn find() -> Option<Nic> {
        let index = virtio::devices()
            .iter()
            .position(|d| d.is_some_and(|d| d.device_id == ID_NET))?;
        let mut nic = Nic {
            index,
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            tx_free: [0; TX_BUFS],
            tx_free_n: 0,
            kick_rx: false,
            kick_tx: false,
        };
        let d = nic.dev();
        if d.driver_features & F_MAC != 0 {
            virtio::config_bytes(d, 0, &mut nic.mac);
        }
        let rx = usize::from(d.queues[RXQ].size).min(RX_BUFS) as u16;
        let tx = usize::from(d.queues[TXQ].size).min(TX_BUFS) as u16;
        if rx == 0 || tx == 0 {
            return None;
        }
        for i in 0..rx {
            nic.post_rx(i);
        }
        // Sent buffers are reaped when a slot is needed: no wake-up per transmit completion.
        virtio::suppress_interrupts_q(nic.dev(), TXQ, true);
        for i in (0..tx).rev() {
            nic.tx_free[nic.tx_free_n] = i;
            nic.tx_free_n += 1;
        }
        nic.flush();
        Some(nic)
    }

    /// Discovery index of the device (`dev=` in the console lines).
    pub fn index(&self) -> usize {
        self.index
    }

    fn dev(&self) -> &'static mut Device {
        // `find` checked that the slot holds a device; devices are never removed.
        virtio::devices()[self.index]
            .as_mut()
            .expect("virtio-net device")
    }

    fn post_rx(&mut self, i: u16) {
        let d = self.dev();
        virtio::set_desc_q(
            d,
            RXQ,
            i,
            rx_slot(i) as u64,
            BUF_SIZE as u32,
            DESC_F_WRITE,
            0,
        );
        virtio::push_avail_q(d, RXQ, i);
        self.kick_rx = true;
    }

    /// Whether a received frame is waiting.
    pub fn rx_pending(&self) -> bool {
        virtio::has_used_q(self.dev(), RXQ)
    }

    /// The next received frame: (slot, frame length without the header).
    pub fn recv(&mut self) -> Option<(u16, usize)> {
        loop {
            let (id, len) = virtio::pop_used_q(self.dev(), RXQ)?;
            let len = len as usize;
            if usize::from(id) < RX_BUFS && (HDR_LEN..=BUF_SIZE).contains(&len) {
                return Some((id, len - HDR_LEN));
            }
            if usize::from(id) < RX_BUFS {
                self.post_rx(id); // a runt: give the slot straight back
            }
        }
    }

    /// The frame in receive slot `id` (valid until [`Nic::repost`]).
    pub fn rx_frame(id: u16, len: usize) -> &'static [u8] {
        // SAFETY: slot `id` was returned by the device and is not posted again until `repost`;
        // `len` <= BUF_SIZE - HDR_LEN was checked by `recv`.
        unsafe { core::slice::from_raw_parts(rx_slot(id).add(HDR_LEN), len) }
    }

    /// Gives receive slot `id` back to the device.
    pub fn repost(&mut self, id: u16) {
        self.post_rx(id);
    }

    /// Returns the slots the device finished sending to the free stack.
    pub fn reclaim_tx(&mut self) {
        while let Some((id, _)) = virtio::pop_used_q(self.dev(), TXQ) {
            if usize::from(id) < TX_BUFS && self.tx_free_n < TX_BUFS {
                self.tx_free[self.tx_free_n] = id;
                self.tx_free_n += 1;
            }
        }
    }

    /// Whether every transmit slot is with the device (after reclaiming).
    pub fn tx_stalled(&mut self) -> bool {
        !self.tx_available()
    }

    /// Lets transmit completions interrupt (while the loop halts waiting for a free slot) or not.
    /// Returns whether a completion is already waiting (then do not halt).
    pub fn tx_interrupts(&mut self, on: bool) -> bool {
        let d = self.dev();
        virtio::suppress_interrupts_q(d, TXQ, !on);
        virtio::has_used_q(d, TXQ)
    }

    /// Whether a transmit slot is free (after reclaiming).
    pub fn tx_available(&mut self) -> bool {
        if self.tx_free_n == 0 {
            self.reclaim_tx();
        }
        self.tx_free_n > 0
    }

    /// Takes a free transmit slot.
    pub fn tx_alloc(&mut self) -> Option<u16> {
        if !self.tx_available() {
            return None;
        }
        self.tx_free_n -= 1;
        Some(self.tx_free[self.tx_free_n])
    }

    /// Returns an unused transmit slot.
    pub fn release(&mut self, id: u16) {
        if self.tx_free_n < TX_BUFS {
            self.tx_free[self.tx_free_n] = id;
            self.tx_free_n += 1;
        }
    }

    /// The frame area of transmit slot `id` (owned by the caller between `tx_alloc` and `send`).
    pub fn tx_frame(id: u16, len: usize) -> &'static mut [u8] {
        // SAFETY: slot `id` came from `tx_alloc`, so the device does not read it and nobody else
        // holds it; len <= MAX_FRAME < BUF_SIZE - HDR_LEN (callers clamp).
        unsafe { core::slice::from_raw_parts_mut(tx_slot(id).add(HDR_LEN), len.min(MAX_FRAME)) }
    }

    /// Queues transmit slot `id` holding a `len`-byte frame (a zero header in front).
    pub fn send(&mut self, id: u16, len: usize) {
        // SAFETY: the header bytes of our own slot.
        unsafe { core::ptr::write_bytes(tx_slot(id), 0, HDR_LEN) };
        let d = self.dev();
        let len = (HDR_LEN + len.min(MAX_FRAME)) as u32;
        virtio::set_desc_q(d, TXQ, id, tx_slot(id) as u64, len, 0, 0);
        virtio::push_avail_q(d, TXQ, id);
        self.kick_tx = true;
    }

    /// Notifies the device of the buffers queued since the last flush.
    pub fn flush(&mut self) {
        let d = self.dev();
        if self.kick_rx {
            virtio::notify_q(d, RXQ);
            self.kick_rx = false;
        }
        if self.kick_tx {
            virtio::notify_q(d, TXQ);
            self.kick_tx = false;
        }
    }
}
