# lab: the seed lab on real Linux guests. The daemon (cgroup v2, picked by itself) runs the
# seed's VMIRS with the CirrOS-like image: 2/2 Ready with both guests at GUEST-READY, scale
# 2 -> 1 -> 3, a kill -9 of one VMM is replaced, and deleting the set leaves no VMM process,
# run directory or cgroup behind.
mount_cgroup2
import_image
start_daemon
grep -q 'cgroup v2' /out/daemon.log || fail "the daemon did not pick cgroup v2: $(grep -i cgroup /out/daemon.log)"
t=$(now_ms)
apply_lab_set
wait_until 60 "2/2 Ready" set_is 2
value ready_2_ms $(( $(now_ms) - t ))
wait_until 120 "both guests at GUEST-READY" all_guests_ready
value guest_ready_2_ms $(( $(now_ms) - t ))
for v in $(vmis); do
  # KubeVirt's NoCloud instance-id is <name>.<namespace>.
  console_of "$v" | grep -q "cidata: seed=/dev/vdb instance-id=$v.default" \
    || fail "$v: no NoCloud instance-id $v.default on its console"
done

say "scale 2 -> 1"
t=$(now_ms)
corral scale vmirs "$SET" --replicas 1 || fail "corral scale --replicas 1"
wait_until 60 "1/1 and one VMM" sh -c '. /nested/lib.sh; set_is 1 && vmm_count_is 1'
value scale_down_ms $(( $(now_ms) - t ))

say "scale 1 -> 3"
t=$(now_ms)
corral scale vmirs "$SET" --replicas 3 || fail "corral scale --replicas 3"
wait_until 60 "3/3 Ready" set_is 3
wait_until 180 "three guests at GUEST-READY" all_guests_ready
value scale_up_guest_ready_ms $(( $(now_ms) - t ))
vmm_count_is 3 || fail "want 3 VMM processes, have: $(vmm_procs | tr '\n' ' ')"

victim=$(vmis | head -1)
pid=$(vmm_pid "$victim")
# Real Linux guests run under the jail: an unprivileged uid, seccomp on every thread.
st=/proc/$pid/status
uid=$(awk '/^Uid:/ {print $2}' "$st")
[ "$uid" -ge 2080374784 ] || fail "the VMM runs as uid $uid, not a jail uid"
grep -q '^NoNewPrivs:[[:space:]]*1' "$st" || fail "the VMM lacks no_new_privs"
for t in /proc/$pid/task/*; do
  grep -q '^Seccomp:[[:space:]]*2' "$t/status" || fail "thread $t of the VMM has no seccomp filter"
done
value jailed_threads "$(ls /proc/$pid/task | wc -l)"
say "kill -9 of $victim's VMM (pid $pid)"
t=$(now_ms)
kill -9 "$pid"
wait_until 60 "a replacement for $victim, 3/3 Ready" sh -c \
  ". /nested/lib.sh; set_is 3 && ! vmis | grep -qx '$victim' && vmm_count_is 3"
value replace_ready_ms $(( $(now_ms) - t ))
wait_until 180 "the replacement at GUEST-READY" all_guests_ready

say "delete the set"
for v in $(vmis); do save_console "$v" "console-$v"; done
corral delete vmirs "$SET" || fail "corral delete vmirs"
wait_until 90 "no VMI left" vmi_count_is 0
wait_until 30 "no VMM process left" vmm_count_is 0
wait_until 30 "no run directory left" sh -c "[ -z \"\$(ls -A $RUN/vms)\" ]"
left=$(find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -path '*/vms/*')
[ -z "$left" ] || fail "cgroups left behind: $left"
alive "$(daemon_pid)" || fail "the daemon died"
