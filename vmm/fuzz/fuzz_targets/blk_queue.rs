//! A hostile driver's virtqueue: the rings are laid out by virtio-queue's `MockSplitQueue`, then
//! the fuzzer's bytes overwrite guest memory from address 0 — descriptor table, available ring
//! (indices, heads), request headers, data buffers, indirect tables — and the block device drains
//! the queue a few times, executing everything in place or handing reads to its thread pool
//! (chosen by the input), then resets. It must never panic; the disk's size never changes; a
//! read-only disk's bytes never change; no read is left in flight after the reset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::virtio::block::handler::{ActiveQueue, BlockState};
use vmm::devices::virtio::block::pool::ReadPool;
use vmm::disk::mem::MemDisk;
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 0x1_0000;
const DISK: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let size = 1u16 << (data[0] % 6); // 1..=32
    let read_only = data[1] & 1 != 0;
    let event_idx = data[1] & 2 != 0;
    let rounds = 1 + (data[1] >> 2) % 4; // bits 2-3; bit 6 selects the read pool
    let mock = MockSplitQueue::new(&mem, size);
    let mut queue: Queue = mock.create_queue().unwrap();
    queue.set_event_idx(event_idx);
    let body = &data[2..];
    mem.write_slice(&body[..body.len().min(MEM)], GuestAddress(0))
        .unwrap();

    let disk = MemDisk::new(vec![0xa5; DISK], read_only);
    let mut state = BlockState::new(Box::new(disk), "fuzz-serial");
    if data[1] & 0x40 != 0 {
        let done = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        state = state.with_pool(ReadPool::new(2, done).unwrap());
    }
    state.active = Some(ActiveQueue {
        mem: mem.clone(),
        queue,
    });
    for _ in 0..rounds {
        if state.drain(64).is_err() {
            break; // a broken ring stops the device: fine
        }
    }
    state.reset();
    assert_eq!(state.in_flight(), 0);
    assert_eq!(state.disk.capacity(), DISK as u64);
    if read_only {
        let mut buf = vec![0u8; DISK];
        state
            .disk
            .read(0, &[vm_memory::VolatileSlice::from(&mut buf[..])])
            .unwrap();
        assert!(
            buf.iter().all(|b| *b == 0xa5),
            "a read-only disk was written"
        );
    }
});
