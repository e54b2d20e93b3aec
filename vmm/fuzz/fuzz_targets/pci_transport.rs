//! The virtio-pci function driven by a hostile driver: the input is a program of configuration
//! space accesses (capabilities, BAR sizing, MSI-X control, the PCI_CFG window), BAR0 accesses
//! (common configuration, ISR, device configuration, notifications, MSI-X table and pending
//! bits; any offset, any width), guest-memory writes and device turns, against a block device
//! over an in-memory disk. It must never panic, and the device must only start with queues that
//! lie in guest memory.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::MmioDevice;
use vmm::devices::pci::PciFunction;
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::pci::PciTransport;
use vmm::disk::mem::MemDisk;

const MEM: usize = 0x1_0000;

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let disk = MemDisk::new(vec![0x5a; 8192], data.first().is_some_and(|b| b & 1 != 0));
    let parts = Block::create(Box::new(disk), "fuzz").unwrap();
    let t = Arc::new(PciTransport::new(parts.device, parts.interrupt, parts.notify).unwrap());
    let handler = parts.handler;
    t.attach(mem.clone(), 0xc000_0000, None);
    let mut ops = data.get(1..).unwrap_or_default().chunks_exact(8);
    for op in &mut ops {
        let value = u32::from_le_bytes([op[4], op[5], op[6], op[7]]);
        let width = [1usize, 2, 4, 8][(op[3] & 3) as usize];
        let bytes = value.to_le_bytes().repeat(2);
        match op[0] % 8 {
            // BAR0: the common configuration (most of the program), then anywhere.
            0..=2 => {
                let off = u64::from(op[1] & 0x3f);
                let w = [1usize, 2, 4][(op[3] % 3) as usize];
                t.write(off, &bytes[..w]);
            }
            3 => {
                let off = u64::from(u16::from_le_bytes([op[1], op[2]]) & 0x7fff);
                t.write(off, &bytes[..width]);
            }
            4 => {
                let off = u64::from(u16::from_le_bytes([op[1], op[2]]) & 0x7fff);
                let mut buf = [0u8; 8];
                t.read(off, &mut buf[..width]);
            }
            // Configuration space (the bus never passes offsets past 256).
            5 => {
                let off = usize::from(op[1]);
                let w = width.min(256 - off);
                if op[2] & 1 == 0 {
                    t.config_write(off, &bytes[..w]);
                } else {
                    let mut buf = [0u8; 8];
                    t.config_read(off, &mut buf[..w]);
                }
            }
            // Guest memory writes (descriptors, rings, requests).
            6 => {
                let addr = u64::from(u16::from_le_bytes([op[1], op[2]]));
                let _ = mem.write_slice(&op[4..8], GuestAddress(addr));
            }
            // The device's turn: serve whatever the queue holds.
            _ => handler.run(),
        }
    }
    handler.run();
});
