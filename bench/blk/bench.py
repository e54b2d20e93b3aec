#!/usr/bin/env python3
"""virtio-blk benchmark: sequential read throughput of a raw disk read by the in-tree test guest
(`blk bench DEV MIB DEPTH KIB`: KIB-KiB requests, DEPTH in flight) in `corral vmm` over
virtio-pci and virtio-mmio and in QEMU microvm over virtio-blk-pci (`pcie=on`) and
virtio-blk-device, plus `corral vmm` start time with a small vs a huge sparse base.

Throughput: each VMM boots the same guest once with the same disk (read-only, raw); then each
configuration's bench command runs alternately in each VM, ROUNDS times, and the host times each
run from the guest's `blk bench start` line to its `blk bench done` line (wall clock, as the
lines arrive on the serial console). "Warm": the disk is in the host page cache (a warm-up pass
reads it first) and each run reads MIB MiB, wrapping around the disk. "Cold": the disk's pages
are dropped from the page cache (posix_fadvise DONTNEED) before every run, which reads the disk
once. Medians are reported, with the ratio corral / QEMU.

Start time: spawn → `TESTGUEST READY` for `corral vmm --disk BASE,overlay` with a 10 MiB and a
10 GiB sparse base (the guest reads the disk's capacity, serial and first sector before READY),
interleaved; median and fastest run (the fastest shows the cost without the machine's noise)."""
import argparse
import os
import select
import statistics
import subprocess
import tempfile
import time


class Vm:
    """A VMM process running the test guest, driven through its serial console (stdio)."""

    def __init__(self, cmd):
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.buf = b""
        self.t0 = time.monotonic()

    def wait(self, marker, timeout=300):
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                end = self.buf.find(b"\n", i)
                if end >= 0:
                    line = self.buf[i:end]
                    self.buf = self.buf[end + 1:]
                    return time.monotonic(), line.decode(errors="replace")
            r, _, _ = select.select([self.p.stdout], [], [], 1)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    raise SystemExit(f"VMM exited before {marker!r}: {self.buf[-500:]!r}")
                self.buf += chunk
            if time.monotonic() > deadline:
                self.p.kill()
                raise SystemExit(f"timeout waiting for {marker!r}: {self.buf[-500:]!r}")

    def send(self, line):
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def bench(self, cmd):
        self.send(cmd)
        t0, _ = self.wait(b"blk bench start")
        t1, done = self.wait(b"blk bench done")
        if "errors=0" not in done:
            raise SystemExit(f"bench errors: {done}")
        return t1 - t0

    def poweroff(self):
        self.send("poweroff")
        self.p.wait(timeout=60)


def median(xs):
    return statistics.median(xs)


def throughput(args, disk):
    def ours(transport):
        return [args.corral, "vmm", "--kernel", args.guest, "--cmdline", "console=ttyS0",
                "--memory", "256Mi", "--cpus", "1", "--transport", transport,
                "--disk", f"{disk},ro,serial=bench"]

    def qemu(pci):
        return ["qemu-system-x86_64", "-M", "microvm,pcie=on" if pci else "microvm",
                "-enable-kvm", "-kernel", args.guest,
                "-append", "console=ttyS0", "-m", "256M", "-smp", "1", "-nodefaults",
                "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
                "-global", "virtio-mmio.force-legacy=false",
                "-drive", f"id=d0,file={disk},format=raw,if=none,readonly=on",
                "-device", f"{'virtio-blk-pci' if pci else 'virtio-blk-device'},drive=d0,serial=bench"]
    vms = {"corral pci": Vm(ours("pci")), "QEMU pci": Vm(qemu(True)),
           "corral mmio": Vm(ours("mmio")), "QEMU mmio": Vm(qemu(False))}
    for vm in vms.values():
        vm.wait(b"TESTGUEST READY")
    for vm in vms.values():  # warm-up: page cache and guest pages
        vm.bench(f"blk bench 0 {args.disk_mib} 4 1024")
    results = []
    for kib, depth, cold in CONFIGS:
        mib = args.disk_mib if cold else args.mib
        cmd = f"blk bench 0 {mib} {depth} {kib}"
        times = {k: [] for k in vms}
        for _ in range(args.rounds):
            for name, vm in vms.items():
                if cold:
                    evict(disk)
                times[name].append(vm.bench(cmd))
        mibs = {k: mib / median(v) for k, v in times.items()}
        results.append((kib, depth, cold, mib, mibs, times))
    for vm in vms.values():
        vm.poweroff()
    return results


