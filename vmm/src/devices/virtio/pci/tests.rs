//! The transport driven the way Linux's virtio_pci_modern does: capabilities, negotiation, queue
//! programming with MSI-X vectors, DRIVER_OK, interrupts per queue, reset.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use vm_memory::GuestAddress;

use super::*;
use crate::devices::pci::msix::ENTRY_SIZE;
use crate::devices::virtio::interrupt::NO_VECTOR;
use crate::devices::virtio::{ActivateError, features, status};

#[derive(Default)]
struct Probe {
    activations: AtomicU32,
    last: Mutex<Option<(u16, u64, u64, u64)>>,
}

impl VirtioDevice for Probe {
    fn device_type(&self) -> u32 {
        1
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 256]
    }
    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_EVENT_IDX | 1 << 5
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8);
        }
    }
    fn activate(
        &self,
        _mem: GuestMemoryMmap,
        queues: Vec<virtio_queue::Queue>,
        _features: u64,
    ) -> Result<(), ActivateError> {
        use virtio_queue::QueueT;
        let q = &queues[1];
        *self.last.lock().unwrap() =
            Some((q.size(), q.desc_table(), q.avail_ring(), q.used_ring()));
        self.activations.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn reset(&self) {}
}

fn transport() -> (Arc<Probe>, Arc<VirtioInterrupt>, PciTransport) {
    let probe = Arc::new(Probe::default());
    let irq = Arc::new(VirtioInterrupt::new().unwrap());
    let t = PciTransport::new(
        probe.clone(),
        irq.clone(),
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    )
    .unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    t.attach(mem, 0xc000_0000, None);
    (probe, irq, t)
}

fn cfg(t: &PciTransport, at: usize, n: usize) -> u32 {
    let mut b = [0u8; 4];
    t.config_read(at, &mut b[..n]);
    u32::from_le_bytes(b)
}

fn rd(t: &PciTransport, off: u64, n: usize) -> u64 {
    let mut b = [0u8; 8];
    MmioDevice::read(t, off, &mut b[..n]);
    u64::from_le_bytes(b)
}

fn wr(t: &PciTransport, off: u64, n: usize, v: u64) {
    MmioDevice::write(t, off, &v.to_le_bytes()[..n]);
}

/// Walks the capability list: (id, offset, cfg_type for vendor caps).
fn caps(t: &PciTransport) -> Vec<(u8, usize, u8)> {
    let mut out = Vec::new();
    let mut at = cfg(t, 0x34, 1) as usize;
    for _ in 0..16 {
        if at == 0 {
            break;
        }
        let id = cfg(t, at, 1) as u8;
        out.push((id, at, cfg(t, at + 3, 1) as u8));
        at = cfg(t, at + 1, 1) as usize;
    }
    out
}

#[test]
fn identity_and_capabilities_point_into_bar0() {
    let (_, _, t) = transport();
    assert_eq!(cfg(&t, 0, 4), 0x1041_1af4);
    assert_eq!(cfg(&t, 8, 4) >> 8, 0x02_00_00, "ethernet controller");
    assert_eq!(cfg(&t, 0x10, 4), 0xc000_0000);
    assert_eq!(cfg(&t, 0x3d, 1), 0, "no INTx pin");
    let c = caps(&t);
    let kinds: Vec<(u8, u8)> = c
        .iter()
        .map(|(id, _, ty)| (*id, if *id == CAP_VENDOR { *ty } else { 0 }))
        .collect();
    assert_eq!(
        kinds,
        [
            (CAP_MSIX, 0),
            (CAP_VENDOR, CFG_COMMON),
            (CAP_VENDOR, CFG_NOTIFY),
            (CAP_VENDOR, CFG_ISR),
            (CAP_VENDOR, CFG_DEVICE),
            (CAP_VENDOR, CFG_PCI)
        ]
    );
    let (_, msix, _) = c[0];
    assert_eq!(cfg(&t, msix + 2, 2), 2, "3 vectors: table size - 1");
    assert_eq!(cfg(&t, msix + 4, 4), MSIX_TABLE_OFFSET as u32);
    let (_, notify, _) = c[2];
    assert_eq!(cfg(&t, notify + 8, 4), NOTIFY_OFFSET as u32);
    assert_eq!(cfg(&t, notify + 16, 4), 0, "notify_off_multiplier");
    // Device config at 0x2000, any width.
    assert_eq!(rd(&t, DEVICE_OFFSET + 4, 2), 0x0504);
}

