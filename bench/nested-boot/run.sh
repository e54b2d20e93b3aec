#!/usr/bin/env bash
# Real-Linux boot benchmark in the nested tier: inside one L1 machine (QEMU TCG with emulated
# AMD SVM, see tests/src/nested), the CirrOS-like image booted by `corral vmm` and by QEMU microvm
# (-enable-kvm on L1's /dev/kvm), interleaved, same kernel, initrd, disk, seed content, memory
# and vCPUs; medians of spawn -> first kernel line and spawn -> GUEST-READY. Not a test: prints a
# Markdown table.   bash bench/nested-boot/run.sh [RUNS] [CPUS]   (defaults 7, 1)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
RUNS=${1:-7}; CPUS=${2:-1}
bash tests/fixtures/build.sh >/dev/null
cargo build --release --quiet --bin corral
cargo build --release --quiet -p corral-tests --bin nested --bin nested-timer
# The image's own command line is quiet; loglevel=6 puts the kernel's banner (a notice) on the
# console for the first-line marker, for both VMMs. A boot the emulator breaks (see the README)
# is counted and left out of the medians.
out=$(./target/release/nested bench-boot --qemu --deadline $((RUNS * 240 + 120)) \
  RUNS="$RUNS" CPUS="$CPUS" L2_CMDLINE=loglevel=6 KEEP_GOING=1 2>/dev/null) || {
  echo "bench-boot failed; logs in target/nested/bench-boot/" >&2; exit 1; }
v() { echo "$out" | jq -r ".$1"; }
ratio() { echo "scale=3; $1 / $2" | bc; }
echo "| CirrOS-like image in L1 (median of $RUNS, $CPUS vCPU, 256 MiB) | corral pci | corral mmio | QEMU microvm pcie=on | QEMU microvm (mmio) | corral pci / QEMU pci | corral pci / corral mmio |"
echo "|---|---|---|---|---|---|---|"
for m in first ready; do
  name="spawn -> first kernel line"; [ $m = ready ] && name="spawn -> GUEST-READY"
  cp=$(v corral_pci_${m}_ms); cm=$(v corral_mmio_${m}_ms); qp=$(v qemu_pci_${m}_ms); qm=$(v qemu_mmio_${m}_ms)
  echo "| $name | $cp ms | $cm ms | $qp ms | $qm ms | $(ratio "$cp" "$qp") | $(ratio "$cp" "$cm") |"
done
echo
f=target/nested/bench-boot/out/failures.txt
echo "boots lost to the emulator: $( [ -e $f ] && wc -l < $f || echo 0) of $((4 * RUNS)); per run: target/nested/bench-boot/out/bench.txt"
