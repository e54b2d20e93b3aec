#!/usr/bin/env bash
# Fault and soak runs (tests/tools/soak.rs) against a real daemon with test-guest VMs: daemon
# kill -9 during 0->N->0 scales, VMM kill -9 in a Ready set, and scale cycles with resource counts
# back to their start. Bounded by its arguments; prints a Markdown table. Run as root (KVM, cgroups).
#   bash bench/soak/run.sh [--rounds 50] [--replicas 20] [--kills 20] [--cycles 1000] [--seed S]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
bash tests/fixtures/build.sh >/dev/null
cargo build --release --quiet --bin corral
cargo build --release --quiet -p corral-tests --bin soak
exec ./target/release/soak "$@"
