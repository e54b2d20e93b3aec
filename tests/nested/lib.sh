# Helpers for the nested scenarios (sourced by init.sh; busybox sh). A scenario fails with
# `fail`, reports numbers with `value`, and leaves files for the host under /out.

STATE=/var/lib/corral
RUN=/run/corral
SOCK=$RUN/corral.sock
STORE=$STATE/images
IMAGE=localhost/corral/cirros-like:v1
NS=/apis/kubevirt.io/v1/namespaces/default
SET=lab05-cirros-replicaset
export CORRAL_SOCKET=$SOCK

# Milliseconds since L1 booted (10 ms resolution).
now_ms() { read up idle < /proc/uptime; echo $(( $(echo "$up" | tr -d . | sed 's/^0*//') * 10 )); }
say() { read up idle < /proc/uptime; echo "[L1 $up] $*"; }
# fail WHY: the scenario failed; what the daemon logged last and the VMIs go to the console too
# (a CI run keeps only that).
fail() {
  echo "NESTED-FAIL $*"
  if [ -s /out/daemon.log ]; then tail -n 20 /out/daemon.log | sed 's/^/daemon: /'; fi
  if [ -S "$SOCK" ]; then timeout 5 corral get vmi 2>&1 | sed 's/^/vmis: /'; fi
  exit 1
}
value() { echo "NESTED-VALUE $1=$2"; }

# wait_until SECS WHAT CMD...: runs CMD every 0.2 s until it succeeds; fails after SECS.
wait_until() {
  _secs=$1; _what=$2; shift 2
  _end=$(( $(now_ms) + _secs * 1000 ))
  until "$@"; do
    [ "$(now_ms)" -lt "$_end" ] || fail "timed out after ${_secs}s waiting for $_what"
    usleep 200000
  done
}

# Imports the CirrOS-like container disk with an explicit tag (a :latest one would be pulled
# again under KubeVirt's Always policy) and keeps the import's JSON in /tmp/image.json.
import_image() {
  _t=$(now_ms)
  corral image import /nested/fixtures/cirros-like.tar --tag "$IMAGE" --store "$STORE" --json \
    > /tmp/image.json 2> /out/image-import.log || { cat /out/image-import.log; fail "corral image import"; }
  say "imported $IMAGE in $(( $(now_ms) - _t )) ms"
}
image_field() { jq -r ".$1" /tmp/image.json; }

api() { curl -sS --max-time 30 --unix-socket "$SOCK" "$@"; }
api_get() { curl -sf --max-time 30 --unix-socket "$SOCK" "http://localhost$1"; }
readyz() { api_get /readyz >/dev/null 2>&1; }

# start_daemon [FLAGS...]: corral daemon on $STATE/$RUN, log in /out/daemon.log. VMs have no
# NIC unless the scenario set POD_NETWORK=1 (its L1 has the CNI plugins: with_pod_network).
start_daemon() {
  mkdir -p "$STATE" "$RUN"
  [ -n "$POD_NETWORK" ] || set -- --no-pod-network "$@"
  corral daemon --state-dir "$STATE" --run-dir "$RUN" "$@" >> /out/daemon.log 2>&1 &
  echo $! > /run/daemon.pid
  wait_until 60 "the daemon to serve /readyz" readyz
  say "daemon $(cat /run/daemon.pid) serves"
}
daemon_pid() { cat /run/daemon.pid; }

# The seed lab's replica set, its image swapped for the imported one.
apply_lab_set() {
  sed "s#quay.io/kubevirt/cirros-container-disk-demo#$IMAGE#" /nested/fixtures/vmirs.yaml > /tmp/vmirs.yaml
  corral apply -f /tmp/vmirs.yaml || fail "corral apply of the seed set"
}

# "replicas readyReplicas" of the seed set.
set_counts() {
  api_get "$NS/virtualmachineinstancereplicasets/$SET" \
    | jq -r '"\(.status.replicas // 0) \(.status.readyReplicas // 0)"'
}
set_is() { [ "$(set_counts)" = "$1 $1" ]; }
# Names of the VMIs that are not being deleted.
vmis() {
  api_get "$NS/virtualmachineinstances" \
    | jq -r '.items[] | select(.metadata.deletionTimestamp == null) | .metadata.name'
}
vmi_count_is() { [ "$(vmis | wc -l)" -eq "$1" ]; }
vmi_uid() { api_get "$NS/virtualmachineinstances/$1" | jq -r .metadata.uid; }
vmi_phase() { api_get "$NS/virtualmachineinstances/$1" | jq -r .status.phase; }
vm_dir() { echo "$RUN/vms/$(vmi_uid "$1")"; }
vmm_pid() { jq -r .pid "$(vm_dir "$1")/vm.json"; }
console_of() { cat "$(vm_dir "$1")/console.log" 2>/dev/null; }
guest_ready() { console_of "$1" | grep -q GUEST-READY; }
# Exactly one VMI (not being deleted) and its guest is up.
one_guest_ready() { vmi_count_is 1 && guest_ready "$(vmis)"; }
all_guests_ready() {
  for v in $(vmis); do guest_ready "$v" || return 1; done
}
# VMM processes alive (the daemon's children and adopted ones alike).
# VMM processes: argv "corral vmm ..." (not a wrapper such as nested-timer whose argv holds it).
vmm_procs() { ps -o pid,args | awk '$2 ~ /(^|\/)corral$/ && $3 == "vmm" {print $1}'; }
vmm_count_is() { [ "$(vmm_procs | wc -l)" -eq "$1" ]; }
alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
dead() { ! alive "$1"; }