# (request KiB, requests in flight, cold page cache)
CONFIGS = [(1024, 4, False), (512, 8, False), (1024, 4, True)]


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def start_time(args, work):
    small = os.path.join(work, "base-10M.raw")
    huge = os.path.join(work, "base-10G.raw")
    for path, size in ((small, 10 << 20), (huge, 10 << 30)):
        with open(path, "wb") as f:
            f.truncate(size)
    scratch = os.path.join(work, "scratch")
    os.makedirs(scratch, exist_ok=True)
    res = {"10 MiB": [], "10 GiB": []}
    for _ in range(args.start_runs):
        for label, path in (("10 MiB", small), ("10 GiB", huge)):
            t0 = time.monotonic()
            vm = Vm([args.corral, "vmm", "--kernel", args.guest, "--cmdline", "console=ttyS0",
                     "--disk", f"{path},overlay,serial=root", "--scratch-dir", scratch])
            t1, _ = vm.wait(b"TESTGUEST READY", timeout=60)
            res[label].append(t1 - t0)
            vm.poweroff()
    return {k: (median(v), min(v)) for k, v in res.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", required=True)
    ap.add_argument("--guest", required=True)
    ap.add_argument("--disk-mib", type=int, default=256)
    ap.add_argument("--mib", type=int, default=4096,
                    help="MiB read per warm run (wraps around the disk)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--start-runs", type=int, default=25)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-blk-bench-", dir="/var/tmp") as work:
        disk = os.path.join(work, "disk.raw")
        with open(disk, "wb") as f:
            for _ in range(args.disk_mib):
                f.write(os.urandom(1 << 20))
        results = throughput(args, disk)
        starts = start_time(args, work)
    for kib, depth, cold, _, _, times in results:
        label = f"{kib} KiB x {depth}{' cold' if cold else ''}"
        for name, ts in times.items():
            print(f"raw runs (s), {label}: {name:12} {[round(t, 3) for t in ts]}")
    print()
    names = list(results[0][4])
    print(f"| sequential read of a {args.disk_mib} MiB raw disk (MiB/s, median of {args.rounds}) "
          f"| {' | '.join(names)} | corral pci / QEMU pci | corral pci / corral mmio |")
    print("|---" * (len(names) + 3) + "|")
    for kib, depth, cold, mib, mibs, _ in results:
        cache = f"cold page cache, {mib} MiB per run" if cold else f"warm page cache, {mib} MiB per run"
        cells = " | ".join(f"{mibs[n]:.0f}" for n in names)
        print(f"| {kib} KiB requests, {depth} in flight, {cache} | {cells} "
              f"| {mibs['corral pci'] / mibs['QEMU pci']:.2f} "
              f"| {mibs['corral pci'] / mibs['corral mmio']:.2f} |")
    print()
    print(f"| corral vmm start, spawn → READY with an overlay disk ({args.start_runs} runs each) "
          f"| median | fastest |")
    print("|---|---|---|")
    for k, (med, fastest) in starts.items():
        print(f"| {k} sparse base | {med * 1000:.1f} ms | {fastest * 1000:.1f} ms |")
    big, small = starts["10 GiB"], starts["10 MiB"]
    print(f"| 10 GiB / 10 MiB | {big[0] / small[0]:.2f} | {big[1] / small[1]:.2f} |")


if __name__ == "__main__":
    main()
