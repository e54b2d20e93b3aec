#!/usr/bin/env bash
# bench/net: requests per second the test guest's HTTP server sustains through corral's virtio-net
# vs QEMU microvm's virtio-net-device (tap backend, vhost off), on this host's /dev/kvm, the same
# guest ELF, memory and vCPU. Everything runs in a network namespace this script makes (two taps,
# host ends 10.0.2.1 and 10.0.3.1); traffic goes only to the guests' addresses inside it.
#   bash bench/net/run.sh [ROUNDS [REQUESTS]]      (defaults 5 and 1000)
# Rounds are interleaved; the table shows medians. Under PVM every guest instruction is emulated
# (~4 M/s), so these are the guest stack's rates, not the device's ceiling.
set -euo pipefail
if [ -z "${CORRAL_BENCH_NETNS:-}" ]; then
  exec env CORRAL_BENCH_NETNS=1 unshare -n -- bash "$0" "$@"
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${1:-5}
N=${2:-1000}
CORRAL=${CORRAL:-$ROOT/target/release/corral}
ELF=$ROOT/target/fixtures/testguest.elf
[ -x "$CORRAL" ] || (cd "$ROOT" && cargo build --release -q --bin corral)
[ -f "$ELF" ] || bash "$ROOT/tests/fixtures/build.sh" >/dev/null
W=$(mktemp -d /tmp/corral-bench-net.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT

ip link set lo up
setup_tap() { # NAME HOSTADDR
  ip tuntap add dev "$1" mode tap vnet_hdr
  ip addr add "$2/24" dev "$1"
  ip link set "$1" up
}
setup_tap tapc 10.0.2.1
setup_tap tapq 10.0.3.1

"$CORRAL" vmm --kernel "$ELF" --memory 256Mi --cpus 1 --no-stdin \
  --cmdline "console=ttyS0 net=static:10.0.2.2/24,gw=10.0.2.1" --net tap=tapc \
  > "$W/corral.log" 2>&1 &
PIDS+=($!)
qemu-system-x86_64 -M microvm -enable-kvm -m 256M -smp 1 -nodefaults -no-user-config \
  -display none -no-reboot -serial "file:$W/qemu.log" -global virtio-mmio.force-legacy=false \
  -kernel "$ELF" -append "console=ttyS0 net=static:10.0.3.2/24,gw=10.0.3.1" \
  -netdev tap,id=n0,ifname=tapq,script=no,downscript=no,vhost=off \
  -device virtio-net-device,netdev=n0 > "$W/qemu.out" 2>&1 &
PIDS+=($!)
for f in corral qemu; do
  for _ in $(seq 600); do grep -q "net listening" "$W/$f.log" 2>/dev/null && break; sleep 0.1; done
  grep -q "net listening" "$W/$f.log" || { echo "bench/net: $f's guest did not come up:"; cat "$W/$f.log"; exit 1; }
done

# ab's requests per second (one connection at a time; -k: keep-alive).
rps() { ab -q -s 10 "$@" 2>/dev/null | awk '/Requests per second/ {print $4}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for r in $(seq "$ROUNDS"); do
  for who in corral:10.0.2.2 qemu:10.0.3.2; do
    name=${who%%:*} ip=${who#*:}
    echo "$(rps -n "$N" "http://$ip/")" >> "$W/$name.new"
    echo "$(rps -k -n "$N" "http://$ip/")" >> "$W/$name.keep"
  done
  echo "bench/net: round $r/$ROUNDS done" >&2
done
row() { # LABEL SUFFIX
  c=$(median < "$W/corral.$2") q=$(median < "$W/qemu.$2")
  printf '| %s | %s | %s | %s |\n' "$1" "$c" "$q" "$(awk -v c="$c" -v q="$q" 'BEGIN {printf "%.2f", c / q}')"
}
echo "| test guest HTTP, $N requests × $ROUNDS rounds (medians) | corral vmm | QEMU microvm | corral / QEMU |"
echo "|---|---|---|---|"
row "requests/s, new connection each" new
row "requests/s, keep-alive" keep
