#!/usr/bin/env bash
# Boot benchmark: `corral vmm` (as root also jailed, as the daemon runs it) vs
# `qemu-system-x86_64 -M microvm` booting the test guest, same memory and vCPUs, runs
# interleaved. Not a test: prints a Markdown table for the README.
#   bash bench/vmm-boot/run.sh [RUNS]      (default 20)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
bash tests/fixtures/build.sh >/dev/null
cargo build --release --quiet --bin corral
exec python3 bench/vmm-boot/bench.py --runs "${1:-20}" --corral target/release/corral \
  --guest target/fixtures/testguest.elf
