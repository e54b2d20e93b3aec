#!/usr/bin/env bash
# Autoscaler benchmark with real VMs: a fresh daemon runs N test-guest VMs (the seed lab's set with
# its image swapped) and the lab's HPA; over a measuring period it reports the daemon's CPU, the
# part spent sampling and syncing HPAs (its own counters), its RSS, and the VMMs' RSS. Then the
# scale-up reaction time from load start (scripts/loadtest.sh) at the default 15 s periods.
#
#   bench/autoscaler/vms.sh IMAGE [N] [MEASURE_SECONDS] [-- extra daemon args, e.g. --insecure-registry 127.0.0.1:5000]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${1:?usage: bench/autoscaler/vms.sh IMAGE [N] [MEASURE_SECONDS] [-- daemon args]}
N=${2:-50}
MEASURE=${3:-60}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
CORRAL=${CORRAL:-$ROOT/target/release/corral}
[ -x "$CORRAL" ] || cargo build --release -q --bin corral
D=$(mktemp -d /tmp/corral-bench-vms.XXXXXX)
"$CORRAL" daemon --state-dir "$D/state" --run-dir "$D/run" --cgroup-root "corral-bench-$$" --no-pod-network "$@" > "$D/daemon.log" 2>&1 &
DP=$!
cleanup() {
  kill "$DP" 2>/dev/null || true
  for p in $(cat "$D"/run/vms/*/vm.json 2>/dev/null | jq -r .pid); do kill -9 "$p" 2>/dev/null || true; done
  sleep 0.5
  # The daemon's VM cgroups and their parent (a daemon keeps its parent across restarts).
  for dir in $(find /sys/fs/cgroup -maxdepth 6 -type d -name "corral-bench-$$" 2>/dev/null); do
    rmdir "$dir"/*/ "$dir" 2>/dev/null || true
  done
}
trap cleanup EXIT
C=(curl -sS --unix-socket "$D/run/corral.sock")
for _ in $(seq 50); do "${C[@]}" http://x/readyz >/dev/null 2>&1 && break; sleep 0.2; done
RS=http://x/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets
sed -e "s|image: .*|image: $IMAGE|" -e "s|replicas: 2|replicas: $N|" "$ROOT/tests/fixtures/seed/vmirs.yaml" > "$D/set.yaml"
sed "s|maxReplicas: 2|maxReplicas: $(( N + 10 ))|" "$ROOT/tests/fixtures/seed/hpa.yaml" > "$D/hpa.yaml"
"${C[@]}" -o /dev/null -X POST -H 'Content-Type: application/yaml' --data-binary @"$D/set.yaml" "$RS"
"${C[@]}" -o /dev/null -X POST -H 'Content-Type: application/yaml' --data-binary @"$D/hpa.yaml" http://x/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers
t0=$(date +%s)
until [ "$("${C[@]}" "$RS/lab05-cirros-replicaset" | jq .status.readyReplicas)" = "$N" ]; do
  [ $(( $(date +%s) - t0 )) -lt 300 ] || { echo "not $N Ready VMIs after 300 s" >&2; exit 1; }
  sleep 1
done
echo "$N VMIs Ready after $(( $(date +%s) - t0 )) s; settling 35 s"
sleep 35
cnt() { "${C[@]}" http://x/metrics | awk -v k="$1" '$1 == k {print $2}'; }
cpu() { awk '{print $14 + $15}' "/proc/$DP/stat"; }
s0=$(cnt corral_metrics_sample_seconds_total); h0=$(cnt corral_hpa_sync_seconds_total)
n0=$(cnt corral_metrics_samples_total); c0=$(cpu); t0=$(date +%s.%N)
sleep "$MEASURE"
s1=$(cnt corral_metrics_sample_seconds_total); h1=$(cnt corral_hpa_sync_seconds_total)
n1=$(cnt corral_metrics_samples_total); c1=$(cpu); t1=$(date +%s.%N)
el=$(echo "$t1 - $t0" | bc -l)
pct() { printf '%.3f' "$(echo "$1" | bc -l)"; }
vmm_pids=$(cat "$D"/run/vms/*/vm.json | jq -r .pid | paste -sd,)
echo "| $N test-guest VMs, idle, 15 s sync and resolution | value |"
echo "|---|---|"
echo "| daemon CPU (all of it) | $(pct "($c1 - $c0) / 100 / $el * 100") % of one core |"
echo "| of which sampling ($(( n1 - n0 )) rounds) | $(pct "($s1 - $s0) / $el * 100") % ($(pct "($s1 - $s0) / ($n1 - $n0) * 1000") ms per round) |"
echo "| of which HPA syncs | $(pct "($h1 - $h0) / $el * 100") % |"
echo "| daemon RSS | $(( $(awk '/VmRSS/ {print $2}' "/proc/$DP/status") / 1024 )) MiB |"
echo "| VMMs' RSS (sum) | $(( $(ps -o rss= -p "$vmm_pids" | awk '{s += $1} END {print s}') / 1024 )) MiB |"
