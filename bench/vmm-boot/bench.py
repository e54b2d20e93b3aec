#!/usr/bin/env python3
"""Spawn -> first serial byte, spawn -> exit after ACPI poweroff, peak RSS, and RSS minus the
guest-touched RAM, for corral vmm and QEMU microvm booting the same test guest ELF; for corral
also spawn -> first KVM_RUN (the VMM's control socket reports the CLOCK_MONOTONIC of its first
KVM_RUN; QEMU has no such report).

Peak RSS is the process' VmHWM read from /proc at the guest's READY marker (the guest only idles
afterwards). wait4's ru_maxrss is not used: for a child spawned by Python it includes the
pre-exec RSS of the forked Python process (~15 MiB), which would swamp our VMM's figure."""
import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time

MEM_MIB = 256
CPUS = 1
CONTROL = {}  # run name -> control socket path (corral runs only)


BASELINE_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    printf("%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    return 0;
}
"""


def spawn_baseline(runs):
    """Median spawn -> main (s) of a trivial C program, spawned the way the VMMs are: what
    Python's fork/exec costs before any VMM code runs."""
    d = tempfile.mkdtemp(prefix="corral-bench-")
    src, exe = os.path.join(d, "t.c"), os.path.join(d, "t")
    with open(src, "w") as f:
        f.write(BASELINE_C)
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    times = []
    for _ in range(max(runs, 10)):
        t0 = time.monotonic_ns()
        out = subprocess.run([exe], stdout=subprocess.PIPE, check=True).stdout
        times.append((int(out) - t0) / 1e9)
    return statistics.median(times)


def first_kvm_run_ns(path):
    """CLOCK_MONOTONIC (ns) of the VMM's first KVM_RUN, from its control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b'{"op":"status"}\n')
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return json.loads(reply)["first_kvm_run_monotonic_ns"]


def commands(args, cmdline):
    ours = [args.corral, "vmm", "--kernel", args.guest, "--cmdline", cmdline,
            "--memory", f"{MEM_MIB}Mi", "--cpus", str(CPUS)]
    qemu = ["qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-kernel", args.guest,
            "-append", cmdline, "-m", f"{MEM_MIB}M", "-smp", str(CPUS), "-nodefaults",
            "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"]
    cmds = {"corral": ours, "qemu": qemu}
    for name in ("corral", "jailed"):
        CONTROL[name] = os.path.join(tempfile.mkdtemp(prefix="corral-bench-"), "control.sock")
    cmds["corral"] = ours + ["--control-socket", CONTROL["corral"]]
    if os.geteuid() == 0 and not args.no_jailed:
        # As the daemon runs it: jailed (own mount namespace, unprivileged uid, seccomp).
        cmds["jailed"] = ours + ["--control-socket", CONTROL["jailed"],
                                 "--jail-uid", str(0x7C000000 + 0xBE7)]
    return cmds


def timed_poweroff(cmd):
    """Returns (first byte s, exit s)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    first = None
    out = b""
    while True:
        chunk = os.read(p.stdout.fileno(), 65536)
        if first is None and chunk:
            first = time.monotonic() - t0
        if not chunk:
            break
        out += chunk
    _, status, _ = os.wait4(p.pid, 0)
    end = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0 or b"testguest: poweroff" not in out:
        raise SystemExit(f"{cmd[0]} did not power off cleanly: status {status}\n{out[-500:]!r}")
    return first, end


def guest_ram_rss_kib(pid):
    """RSS of the mapping that backs guest RAM (an anonymous mapping of ~MEM_MIB)."""
    best = 0
    size = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line.startswith("Size:"):
                size = int(line.split()[1])
            elif line.startswith("Rss:") and size is not None:
                if MEM_MIB * 1024 <= size <= (MEM_MIB + 8) * 1024:
                    best = max(best, int(line.split()[1]))
    return best


