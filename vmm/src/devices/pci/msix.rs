//! MSI-X (PCI 3.0 §6.8.2) of one function: the vector table and pending-bit array the guest sees
//! in a BAR, the enable / function-mask bits of the capability, and delivery. Each vector has an
//! irqfd on its own GSI, routed by [`MsiRoutes`] to the message the guest wrote; a signal on a
//! masked vector (or under the function mask) sets its pending bit instead and is delivered when
//! the mask goes.
//!
//! Signals arrive from the device threads ([`MsixVectors::trigger`]); table and capability
//! accesses from the vCPU threads. One mutex covers both.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use vmm_sys_util::eventfd::EventFd;

use super::msi::{MsiMessage, MsiRoutes};

/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Vector control bit: masked.
const MASKED: u32 = 1;

#[derive(Clone, Copy, Debug)]
struct Entry {
    msg: MsiMessage,
    control: u32,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            msg: MsiMessage::default(),
            control: MASKED,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    enabled: bool,
    function_mask: bool,
    /// Weak: the table belongs to its boot's VM (the builder's `Vm`), and must not keep that VM
    /// alive past its boot (a reboot creates a new VM whose irqfds would then be refused).
    routes: Option<(Weak<MsiRoutes>, u32)>,
}

/// The MSI-X vectors of one function.
#[derive(Debug)]
pub struct MsixVectors {
    irqfds: Vec<EventFd>,
    state: Mutex<State>,
}

