//! The virtio-mmio register window driven by a hostile driver: the input is a program of
//! 32-bit register writes and reads (any offset, any width), guest-memory writes and queue
//! notifications against a block device over an in-memory disk. It must never panic, and the
//! device must only start with queues that lie in guest memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::MmioDevice;
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::mmio::MmioTransport;
use vmm::disk::mem::MemDisk;

const MEM: usize = 0x1_0000;

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let disk = MemDisk::new(vec![0x5a; 8192], data.first().is_some_and(|b| b & 1 != 0));
    let parts = Block::create(Box::new(disk), "fuzz").unwrap();
    let transport = MmioTransport::new(parts.device, parts.interrupt, parts.notify);
    let handler = parts.handler;
    transport.attach(mem.clone());
    let mut ops = data.get(1..).unwrap_or_default().chunks_exact(7);
    for op in &mut ops {
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]]) & 0x1ff);
        let value = u32::from_le_bytes([op[3], op[4], op[5], op[6]]);
        match op[0] % 8 {
            // Well-formed 32-bit register writes (most of the program).
            0..=3 => transport.write(offset & !3, &value.to_le_bytes()),
            // Any width / alignment.
            4 => {
                let width = [1usize, 2, 4, 8][(op[3] & 3) as usize];
                transport.write(offset, &value.to_le_bytes().repeat(2)[..width]);
            }
            5 => {
                let mut buf = [0u8; 8];
                let width = [1usize, 2, 4, 8][(op[3] & 3) as usize];
                transport.read(offset, &mut buf[..width]);
            }
            // Guest memory writes (descriptors, rings, requests).
            6 => {
                let addr = u64::from(u16::from_le_bytes([op[1], op[2]]));
                let _ = mem.write_slice(&op[3..7], GuestAddress(addr));
            }
            // The device's turn: serve whatever the queue holds.
            _ => handler.run(),
        }
    }
    handler.run();
});
