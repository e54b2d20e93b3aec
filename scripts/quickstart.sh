#!/usr/bin/env bash
# corral on a default, for a newcomer: builds corral and the in-tree test guest's container disk,
# imports it into the state dir's image store as localhost/corral/testguest:v1 (the image
# examples/vmirs.yaml boots), then runs `corral daemon` in the foreground (Ctrl+C stops it; the
# VMs keep running and the next start re-adopts them).
#   bash scripts/quickstart.sh [STATE_DIR [DAEMON FLAGS...]]
# STATE_DIR defaults to /tmp/corral; the API socket is STATE_DIR/run/corral.sock; further arguments
# go to `corral daemon` (e.g. --hpa-downscale-stabilization 30s).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STATE=$(realpath -m "${1:-/tmp/corral}")
shift $(( $# > 0 ? 1 : 0 ))
[ "$(id -u)" = 0 ] || echo "quickstart: not root: /dev/kvm access and per-VM cgroups may be refused" >&2
command -v mkfs.ext4 >/dev/null && command -v jq >/dev/null && command -v npm >/dev/null || bash .ci/install-deps.sh
bash tests/fixtures/build.sh
cargo build --release --bin corral
CORRAL="$ROOT/target/release/corral"
mkdir -p "$STATE/run"
"$CORRAL" image import --store "$STATE/images" --tag localhost/corral/testguest:v1 \
  "$ROOT/target/fixtures/images/testguest/docker-archive.tar"
echo "quickstart: API on $STATE/run/corral.sock; try:"
echo "  curl --unix-socket $STATE/run/corral.sock -H 'Content-Type: application/yaml' --data-binary @examples/vmirs.yaml \\"
echo "       http://localhost/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets"
echo "  $CORRAL proxy --socket $STATE/run/corral.sock   # web console: http://127.0.0.1:8001/ui/"
exec "$CORRAL" daemon --state-dir "$STATE" --run-dir "$STATE/run" "$@"
