# cloudinit: a real Debian cloud image (tests/fixtures/parts/40-debian-cloud.sh: bookworm, the cloud
# kernel, an initramfs with virtio_pci and virtio_blk only, systemd, Debian's cloud-init) run by
# the seed set. The OCI layout comes on L1's second disk (/dev/vdb, ext4 "debian-oci", read-only:
# Scenario::disk), not in L1's initramfs. Checks on the guest's serial console: systemd reaches
# multi-user.target, `cloud-init status` is done, the hostname is the VMI's name, the instance-id
# is KubeVirt's <name>.<namespace>, the user-data's write_files file and runcmd's marker and file
# are there; deleting the set powers the guest off through ACPI (logind handles the power button)
# long before the grace period (30 s). Then a VMI annotated corral.dev/virtio-transport: mmio shows
# the failure mode of such an image on virtio-mmio: its initramfs never finds the root disk.
IMAGE=localhost/corral/debian-cloud-like:v1
mem_avail_kb() { sed -n 's/^MemAvailable: *\([0-9]*\).*/\1/p' /proc/meminfo; }
value l1_mem_avail_kb_start "$(mem_avail_kb)"
mkdir -p /mnt/debian-oci
mount -o ro /dev/vdb /mnt/debian-oci || fail "mount the OCI layout disk /dev/vdb (Scenario::disk)"
[ -f /mnt/debian-oci/oci/index.json ] || fail "no OCI layout on /dev/vdb: $(ls /mnt/debian-oci)"

t=$(now_ms)
corral image import /mnt/debian-oci/oci --tag "$IMAGE" --store "$STORE" --json \
  > /tmp/image.json 2> /out/image-import.log || { cat /out/image-import.log; fail "corral image import of the Debian cloud image"; }
value import_ms $(( $(now_ms) - t ))
say "imported $IMAGE in $(( $(now_ms) - t )) ms: $(jq -c '{cmdline, kernel_path: .kernel_path, initrd_path: .initrd_path}' /tmp/image.json 2>/dev/null)"
cp /tmp/image.json /out/image.json
grep -q 'root=LABEL=debian-rootfs ro console=ttyS0' /tmp/image.json \
  || fail "the import did not take the command line from /etc/kernel/cmdline: $(cat /tmp/image.json)"
value l1_store_kb "$(du -sk "$STORE" | cut -f1)"
value l1_mem_avail_kb_imported "$(mem_avail_kb)"

start_daemon --cgroups none
# The seed set: the Debian image, one replica, user-data with write_files and runcmd (the seed's
# userData is a bare "#cloud-config", its last line).
tail -n 1 /nested/fixtures/vmirs.yaml | grep -q '^ *#cloud-config$' || fail "the seed's vmirs.yaml no longer ends in its user-data"
{
  sed -e "s#quay.io/kubevirt/cirros-container-disk-demo#$IMAGE#" -e 's/^  replicas: 2$/  replicas: 1/' \
    /nested/fixtures/vmirs.yaml
  cat <<'EOF'
              write_files:
                - path: /etc/corral-nested.txt
                  content: "hello from cloud-init write_files\n"
              runcmd:
                - echo "RUNCMD-MARKER host=$(hostname) iid=$(cat /var/lib/cloud/data/instance-id)" > /dev/ttyS0
                - echo runcmd-ran > /run/corral-runcmd
EOF
} > /tmp/vmirs.yaml
grep -q '^  replicas: 1$' /tmp/vmirs.yaml && grep -q "$IMAGE" /tmp/vmirs.yaml || fail "editing the seed set: $(cat /tmp/vmirs.yaml)"
cp /tmp/vmirs.yaml /out/vmirs.yaml
t=$(now_ms)
corral apply -f /tmp/vmirs.yaml || fail "corral apply of the Debian set"
if ! (wait_until 180 "1/1 Ready" set_is 1); then
  corral describe vmirs "$SET" 2>&1 | sed 's/^/describe: /'
  corral get events 2>&1 | tail -n 20 | sed 's/^/events: /'
  fail "the Debian set never got 1/1 Ready"
fi
vmi=$(vmis)
uid=$(vmi_uid "$vmi"); pid=$(vmm_pid "$vmi")
say "$vmi Ready (VMM pid $pid) $(( $(now_ms) - t )) ms after the apply"

# guest_at TEXT: TEXT is on the console; a guest whose initramfs gave up on its root disk fails
# the scenario at once (that is what an image without virtio_mmio does on virtio-mmio).
guest_at() {
  if console_of "$vmi" | grep -q 'Gave up waiting for root file system device'; then
    save_console "$vmi" "console-$vmi"
    fail "$vmi: the guest's initramfs found no root disk (LABEL=debian-rootfs): its virtio disks are not on virtio-pci"
  fi
  console_of "$vmi" | grep -q "$1"
}
wait_until 120 "$vmi's kernel" guest_at 'Linux version'
wait_until 300 "$vmi's root file system" guest_at 'EXT4-fs (vda1): mounted'
value root_mounted_ms $(( $(now_ms) - t ))
# systemd's own "Reached target multi-user.target" line is not a reliable marker: systemd holds
# back its status lines while a unit writes to the console (cloud-init's do), so it is read
# from systemctl after the login below.
wait_until 600 "$vmi: the serial getty's login prompt" guest_at "$vmi login:"
value login_prompt_ms $(( $(now_ms) - t ))
wait_until 600 "$vmi: cloud-init's final stage" guest_at 'Cloud-init v\. .* finished at'
value cloud_init_done_ms $(( $(now_ms) - t ))
wait_until 60 "$vmi: runcmd's marker" guest_at "RUNCMD-MARKER host=$vmi iid=$vmi.default"
console_of "$vmi" | grep -o 'Datasource DataSourceNoCloud [^ ]*' | head -1
value l1_mem_avail_kb_guest "$(mem_avail_kb)"

