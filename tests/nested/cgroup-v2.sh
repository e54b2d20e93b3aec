# cgroup-v2: L1 mounts only cgroup2; the daemon picks v2 by itself. A real guest running the
# lab's load line under limits.cpu 300m measures 300m +- 10 % in `corral top` and
# metrics.k8s.io, and the seed HPA scales the set 1 -> 2 (3 s sync and resolution).
mount_cgroup2
import_image
start_daemon --hpa-sync-period 3s --metrics-resolution 3s --hpa-downscale-stabilization 300s
grep 'per-VM cgroups' /out/daemon.log | grep -q 'cgroup v2' || fail "the daemon did not pick cgroup v2"
apply_lab_set
corral scale vmirs "$SET" --replicas 1 || fail "corral scale --replicas 1"
wait_until 60 "1/1 Ready" set_is 1
wait_until 180 "one VMI, at GUEST-READY" one_guest_ready
vmi=$(vmis)
cg=/sys/fs/cgroup/vms/$(vmi_uid "$vmi")
[ "$(cat $cg/cpu.max)" = "30000 100000" ] || fail "cpu.max of $cg: $(cat $cg/cpu.max)"
value cpu_max "$(cat $cg/cpu.max | tr ' ' /)"
grep -q "^$(vmm_pid "$vmi")$" $cg/cgroup.procs || fail "the VMM is not in $cg"
corral apply -f /nested/fixtures/hpa.yaml || fail "corral apply hpa.yaml"

say "the lab's load line in $vmi"
console_login "$vmi"
console_send "$vmi" 'load() { dd if=/dev/zero of=/dev/null & }; load\n' > /dev/null
t=$(now_ms)
# metrics.k8s.io: wait for a window that saw only load, then average a few.
pm=/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/$vmi
cpu_m() { api_get "$pm" | jq -r '.containers[0].usage.cpu' | sed -n 's/^\([0-9]*\)m$/\1/p; s/^\([0-9]*\)n$/\1/p' ; }
sleep 8
sum=0; n=0
for i in 1 2 3 4; do
  m=$(api_get "$pm" | jq -r '.containers[0].usage.cpu')
  case $m in *n) m=$(( ${m%n} / 1000000 )) ;; *m) m=${m%m} ;; *) m=$(( m * 1000 )) ;; esac
  say "metrics.k8s.io: $vmi uses ${m}m"
  sum=$(( sum + m )); n=$(( n + 1 ))
  sleep 3
done
avg=$(( sum / n ))
value cpu_millicores $avg
[ $avg -ge 270 ] && [ $avg -le 330 ] || fail "CPU under limits.cpu 300m measured ${avg}m (want 300m +- 10 %)"
top=$(corral top)
echo "$top"
echo "$top" | grep "$vmi" | grep -Eq ' (2[7-9][0-9]|3[0-2][0-9]|330)m ' || fail "corral top does not show ~300m: $top"
wait_until 60 "the HPA to scale the set to 2" sh -c ". /nested/lib.sh; set_is 2"
value hpa_scale_up_ms $(( $(now_ms) - t ))
corral get hpa
console_send "$vmi" 'killall dd\n' > /dev/null
