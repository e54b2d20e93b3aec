# boot: `corral vmm` boots the CirrOS-like image three ways (vmlinux through its PVH entry,
# vmlinux through the 64-bit Linux boot protocol, the bzImage; the first two over virtio-pci, the
# default, the bzImage over virtio-mmio), each with 2 vCPUs, 256 MiB, an
# overlay of the imported disk.raw, a raw disk for the guest's dmesg and a NoCloud seed whose
# user-data writes dmesg there and powers the guest off. The host checks each dmesg as vmm_linux
# checks early boot, and the console for userspace (tests/tests/nested.rs).
import_image
KERNEL=$(image_field kernel); INITRD=$(image_field initrd); DISK=$(image_field disk_raw)
CMDLINE="$(image_field cmdline)${NESTED_L2_CMDLINE:+ $(echo "$NESTED_L2_CMDLINE" | tr + " ")}"
echo "$CMDLINE" > /out/cmdline
for variant in ${NESTED_VARIANTS:-pvh linux bzimage}; do
  seed=/tmp/seed-$variant; scratch=/tmp/scratch-$variant; dmesg=/tmp/dmesg-$variant.img
  mkdir -p "$seed" "$scratch"
  truncate -s 1M "$dmesg"
  printf 'instance-id: iid-nested-%s\nlocal-hostname: nested-%s\n' "$variant" "$variant" > "$seed/meta-data"
  cat > "$seed/user-data" <<'UD'
#!/bin/sh
echo "USERDATA: ran on $(hostname) cpus=$(nproc) vda=$([ -b /dev/vda ] && echo yes) vdb=$([ -b /dev/vdb ] && echo yes)"
dmesg > /dev/vdb && sync && echo "USERDATA: dmesg on vdb"
(sleep 1; poweroff) &
UD
  kernel=$KERNEL; proto=auto; transport=pci
  case $variant in
    linux) proto=linux ;;
    bzimage) kernel=/nested/fixtures/vmlinuz; transport=mmio ;;
  esac
  say "boot $variant: corral vmm --kernel $kernel --boot-protocol $proto --transport $transport --cpus 2"
  RUST_LOG=info nested-timer --log /out/boot-$variant.log --timeout 150 \
      --mark ready=GUEST-READY --mark down='reboot: Power down' -- \
    corral vmm --kernel "$kernel" --initrd "$INITRD" --cmdline "$CMDLINE" --memory 256Mi --cpus 2 \
      --boot-protocol $proto --transport $transport --no-stdin --scratch-dir "$scratch" \
      --disk "$DISK,overlay,serial=root" --disk "$dmesg,serial=dmesg" --seed-dir "$seed" \
      > /tmp/timer-$variant.txt 2> /out/boot-$variant.vmm.log
  cat /tmp/timer-$variant.txt
  tr -d '\000' < "$dmesg" > /out/dmesg-$variant.log
  grep -q '^TIMER ready ' /tmp/timer-$variant.txt || fail "boot $variant: no GUEST-READY"
  grep -q '^TIMER exit .* code=0$' /tmp/timer-$variant.txt || fail "boot $variant: the VMM did not exit 0 after the guest's poweroff"
  value "${variant}_ready_ms" "$(sed -n 's/^TIMER ready //p' /tmp/timer-$variant.txt)"
  # The overlay left nothing behind.
  [ -z "$(ls -A "$scratch")" ] || fail "boot $variant: scratch dir not empty: $(ls -A "$scratch")"
done
