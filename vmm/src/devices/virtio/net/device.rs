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
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::{ActivateError, VirtioDevice, features as common};

/// Virtio device id of a network device.
pub const DEVICE_ID: u32 = 1;
/// Length of the config space: `mac[6]`, `status`, `max_virtqueue_pairs`.
pub const CONFIG_LEN: usize = 10;

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
pub struct NetParts {
    pub transport: Arc<MmioTransport>,
    pub handler: NetHandler,
}

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
        let transport = Arc::new(MmioTransport::new(net, interrupt, notify));
        Ok(NetParts { transport, handler })
    }

    /// The device alone (tests drive it without a transport).
    pub fn new(tap: Tap, mac: [u8; 6]) -> Self {
        let features = offered_features(tap.supported_offloads());
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
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
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|at| self.config.get(at as usize))
                .copied()
                .unwrap_or(0);
        }
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
}