impl MsixVectors {
    /// `count` vectors, all masked, MSI-X disabled.
    pub fn new(count: u16) -> io::Result<Self> {
        let irqfds = (0..count)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        let n = usize::from(count);
        Ok(MsixVectors {
            irqfds,
            state: Mutex::new(State {
                entries: vec![Entry::default(); n],
                pending: vec![false; n],
                ..Default::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of vectors (table size).
    pub fn len(&self) -> usize {
        self.irqfds.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.irqfds.is_empty()
    }

    /// Vector `v`'s irqfd.
    pub fn irq_fd(&self, v: usize) -> Option<&EventFd> {
        self.irqfds.get(v)
    }

    /// A new boot: everything masked and disabled; vectors route through `routes` from its GSI.
    pub fn attach(&self, routes: Option<(Arc<MsiRoutes>, u32)>) {
        let mut s = self.lock();
        let n = s.entries.len();
        s.entries = vec![Entry::default(); n];
        s.pending = vec![false; n];
        s.enabled = false;
        s.function_mask = false;
        s.routes = routes.map(|(r, gsi)| (Arc::downgrade(&r), gsi));
    }

    /// Signals vector `v` (NO_VECTOR and out-of-range vectors are dropped).
    pub fn trigger(&self, v: u16) {
        let v = usize::from(v);
        let mut s = self.lock();
        if v >= s.entries.len() || !s.enabled {
            return;
        }
        if s.function_mask || s.entries[v].control & MASKED != 0 {
            s.pending[v] = true;
            return;
        }
        self.fire(v);
    }

    fn fire(&self, v: usize) {
        if let Err(e) = self.irqfds[v].write(1) {
            tracing::warn!("MSI-X vector {v}: {e}");
        }
    }

    /// Delivers pending vectors that are no longer masked.
    fn flush(&self, s: &mut State) {
        if !s.enabled || s.function_mask {
            return;
        }
        for v in 0..s.entries.len() {
            if s.pending[v] && s.entries[v].control & MASKED == 0 {
                s.pending[v] = false;
                self.fire(v);
            }
        }
    }

    /// Message control bits 15 (enable) and 14 (function mask).
    pub fn control(&self) -> u16 {
        let s = self.lock();
        (u16::from(s.enabled) << 15) | (u16::from(s.function_mask) << 14)
    }

    /// A write of message control.
    pub fn set_control(&self, value: u16) {
        let mut s = self.lock();
        s.enabled = value & (1 << 15) != 0;
        s.function_mask = value & (1 << 14) != 0;
        self.flush(&mut s);
    }

    /// Reads the vector table at `offset` (4- or 8-byte accesses; others read as 0).
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        let s = self.lock();
        data.fill(0);
        let dword = |off: u64| -> u32 {
            let Some(e) = s.entries.get((off / ENTRY_SIZE) as usize) else {
                return 0;
            };
            match off % ENTRY_SIZE {
                0 => e.msg.addr_lo,
                4 => e.msg.addr_hi,
                8 => e.msg.data,
                _ => e.control,
            }
        };
        match data.len() {
            4 if offset % 4 == 0 => data.copy_from_slice(&dword(offset).to_le_bytes()),
            8 if offset % 8 == 0 => {
                let v = u64::from(dword(offset)) | (u64::from(dword(offset + 4)) << 32);
                data.copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }

    /// Writes the vector table at `offset`; a changed message is routed, an unmask delivers
    /// what was pending.
    pub fn write_table(&self, offset: u64, data: &[u8]) {
        let dwords: Vec<(u64, u32)> = match data.len() {
            4 if offset % 4 == 0 => vec![(
                offset,
                u32::from_le_bytes(data.try_into().unwrap_or_default()),
            )],
            8 if offset % 8 == 0 => {
                let v = u64::from_le_bytes(data.try_into().unwrap_or_default());
                vec![(offset, v as u32), (offset + 4, (v >> 32) as u32)]
            }
            _ => return,
        };
        let mut s = self.lock();
        for (off, value) in dwords {
            let v = (off / ENTRY_SIZE) as usize;
            let Some(e) = s.entries.get_mut(v) else {
                continue;
            };
            let before = e.msg;
            match off % ENTRY_SIZE {
                0 => e.msg.addr_lo = value,
                4 => e.msg.addr_hi = value,
                8 => e.msg.data = value,
                _ => e.control = value & MASKED,
            }
            let msg = e.msg;
            if msg != before {
                Self::route(&s, v, msg);
            }
        }
        self.flush(&mut s);
    }

    fn route(s: &State, v: usize, msg: MsiMessage) {
        if let Some((routes, first)) = s
            .routes
            .as_ref()
            .and_then(|(r, f)| Some((r.upgrade()?, *f)))
        {
            if let Err(e) = routes.set(first + v as u32, msg) {
                tracing::warn!("MSI-X vector {v}: {e}");
            }
        }
    }

    /// Reads the pending-bit array at `offset`.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        let s = self.lock();
        for (i, b) in data.iter_mut().enumerate() {
            let byte = offset as usize + i;
            *b = (0..8).fold(0u8, |acc, bit| {
                let v = byte * 8 + bit;
                acc | (u8::from(s.pending.get(v).copied().unwrap_or(false)) << bit)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w32(m: &MsixVectors, off: u64, v: u32) {
        m.write_table(off, &v.to_le_bytes());
    }

    #[test]
    fn masked_vectors_pend_and_fire_on_unmask() {
        let m = MsixVectors::new(3).unwrap();
        m.trigger(1);
        assert!(m.irq_fd(1).unwrap().read().is_err(), "disabled: dropped");
        m.set_control(1 << 15);
        m.trigger(1);
        assert!(m.irq_fd(1).unwrap().read().is_err(), "masked at reset");
        let mut pba = [0u8; 8];
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        w32(&m, ENTRY_SIZE + 8, 0x41);
        w32(&m, ENTRY_SIZE + 12, 0); // unmask: the pending signal goes out
        assert_eq!(m.irq_fd(1).unwrap().read().unwrap(), 1);
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0);
        m.trigger(1);
        assert_eq!(m.irq_fd(1).unwrap().read().unwrap(), 1);
        // The function mask holds every vector back.
        m.set_control((1 << 15) | (1 << 14));
        m.trigger(1);
        assert!(m.irq_fd(1).unwrap().read().is_err());
        assert_eq!(m.control(), 0xc000);
        m.set_control(1 << 15);
        assert_eq!(m.irq_fd(1).unwrap().read().unwrap(), 1);
        // Out-of-range and NO_VECTOR are dropped.
        m.trigger(3);
        m.trigger(0xffff);
    }

    #[test]
    fn table_reads_back_what_was_written() {
        let m = MsixVectors::new(2).unwrap();
        w32(&m, 0, 0xfee0_1000);
        m.write_table(8, &0x0000_0001_0000_0030u64.to_le_bytes());
        let mut b = [0u8; 8];
        m.read_table(0, &mut b);
        assert_eq!(u64::from_le_bytes(b), 0xfee0_1000);
        let mut d = [0u8; 4];
        m.read_table(8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x30);
        m.read_table(12, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1, "still masked");
        m.read_table(ENTRY_SIZE * 2, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0, "past the table");
        let mut odd = [0xffu8; 2];
        m.read_table(0, &mut odd);
        assert_eq!(odd, [0, 0]);
    }
}
