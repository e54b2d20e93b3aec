# bench-boot (bench/nested-boot): the CirrOS-like image booted by `corral vmm` and by QEMU
# microvm (-enable-kvm) in the same L1, each over virtio-pci and virtio-mmio (corral --transport
# pci|mmio; QEMU microvm,pcie=on with virtio-blk-pci, and plain microvm with virtio-blk-device),
# interleaved, NESTED_RUNS times each: spawn -> first kernel line and spawn -> GUEST-READY. Same kernel, initrd, disk (QEMU: snapshot=on, corral: an
# overlay), seed content (QEMU gets the FAT image corral's seed builder made on the host),
# memory and vCPUs. Each VMM is killed once its guest is ready.
RUNS=${NESTED_RUNS:-5}; CPUS=${NESTED_CPUS:-1}; MEM=${NESTED_MEM:-256}
import_image
KERNEL=$(image_field kernel); INITRD=$(image_field initrd); DISK=$(image_field disk_raw)
CMDLINE="$(image_field cmdline)${NESTED_L2_CMDLINE:+ $(echo "$NESTED_L2_CMDLINE" | tr + " ")}"
SEED=/nested/fixtures/bench-seed
mkdir -p /tmp/scratch
one() {  # one VMM name run-number
  case $1 in
    corral-pci|corral-mmio)
      set -- "$@" corral vmm --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE" \
              --memory ${MEM}Mi --cpus $CPUS --no-stdin --scratch-dir /tmp/scratch \
              --transport "${1#corral-}" --disk "$DISK,overlay,serial=root" --seed-dir "$SEED" ;;
    qemu-pci|qemu-mmio)
      machine=microvm; dev=virtio-blk-device
      [ "$1" = qemu-pci ] && { machine=microvm,pcie=on; dev=virtio-blk-pci; }
      set -- "$@" qemu-system-x86_64 -M $machine -enable-kvm -cpu ${NESTED_QEMU_CPU:-host} -m ${MEM}M -smp $CPUS \
              -nodefaults -no-user-config -display none -serial stdio \
              -kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE" \
              -drive id=root,file="$DISK",format=raw,if=none,snapshot=on \
              -device $dev,drive=root \
              -drive id=seed,file=/nested/fixtures/bench-seed.img,format=raw,if=none,readonly=on \
              -device $dev,drive=seed ;;
  esac
  vmm=$1; run=$2; shift 2
  nested-timer --log /out/$vmm-$run.log --timeout ${NESTED_TIMEOUT:-120} --then kill \
    --mark first=' Linux version ' --mark ready=GUEST-READY -- "$@" > /tmp/t.txt
  first=$(sed -n 's/^TIMER first //p' /tmp/t.txt); ready=$(sed -n 's/^TIMER ready //p' /tmp/t.txt)
  if [ -z "$ready" ]; then
    cat /tmp/t.txt; tail -3 /out/$vmm-$run.log
    [ -n "$NESTED_KEEP_GOING" ] || fail "$vmm run $run: no GUEST-READY"
    echo "$vmm $run failed" >> /out/failures.txt
    return 0
  fi
  say "$vmm run $run: first kernel line $first ms, GUEST-READY $ready ms"
  echo "$vmm $run $first $ready" >> /out/bench.txt
}
VMMS="corral-pci qemu-pci corral-mmio qemu-mmio"
for i in $(seq 1 $RUNS); do
  for v in $VMMS; do one $v $i; done
done
median() {  # median of column $2 for VMM $1
  vals=$(awk -v v="$1" -v c="$2" '$1 == v { print $c }' /out/bench.txt | sort -n)
  n=$(echo "$vals" | wc -l)
  echo "$vals" | awk -v n="$n" '{ a[NR] = $1 } END { if (n % 2) print a[(n + 1) / 2]; else printf "%.3f\n", (a[n / 2] + a[n / 2 + 1]) / 2 }'
}
for v in $VMMS; do
  k=$(echo "$v" | tr - _)
  value "${k}_first_ms" "$(median $v 3)"
  value "${k}_ready_ms" "$(median $v 4)"
done
