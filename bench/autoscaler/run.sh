#!/usr/bin/env bash
# Autoscaler benchmark: daemon CPU spent on sampling + autoscaling with N VMs (N processes in
# per-VM cgroups, a few spinning; the real sampler and HPA reconcile), against `ps` reading the
# same processes. Root only (it creates cgroups). Usage: bench/autoscaler/run.sh [N] [SPINNING] [ROUNDS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
[ "$(id -u)" = 0 ] || { echo "bench/autoscaler: needs root (per-VM cgroups)" >&2; exit 1; }
cargo build --release -q -p supervisor --example autoscaler-bench
exec "$ROOT/target/release/examples/autoscaler-bench" "${1:-50}" "${2:-5}" "${3:-200}"
