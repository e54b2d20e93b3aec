# cirros-shape: the CirrOS-shape container disk (tests/fixtures/parts/35-cirros-shape.sh: qcow2
# v2, ext3 root, the command line only in /boot/grub/menu.lst) imported by `corral image
# import` as an OCI layout tar, then booted by `corral vmm` over virtio-pci with the kernel,
# initrd and command line the import took from menu.lst, a NoCloud seed whose user-data powers
# the guest off. The host checks the import's record and the console (tests/tests/nested.rs).
SHAPE=localhost/corral/cirros-shape:v1
_t=$(now_ms)
corral image import /nested/fixtures/cirros-shape-oci.tar --tag "$SHAPE" --store "$STORE" --json \
  > /out/image.json 2> /out/image-import.log || { cat /out/image-import.log; fail "corral image import"; }
say "imported $SHAPE in $(( $(now_ms) - _t )) ms"
# The human output too (the same image again: artifacts reused), for the cmdline source line.
corral image import /nested/fixtures/cirros-shape-oci.tar --tag "$SHAPE" --store "$STORE" \
  > /out/image-import.txt 2>> /out/image-import.log || fail "corral image import (human output)"
cat /out/image-import.txt
field() { jq -r ".$1" /out/image.json; }
KERNEL=$(field kernel); INITRD=$(field initrd); DISK=$(field disk_raw); CMDLINE=$(field cmdline)
value cmdline_source "$(field cmdline_source)"
value root_fs_type "$(field boot.root_fs_type)"
value qcow2_version "$(field qcow2_version)"
echo "$CMDLINE" > /out/cmdline
[ -n "$KERNEL" ] && [ "$KERNEL" != null ] || fail "the import found no kernel"
[ -n "$INITRD" ] && [ "$INITRD" != null ] || fail "the import found no initrd"

seed=/tmp/seed; scratch=/tmp/scratch
mkdir -p "$seed" "$scratch"
printf 'instance-id: iid-cirros-shape\nlocal-hostname: cirros-shape\n' > "$seed/meta-data"
cat > "$seed/user-data" <<'UD'
#!/bin/sh
echo "USERDATA: ran on $(hostname) cpus=$(nproc) root=$(sed -n 's#^\(/dev/[^ ]*\) / \([^ ]*\) .*#\1 \2#p' /proc/mounts) cmdline=$(cat /proc/cmdline)"
(sleep 1; poweroff) &
UD
say "boot: corral vmm --kernel $KERNEL --transport pci --cmdline '$CMDLINE'"
# boot SECS LOG: one boot, console in LOG, nested-timer's lines in /tmp/timer.txt. A guest
# without GUEST-READY after 60 s (a boot takes ~11 s) is probed once, for the log.
boot() {
  ( sleep 60; grep -q GUEST-READY "$2" 2>/dev/null \
      || kvm_probe "no GUEST-READY after 60 s" "$(vmm_procs | head -1)" ) &
  _probe=$!
  RUST_LOG=info nested-timer --log "$2" --timeout "$1" \
      --mark ready=GUEST-READY --mark down='reboot: Power down' -- \
    corral vmm --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE" --memory 256Mi --cpus 2 \
      --transport pci --no-stdin --scratch-dir "$scratch" \
      --disk "$DISK,overlay,serial=root" --seed-dir "$seed" \
      > /tmp/timer.txt 2> "${2%.log}.vmm.log"
  kill "$_probe" 2>/dev/null
}
boot 90 /out/boot.log
# Under a loaded host, QEMU's emulated SVM now and then loses an L2 kernel before it reaches
# userspace (a triple fault while patching alternatives, or output that stops mid-line; L1
# itself sometimes resets, which the harness retries too). Such a boot (no "Run /init" on its
# console) is kept as boot-1.log, said and counted, and the guest booted once more; anything
# later in the boot, or a second early loss, fails the scenario.
if ! grep -q '^TIMER ready ' /tmp/timer.txt && ! grep -q 'Run /init as init process' /out/boot.log; then
  mv /out/boot.log /out/boot-1.log; mv /out/boot.vmm.log /out/boot-1.vmm.log
  say "first boot lost before userspace ($(grep '^TIMER exit\|^TIMER timeout' /tmp/timer.txt)): $(tail -c 300 /out/boot-1.log | tr -d '\r' | tail -n 2 | tr '\n' ' ')"
  value early_boot_retries 1
  boot 150 /out/boot.log
fi
cat /tmp/timer.txt
grep -q '^TIMER ready ' /tmp/timer.txt || fail "no GUEST-READY"
grep -q '^TIMER exit .* code=0$' /tmp/timer.txt || fail "the VMM did not exit 0 after the guest's poweroff"
value ready_ms "$(sed -n 's/^TIMER ready //p' /tmp/timer.txt)"
[ -z "$(ls -A "$scratch")" ] || fail "scratch dir not empty: $(ls -A "$scratch")"
