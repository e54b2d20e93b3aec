#!/usr/bin/env python3
"""Seed programs for the mmio_transport target: the Linux driver's bring-up sequence (reset,
ACKNOWLEDGE, DRIVER, VERSION_1, FEATURES_OK, queue 0 at 0x1000/0x2000/0x3000, DRIVER_OK), then a
read request written into guest memory, a notification and the device's turn."""
import os
import struct

OUT = os.path.join(os.path.dirname(__file__), "mmio_transport")


def reg(off, value):
    return struct.pack("<BHI", 0, off, value)


def mem(addr, word):
    return struct.pack("<BH", 6, addr) + word


def memblock(addr, data):
    data = data + b"\0" * (-len(data) % 4)
    return b"".join(mem(addr + i, data[i:i + 4]) for i in range(0, len(data), 4))


def program(kind, features_high=1, size=16):
    p = [reg(0x70, 0), reg(0x70, 1), reg(0x70, 3), reg(0x24, 1), reg(0x20, features_high),
         reg(0x70, 11), reg(0x30, 0), reg(0x38, size), reg(0x80, 0x1000), reg(0x90, 0x2000),
         reg(0xa0, 0x3000), reg(0x44, 1), reg(0x70, 15)]
    descs = struct.pack("<QIHH", 0x4000, 16, 1, 1) + struct.pack("<QIHH", 0x5000, 512, 3, 2) \
        + struct.pack("<QIHH", 0x6000, 1, 2, 0)
    p.append(memblock(0x1000, descs))
    p.append(memblock(0x4000, struct.pack("<IIQ", kind, 0, 1)))
    p.append(memblock(0x2000, struct.pack("<HHH", 0, 1, 0)))
    p.append(reg(0x50, 0))
    p.append(struct.pack("<BHI", 7, 0, 0))
    return b"".join(p)


os.makedirs(OUT, exist_ok=True)
for name, data in {"read": b"\0" + program(0), "get-id": b"\0" + program(8),
                   "ro-write": b"\1" + program(1), "legacy": b"\0" + program(0, 0)}.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
