#!/bin/sh
# L1's /init in the nested tier (tests/src/nested/mod.rs): mounts, loads kvm-amd and the virtio
# modules, runs /nested/<scenario>.sh (lib.sh sourced) under a deadline, writes /out to the
# results disk as a tar and powers off. Markers for the harness: NESTED-L1-UP, NESTED-VALUE,
# NESTED-FAIL, NESTED-EXIT (always last).
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
export HOME=/root
mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /dev/pts /dev/shm /var/lib /var/tmp
mount -t devpts devpts /dev/pts
SCENARIO=; DEADLINE=300
for a in $(cat /proc/cmdline); do
  case $a in
    nested.scenario=*) SCENARIO=${a#nested.scenario=} ;;
    nested.deadline=*) DEADLINE=${a#nested.deadline=} ;;
    nested.env.*=*) kv=${a#nested.env.}; export "NESTED_${kv%%=*}=${kv#*=}" ;;
  esac
done
export SCENARIO
hostname l1
ip link set lo up
KVER=$(uname -r)
while read m; do
  # Module parameters from the command line (nested.mod.kvm-amd=npt=0,nested=0), for debugging.
  args=$(tr ' ' '\n' < /proc/cmdline | sed -n "s/^nested\.mod\.$m=//p" | tr , ' ')
  insmod /lib/modules/$KVER/$m.ko $args || echo "NESTED-FAIL L1: insmod $m.ko $args failed"
done < /etc/l1-modules
read up idle < /proc/uptime
echo "NESTED-L1-UP uptime=$up kernel=$KVER cpus=$(nproc) mem_kb=$(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo) kvm=$([ -c /dev/kvm ] && echo yes || echo no)"

. /nested/lib.sh

# Runs once (whichever of the scenario and the deadline comes first): results out, power off.
finish() {
  mkdir /run/nested-finish 2>/dev/null || return 0
  collect_vm_logs
  dmesg > /out/l1-dmesg.log 2>&1
  tar -cf /dev/vda -C /out . || echo "NESTED-FAIL L1: writing the results disk failed"
  sync
  echo "NESTED-EXIT $1"
  poweroff -f
}

( sleep "$DEADLINE"
  echo "NESTED-FAIL deadline: $SCENARIO still running after ${DEADLINE}s"
  ps -o pid,stat,args 2>/dev/null
  finish 124 ) &

if [ ! -c /dev/kvm ]; then
  echo "NESTED-FAIL L1: no /dev/kvm after loading kvm-amd (is SVM emulated? -cpu EPYC,+svm)"
  finish 1
fi
say "scenario $SCENARIO (deadline ${DEADLINE}s)"
( . /nested/$SCENARIO.sh )
rc=$?
[ $rc -eq 0 ] && say "scenario $SCENARIO passed" || say "scenario $SCENARIO failed (exit $rc)"
finish $rc
