//! A hostile driver's virtio-net queues: the receive and transmit rings are laid out by
//! virtio-queue's `MockSplitQueue` (at 0 and 0x8000), then the fuzzer's bytes overwrite guest
//! memory from address 0 — descriptor tables, available rings (indices, heads), vnet headers,
//! frames, indirect tables — while frames of fuzzer-chosen sizes wait on a datagram socket
//! standing in for the tap. The device then runs TX and RX a few times (mergeable buffers,
//! `EVENT_IDX` and the queue sizes chosen by the input) and resets. It must never panic; RX never
//! delivers or drops more frames than were sent; a device waiting for receive buffers does not
//! watch the tap.
#![no_main]

use std::os::unix::net::UnixDatagram;

use libfuzzer_sys::fuzz_target;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::virtio::net::handler::{ActiveNet, NetState};
use vmm::devices::virtio::net::tap::Tap;
use vmm_sys_util::epoll::EventSet;

const MEM: usize = 0x2_0000;
const TX_BASE: u64 = 0x8000;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let rx_size = 1u16 << (data[0] % 6); // 1..=32
    let tx_size = 1u16 << ((data[0] >> 3) % 6);
    let mergeable = data[1] & 1 != 0;
    let event_idx = data[1] & 2 != 0;
    let rounds = 1 + (data[1] >> 2) % 4;
    let frames = usize::from(data[2] % 8);
    let frame_len = usize::from(u16::from_le_bytes([data[3], data[4]])) + usize::from(data[5]) * 4;

    let rx_mock = MockSplitQueue::create(&mem, GuestAddress(0), rx_size);
    let tx_mock = MockSplitQueue::create(&mem, GuestAddress(TX_BASE), tx_size);
    let mut rx: Queue = rx_mock.create_queue().unwrap();
    let mut tx: Queue = tx_mock.create_queue().unwrap();
    rx.set_event_idx(event_idx);
    tx.set_event_idx(event_idx);
    let body = &data[6..];
    mem.write_slice(&body[..body.len().min(MEM)], GuestAddress(0))
        .unwrap();

    let (ours, peer) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    peer.set_nonblocking(true).unwrap();
    let mut sent = 0u64;
    for i in 0..frames {
        let len = frame_len.saturating_sub(i * 100).min(70_000);
        let frame: Vec<u8> = (0..len).map(|b| b as u8 ^ i as u8).collect();
        if peer.send(&frame).is_ok() {
            sent += 1;
        }
    }
    let mut state = NetState::new(Tap::stand_in(ours.into()));
    state.active = Some(ActiveNet {
        mem: mem.clone(),
        rx,
        tx,
        mergeable,
    });
    for _ in 0..rounds {
        let tx = state.process_tx(64);
        let rx = state.process_rx(64);
        if tx.is_err() || rx.is_err() {
            break; // a broken ring stops the device: fine
        }
        if state.rx_wait {
            assert!(!state.interest().contains(EventSet::IN));
        }
        let s = &state.stats;
        assert!(s.rx_frames + s.rx_dropped <= sent, "{s:?} of {sent}");
    }
    // Whatever TX sent is on the peer side, one datagram per frame with a vnet header.
    let mut buf = vec![0u8; 70_000];
    while let Ok(n) = peer.recv(&mut buf) {
        assert!(n >= 12);
    }
    state.reset();
    assert!(state.interest().is_empty());
});
