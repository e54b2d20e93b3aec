#!/usr/bin/env bash
# Benchmark for issue 4 (not a test): corral's pull of the CirrOS-like container disk
# (pull + verify + unpack + qcow2->raw + kernel extraction) against the peer pipeline
# `skopeo copy` + `tar` + `qemu-img convert` of the same image from the same local registry;
# the cached re-pull; and the qcow2 conversion alone (imago in corral vs qemu-img).
# Needs: tests/fixtures/build.sh run, hyperfine, skopeo, docker-registry, qemu-img.
# Output: a markdown table on stdout and in target/bench-images/results.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-7}
FIX=${FIXTURES:-$ROOT/target/fixtures}/images
OUT=$ROOT/target/bench-images
rm -rf "$OUT"; mkdir -p "$OUT"
cargo build -q --release --bin corral
cargo build -q --release -p images --example qcow2_to_raw
CORRAL=$ROOT/target/release/corral
CONVERT=$ROOT/target/release/examples/qcow2_to_raw

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$OUT/registry.yml" <<YML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $OUT/registry}}
http: {addr: 127.0.0.1:$PORT, secret: bench}
YML
docker-registry serve "$OUT/registry.yml" > "$OUT/registry.log" 2>&1 &
REG_PID=$!
trap 'kill $REG_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.05; done
REF=127.0.0.1:$PORT/corral/cirros-like:latest
skopeo copy -q --dest-tls-verify=false "oci:$FIX/cirros-like/oci:latest" "docker://$REF"

# the peer: fetch the image, take the disk out of its layer, convert it to raw
cat > "$OUT/peer.sh" <<SH
set -e
rm -rf $OUT/peer && mkdir -p $OUT/peer/img $OUT/peer/fs
skopeo copy -q --src-tls-verify=false docker://$REF dir:$OUT/peer/img
for f in $OUT/peer/img/*; do case \$(file -b --mime-type \$f) in application/gzip) tar -xzf \$f -C $OUT/peer/fs;; esac; done
qemu-img convert -f qcow2 -O raw $OUT/peer/fs/disk/disk.qcow2 $OUT/peer/disk.raw
SH

# conversion inputs: the fixture (compressed, 64 MiB) and a 1 GiB disk with 256 MiB of data
dd if=/dev/urandom of="$OUT/data.raw" bs=1M count=128 status=none
truncate -s 1G "$OUT/big.raw"
dd if="$OUT/data.raw" of="$OUT/big.raw" bs=1M seek=64 conv=notrunc status=none
{ yes corral || true; } | head -c $((128 << 20)) > "$OUT/text.raw"
dd if="$OUT/text.raw" of="$OUT/big.raw" bs=1M seek=512 conv=notrunc status=none
qemu-img convert -q -f raw -O qcow2 "$OUT/big.raw" "$OUT/big.qcow2"
qemu-img convert -q -c -f raw -O qcow2 "$OUT/big.raw" "$OUT/big-c.qcow2"
cp "$FIX/cirros-like/disk.qcow2" "$OUT/cirros.qcow2"

S=$OUT/store
hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$OUT/pull.json" \
  --prepare "rm -rf $S" -n "corral image pull (cold store)" "$CORRAL image --store $S pull --insecure-registry 127.0.0.1:$PORT $REF" \
  --prepare "true" -n "skopeo copy + tar + qemu-img convert" "bash $OUT/peer.sh" >/dev/null
"$CORRAL" image --store "$S" pull --insecure-registry "127.0.0.1:$PORT" "$REF" >/dev/null
hyperfine -N --runs $((RUNS * 3)) --warmup 2 --export-json "$OUT/cached.json" \
  -n "corral image pull (cached, tag check)" "$CORRAL image --store $S pull --insecure-registry 127.0.0.1:$PORT $REF" >/dev/null
CONV=()
for img in cirros big big-c; do
  CONV+=(-n "imago (corral) $img.qcow2" "$CONVERT $OUT/$img.qcow2 $OUT/out.raw")
  CONV+=(-n "qemu-img convert $img.qcow2" "qemu-img convert -f qcow2 -O raw $OUT/$img.qcow2 $OUT/out.raw")
done
hyperfine -N --runs "$RUNS" --warmup 1 --prepare "rm -f $OUT/out.raw" --export-json "$OUT/convert.json" "${CONV[@]}" >/dev/null

python3 - "$OUT" <<'PY' | tee "$OUT/results.md"
import json, sys
out = sys.argv[1]
rows = []
for f in ["pull", "cached", "convert"]:
    for r in json.load(open(f"{out}/{f}.json"))["results"]:
        rows.append((r["command"], r["median"], r["min"], r["max"]))
print("| what | median | min | max |")
print("|---|---:|---:|---:|")
for name, med, lo, hi in rows:
    print(f"| {name} | {med*1000:.0f} ms | {lo*1000:.0f} ms | {hi*1000:.0f} ms |")
PY
echo "(qcow2 sizes: cirros $(du -h --apparent-size $OUT/cirros.qcow2 | cut -f1) of 64M virtual, compressed; big $(du -h --apparent-size $OUT/big.qcow2 | cut -f1) and big-c $(du -h --apparent-size $OUT/big-c.qcow2 | cut -f1) of 1G virtual)" | tee -a "$OUT/results.md"
