# shutdown: deleting a VMI presses the ACPI power button; the CirrOS-like guest's acpid powers
# it off cleanly and the VMM exits 0 long before the grace period (30 s). `reboot` in the guest
# restarts it inside the same VMM process.
import_image
start_daemon --cgroups none
apply_lab_set
corral scale vmirs "$SET" --replicas 1 || fail "corral scale --replicas 1"
wait_until 60 "1/1 Ready" set_is 1
wait_until 180 "one VMI, at GUEST-READY" one_guest_ready
vmi=$(vmis)
uid=$(vmi_uid "$vmi"); pid=$(vmm_pid "$vmi")

say "reboot inside $vmi"
console_login "$vmi"
console_send "$vmi" 'reboot\n' > /dev/null
wait_until 120 "$vmi to boot a second time" sh -c \
  ". /nested/lib.sh; [ \$(console_of $vmi | grep -c GUEST-READY) -ge 2 ]"
[ "$(vmm_pid "$vmi")" = "$pid" ] && alive "$pid" || fail "reboot: the VMM process changed ($pid -> $(vmm_pid "$vmi"))"
[ "$(vmi_uid "$vmi")" = "$uid" ] || fail "reboot: a new VMI"
[ "$(vmi_phase "$vmi")" = Running ] || fail "reboot: $vmi is $(vmi_phase "$vmi")"
n=$(console_of "$vmi" | grep -c 'initrd: modules loaded')
[ "$n" -eq 2 ] || fail "reboot: $n boots in the console, want 2"
console_of "$vmi" | grep -q GUEST-SHUTDOWN || fail "reboot: the guest's rcK did not run"
value reboot_same_pid 1

say "delete $vmi (power button, grace 30 s)"
# The set replaces the deleted VMI with a new one; what is timed is the old VMM's exit.
t=$(now_ms)
corral delete vmi "$vmi" --wait=false || fail "corral delete vmi"
wait_until 40 "$vmi's VMM (pid $pid) to exit" dead "$pid"
ms=$(( $(now_ms) - t ))
value shutdown_ms $ms
say "the guest shut down and the VMM exited $ms ms after the delete"
[ $ms -lt 15000 ] || fail "shutdown took $ms ms: the grace period (30 s), not the guest, ended it"
wait_until 10 "the daemon's record of $uid's exit" sh -c \
  "grep 'VM process ended' /out/daemon.log | grep -q '$uid'"
grep 'VM process ended' /out/daemon.log | grep "$uid" | grep -q GuestPoweredOff \
  || fail "the VMM did not exit 0: $(grep 'VM process ended' /out/daemon.log | grep "$uid")"
corral delete vmirs "$SET" > /dev/null
