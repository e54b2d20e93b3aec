//! A hostile driver's virtqueue: the rings are laid out by virtio-queue's `MockSplitQueue`, then
//! the fuzzer's bytes overwrite guest memory from address 0 — descriptor table, available ring
//! (indices, heads), request headers, data buffers, indirect tables — and the block device drains
//! the queue a few times. It must never panic; the disk's size never changes; a read-only disk's
//! bytes never change.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::virtio::block::handler::{ActiveQueue, BlockState};
use vmm::disk::mem::MemDisk;

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
    let rounds = 1 + (data[1] >> 2) % 4;
    let mock = MockSplitQueue::new(&mem, size);
    let mut queue: Queue = mock.create_queue().unwrap();
    queue.set_event_idx(event_idx);
    let body = &data[2..];
    mem.write_slice(&body[..body.len().min(MEM)], GuestAddress(0)).unwrap();

    let disk = MemDisk::new(vec![0xa5; DISK], read_only);
    let mut state = BlockState::new(Box::new(disk), "fuzz-serial");
    state.active = Some(ActiveQueue { mem: mem.clone(), queue });
    for _ in 0..rounds {
        if state.drain(64).is_err() {
            break; // a broken ring stops the device: fine
        }
    }
    assert_eq!(state.disk.capacity(), DISK as u64);
    if read_only {
        let mut buf = vec![0u8; DISK];
        state
            .disk
            .read(0, &[vm_memory::VolatileSlice::from(&mut buf[..])])
            .unwrap();
        assert!(buf.iter().all(|b| *b == 0xa5), "a read-only disk was written");
    }
});
