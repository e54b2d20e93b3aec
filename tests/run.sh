#!/usr/bin/env bash
# The test command: installs missing system packages (root), builds fixtures (cached), builds the
# binary and runs every test of the workspace (unit, KVM, end-to-end).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash .ci/install-deps.sh
bash tests/fixtures/build.sh
cargo build --release --bin corral
cargo test --workspace --release --no-fail-fast -- --test-threads=2 "$@"
