#!/usr/bin/env python3
"""Writes seed inputs for the blk_queue target: well-formed requests in the MockSplitQueue layout
(queue size 16: descriptor table at 0, available ring at 0x100), so the fuzzer starts from chains
the device accepts and mutates from there."""
import os
import struct

OUT = os.path.join(os.path.dirname(__file__), "blk_queue")
NEXT, WRITE, INDIRECT = 1, 2, 4


def seed(name, kind, sector, data_len, write_data, ro=False, indirect=False):
    mem = bytearray(0x3100)
    descs = [(0x1000, 16, NEXT, 1)]
    if data_len:
        descs.append((0x2000, data_len, NEXT | (WRITE if write_data else 0), 2))
    descs.append((0x3000, 1, WRITE, 0))
    if not data_len:
        descs[0] = (0x1000, 16, NEXT, 1)
    table = b"".join(struct.pack("<QIHH", a, l, f, n if i < len(descs) - 1 else 0)
                     for i, (a, l, f, n) in enumerate(descs))
    if indirect:
        mem[0x2800:0x2800 + len(table)] = table
        mem[0:16] = struct.pack("<QIHH", 0x2800, len(table), INDIRECT, 0)
    else:
        mem[0:len(table)] = table
    mem[0x100:0x106] = struct.pack("<HHH", 0, 1, 0)  # flags, idx = 1, ring[0] = head 0
    mem[0x1000:0x1010] = struct.pack("<IIQ", kind, 0, sector)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([4, 1 if ro else 0]) + bytes(mem))


os.makedirs(OUT, exist_ok=True)
seed("in", 0, 2, 1024, True)
seed("out", 1, 3, 512, False)
seed("out-ro", 1, 3, 512, False, ro=True)
seed("flush", 4, 0, 0, False)
seed("get-id", 8, 0, 20, True)
seed("in-indirect", 0, 1, 512, True, indirect=True)
seed("write-zeroes", 13, 0, 16, False)
