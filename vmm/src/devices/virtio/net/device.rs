//! The net device as the transport sees it: features, the `virtio_net_config` space, and
//! activation/reset of the shared [`NetState`].

use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::handler::{ActiveNet, NetHandler, NetState};
use super::tap::{Tap, offload};
use super::{LINK_UP, QUEUE_SIZE, RX_QUEUE, TX_QUEUE, features};
use crate::devices::virtio::interrupt::VirtioInterrupt;
use crate::devices::virtio::{ActivateError, DeviceParts, VirtioDevice, features as common};

/// Virtio device id of a network device.
pub const DEVICE_ID: u32 = 1;
/// Length of the config space: `mac[6]`, `status`, `max_virtqueue_pairs`, `mtu`.
pub const CONFIG_LEN: usize = 12;

/// Errors while creating a net device.
#[derive(Debug, Error)]
pub enum NetError {
    #[error("creating the queue notification EventFd")]
    NotifyFd(#[source] std::io::Error),
    #[error("creating the interrupt EventFd")]
    Interrupt(#[source] std::io::Error),
}

/// A virtio-net device.
pub struct Net {
    state: Arc<Mutex<NetState>>,
    features: u64,
    config: [u8; CONFIG_LEN],
    queue_sizes: [u16; 2],
}

/// The two halves of a new net device: its register window and its event-loop handler.
pub type NetParts = DeviceParts<NetHandler>;

/// The feature bits offered for a tap accepting `offloads` (`TUN_F_*`).
pub fn offered_features(offloads: u32) -> u64 {
    let mut f = common::VERSION_1
        | common::RING_EVENT_IDX
        | common::RING_INDIRECT_DESC
        | features::MAC
        | features::STATUS
        | features::MRG_RXBUF;
    if offloads & offload::CSUM != 0 {
        f |= features::CSUM | features::GUEST_CSUM;
        if offloads & offload::TSO4 != 0 {
            f |= features::HOST_TSO4 | features::GUEST_TSO4;
        }
        if offloads & offload::TSO6 != 0 {
            f |= features::HOST_TSO6 | features::GUEST_TSO6;
        }
        if offloads & offload::UFO != 0 {
            f |= features::HOST_UFO | features::GUEST_UFO;
        }
    }
    f
}

/// The tap offloads (`TUN_F_*`) for the negotiated `features`: what the guest can receive.
pub fn tap_offloads(features: u64) -> u32 {
    if features & features::GUEST_CSUM == 0 {
        return 0;
    }
    let mut o = offload::CSUM;
    for (bit, flag) in [
        (features::GUEST_TSO4, offload::TSO4),
        (features::GUEST_TSO6, offload::TSO6),
        (features::GUEST_UFO, offload::UFO),
    ] {
        if features & bit != 0 {
            o |= flag;
        }
    }
    o
}

impl Net {
    /// Creates a net device on `tap` with the guest MAC `mac`.
    pub fn create(tap: Tap, mac: [u8; 6]) -> Result<NetParts, NetError> {
        let interrupt = Arc::new(VirtioInterrupt::new().map_err(NetError::Interrupt)?);
        let notify = EventFd::new(libc::EFD_NONBLOCK).map_err(NetError::NotifyFd)?;
        let handler_notify = notify.try_clone().map_err(NetError::NotifyFd)?;
        let net = Arc::new(Net::new(tap, mac));
        let handler = NetHandler::new(net.state.clone(), handler_notify, interrupt.clone());
        Ok(DeviceParts {
            device: net,
            interrupt,
            notify,
            handler,
        })
    }

    /// The device alone (tests drive it without a transport).
    pub fn new(tap: Tap, mac: [u8; 6]) -> Self {
        let mut features = offered_features(tap.supported_offloads());
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        if let Some(mtu) = tap.mtu() {
            features |= features::MTU;
            config[10..12].copy_from_slice(&mtu.to_le_bytes());
        }
        Net {
            state: Arc::new(Mutex::new(NetState::new(tap))),
            features,
            config,
            queue_sizes: [QUEUE_SIZE; 2],
        }
    }

    /// The state shared with the handler.
    pub fn state(&self) -> &Arc<Mutex<NetState>> {
        &self.state
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::super::read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &self,
        mem: GuestMemoryMmap,
        mut queues: Vec<Queue>,
        features: u64,
    ) -> Result<(), ActivateError> {
        let mut state = self.lock();
        if state.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if queues.len() <= TX_QUEUE {
            return Err(ActivateError::NoMemory);
        }
        let tx = queues.swap_remove(TX_QUEUE);
        let rx = queues.swap_remove(RX_QUEUE);
        if let Err(e) = state.tap.set_offloads(tap_offloads(features)) {
            // The offloads were probed at start; the guest then gets only plain frames.
            tracing::warn!("virtio-net: {e}");
        }
        state.reset();
        if rx.ready() || tx.ready() {
            state.active = Some(ActiveNet {
                mem,
                rx,
                tx,
                mergeable: features & features::MRG_RXBUF != 0,
            });
        }
        Ok(())
    }

    fn reset(&self) {
        self.lock().reset();
    }

    fn needs_reset(&self) -> bool {
        self.lock().broken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn features_follow_the_tap_and_offloads_follow_the_guest() {
        let plain = offered_features(0);
        assert_eq!(plain & (features::CSUM | features::GUEST_CSUM), 0);
        assert_ne!(plain & features::MRG_RXBUF, 0);
        assert_ne!(plain & common::VERSION_1, 0);
        let all = offered_features(offload::CSUM | offload::TSO4 | offload::TSO6 | offload::UFO);
        for f in [
            features::CSUM,
            features::GUEST_CSUM,
            features::GUEST_TSO4,
            features::GUEST_TSO6,
            features::GUEST_UFO,
            features::HOST_TSO4,
            features::HOST_TSO6,
            features::HOST_UFO,
            features::MAC,
            features::STATUS,
            common::RING_EVENT_IDX,
        ] {
            assert_ne!(all & f, 0, "{f:#x}");
        }
        // TSO without checksum offload is not offered.
        assert_eq!(offered_features(offload::TSO4), plain);
        assert_eq!(
            tap_offloads(all),
            offload::CSUM | offload::TSO4 | offload::TSO6 | offload::UFO
        );
        assert_eq!(tap_offloads(all & !features::GUEST_CSUM), 0);
        assert_eq!(
            tap_offloads(features::GUEST_CSUM | features::GUEST_TSO6),
            offload::CSUM | offload::TSO6
        );
    }

    #[test]
    fn config_space_and_identity() {
        let (a, _b) = UnixDatagram::pair().unwrap();
        let net = Net::new(Tap::stand_in(a.into()), [2, 1, 2, 3, 4, 5]);
        assert_eq!(net.device_type(), 1);
        assert_eq!(net.queue_max_sizes(), &[256, 256]);
        let mut c = [0xffu8; 12];
        net.read_config(0, &mut c);
        assert_eq!(c, [2, 1, 2, 3, 4, 5, 1, 0, 1, 0, 0, 0]);
        let mut tail = [0xffu8; 4];
        net.read_config(u64::MAX - 1, &mut tail);
        assert_eq!(tail, [0; 4]);
    }

    /// The Linux driver's bring-up through the register window (both queues, mergeable buffers,
    /// `EVENT_IDX`, every offload), then a frame each way through the handler; a reset stops the
    /// device.
    #[test]
    fn bring_up_through_the_transport_then_frames_both_ways() {
        use crate::devices::MmioDevice;
        use crate::devices::virtio::status;
        use virtio_bindings::virtio_mmio::*;
        use vm_memory::{Bytes, GuestAddress};
        let (ours, peer) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        let parts = Net::create(Tap::stand_in(ours.into()), [2, 0, 0, 0, 0, 9]).unwrap();
        let t = crate::devices::virtio::mmio::MmioTransport::new(
            parts.device.clone(),
            parts.interrupt.clone(),
            parts.notify.try_clone().unwrap(),
        );
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        t.attach(mem.clone());
        let w = |off: u32, v: u32| t.write(u64::from(off), &v.to_le_bytes());
        let r = |off: u32| {
            let mut b = [0u8; 4];
            t.read(u64::from(off), &mut b);
            u32::from_le_bytes(b)
        };
        assert_eq!(r(VIRTIO_MMIO_DEVICE_ID), 1);
        let mut offered = 0u64;
        for sel in 0..2 {
            w(VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
            offered |= u64::from(r(VIRTIO_MMIO_DEVICE_FEATURES)) << (32 * sel);
        }
        let wanted = offered & !common::RING_INDIRECT_DESC;
        w(VIRTIO_MMIO_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        for sel in 0..2 {
            w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
            w(VIRTIO_MMIO_DRIVER_FEATURES, (wanted >> (32 * sel)) as u32);
        }
        let good = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        w(VIRTIO_MMIO_STATUS, good);
        assert_eq!(r(VIRTIO_MMIO_STATUS), good);
        // Queue q at 0x10000 * (q + 1): descriptors, then avail at +0x1000, used at +0x2000.
        for q in 0..2u32 {
            let base = 0x10000 * (q + 1);
            w(VIRTIO_MMIO_QUEUE_SEL, q);
            assert_eq!(r(VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
            w(VIRTIO_MMIO_QUEUE_NUM, 8);
            w(VIRTIO_MMIO_QUEUE_DESC_LOW, base);
            w(VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + 0x1000);
            w(VIRTIO_MMIO_QUEUE_USED_LOW, base + 0x2000);
            w(VIRTIO_MMIO_QUEUE_READY, 1);
        }
        // One receive buffer and one transmit frame before DRIVER_OK.
        let desc = |table: u64, addr: u64, len: u32, flags: u16| {
            use virtio_queue::desc::{RawDescriptor, split::Descriptor};
            let d = RawDescriptor::from(Descriptor::new(addr, len, flags, 0));
            mem.write_obj(d, GuestAddress(table)).unwrap();
        };
        let publish = |avail: u64| {
            mem.write_obj(0u16, GuestAddress(avail + 4)).unwrap();
            mem.write_obj(1u16, GuestAddress(avail + 2)).unwrap();
        };
        desc(
            0x10000,
            0x40000,
            4096,
            virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16,
        );
        publish(0x11000);
        let mut tx = vec![0u8; 12];
        tx.extend_from_slice(b"guest frame");
        mem.write_slice(&tx, GuestAddress(0x50000)).unwrap();
        desc(0x20000, 0x50000, tx.len() as u32, 0);
        publish(0x21000);
        peer.send(&[[0u8; 12].as_slice(), b"host frame"].concat())
            .unwrap();

        w(VIRTIO_MMIO_STATUS, good | status::DRIVER_OK);
        assert_eq!(r(VIRTIO_MMIO_STATUS), good | status::DRIVER_OK);
        assert_eq!(t.notify_fd().read().unwrap(), 1, "kicked at activation");
        let interest = parts.handler.run();
        let mut buf = [0u8; 64];
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &tx[..]);
        let used_len: u32 = mem.read_obj(GuestAddress(0x12000 + 8)).unwrap();
        assert_eq!(used_len, 22);
        let mut got = [0u8; 22];
        mem.read_slice(&mut got, GuestAddress(0x40000)).unwrap();
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
        assert_eq!(&got[12..], b"host frame");
        assert!(t.irq_fd().read().is_ok(), "the guest was interrupted");
        // The only receive buffer is used: the tap is no longer watched.
        assert!(!interest.contains(vmm_sys_util::epoll::EventSet::IN));
        w(VIRTIO_MMIO_STATUS, 0);
        assert!(
            parts.handler.run().is_empty(),
            "a reset device watches nothing"
        );
    }
}