#[test]
fn linux_style_bring_up_routes_each_queue_to_its_vector() {
    let (probe, irq, t) = transport();
    let msix_cap = caps(&t)[0].1;
    wr(&t, 0x14, 1, 0); // reset
    wr(&t, 0x14, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER));
    wr(&t, 0x00, 4, 1);
    assert_eq!(rd(&t, 0x04, 4), 1, "VERSION_1 in the high half");
    wr(&t, 0x08, 4, 0);
    wr(
        &t,
        0x0c,
        4,
        (features::RING_EVENT_IDX | 1 << 5) & 0xffff_ffff,
    );
    wr(&t, 0x08, 4, 1);
    wr(&t, 0x0c, 4, 1);
    let good = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    wr(&t, 0x14, 1, u64::from(good));
    assert_eq!(rd(&t, 0x14, 1), u64::from(good));
    // MSI-X on (function masked while programming, as Linux does), config on vector 0.
    t.config_write(msix_cap + 2, &0xc000u16.to_le_bytes());
    wr(&t, 0x10, 2, 0);
    assert_eq!(rd(&t, 0x10, 2), 0);
    assert_eq!(rd(&t, 0x12, 2), 2, "num_queues");
    for q in 0..2u64 {
        wr(&t, 0x16, 2, q);
        assert_eq!(rd(&t, 0x18, 2), 256);
        wr(&t, 0x18, 2, 128);
        wr(&t, 0x1a, 2, q + 1);
        assert_eq!(rd(&t, 0x1a, 2), q + 1);
        let base = 0x10000 * (q + 1);
        wr(&t, 0x20, 4, base);
        wr(&t, 0x24, 4, 0);
        wr(&t, 0x28, 4, base + 0x1000);
        wr(&t, 0x30, 4, base + 0x2000);
        wr(&t, 0x1c, 2, 1);
        assert_eq!(rd(&t, 0x1c, 2), 1);
    }
    wr(&t, 0x1a, 2, 7);
    assert_eq!(rd(&t, 0x1a, 2), u64::from(NO_VECTOR), "no vector 7");
    wr(&t, 0x1a, 2, 2);
    t.config_write(msix_cap + 2, &0x8000u16.to_le_bytes());
    assert_eq!(cfg(&t, msix_cap + 2, 2), 0x8002);
    // Unmask vectors 0..3 with messages.
    for v in 0..3u64 {
        wr(&t, MSIX_TABLE_OFFSET + v * ENTRY_SIZE, 4, 0xfee0_0000);
        wr(&t, MSIX_TABLE_OFFSET + v * ENTRY_SIZE + 8, 4, 0x30 + v);
        wr(&t, MSIX_TABLE_OFFSET + v * ENTRY_SIZE + 12, 4, 0);
    }
    wr(&t, 0x14, 1, u64::from(good | status::DRIVER_OK));
    assert_eq!(rd(&t, 0x14, 1), u64::from(good | status::DRIVER_OK));
    assert_eq!(probe.activations.load(Ordering::SeqCst), 1);
    assert_eq!(
        *probe.last.lock().unwrap(),
        Some((128, 0x20000, 0x21000, 0x22000))
    );
    assert_eq!(t.notify_fd().read().unwrap(), 1, "kicked at DRIVER_OK");
    // Queue 1's used buffers go to vector 2 only; config changes to vector 0.
    irq.signal_used(0b10);
    assert_eq!(t.msix().irq_fd(2).unwrap().read().unwrap(), 1);
    assert!(t.msix().irq_fd(1).unwrap().read().is_err());
    irq.signal_config();
    assert_eq!(t.msix().irq_fd(0).unwrap().read().unwrap(), 1);
    // ISR reads the causes and clears them.
    assert_eq!(rd(&t, ISR_OFFSET, 1), 3);
    assert_eq!(rd(&t, ISR_OFFSET, 1), 0);
    // A masked vector pends; the PBA shows it.
    wr(&t, MSIX_TABLE_OFFSET + 2 * ENTRY_SIZE + 12, 4, 1);
    irq.signal_used(0b10);
    assert_eq!(rd(&t, MSIX_PBA_OFFSET, 8), 0b100);
    wr(&t, MSIX_TABLE_OFFSET + 2 * ENTRY_SIZE + 12, 4, 0);
    assert_eq!(t.msix().irq_fd(2).unwrap().read().unwrap(), 1);
    // Frozen after DRIVER_OK; the notify area kicks.
    wr(&t, 0x18, 2, 64);
    assert_eq!(rd(&t, 0x18, 2), 128);
    wr(&t, NOTIFY_OFFSET, 2, 1);
    assert_eq!(t.notify_fd().read().unwrap(), 1);
    // Reset: status, queues and vectors go.
    wr(&t, 0x14, 1, 0);
    assert_eq!(rd(&t, 0x14, 1), 0);
    assert_eq!(rd(&t, 0x1c, 2), 0);
    assert_eq!(rd(&t, 0x10, 2), u64::from(NO_VECTOR));
}

#[test]
fn the_pci_cfg_window_reaches_bar0() {
    let (_, _, t) = transport();
    let at = caps(&t).iter().find(|c| c.2 == CFG_PCI).unwrap().1;
    // Window: BAR 0, offset 0x12 (num_queues), length 2.
    t.config_write(at + 4, &[0]);
    t.config_write(at + 8, &0x12u32.to_le_bytes());
    t.config_write(at + 12, &2u32.to_le_bytes());
    assert_eq!(cfg(&t, at + 16, 4), 2);
    // Write through it: device_feature_select = 1.
    t.config_write(at + 8, &0u32.to_le_bytes());
    t.config_write(at + 12, &4u32.to_le_bytes());
    t.config_write(at + 16, &1u32.to_le_bytes());
    assert_eq!(rd(&t, 0x00, 4), 1);
    // A bad length: the window is plain config bytes.
    t.config_write(at + 12, &3u32.to_le_bytes());
    t.config_write(at + 16, &0xabu32.to_le_bytes());
    assert_eq!(rd(&t, 0x00, 4), 1);
}

#[test]
fn odd_widths_and_offsets_read_zero_and_write_nothing() {
    let (_, _, t) = transport();
    assert_eq!(rd(&t, 0x12, 4), 0, "num_queues is 16-bit");
    wr(&t, 0x14, 4, 0xff);
    assert_eq!(rd(&t, 0x14, 1), 0);
    assert_eq!(rd(&t, 0x7000, 4), 0);
    wr(&t, 0x7ff8, 8, u64::MAX);
}
