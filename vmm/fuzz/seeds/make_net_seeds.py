#!/usr/bin/env python3
"""Writes seeds/net_queues/*: well-formed inputs for the net_queues target.

Layout of an input (see fuzz_targets/net_queues.rs): 6 header bytes (queue sizes, flags, frame
count and size), then guest memory from address 0. Both queues have 8 entries: the receive ring at
0 (MockSplitQueue: descriptors, available ring at 128, used ring at 152), the transmit ring at
0x8000. RX gets four 1 KiB buffers, TX one frame split into header and data.
"""
import os
import struct

SIZE = 8
SIZE_CODE = 3 + 8 * 3  # 1 << 3 for both queues
NEXT, WRITE = 1, 2


def desc(addr, length, flags=0, nxt=0):
    return struct.pack("<QIHH", addr, length, flags, nxt)


def ring(mem, base, descs, heads):
    for i, d in enumerate(descs):
        mem[base + 16 * i : base + 16 * i + 16] = d
    avail = base + 16 * SIZE
    mem[avail : avail + 4] = struct.pack("<HH", 0, len(heads))
    for i, h in enumerate(heads):
        mem[avail + 4 + 2 * i : avail + 6 + 2 * i] = struct.pack("<H", h)


def seed(flags, frames, frame_len, rx_descs, rx_heads):
    mem = bytearray(0x9200)
    ring(mem, 0, rx_descs, rx_heads)
    ring(mem, 0x8000, [desc(0x9000, 12, NEXT, 1), desc(0x9100, 60)], [0])
    mem[0x9100:0x913C] = bytes(range(60))
    return bytes([SIZE_CODE, flags, frames]) + struct.pack("<HB", frame_len, 0) + bytes(mem)


out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "net_queues")
os.makedirs(out, exist_ok=True)
four = [desc(0x1000 + 0x400 * i, 1024, WRITE) for i in range(4)]
chained = [desc(0x1000, 100, WRITE | NEXT, 1), desc(0x2000, 2000, WRITE)]
seeds = {
    # mergeable, 2 rounds, three 1500-byte frames over four 1 KiB buffers
    "mergeable": seed(0b0101, 3, 1500, four, [0, 1, 2, 3]),
    # mergeable + EVENT_IDX
    "event-idx": seed(0b0111, 3, 1500, four, [0, 1, 2, 3]),
    # one chained buffer, no MRG_RXBUF: one frame fits, the big one is dropped
    "plain": seed(0b0100, 2, 2000, chained, [0]),
    # no receive buffers at all: flow control
    "no-buffers": seed(0b0001, 2, 64, [], []),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {out}")
