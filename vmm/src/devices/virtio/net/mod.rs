//! virtio-net (virtio 1.2 §5.1) over a tap: one receive and one transmit queue served on the
//! device event loop.
//!
//! * [`tap`] — the host side: `/dev/net/tun` opened by name or inherited as a file descriptor,
//!   `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, non-blocking, 12-byte vnet header, offloads;
//! * [`buffers`] — checks and copies descriptor chains (everything a hostile driver controls);
//! * [`handler`] — TX (chain → one tap write), RX (tap read → one or more chains, with flow
//!   control) and the event-loop subscriber;
//! * [`device`] — the [`super::VirtioDevice`] side: features, config space, activation/reset.
//!
//! Offered features: VERSION_1, RING_EVENT_IDX, RING_INDIRECT_DESC, MAC, STATUS (link up),
//! MRG_RXBUF, MTU (that of a tap opened by name), and what the tap accepts of CSUM + GUEST_CSUM,
//! HOST_TSO4/6 + GUEST_TSO4/6, HOST_UFO + GUEST_UFO. The negotiated guest offloads become the tap's `TUNSETOFFLOAD` flags
//! when the driver starts the device. A received frame passes through a host buffer (one
//! copy); a transmitted one goes to the tap with one `writev` straight from guest memory. The
//! vnet header goes to and from the tap unchanged, except `num_buffers`, set on receive.

pub mod buffers;
pub mod device;
pub mod handler;
pub mod tap;

pub use device::{Net, NetError, NetParts};

/// Largest queue (descriptors).
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// `virtio_net_hdr_v1`: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers.
pub const VNET_HDR_LEN: usize = 12;
/// Where `num_buffers` sits in the header.
pub const NUM_BUFFERS_OFFSET: usize = 10;
/// Longest frame with its header: a 64 KiB GSO packet plus Ethernet and VLAN headers.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65550;

/// virtio-net feature bits.
pub mod features {
    pub const CSUM: u64 = 1 << 0;
    pub const GUEST_CSUM: u64 = 1 << 1;
    pub const MTU: u64 = 1 << 3;
    pub const MAC: u64 = 1 << 5;
    pub const GUEST_TSO4: u64 = 1 << 7;
    pub const GUEST_TSO6: u64 = 1 << 8;
    pub const GUEST_UFO: u64 = 1 << 10;
    pub const HOST_TSO4: u64 = 1 << 11;
    pub const HOST_TSO6: u64 = 1 << 12;
    pub const HOST_UFO: u64 = 1 << 14;
    pub const MRG_RXBUF: u64 = 1 << 15;
    pub const STATUS: u64 = 1 << 16;
}

/// `status` in the config space: the link is up.
pub const LINK_UP: u16 = 1;
