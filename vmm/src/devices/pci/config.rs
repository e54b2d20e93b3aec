//! The 256-byte configuration space of one type-0 PCI function: identity, command/status, one
//! 32-bit memory BAR and a capability list. Bytes are writable only where a mask says so.
//!
//! BAR0 is placed by the VMM, as firmware would; the guest may size it (write all ones, read the
//! size mask back) but not move it: a write of any other address keeps the VMM's address.

/// Vendor/device/class identity of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciId {
    pub vendor: u16,
    pub device: u16,
    /// Class code, subclass, programming interface (24 bits).
    pub class: u32,
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

/// Command register bits the guest may set: memory space, bus master, INTx disable.
const COMMAND_WRITABLE: u16 = (1 << 1) | (1 << 2) | (1 << 10);
/// Status bit: the capability list exists.
const STATUS_CAP_LIST: u16 = 1 << 4;
/// Offset of BAR0.
pub const BAR0: usize = 0x10;
/// Offset of the capabilities pointer.
const CAP_POINTER: usize = 0x34;
/// First capability (the standard header ends at 0x40).
const FIRST_CAP: usize = 0x40;
/// Bytes of configuration space (conventional PCI; the extended space reads as zero).
pub const CONFIG_SIZE: usize = 256;

/// A type-0 configuration space.
#[derive(Clone, Debug)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    writable: [u8; CONFIG_SIZE],
    bar0: Option<(u32, u32)>,
    bar0_sizing: bool,
    last_cap: Option<usize>,
    next_cap: usize,
}

impl ConfigSpace {
    /// A function with identity `id`, no BAR and no capabilities.
    pub fn new(id: PciId) -> Self {
        let mut c = ConfigSpace {
            bytes: [0; CONFIG_SIZE],
            writable: [0; CONFIG_SIZE],
            bar0: None,
            bar0_sizing: false,
            last_cap: None,
            next_cap: FIRST_CAP,
        };
        c.put16(0x00, id.vendor);
        c.put16(0x02, id.device);
        c.bytes[0x08] = id.revision;
        c.bytes[0x09..0x0c].copy_from_slice(&id.class.to_le_bytes()[..3]);
        c.put16(0x2c, id.subsystem_vendor);
        c.put16(0x2e, id.subsystem);
        c.writable[0x04..0x06].copy_from_slice(&COMMAND_WRITABLE.to_le_bytes());
        // Interrupt line: scratch for the OS; pin 0 (no INTx).
        c.writable[0x3c] = 0xff;
        c
    }

    fn put16(&mut self, at: usize, v: u16) {
        self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// Places BAR0 (32-bit memory, not prefetchable) at `base`, `size` bytes (a power of two).
    pub fn set_bar0(&mut self, base: u32, size: u32) {
        debug_assert!(size.is_power_of_two() && base % size == 0);
        self.bar0 = Some((base, size));
        self.bar0_sizing = false;
    }

    /// BAR0's address, if it has one.
    pub fn bar0(&self) -> Option<u32> {
        self.bar0.map(|(b, _)| b)
    }

    /// Appends a capability `id` with `body` (the bytes after id and next pointer); `writable`
    /// masks bytes of the body the guest may change. Returns its offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable: &[u8]) -> usize {
        let at = self.next_cap;
        let len = 2 + body.len();
        assert!(
            at + len <= CONFIG_SIZE,
            "capabilities overflow config space"
        );
        self.bytes[at] = id;
        self.bytes[at + 2..at + len].copy_from_slice(body);
        for (i, m) in writable.iter().enumerate().take(body.len()) {
            self.writable[at + 2 + i] = *m;
        }
        match self.last_cap {
            None => {
                self.bytes[CAP_POINTER] = at as u8;
                let status = u16::from_le_bytes([self.bytes[6], self.bytes[7]]) | STATUS_CAP_LIST;
                self.put16(0x06, status);
            }
            Some(prev) => self.bytes[prev + 1] = at as u8,
        }
        self.last_cap = Some(at);
        self.next_cap = (at + len).next_multiple_of(4);
        at
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        u16::from_le_bytes([self.bytes[4], self.bytes[5]])
    }

