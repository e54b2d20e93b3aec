//! The block device as the transport sees it: features, the `virtio_blk_config` space, and
//! activation/reset of the shared [`BlockState`].

use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::handler::{ActiveQueue, BlockHandler, BlockState};
use super::pool::ReadPool;
use super::{MAX_DISCARD_SECTORS, QUEUE_SIZE, READ_THREADS, SEG_MAX, features};
use crate::devices::virtio::interrupt::VirtioInterrupt;
use crate::devices::virtio::{ActivateError, DeviceParts, VirtioDevice, features as common};
use crate::disk::{DiskBackend, SECTOR_SIZE};

/// Virtio device id of a block device.
pub const DEVICE_ID: u32 = 2;
/// Length of the config space we expose (`virtio_blk_config` up to `write_zeroes_may_unmap`).
pub const CONFIG_LEN: usize = 60;
/// Discard granularity advertised, in sectors (the overlay's 4 KiB cluster).
pub const DISCARD_ALIGNMENT: u32 = 8;

/// Errors while creating a block device.
#[derive(Debug, Error)]
pub enum BlockError {
    #[error("creating the queue notification EventFd")]
    NotifyFd(#[source] std::io::Error),
    #[error("creating the interrupt EventFd")]
    Interrupt(#[source] std::io::Error),
    #[error("starting the read threads")]
    ReadPool(#[source] std::io::Error),
}

/// A virtio-blk device.
pub struct Block {
    state: Arc<Mutex<BlockState>>,
    features: u64,
    config: [u8; CONFIG_LEN],
    queue_sizes: [u16; 1],
}

/// A new block device: what its transport needs and its event-loop handler.
pub type BlockParts = DeviceParts<BlockHandler>;

impl Block {
    /// Creates a block device serving `disk`, answering `GET_ID` with `serial`.
    pub fn create(disk: Box<dyn DiskBackend>, serial: &str) -> Result<BlockParts, BlockError> {
        let interrupt = Arc::new(VirtioInterrupt::new().map_err(BlockError::Interrupt)?);
        let notify = EventFd::new(libc::EFD_NONBLOCK).map_err(BlockError::NotifyFd)?;
        let handler_notify = notify.try_clone().map_err(BlockError::NotifyFd)?;
        let done = EventFd::new(libc::EFD_NONBLOCK).map_err(BlockError::ReadPool)?;
        let handler_done = done.try_clone().map_err(BlockError::ReadPool)?;
        let pool = ReadPool::new(READ_THREADS, done).map_err(BlockError::ReadPool)?;
        let state = BlockState::new(disk, serial).with_pool(pool);
        let block = Arc::new(Block::with_state(state));
        let handler = BlockHandler::new(
            block.state.clone(),
            handler_notify,
            Some(handler_done),
            interrupt.clone(),
        );
        Ok(DeviceParts {
            device: block,
            interrupt,
            notify,
            handler,
        })
    }

    /// The device alone, executing every request on the event loop (tests drive it without a
    /// transport).
    pub fn new(disk: Box<dyn DiskBackend>, serial: &str) -> Self {
        Self::with_state(BlockState::new(disk, serial))
    }

    fn with_state(state: BlockState) -> Self {
        let read_only = state.disk.read_only();
        let capacity = state.disk.capacity();
        let mut features = common::VERSION_1
            | common::RING_EVENT_IDX
            | common::RING_INDIRECT_DESC
            | features::SEG_MAX
            | features::BLK_SIZE
            | features::FLUSH;
        features |= if read_only {
            features::RO
        } else {
            features::DISCARD | features::WRITE_ZEROES
        };
        Block {
            state: Arc::new(Mutex::new(state)),
            features,
            config: config_space(capacity),
            queue_sizes: [QUEUE_SIZE],
        }
    }

    /// The state shared with the handler.
    pub fn state(&self) -> &Arc<Mutex<BlockState>> {
        &self.state
    }

    fn lock(&self) -> MutexGuard<'_, BlockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `virtio_blk_config` (little endian) for a disk of `capacity` bytes.
pub fn config_space(capacity: u64) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    let mut put = |at: usize, bytes: &[u8]| c[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &(capacity / SECTOR_SIZE).to_le_bytes()); // capacity (sectors)
    put(12, &SEG_MAX.to_le_bytes()); // seg_max
    put(20, &(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
    put(34, &1u16.to_le_bytes()); // num_queues
    put(36, &MAX_DISCARD_SECTORS.to_le_bytes()); // max_discard_sectors
    put(40, &1u32.to_le_bytes()); // max_discard_seg
    put(44, &DISCARD_ALIGNMENT.to_le_bytes()); // discard_sector_alignment
    put(48, &MAX_DISCARD_SECTORS.to_le_bytes()); // max_write_zeroes_sectors
    put(52, &1u32.to_le_bytes()); // max_write_zeroes_seg
    put(56, &[1]); // write_zeroes_may_unmap
    c
}

impl VirtioDevice for Block {
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
        _features: u64,
    ) -> Result<(), ActivateError> {
        let mut state = self.lock();
        if state.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let queue = queues.drain(..).next().filter(|q| q.ready());
        state.active = queue.map(|queue| ActiveQueue { mem, queue });
        Ok(())
    }

    fn reset(&self) {
        self.lock().reset();
    }

    fn needs_reset(&self) -> bool {
        self.lock().broken
    }
}
