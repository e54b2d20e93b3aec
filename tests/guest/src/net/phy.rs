//! smoltcp's [`Device`] over [`Nic`]: zero-copy both ways. A receive token lends the frame in
//! its receive slot and re-posts the slot when smoltcp is done; a transmit token lends a free
//! transmit slot for smoltcp to write the frame into. The tokens share the `Nic` through a
//! `RefCell` and never hold the borrow while smoltcp runs (it may transmit while it handles a
//! received frame).

use core::cell::RefCell;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::virtio_net::{MAX_FRAME, Nic, TX_BUFS};

pub struct Phy<'a> {
    pub nic: &'a RefCell<Nic>,
}

pub struct Rx<'a> {
    nic: &'a RefCell<Nic>,
    id: u16,
    len: usize,
}

pub struct Tx<'a> {
    nic: &'a RefCell<Nic>,
}

/// Where a frame goes if no transmit slot is free after all (it is dropped; TCP resends).
static mut SCRATCH: [u8; MAX_FRAME] = [0; MAX_FRAME];

impl Device for Phy<'_> {
    type RxToken<'a>
        = Rx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'a>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let mut nic = self.nic.borrow_mut();
        // Only take a frame when its answer can be sent, so the stack never drops one of ours.
        if !nic.tx_available() {
            return None;
        }
        let (id, len) = nic.recv()?;
        Some((
            Rx {
                nic: self.nic,
                id,
                len,
            },
            Tx { nic: self.nic },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        self.nic
            .borrow_mut()
            .tx_available()
            .then_some(Tx { nic: self.nic })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(TX_BUFS);
        caps
    }
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(Nic::rx_frame(self.id, self.len));
        self.nic.borrow_mut().repost(self.id);
        r
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let slot = self.nic.borrow_mut().tx_alloc();
        match slot {
            Some(id) if len <= MAX_FRAME => {
                let r = f(Nic::tx_frame(id, len));
                self.nic.borrow_mut().send(id, len);
                r
            }
            other => {
                if let Some(id) = other {
                    self.nic.borrow_mut().release(id);
                }
                // SAFETY: only the boot CPU runs the stack, one token at a time.
                let scratch = unsafe { &mut *(&raw mut SCRATCH) };
                f(&mut scratch[..len.min(MAX_FRAME)])
            }
        }
    }
}
