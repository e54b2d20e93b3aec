# bench-net (bench/net): TCP throughput both ways (iperf3) and round-trip latency (ping) between
# L1 and the CirrOS-like guest, through `corral vmm --net` and QEMU microvm's virtio-net-device,
# each on the same tap, interleaved, NESTED_RUNS times each: corral, QEMU with vhost off (the
# peer) and QEMU with vhost on (the ceiling). Same kernel, initrd, root disk, tools disk
# (iperf3), seed content, MAC, memory and vCPUs. L1's end of the tap is 192.168.100.1/24;
# busybox udhcpd leases 192.168.100.2 to the guest's udhcpc. NESTED_TRANSPORT: corral's
# virtio transport (default pci; mmio is QEMU microvm's).
RUNS=${NESTED_RUNS:-3}; SECS=${NESTED_SECS:-10}; CPUS=${NESTED_CPUS:-1}; MEM=${NESTED_MEM:-256}
MAC=52:54:00:c0:ff:ee; GUEST=192.168.100.2
# (busybox sh runs its own `ip` applet first; iproute2 is /usr/local/bin/ip.)
net_modules
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
import_image
KERNEL=$(image_field kernel); INITRD=$(image_field initrd); DISK=$(image_field disk_raw)
CMDLINE=$(image_field cmdline)
TOOLS=/nested/fixtures/net-tools.ext4
/usr/local/bin/ip tuntap add dev tapb mode tap vnet_hdr || fail "ip tuntap add"
/usr/local/bin/ip addr add 192.168.100.1/24 dev tapb && ip link set tapb up || fail "tapb address"
cat > /tmp/udhcpd.conf <<CONF
start $GUEST
end $GUEST
interface tapb
max_leases 1
lease_file /tmp/udhcpd.leases
option subnet 255.255.255.0
option router 192.168.100.1
option lease 86400
CONF
touch /tmp/udhcpd.leases
udhcpd -f /tmp/udhcpd.conf > /out/udhcpd.log 2>&1 &
mkdir -p /tmp/scratch
one() {  # one VMM-config run-number
  case $1 in
    corral) set -- "$@" corral vmm --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE" \
              --memory ${MEM}Mi --cpus $CPUS --no-stdin --scratch-dir /tmp/scratch \
              --disk "$DISK,overlay,serial=root" --disk "$TOOLS,ro" \
              --seed-dir /nested/fixtures/net-seed --net "tap=tapb,mac=$MAC" \
              ${NESTED_TRANSPORT:+--transport $NESTED_TRANSPORT} ;;
    qemu|qemu-vhost)
      vhost=off; [ "$1" = qemu-vhost ] && vhost=on
      set -- "$@" qemu-system-x86_64 -M microvm -enable-kvm -cpu host -m ${MEM}M -smp $CPUS \
              -nodefaults -no-user-config -display none -serial stdio \
              -kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE" \
              -drive id=root,file="$DISK",format=raw,if=none,snapshot=on \
              -device virtio-blk-device,drive=root \
              -drive id=tools,file="$TOOLS",format=raw,if=none,readonly=on \
              -device virtio-blk-device,drive=tools \
              -drive id=seed,file=/nested/fixtures/net-seed.img,format=raw,if=none,readonly=on \
              -device virtio-blk-device,drive=seed \
              -netdev tap,id=n0,ifname=tapb,script=no,downscript=no,vhost=$vhost \
              -device virtio-net-device,netdev=n0,mac=$MAC ;;
  esac
  vmm=$1; run=$2; shift 2
  log=/out/$vmm-$run.log
  "$@" > "$log" 2>&1 < /dev/null &
  pid=$!
  up() { grep -q IPERF3-SERVER-UP "$log" && grep -q 'udhcpc: bound' "$log"; }
  if ! wait_until_soft 150 up; then
    say "$vmm run $run: guest not up"; tail -5 "$log"; kill -9 $pid; wait $pid 2>/dev/null
    [ -n "$NESTED_KEEP_GOING" ] || fail "$vmm run $run: no iperf3 server in the guest"
    echo "$vmm $run failed" >> /out/failures.txt; return 0
  fi
  ping -c 20 -i 0.2 -q $GUEST > /tmp/ping.txt 2>&1
  rtt=$(sed -n 's#.*min/avg/max = [0-9.]*/\([0-9.]*\)/.*#\1#p' /tmp/ping.txt)
  # The VMM's syscalls and context switches over the L1 -> guest run (all threads).
  procstat() {
    cat /proc/$pid/io; grep ctxt_switches /proc/$pid/task/*/status
    for t in /proc/$pid/task/*; do echo "cpu $(basename $t)-$(cat $t/comm | tr ' ' _) $(awk '{print $14 + $15}' $t/stat)"; done
    echo "l1 idle $(awk '/^cpu / {print $5}' /proc/stat)"
    for c in tx_packets rx_packets tx_bytes rx_bytes; do echo "tap $c $(cat /sys/class/net/tapb/statistics/$c)"; done
    for f in /sys/kernel/debug/kvm/$pid-*/*; do [ -f "$f" ] && echo "kvm $(basename $f) $(cat $f)"; done 2>/dev/null
  }
  procstat > /out/$vmm-$run-proc-before.txt
  iperf3 -c $GUEST -t "$SECS" -J > /out/$vmm-$run-up.json 2>&1
  procstat > /out/$vmm-$run-proc-after.txt
  iperf3 -c $GUEST -t "$SECS" -R -J > /out/$vmm-$run-down.json 2>&1
  tx=$(jq -r '.end.sum_received.bits_per_second // empty' /out/$vmm-$run-up.json)
  rx=$(jq -r '.end.sum_received.bits_per_second // empty' /out/$vmm-$run-down.json)
  kill -9 $pid; wait $pid 2>/dev/null
  if [ -z "$rtt" ] || [ -z "$tx" ] || [ -z "$rx" ]; then
    say "$vmm run $run: incomplete (rtt=$rtt to_guest=$tx from_guest=$rx)"; cat /tmp/ping.txt
    [ -n "$NESTED_KEEP_GOING" ] || fail "$vmm run $run: measurement failed"
    echo "$vmm $run failed" >> /out/failures.txt; return 0
  fi
  to=$(echo "$tx" | awk '{printf "%.1f", $1 / 1e6}'); from=$(echo "$rx" | awk '{printf "%.1f", $1 / 1e6}')
  say "$vmm run $run: L1->guest $to Mbit/s, guest->L1 $from Mbit/s, rtt $rtt ms"
  echo "$vmm $run $to $from $rtt" >> /out/bench.txt
}
# wait_until without failing: returns 1 after SECS.
wait_until_soft() {
  _end=$(( $(now_ms) + $1 * 1000 )); shift
  until "$@"; do [ "$(now_ms)" -lt "$_end" ] || return 1; usleep 200000; done
}
for i in $(seq 1 $RUNS); do
  one corral $i
  one qemu $i
  one qemu-vhost $i
done
median() {  # median of column $2 for config $1
  vals=$(awk -v v="$1" -v c="$2" '$1 == v { print $c }' /out/bench.txt | sort -n)
  [ -n "$vals" ] || { echo null; return; }
  n=$(echo "$vals" | wc -l)
  echo "$vals" | awk -v n="$n" '{ a[NR] = $1 } END { if (n % 2) print a[(n + 1) / 2]; else printf "%.3f\n", (a[n / 2] + a[n / 2 + 1]) / 2 }'
}
for v in corral qemu qemu-vhost; do
  k=$(echo $v | tr - _)
  value "${k}_to_guest_mbps" "$(median $v 3)"
  value "${k}_from_guest_mbps" "$(median $v 4)"
  value "${k}_rtt_ms" "$(median $v 5)"
done
