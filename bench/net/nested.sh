#!/usr/bin/env bash
# bench/net, nested tier: a real Linux guest (the CirrOS-like image) in one L1 machine (QEMU TCG
# with emulated AMD SVM, see tests/src/nested), its NIC through `corral vmm --net` and through
# QEMU microvm's virtio-net-device (vhost off: the peer; vhost on: the ceiling) on the same tap
# in L1; same kernel, initrd, disks, seed, MAC, memory and vCPUs; interleaved runs, medians of
# iperf3 TCP throughput both ways and ping round-trip time. All traffic stays inside L1 (which
# has no NIC). Not a test: prints a Markdown table.
#   bash bench/net/nested.sh [RUNS [SECONDS]]      (defaults 5 and 10)
#   NESTED_L1_CPUS=2 ...: L1 with two vCPUs (device thread and guest vCPU in parallel; that L1
#   loses vCPU wake-ups now and then, see tests/src/nested); TRANSPORT=mmio ...: corral on
#   virtio-mmio like the QEMU peer (default: virtio-pci, corral's default).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
RUNS=${1:-5}; SECS=${2:-10}
# L1's vCPUs (the nested tier's default is 1; see tests/src/nested) and corral's transport.
L1_CPUS=${NESTED_L1_CPUS:-1}; TRANSPORT=${TRANSPORT:-}
bash tests/fixtures/build.sh >/dev/null
cargo build --release --quiet --bin corral
cargo build --release --quiet -p corral-tests --bin nested --bin nested-timer
out=$(./target/release/nested bench-net --qemu --pod-network --deadline $((RUNS * 3 * (2 * SECS + 60) + 120)) \
  RUNS="$RUNS" SECS="$SECS" KEEP_GOING=1 ${TRANSPORT:+TRANSPORT=$TRANSPORT} 2>/dev/null) || {
  echo "bench-net failed; logs in target/nested/bench-net/" >&2; exit 1; }
v() { echo "$out" | jq -r ".$1"; }
ratio() { echo "scale=2; $1 / $2" | bc; }
echo "| real Linux guest in L1 ($L1_CPUS vCPU), median of $RUNS | corral vmm (virtio-${TRANSPORT:-pci}) | QEMU microvm (virtio-mmio), vhost off | corral / QEMU | QEMU, vhost on (ceiling) |"
echo "|---|---|---|---|---|"
row() {  # label key unit
  echo "| $1 | $(v corral_$2) $3 | $(v qemu_$2) $3 | $(ratio "$(v corral_$2)" "$(v qemu_$2)") | $(v qemu_vhost_$2) $3 |"
}
row "TCP L1 → guest (iperf3, ${SECS} s)" to_guest_mbps Mbit/s
row "TCP guest → L1 (iperf3 -R, ${SECS} s)" from_guest_mbps Mbit/s
row "round-trip time (ping, 20 × 0.2 s)" rtt_ms ms
echo
f=target/nested/bench-net/out/failures.txt
echo "runs lost to the emulator: $( [ -e $f ] && wc -l < $f || echo 0) of $((3 * RUNS)); per run: target/nested/bench-net/out/bench.txt"