    /// Reads `data.len()` bytes at `offset`; outside the space reads as zero.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset + i;
            *b = if (BAR0..BAR0 + 4).contains(&at) {
                self.bar0_register().to_le_bytes()[at - BAR0]
            } else {
                self.bytes.get(at).copied().unwrap_or(0)
            };
        }
    }

    fn bar0_register(&self) -> u32 {
        match self.bar0 {
            None => 0,
            Some((_, size)) if self.bar0_sizing => !(size - 1),
            Some((base, _)) => base,
        }
    }

    /// Writes `data` at `offset` through the writable mask (BAR0: sizing only).
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        if offset == BAR0 && data.len() == 4 {
            if let Some((base, size)) = self.bar0 {
                let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                let mask = !(size - 1);
                self.bar0_sizing = v & mask == mask;
                if !self.bar0_sizing && v & mask != base {
                    tracing::warn!("PCI: BAR0 move to {v:#x} refused (it stays at {base:#x})");
                }
            }
            return;
        }
        for (i, v) in data.iter().enumerate() {
            let at = offset + i;
            if at < CONFIG_SIZE {
                let m = self.writable[at];
                self.bytes[at] = (self.bytes[at] & !m) | (v & m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> PciId {
        PciId {
            vendor: 0x1af4,
            device: 0x1042,
            class: 0x01_80_00,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        }
    }

    fn r32(c: &ConfigSpace, at: usize) -> u32 {
        let mut b = [0u8; 4];
        c.read(at, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn header_bar_sizing_and_capabilities() {
        let mut c = ConfigSpace::new(id());
        c.set_bar0(0xc000_0000, 0x8000);
        assert_eq!(r32(&c, 0), 0x1042_1af4);
        assert_eq!(r32(&c, 8), 0x0180_0001);
        assert_eq!(r32(&c, 0x2c), 0x0040_1af4);
        assert_eq!(r32(&c, BAR0), 0xc000_0000);
        c.write(BAR0, &u32::MAX.to_le_bytes());
        assert_eq!(r32(&c, BAR0), 0xffff_8000, "size mask");
        c.write(BAR0, &0xc000_0000u32.to_le_bytes());
        assert_eq!(r32(&c, BAR0), 0xc000_0000);
        c.write(BAR0, &0xd000_0000u32.to_le_bytes());
        assert_eq!(r32(&c, BAR0), 0xc000_0000, "not movable");
        // Command: only memory, bus master and INTx disable stick; identity is read-only.
        c.write(4, &[0xff, 0xff]);
        assert_eq!(c.command(), COMMAND_WRITABLE);
        c.write(0, &[0, 0, 0, 0]);
        assert_eq!(r32(&c, 0), 0x1042_1af4);
        // Capabilities chain from 0x34.
        let a = c.add_capability(
            0x11,
            &[0x02, 0x00, 0, 0x40, 0, 0, 0, 0x50, 0, 0],
            &[0, 0xc0],
        );
        let b = c.add_capability(0x09, &[16, 1, 0, 0, 0, 0], &[]);
        assert_eq!((a, b), (0x40, 0x4c));
        assert_eq!(c.bytes[CAP_POINTER], 0x40);
        assert_eq!(c.bytes[0x41], 0x4c);
        assert_eq!(c.bytes[0x4d], 0);
        assert_ne!(r32(&c, 4) & (u32::from(STATUS_CAP_LIST) << 16), 0);
        c.write(a + 2, &[0xff, 0xff]);
        assert_eq!(c.bytes[a + 2..a + 4], [0x02, 0xc0]);
        assert_eq!(r32(&c, 0x100), 0, "extended space");
    }
}