# console_send VMI TEXT [UNTIL]: types TEXT on the VMI's serial console, prints the reply
# (until UNTIL appears, or 10 s).
console_send() {
  _q="waitMillis=10000"
  [ -n "$3" ] && _q="$_q&until=$(printf %s "$3" | jq -sRr @uri)"
  printf '%b' "$2" | curl -sS --max-time 30 --unix-socket "$SOCK" -X POST --data-binary @- \
    "http://localhost/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/$1/consoleinput?$_q"
}
# Logs in as root (the image's root has no password) and waits for the shell prompt.
console_login() {
  console_send "$1" '\n' 'login:' > /dev/null
  console_send "$1" 'root\n' '# ' | grep -q '# ' || fail "no root shell on $1's console"
}

# cgroup2 alone on /sys/fs/cgroup (the daemon then picks v2 by itself).
mount_cgroup2() {
  mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
}

# Copies every VM's run directory files (console, VMM log, records) to /out/vms/<uid>/.
collect_vm_logs() {
  [ -d "$RUN/vms" ] || return 0
  for d in "$RUN"/vms/*/; do
    [ -d "$d" ] || continue
    u=$(basename "$d")
    mkdir -p "/out/vms/$u"
    cp "$d"/*.log "$d"/*.json "/out/vms/$u/" 2>/dev/null
  done
}
# save_console VMI NAME: keeps a VMI's console log as /out/NAME.log (before it is deleted).
save_console() { console_of "$1" > "/out/$2.log"; }

# Loads what pod networks need (the L1 image lists them when built with_pod_network).
net_modules() {
  [ -e /etc/l1-net-modules ] || fail "L1 has no pod network tools (Scenario::with_pod_network)"
  while read m; do
    insmod /lib/modules/$(uname -r)/$m.ko || fail "insmod $m.ko"
  done < /etc/l1-net-modules
}
# run_in VMI CMDS: runs shell commands on the VMI's console (logged in) and prints their output
# (between markers the typed text does not contain).
run_in() {
  console_send "$1" "echo BEGIN-\$((6*7)); $2; echo END-\$((6*7))\n" 'END-42' \
    | sed -n '/^BEGIN-42/,/^END-42/p' | sed '1d;$d' | tr -d '\r'
}
vmi_ip() { api_get "$NS/virtualmachineinstances/$1" | jq -r '.status.interfaces[0].ipAddress // empty'; }

# kvm_probe WHY [PID]: what L1's KVM is doing, for a guest that stopped making progress: every
# KVM counter that moved in 2 s (a running guest moves io_exits, a stuck one does not), the
# exit reasons and guest RIPs of 0.5 s of kvm:kvm_exit trace events (which loop a stuck vCPU is
# in), and the state and kernel wait channel of each thread of VMM PID.
kvm_counters() {  # "name value" per KVM debugfs counter
  for _f in /sys/kernel/debug/kvm/*; do [ -f "$_f" ] && echo "${_f##*/} $(cat "$_f" 2>/dev/null)"; done
}
kvm_probe() {
  echo "kvm-probe: $1"
  [ -d /sys/kernel/debug/kvm ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
  kvm_counters > /tmp/kvm-probe.1; sleep 2; kvm_counters > /tmp/kvm-probe.2
  echo "kvm-probe: counters moved in 2 s:$(awk 'NR==FNR {a[$1]=$2; next}
    ($2 ~ /^[0-9]+$/) && $2 != a[$1] {printf " %s+%.0f", $1, $2 - a[$1]}' /tmp/kvm-probe.1 /tmp/kvm-probe.2)"
  _t=/sys/kernel/tracing
  [ -d "$_t/events" ] || mount -t tracefs tracefs "$_t" 2>/dev/null
  if [ -d "$_t/events/kvm/kvm_exit" ]; then
    echo 0 > "$_t/tracing_on"; echo > "$_t/trace"; echo 4096 > "$_t/buffer_size_kb"
    echo 1 > "$_t/events/kvm/kvm_exit/enable"; echo 1 > "$_t/tracing_on"
    sleep 0.5
    echo 0 > "$_t/tracing_on"; echo 0 > "$_t/events/kvm/kvm_exit/enable"
    # "kvm_exit: vcpu 0 reason npf rip 0xffffffff81234567 info1 ..." -> counts per vcpu/reason/rip.
    grep -o 'vcpu [0-9]* reason [A-Za-z_0-9]* rip 0x[0-9a-f]*' "$_t/trace" | sort | uniq -c | sort -rn \
      | head -8 | sed 's/^ */kvm-probe: exits in 0.5 s: /' | grep . || echo "kvm-probe: no exit in 0.5 s (every vCPU blocked)"
    grep -m3 'kvm_exit' "$_t/trace" | sed 's/^ */kvm-probe: sample: /'
  else
    echo "kvm-probe: no kvm:kvm_exit trace event (tracefs: $(ls "$_t" 2>&1 | head -c 80))"
  fi
  if [ -n "$2" ] && [ -d "/proc/$2" ]; then
    for _t in /proc/$2/task/*; do
      echo "kvm-probe: thread ${_t##*/} $(cut -d' ' -f2,3 "$_t/stat") wchan=$(cat "$_t/wchan" 2>/dev/null)"
    done
  fi
}
