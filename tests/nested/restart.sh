# restart: kill -9 of the daemon while two real guests run; the restarted daemon adopts both
# (same VMM pids), their consoles still answer, and nothing was restarted.
mount_cgroup2
import_image
start_daemon
apply_lab_set
wait_until 60 "2/2 Ready" set_is 2
wait_until 120 "both guests at GUEST-READY" all_guests_ready
before=$(for v in $(vmis); do echo "$v $(vmi_uid "$v") $(vmm_pid "$v")"; done | sort)
say "before: $(echo "$before" | tr '\n' ';')"
old=$(daemon_pid)
kill -9 "$old"
wait_until 10 "the daemon to die" dead "$old"
for v in $(echo "$before" | awk '{print $3}'); do alive "$v" || fail "VMM $v died with the daemon"; done
t=$(now_ms)
start_daemon
wait_until 30 "2/2 Ready after the restart" set_is 2
value readopt_ms $(( $(now_ms) - t ))
after=$(for v in $(vmis); do echo "$v $(vmi_uid "$v") $(vmm_pid "$v")"; done | sort)
say "after: $(echo "$after" | tr '\n' ';')"
[ "$before" = "$after" ] || fail "VMIs or VMM pids changed across the restart: before [$before] after [$after]"
for v in $(vmis); do
  reply=$(console_send "$v" '\n' 'login:')
  echo "$reply" | grep -q 'login:' || fail "$v's console does not answer after the restart: $reply"
  n=$(console_of "$v" | grep -c 'initrd: modules loaded')
  [ "$n" -eq 1 ] || fail "$v booted $n times"
done
grep -i 'adopt' /out/daemon.log | tail -3
corral delete vmirs "$SET" || fail "corral delete vmirs"
wait_until 60 "no VMM process left" vmm_count_is 0
