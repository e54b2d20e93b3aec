#!/usr/bin/env bash
# virtio-blk benchmark: corral vmm vs QEMU microvm, each over virtio-pci and virtio-mmio, same
# test guest and disk.
# Not a test: prints Markdown tables for the README.   bash bench/blk/run.sh [bench.py flags]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
bash tests/fixtures/build.sh >/dev/null
cargo build --release --quiet --bin corral
exec python3 bench/blk/bench.py --corral target/release/corral --guest target/fixtures/testguest.elf "$@"