console_login "$vmi"
mu=$(run_in "$vmi" 'systemctl is-active multi-user.target')
[ "$mu" = active ] || fail "$vmi: multi-user.target is '$mu'"
us=$(run_in "$vmi" 'systemctl show -P ActiveEnterTimestampMonotonic multi-user.target')
value guest_multi_user_uptime_ms $(( us / 1000 ))
run_in "$vmi" 'cloud-init schema --system 2>&1 | tail -n 3' | sed "s/^/$vmi: schema: /"
st=$(run_in "$vmi" 'cloud-init status --long')
echo "$st" | sed 's/^/cloud-init status: /'
echo "$st" | grep -qx 'status: done' || fail "$vmi: cloud-init status: $st"
hn=$(run_in "$vmi" 'hostname')
[ "$hn" = "$vmi" ] || fail "$vmi: hostname is '$hn'"
iid=$(run_in "$vmi" 'cat /var/lib/cloud/data/instance-id')
[ "$iid" = "$vmi.default" ] || fail "$vmi: instance-id is '$iid', want $vmi.default"
got=$(run_in "$vmi" 'cat /etc/corral-nested.txt')
[ "$got" = "hello from cloud-init write_files" ] || fail "$vmi: write_files: '$got'"
got=$(run_in "$vmi" 'cat /run/corral-runcmd')
[ "$got" = runcmd-ran ] || fail "$vmi: runcmd: '$got'"
sys=$(run_in "$vmi" 'systemctl is-system-running')
say "$vmi: systemctl is-system-running: $sys; failed units: $(run_in "$vmi" 'systemctl --failed --no-legend --plain' | tr '\n' ' ')"
[ "$sys" = running ] || [ "$sys" = degraded ] || fail "$vmi: systemctl is-system-running: $sys"
run_in "$vmi" 'systemd-analyze; lsblk -rno NAME,LABEL,MOUNTPOINT; ls /sys/bus/pci/drivers/virtio-pci/; free -m' \
  | sed "s/^/$vmi: /"
value guest_cloud_init "done,hostname,instance-id,write_files,runcmd"

say "delete the set (power button, grace 30 s)"
save_console "$vmi" "console-$vmi"
cdir=$(vm_dir "$vmi")
t=$(now_ms)
corral delete vmirs "$SET" || fail "corral delete vmirs"
wait_until 60 "$vmi's VMM (pid $pid) to exit" dead "$pid"
ms=$(( $(now_ms) - t ))
value shutdown_ms $ms
# The run directory may outlive the VMM for a moment: keep the console's end (power-off) if so.
cp "$cdir/console.log" "/out/console-$vmi.log" 2>/dev/null || true
say "the guest shut down and the VMM exited $ms ms after the delete"
[ $ms -lt 30000 ] || fail "shutdown took $ms ms: the grace period (30 s), not the guest, ended it"
wait_until 10 "the daemon's record of $uid's exit" sh -c \
  "grep 'VM process ended' /out/daemon.log | grep -q '$uid'"
grep 'VM process ended' /out/daemon.log | grep "$uid" | grep -q GuestPoweredOff \
  || fail "the VMM did not exit 0: $(grep 'VM process ended' /out/daemon.log | grep "$uid")"
grep -q 'reboot: Power down' "/out/console-$vmi.log" && say "$vmi: 'reboot: Power down' on its console" \
  || say "($vmi's run directory went before its console's end was copied)"
wait_until 60 "no VMI left" vmi_count_is 0

# The same image on virtio-mmio (corral.dev/virtio-transport: mmio): what a user sees.
say "a VMI of the Debian image on virtio-mmio"
cat > /tmp/vmi-mmio.yaml <<EOF
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: debian-mmio
  annotations:
    corral.dev/virtio-transport: mmio
spec:
  terminationGracePeriodSeconds: 0
  domain:
    cpu:
      cores: 1
    devices:
      disks:
        - name: containerdisk
          disk:
            bus: virtio
    resources:
      requests:
        memory: 265Mi
  volumes:
    - name: containerdisk
      containerDisk:
        image: $IMAGE
EOF
t=$(now_ms)
corral apply -f /tmp/vmi-mmio.yaml || fail "corral apply of the mmio VMI"
gave_up() { console_of debian-mmio | grep -q 'Gave up waiting for root file system device'; }
wait_until 300 "debian-mmio's initramfs to give up on its root disk" gave_up
value mmio_gave_up_ms $(( $(now_ms) - t ))
save_console debian-mmio console-debian-mmio
console_of debian-mmio | grep -q 'EXT4-fs (vda1): mounted' && fail "debian-mmio mounted its root over virtio-mmio"
grep -A12 'Gave up waiting' /out/console-debian-mmio.log | tr -d '\r' | sed 's/^/debian-mmio: /'
[ "$(vmi_phase debian-mmio)" = Running ] || fail "debian-mmio is $(vmi_phase debian-mmio)"
say "debian-mmio: Running, its console at the initramfs shell: 'ALERT! LABEL=debian-rootfs does not exist'"
corral delete vmi debian-mmio > /dev/null || fail "corral delete vmi debian-mmio"
wait_until 60 "no VMM process left" vmm_count_is 0