def anonymous_kib(pid):
    """Anonymous memory (heap, stacks, guest RAM): what one more VMM adds to the host. The
    binary's and libc's pages in RSS are the page cache's, one copy for every VMM and the
    daemon (they count as "private" here only because no other process maps them)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    return 0


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_at_ready(cmd, control):
    """Boots the idle guest, samples RSS (and spawn -> first KVM_RUN from `control`, if given) at
    the ready marker, then powers it off via the console."""
    t0 = time.monotonic_ns()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    out = b""
    deadline = time.monotonic() + 60
    while b"TESTGUEST READY" not in out:
        if time.monotonic() > deadline:
            p.kill()
            raise SystemExit(f"{cmd[0]}: no READY within 60 s: {out[-500:]!r}")
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            raise SystemExit(f"{cmd[0]} exited before READY: {out[-500:]!r}")
        out += chunk
    time.sleep(0.2)
    total = status_kib(p.pid, "VmRSS")
    peak = status_kib(p.pid, "VmHWM")
    guest = guest_ram_rss_kib(p.pid)
    private = anonymous_kib(p.pid)
    startup = (first_kvm_run_ns(control) - t0) / 1e9 if control else None
    p.stdin.write(b"poweroff\n")
    p.stdin.flush()
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        raise SystemExit(f"{cmd[0]} ignored the console poweroff")
    p.stdout.read()
    return total, peak, guest, private, startup


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--corral", required=True)
    ap.add_argument("--guest", required=True)
    ap.add_argument("--no-jailed", action="store_true",
                    help="skip the jailed corral runs (added by default when run as root)")
    args = ap.parse_args()
    poweroff = commands(args, "mode=poweroff")
    idle = commands(args, "console=ttyS0")
    results = {name: {"first": [], "exit": [], "peak": [], "rss": [], "overhead": [],
                      "private": [], "startup": [], "exec": []}
               for name in poweroff}
    baseline = spawn_baseline(args.runs)
    for i in range(args.runs):
        for name in poweroff:  # interleaved: corral, qemu, (jailed,) corral, qemu, ...
            first, end = timed_poweroff(poweroff[name])
            total, peak, guest, private, startup = rss_at_ready(idle[name], CONTROL.get(name))
            r = results[name]
            if startup is not None:
                r["startup"].append(startup)
                r["exec"].append(startup - baseline)
            r["first"].append(first)
            r["exit"].append(end)
            r["peak"].append(peak)
            r["rss"].append(total)
            r["overhead"].append(total - guest)
            r["private"].append(private - guest)
        print(f"run {i + 1}/{args.runs} done", flush=True)
    med = {n: {k: statistics.median(v) if v else None for k, v in r.items()}
           for n, r in results.items()}
    c, q = med["corral"], med["qemu"]
    j = med.get("jailed")
    print()
    print(f"Test guest, {MEM_MIB} MiB, {CPUS} vCPU, {args.runs} interleaved runs each, medians:")
    print()
    head = "| metric | corral vmm |" + (" corral vmm, jailed |" if j else "") + " QEMU microvm | corral / QEMU |"
    print(f"Spawn → main of a trivial C program, spawned the same way: {baseline*1000:.2f} ms.")
    print()
    print(head)
    print("|---|---|" + ("---|" if j else "") + "---|---|")

    def row(name, key, fmt):
        jailed = f" {fmt(j[key])} |" if j else ""
        if q[key] is None:
            print(f"| {name} | {fmt(c[key])} |{jailed} n/a | n/a |")
            return
        print(f"| {name} | {fmt(c[key])} |{jailed} {fmt(q[key])} | {c[key]/q[key]:.3f} |")

    ms = lambda v: f"{v*1000:.1f} ms"
    mib = lambda v: f"{v/1024:.1f} MiB"
    row("spawn → first KVM_RUN", "startup", lambda v: f"{v*1000:.2f} ms")
    row("exec → first KVM_RUN (the above minus the trivial program's)", "exec",
        lambda v: f"{v*1000:.2f} ms")
    row("spawn → first serial byte", "first", ms)
    row("spawn → exit after ACPI poweroff", "exit", ms)
    row("peak RSS (VmHWM at READY)", "peak", mib)
    row("RSS at READY", "rss", mib)
    row("RSS minus guest-touched RAM (VMM overhead)", "overhead", mib)
    row("anonymous memory minus guest-touched RAM (added per VM)", "private", mib)


if __name__ == "__main__":
    main()
