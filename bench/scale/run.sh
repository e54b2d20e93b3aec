#!/usr/bin/env bash
# bench/scale: the daemon under load, on this machine, with the test-guest container disk.
#   1. POST a 20-replica VMIRS → time until all 20 are Ready       (target ≤ 2 s)
#   2. scale 0 → 50 → creation rate in Ready VMs per second        (target ≥ 10 VMs/s)
#   3. daemon RSS with 50 VMs running                               (target ≤ 30 MiB)
#   4. GET list p99 under wrk at 1k rps on loopback TCP             (target ≤ 5 ms)
# Peer context: KubeVirt's VMI creation → Running is p50 22.6 s / p95 29.7 s in its CI (anchors.md).
# Usage: bench/scale/run.sh   (needs fixtures: tests/fixtures/build.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CORRAL_BIN:-$ROOT/target/release/corral}
FIX=${FIXTURES:-$ROOT/target/fixtures}
[ -x "$BIN" ] || cargo build --release --bin corral --manifest-path "$ROOT/Cargo.toml"
W=$(mktemp -d /tmp/corral-bench-scale.XXXX)
REGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
APIPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  set +e
  curl -s --unix-socket "$W/run/corral.sock" -X DELETE "http://x$RS/bench" >/dev/null
  sleep 2
  kill "$DPID" "$RPID" 2>/dev/null
  for f in "$W"/run/vms/*/vm.json; do [ -f "$f" ] && kill -9 "$(jq -r .pid "$f")" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT

# A real registry on loopback with the test-guest image.
mkdir -p "$W/registry"
cat > "$W/registry/config.yml" <<YAML
version: 0.1
storage: {filesystem: {rootdirectory: $W/registry/data}}
http: {addr: 127.0.0.1:$REGPORT}
YAML
docker-registry serve "$W/registry/config.yml" > "$W/registry.log" 2>&1 & RPID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$REGPORT/v2/" >/dev/null && break; sleep 0.05; done
skopeo copy -q --dest-tls-verify=false "oci:$FIX/images/testguest/oci:latest" "docker://127.0.0.1:$REGPORT/corral/testguest:latest"

echo -n "bench-token" > "$W/token"
"$BIN" daemon --state-dir "$W/state" --run-dir "$W/run" --insecure-registry "127.0.0.1:$REGPORT" --no-pod-network \
  --listen "127.0.0.1:$APIPORT" --token-file "$W/token" > "$W/daemon.log" 2>&1 & DPID=$!
for _ in $(seq 200); do curl -sf --unix-socket "$W/run/corral.sock" http://x/readyz >/dev/null && break; sleep 0.05; done
S=(--unix-socket "$W/run/corral.sock")
RS=/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets
# Pull once so that step 1 measures VM starts, not the first download.
sed -e "s|quay.io/kubevirt/cirros-container-disk-demo|127.0.0.1:$REGPORT/corral/testguest:latest|" \
    -e "s|name: lab05-cirros-replicaset|name: bench|" -e "s|replicas: 2|replicas: 0|" \
    "$ROOT/tests/fixtures/seed/vmirs.yaml" > "$W/bench.yaml"
"$BIN" image pull --store "$W/state/images" --insecure-registry "127.0.0.1:$REGPORT" "127.0.0.1:$REGPORT/corral/testguest:latest" >/dev/null 2>&1 || true

ready() { curl -s "${S[@]}" "http://x$RS/bench" | jq -r '.status.readyReplicas // 0'; }
now() { date +%s.%N; }
wait_ready() { local n=$1; while [ "$(ready)" != "$n" ]; do sleep 0.02; done; }

curl -sf "${S[@]}" -X POST -H 'Content-Type: application/yaml' --data-binary @"$W/bench.yaml" "http://x$RS" >/dev/null
t0=$(now)
curl -sf "${S[@]}" -X PATCH -H 'Content-Type: application/merge-patch+json' -d '{"spec":{"replicas":20}}' "http://x$RS/bench/scale" >/dev/null
wait_ready 20
t20=$(now)
# Like the QEMU peer below: until every guest has printed its ready line on its console.
while [ "$(grep -l 'TESTGUEST READY' "$W"/run/vms/*/console.log 2>/dev/null | wc -l)" -lt 20 ]; do sleep 0.02; done
t20g=$(now)
curl -sf "${S[@]}" -X PATCH -H 'Content-Type: application/merge-patch+json' -d '{"spec":{"replicas":0}}' "http://x$RS/bench/scale" >/dev/null
while [ "$(curl -s "${S[@]}" "http://x/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances" | jq '.items|length')" != 0 ]; do sleep 0.05; done
t1=$(now)
curl -sf "${S[@]}" -X PATCH -H 'Content-Type: application/merge-patch+json' -d '{"spec":{"replicas":50}}' "http://x$RS/bench/scale" >/dev/null
wait_ready 50
t50=$(now)
sleep 2
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$DPID/status")
vmm_rss=$(for f in "$W"/run/vms/*/vm.json; do awk '/VmRSS/ {print $2}' "/proc/$(jq -r .pid "$f")/status"; done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')

# GET list over HTTPS + bearer token on loopback (what kubectl does). Debian's wrk has no -R, so
# each of 10 connections waits 10 ms between requests: at most 1k requests/s.
cat > "$W/get.lua" <<LUA
wrk.headers["Authorization"] = "Bearer bench-token"
wrk.headers["Accept"] = "application/json"
function delay() return 10 end
LUA
wrk_out=$(wrk -t2 -c10 -d10s --latency -s "$W/get.lua" "https://127.0.0.1:$APIPORT$RS")
p99=$(echo "$wrk_out" | awk '/ 99%/ {print $2; exit}')
rps=$(echo "$wrk_out" | awk '/Requests\/sec/ {print $2}')

# Peer, same run: N test guests started directly as QEMU microvm processes (no supervisor, no
# image, no disks), timed until every console has printed the guest's ready line.
qemu_ready() {
  local n=$1 i t0 t1 pids=()
  rm -rf "$W/qemu" && mkdir -p "$W/qemu"
  t0=$(now)
  for i in $(seq "$n"); do
    qemu-system-x86_64 -M microvm -enable-kvm -kernel "$FIX/testguest.elf" -append "console=ttyS0" \
      -m 265M -smp 1 -nodefaults -no-user-config -display none -serial "file:$W/qemu/$i.log" \
      -no-reboot & pids+=($!)
  done
  while [ "$(grep -l 'TESTGUEST READY' "$W"/qemu/*.log 2>/dev/null | wc -l)" -lt "$n" ]; do sleep 0.02; done
  t1=$(now)
  kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true
  echo "$t1 - $t0" | bc -l
}
q20=$(qemu_ready 20)
q50=$(qemu_ready 50)

t20s=$(echo "$t20 - $t0" | bc -l); t50s=$(echo "$t50 - $t1" | bc -l)
printf '\n| measurement | result | target |\n|---|---|---|\n'
t20g=$(echo "$t20g - $t0" | bc -l)
printf '| 20-replica set: scale → all Ready (VMM up, all vCPUs in KVM_RUN) | %.2f s | ≤ 2 s |\n' "$t20s"
printf '| 20-replica set: scale → every guest printed its ready line, vs QEMU microvm starting 20 test guests directly | %.2f s vs %.2f s (%.2f×) | |\n' "$t20g" "$q20" "$(echo "$t20g / $q20" | bc -l)"
printf '| scale 0 → 50: Ready VMs per second | %.1f VMs/s (%.2f s; QEMU microvm direct: %.1f VMs/s) | ≥ 10 VMs/s |\n' "$(echo "50 / $t50s" | bc -l)" "$t50s" "$(echo "50 / $q50" | bc -l)"
printf '| daemon RSS with 50 VMs | %.1f MiB | ≤ 30 MiB |\n' "$(echo "$rss_kib / 1024" | bc -l)"
printf '| one VMM process RSS (median of 50, 265Mi guest) | %.1f MiB | (Firecracker ≤ 5 MiB overhead) |\n' "$(echo "$vmm_rss / 1024" | bc -l)"
printf '| GET vmirs list p99, HTTPS + token, wrk 10 connections throttled to ≤ 1k rps | %s at %s req/s | ≤ 5 ms at 1k rps |\n' "$p99" "$rps"
