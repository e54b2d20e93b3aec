#!/usr/bin/env bash
# bench/services: what a Service costs over talking to the pod IP directly, same endpoint, same
# run. A real daemon with pod networking in a network namespace this script makes (nothing leaves
# it); sequential HTTP GETs on new connections (tests/tools/http_lat.rs: connect → response end,
# µs), interleaved rounds, medians. Two endpoints:
#   * the test guest's HTTP server in a VMI of the seed set (its own smoltcp stack, emulated
#     instruction by instruction under PVM: the guest dominates, the ratio is what matters);
#   * busybox httpd in a namespace on the pod bridge behind a selectorless Service with
#     user-written Endpoints: no guest in the way, so the nftables path's own cost shows;
#     iperf3 there too, for bulk TCP throughput (NAT touches a connection's first packet only).
#   bash bench/services/run.sh [ROUNDS [REQUESTS]]      (defaults 5 and 300)
set -euo pipefail
if [ -z "${CORRAL_BENCH_NETNS:-}" ]; then
  exec env CORRAL_BENCH_NETNS=1 unshare -n -- bash "$0" "$@"
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ROUNDS=${1:-5}; N=${2:-300}
bash tests/fixtures/build.sh >/dev/null
cargo build --release -q --bin corral
cargo build --release -q -p corral-tests --bin http-lat
CORRAL=$ROOT/target/release/corral; LAT=$ROOT/target/release/http-lat
W=$(mktemp -d /tmp/corral-bench-svc.XXXXXX)
PIDS=()
cleanup() {
  # VMs outlive their daemon by design: delete the set and wait for its VMIs to go first.
  if [ -S "${CORRAL_SOCKET:-/nonexistent}" ]; then
    curl -sS --unix-socket "$CORRAL_SOCKET" -o /dev/null -X DELETE \
      http://localhost/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets/lab05-cirros-replicaset || true
    for _ in $(seq 300); do
      [ "$(curl -sS --unix-socket "$CORRAL_SOCKET" http://localhost/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances \
        | jq '.items | length' 2>/dev/null)" = 0 ] && break
      sleep 0.1
    done
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del corral-bench-srv 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
ip link set lo up
mkdir -p "$W/net.d" "$W/run"
cat > "$W/net.d/10-corral.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "corral", "plugins": [{"type": "bridge", "bridge": "corral0",
 "isGateway": true, "ipMasq": true, "hairpinMode": true, "ipam": {"type": "host-local",
 "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$W/ipam"}}]}
JSON
"$CORRAL" image import --store "$W/state/images" --tag localhost/corral/testguest:v1 \
  target/fixtures/images/testguest/docker-archive.tar >/dev/null
"$CORRAL" daemon --state-dir "$W/state" --run-dir "$W/run" --cni-conf-dir "$W/net.d" > "$W/daemon.log" 2>&1 &
PIDS+=($!)
export CORRAL_SOCKET=$W/run/corral.sock
api() { curl -sS --unix-socket "$CORRAL_SOCKET" "$@"; }
for _ in $(seq 100); do api -o /dev/null http://localhost/readyz 2>/dev/null && break; sleep 0.1; done
sed 's/replicas: 2/replicas: 1/' examples/vmirs.yaml \
  | api -o /dev/null -H 'Content-Type: application/yaml' --data-binary @- \
    http://localhost/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets
for _ in $(seq 300); do
  POD=$(api http://localhost/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances \
    | jq -r '.items[0].status.interfaces[0].ipAddress // empty')
  [ -n "$POD" ] && curl -s -o /dev/null --max-time 2 "http://$POD/" && break
  sleep 0.2
done
[ -n "$POD" ] || { echo "bench/services: the guest did not come up"; cat "$W/daemon.log"; exit 1; }
"$CORRAL" expose vmirs lab05-cirros-replicaset --name guest --port 80 >/dev/null
VIP=$(api http://localhost/api/v1/namespaces/default/services/guest | jq -r .spec.clusterIP)
ip route add default dev corral0   # ClusterIPs go by the default route, as on a host
# busybox httpd in its own namespace on the pod bridge, behind a selectorless Service.
ip netns add corral-bench-srv
ip link add srv0 type veth peer name srv-host
ip link set srv0 netns corral-bench-srv
ip link set srv-host master corral0 up
ip -n corral-bench-srv addr add 10.244.0.250/24 dev srv0
ip -n corral-bench-srv link set srv0 up
ip -n corral-bench-srv link set lo up
ip -n corral-bench-srv route add default via 10.244.0.1
mkdir -p "$W/www"; echo hello > "$W/www/index.html"
ip netns exec corral-bench-srv busybox httpd -f -p 80 -h "$W/www" &
PIDS+=($!)
ip netns exec corral-bench-srv iperf3 -s -p 5201 >/dev/null 2>&1 &
PIDS+=($!)
api -o /dev/null -H 'Content-Type: application/json' http://localhost/api/v1/namespaces/default/services \
  -d '{"apiVersion":"v1","kind":"Service","metadata":{"name":"host"},"spec":{"ports":[{"name":"http","port":80},{"name":"iperf","port":5201}]}}'
api -o /dev/null -H 'Content-Type: application/json' http://localhost/api/v1/namespaces/default/endpoints \
  -d '{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"host"},"subsets":[{"addresses":[{"ip":"10.244.0.250"}],"ports":[{"name":"http","port":80},{"name":"iperf","port":5201}]}]}'
HVIP=$(api http://localhost/api/v1/namespaces/default/services/host | jq -r .spec.clusterIP)
for _ in $(seq 50); do curl -s -o /dev/null --max-time 1 "http://$HVIP/" && break; sleep 0.1; done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for r in $(seq "$ROUNDS"); do
  for t in guest-pod:$POD:80 guest-svc:$VIP:80 host-pod:10.244.0.250:80 host-svc:$HVIP:80; do
    name=${t%%:*} addr=${t#*:}
    "$LAT" "$addr" / "$N" >> "$W/$name.json"
  done
  for t in pod:10.244.0.250 svc:$HVIP; do
    iperf3 -c "${t#*:}" -p 5201 -t 3 -J | jq '.end.sum_received.bits_per_second / 1e6 | floor' >> "$W/iperf-${t%%:*}"
  done
  echo "bench/services: round $r/$ROUNDS" >&2
done
v() { jq -r ".$2" "$W/$1.json" | median; }
echo "| endpoint (median of $ROUNDS × $N new connections) | pod IP p50 | Service p50 | added p50 | pod IP req/s | Service req/s | Service / pod IP |"
echo "|---|---|---|---|---|---|---|"
for e in guest host; do
  p=$(v $e-pod p50_us); s=$(v $e-svc p50_us); rp=$(v $e-pod rps); rs=$(v $e-svc rps)
  label=$([ $e = guest ] && echo "test guest VMI (PVM), via ClusterIP" || echo "busybox httpd, selectorless Service")
  echo "| $label | ${p} µs | ${s} µs | $((s - p)) µs | $rp | $rs | $(echo "scale=3; $rs / $rp" | bc) |"
done
bp=$(median < "$W/iperf-pod"); bs=$(median < "$W/iperf-svc")
echo
echo "| bulk TCP to the busybox namespace (iperf3, 3 s, median of $ROUNDS) | pod IP | Service | Service / pod IP |"
echo "|---|---|---|---|"
echo "| throughput | $bp Mbit/s | $bs Mbit/s | $(echo "scale=3; $bs / $bp" | bc) |"
