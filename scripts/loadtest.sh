#!/usr/bin/env bash
# Reproduces the seed lab's HPA part against a running corral daemon, with curl and jq only:
# create the VMIRS (image swapped), scale it to 1, create the HPA, start the lab's load line in
# the guest through the console API, print the HPA like `kubectl get hpa` until it scales the set
# to 2, stop the load, and show the scale-down once the stabilization window has passed.
# Prints a timeline; exits non-zero if the scaling did not happen as expected.
#
#   scripts/loadtest.sh [--socket PATH | --server URL --token-file FILE [--ca-file CA]] [--namespace NS]
#                       [--image IMAGE] [--vmirs FILE] [--hpa FILE] [--window SECONDS]
#                       [--up-timeout SECONDS] [--keep]
#                       [--service [--rate N] [--burn MS] [--path PATH] [--max-load SECONDS]]
#
# --window is the daemon's --hpa-downscale-stabilization (default 300 s, as in the lab); run the
# daemon with a shorter one (e.g. --hpa-downscale-stabilization 30s) and pass the same value to
# see the scale-down quickly.
# --service: the load is HTTP instead of the console line: the set is exposed as a NodePort
# Service (virtctl expose's selector) with an httpGet readiness probe on port 80 added to its
# template, and curl sends --rate new connections per second (default 10) to
# 127.0.0.1:<nodePort><--path> (default /burn?ms=<--burn>, 20 ms of guest CPU each, the test
# guest's endpoint) until the HPA has scaled to 2 and the new VMI takes its share, for at most
# --max-load seconds (default 300). Every failed request is counted; any failure fails the run.
# Needs a daemon with pod networking, and the printed node port reachable from here.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SOCKET=${CORRAL_SOCKET:-/run/corral/corral.sock}
SERVER=""
TOKEN_FILE=""
CA_FILE=""
NS=default
IMAGE=""
VMIRS="$HERE/../tests/fixtures/seed/vmirs.yaml"
HPA="$HERE/../tests/fixtures/seed/hpa.yaml"
WINDOW=300
UP_TIMEOUT=180
KEEP=0
SERVICE=0
RATE=10
BURN=20
LPATH=""
MAX_LOAD=300
LOAD_LINE='load() { dd if=/dev/zero of=/dev/null & }; load; read; killall dd'

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --socket) SOCKET=$2; shift 2 ;;
    --server) SERVER=${2%/}; shift 2 ;;
    --token-file) TOKEN_FILE=$2; shift 2 ;;
    --ca-file) CA_FILE=$2; shift 2 ;;
    -n|--namespace) NS=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    --vmirs) VMIRS=$2; shift 2 ;;
    --hpa) HPA=$2; shift 2 ;;
    --window) WINDOW=${2%s}; shift 2 ;;
    --up-timeout) UP_TIMEOUT=${2%s}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --service) SERVICE=1; shift ;;
    --rate) RATE=$2; shift 2 ;;
    --burn) BURN=$2; shift 2 ;;
    --path) LPATH=$2; shift 2 ;;
    --max-load) MAX_LOAD=${2%s}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "loadtest: unknown argument $1" >&2; usage ;;
  esac
done
case "$RATE" in ''|*[!0-9]*) echo "loadtest: --rate must be a whole number" >&2; exit 2 ;; esac
[ "$RATE" -ge 1 ] && [ "$RATE" -le 50 ] || { echo "loadtest: --rate must be 1..50" >&2; exit 2; }
[ -n "$LPATH" ] || LPATH="/burn?ms=$BURN"
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "loadtest: $tool is required" >&2; exit 2; }
done
for f in "$VMIRS" "$HPA"; do
  [ -r "$f" ] || { echo "loadtest: cannot read $f" >&2; exit 2; }
done

# ---- HTTP -----------------------------------------------------------------------------------
CURL=(curl -sS --max-time 30)
if [ -n "$SERVER" ]; then
  BASE=$SERVER
  [ -n "$TOKEN_FILE" ] && CURL+=(-H "Authorization: Bearer $(tr -d '[:space:]' < "$TOKEN_FILE")")
  # The daemon's TCP listener is HTTPS with a private CA (<state-dir>/tls/ca.crt).
  [ -n "$CA_FILE" ] && CURL+=(--cacert "$CA_FILE")
else
  BASE=http://localhost
  CURL+=(--unix-socket "$SOCKET")
fi
# api METHOD PATH [CONTENT-TYPE BODY-FILE]: the response body goes to $RESP, its status to $CODE
# (call it directly, not in $( ), so that CODE is set in this shell).
RESP=$(mktemp)
api() {
  local method=$1 path=$2 ct=${3:-} body=${4:-}
  if [ -n "$ct" ]; then
    CODE=$("${CURL[@]}" -o "$RESP" -w '%{http_code}' -X "$method" -H "Content-Type: $ct" --data-binary "@$body" "$BASE$path")
  else
    CODE=$("${CURL[@]}" -o "$RESP" -w '%{http_code}' -X "$method" "$BASE$path")
  fi
}
# get PATH: the JSON body on stdout (for pipelines).
get() { "${CURL[@]}" "$BASE$1"; }
message() { jq -r '.message // empty' "$RESP" 2>/dev/null || cat "$RESP"; }
TABLE='Accept: application/json;as=Table;v=v1;g=meta.k8s.io'
# Prints a Table response the way kubectl does (priority-0 columns, aligned).
print_table() {
  jq -r '
    ([.columnDefinitions[] | select(.priority == 0) | .name | ascii_upcase]) as $h
    | ([.columnDefinitions | to_entries[] | select(.value.priority == 0) | .key]) as $ix
    | [$h] + [.rows[] | [.cells as $c | $ix[] | ($c[.] // "<none>") | tostring]]
    | (transpose | map(map(length) | max)) as $w
    | .[] | [to_entries[] | .value + (" " * ($w[.key] - (.value | length)))] | join("   ")'
}

T0=$(date +%s)
log() { printf '[t+%4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
fail() { log "FAIL: $*" >&2; exit 1; }

RS=/apis/kubevirt.io/v1/namespaces/$NS/virtualmachineinstancereplicasets
HPAS=/apis/autoscaling/v1/namespaces/$NS/horizontalpodautoscalers
VMIS=/apis/kubevirt.io/v1/namespaces/$NS/virtualmachineinstances
SET=$(sed -n 's/^  name: *//p' "$VMIRS" | head -1)
HPA_NAME=$(sed -n 's/^  name: *//p' "$HPA" | head -1)

api GET /readyz; [ "$CODE" = 200 ] || fail "the daemon at ${SERVER:-$SOCKET} is not ready (HTTP $CODE)"
get /apis | jq -e '.groups[] | select(.name == "metrics.k8s.io")' >/dev/null \
  || fail "the daemon does not serve metrics.k8s.io (no sampler)"
log "daemon ready at ${SERVER:-$SOCKET}; stabilization window ${WINDOW}s"

# ---- 1. the set, scaled to 1 ------------------------------------------------------------------
body=$(mktemp); LOADLOG=$(mktemp); trap 'rm -f "$body" "$RESP" "$LOADLOG"' EXIT
if [ -n "$IMAGE" ]; then
  sed "s|image: .*|image: $IMAGE|" "$VMIRS" > "$body"
else
  cp "$VMIRS" "$body"
fi
if [ "$SERVICE" = 1 ]; then
  # A Service sends traffic to Ready VMIs, and without a probe a VMI is Ready once its VM runs,
  # before the guest serves: add what a KubeVirt user adds, an httpGet readiness probe.
  awk '{print} /^    spec:$/ && !done {print "      readinessProbe:\n        httpGet:\n          port: 80\n        periodSeconds: 1"; done=1}' \
    "$body" > "$body.probe" && mv "$body.probe" "$body"
  grep -q '^      readinessProbe:' "$body" || fail "cannot add a readiness probe to $VMIRS (no template spec at 4 spaces)"
fi
api POST "$RS" application/yaml "$body"
case "$CODE" in
  201) log "created VirtualMachineInstanceReplicaSet $SET" ;;
  409) log "VirtualMachineInstanceReplicaSet $SET exists; reusing it" ;;
  *) fail "create $SET: HTTP $CODE $(message)" ;;
esac
echo '{"spec":{"replicas":1}}' > "$body"
api PATCH "$RS/$SET/scale" application/merge-patch+json "$body"
[ "$CODE" = 200 ] || fail "scale $SET to 1: HTTP $CODE $(message)"
log "scaled $SET to 1 (the lab's: oc scale vmirs $SET --replicas 1)"
# The set's VMIs that are not being deleted: "name ready" lines.
vmis() {
  get "$VMIS" | jq -r --arg s "$SET" '.items[] | select(.metadata.ownerReferences[]?.name == $s)
    | select(.metadata.deletionTimestamp == null)
    | "\(.metadata.name) \(any(.status.conditions[]?; .type == "Ready" and .status == "True"))"'
}
ready_vmis() { vmis | awk '$2 == "true" {print $1}'; }
deadline=$(( $(date +%s) + UP_TIMEOUT ))
until [ "$(vmis | wc -l)" = 1 ] && [ "$(ready_vmis | wc -l)" = 1 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "$SET did not settle at 1 Ready VMI within ${UP_TIMEOUT}s"
  sleep 1
done
VMI=$(ready_vmis)
log "1 VMI Ready: $VMI"

# ---- 2. the HPA -------------------------------------------------------------------------------
api POST "$HPAS" application/yaml "$HPA"
case "$CODE" in
  201) log "created HorizontalPodAutoscaler $HPA_NAME (autoscaling/v1, the lab's YAML)" ;;
  409) log "HorizontalPodAutoscaler $HPA_NAME exists; reusing it" ;;
  *) fail "create the HPA: HTTP $CODE $(message)" ;;
esac
hpa_row() { "${CURL[@]}" -H "$TABLE" "$BASE$HPAS/$HPA_NAME" | print_table; }
top_pods() {
  get "/apis/metrics.k8s.io/v1beta1/namespaces/$NS/pods" \
    | jq -r '.items[] | "\(.metadata.name)  cpu \(.containers[0].usage.cpu)  memory \(.containers[0].usage.memory)"'
}
# console LINE UNTIL: types LINE into the VMI's console; prints the guest's first reply line.
console() {
  printf '%s\n' "$1" > "$body"
  api POST "/apis/subresources.kubevirt.io/v1/namespaces/$NS/virtualmachineinstances/$VMI/consoleinput?until=${2// /%20}&waitMillis=5000" text/plain "$body"
  [ "$CODE" = 200 ] || fail "console input to $VMI: HTTP $CODE $(message)"
  tr -d '\r' < "$RESP" | grep -m1 . || echo '(no reply)'
}
# watch_replicas OP N DEADLINE: prints the HPA row whenever it changes until the set's
# spec.replicas OP N (-ge, -le); fails at DEADLINE.
last=""
watch_replicas() {
  local op=$1 n=$2 deadline=$3 row replicas
  while :; do
    row=$(hpa_row | tail -1)
    [ "$row" != "$last" ] && { log "$row"; last=$row; }
    replicas=$(get "$RS/$SET" | jq '.spec.replicas')
    [ "$replicas" "$op" "$n" ] && return 0
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 2
  done
}
deadline=$(( $(date +%s) + 120 ))
until get "$HPAS/$HPA_NAME" | jq -e '.status.currentCPUUtilizationPercentage != null' >/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the HPA reported no CPU utilization within 120s: $(hpa_row | tail -1)"
  sleep 1
done
log "the HPA sees the idle VMI:"; hpa_row
top_pods | sed 's/^/           top: /'

# ---- 3. load ----------------------------------------------------------------------------------
if [ "$SERVICE" = 1 ]; then
  SVCS=/api/v1/namespaces/$NS/services
  selector=$(get "$RS/$SET" | jq -c '.spec.selector.matchLabels')
  jq -n --arg n "$SET" --argjson sel "$selector" \
    '{apiVersion: "v1", kind: "Service", metadata: {name: $n},
      spec: {type: "NodePort", selector: $sel, ports: [{port: 80, targetPort: 80, protocol: "TCP"}]}}' > "$body"
  api POST "$SVCS" application/json "$body"
  case "$CODE" in
    201) log "exposed $SET as Service $SET (NodePort; virtctl expose vmirs $SET --port 80 --type NodePort)" ;;
    409) log "Service $SET exists; reusing it" ;;
    *) fail "create the Service: HTTP $CODE $(message)" ;;
  esac
  svc=$(get "$SVCS/$SET")
  NODE_PORT=$(echo "$svc" | jq -r '.spec.ports[0].nodePort')
  URL="http://127.0.0.1:$NODE_PORT$LPATH"
  log "Service $SET: cluster IP $(echo "$svc" | jq -r .spec.clusterIP), node port $NODE_PORT; load: $RATE new connections/s to $URL"
  # req: one request on a new connection; appends "second code seconds vmi [curl's error]" to
  # $LOADLOG.
  req() {
    local out code secs name err
    out=$(curl -sS --max-time 15 -H 'Connection: close' -w '\n%{http_code} %{time_total}' "$URL" 2>&1) || true
    code=$(echo "$out" | tail -1 | cut -d' ' -f1); secs=$(echo "$out" | tail -1 | cut -d' ' -f2)
    name=$(echo "$out" | sed -n 's/.* on \([^ ]*\)$/\1/p; s/^hello from \([^ ]*\)$/\1/p' | head -1)
    case "$code" in 2??) err="" ;; *) code="ERR${code:-000}"; name="-"; err=$(echo "$out" | grep -m1 '^curl:') ;; esac
    printf '%s %s %s %s %s\n' "$(date +%s)" "$code" "${secs:-0}" "${name:--}" "$err" >> "$LOADLOG"
  }
  # window FROM TO: "n errors p50 p90 p99 share..." over requests completed in [FROM, TO).
  window() {
    local pct counts
    # Latency percentiles of the successful requests (sorted times, nearest rank).
    pct=$(awk -v a="$1" -v b="$2" '$1 >= a && $1 < b && $2 ~ /^2/ {print $3 * 1000}' "$LOADLOG" | sort -n \
      | awk '{t[NR] = $1} END {if (NR == 0) print "- - -"; else printf "%.0f %.0f %.0f", t[int((NR - 1) * 0.5) + 1], t[int((NR - 1) * 0.9) + 1], t[int((NR - 1) * 0.99) + 1]}')
    counts=$(awk -v a="$1" -v b="$2" '$1 >= a && $1 < b {n++; if ($2 !~ /^2/) e++; else {m++; s[$4]++}}
      END {out = sprintf("%d %d", n, e); for (k in s) out = out sprintf(" %s=%d%%", k, 100 * s[k] / m); print out}' "$LOADLOG")
    set -- $counts
    echo "$1 $2 $pct ${*:3}"
  }
  deadline=$(( $(date +%s) + 120 ))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL" 2>/dev/null || true)" = 200 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$URL did not answer within 120s"
    sleep 1
  done
  T_LOAD=$(date +%s)
  log "load started: $RATE req/s; every 5 s: req/s, errors, latency p50/p90/p99 (ms), share per VMI, HPA"
  T_UP=""; next=$(( T_LOAD + 5 )); sent=0; first_vmi=$VMI
  while :; do
    now=$(date +%s)
    [ "$now" -lt $(( T_LOAD + MAX_LOAD )) ] || fail "no scale-up with the new VMI taking its share within ${MAX_LOAD}s of load"
    for _ in $(seq "$RATE"); do req & sent=$((sent + 1)); sleep "$(echo "scale=3; 1 / $RATE" | bc)"; done
    if [ "$(date +%s)" -ge "$next" ]; then
      read -r n e p50 p90 p99 shares <<< "$(window $(( next - 5 )) "$next")"
      row=$(hpa_row | tail -1 | awk '{print $3, $4, "replicas", $7}')
      log "$(printf '%5.1f req/s  errors %-3s p50 %4sms p90 %4sms p99 %4sms  %s | HPA %s' "$(echo "scale=1; $n / 5" | bc)" "$e" "$p50" "$p90" "$p99" "$shares" "$row")"
      replicas=$(get "$RS/$SET" | jq '.spec.replicas')
      if [ -z "$T_UP" ] && [ "$replicas" -ge 2 ]; then
        T_UP=$(date +%s); log "SCALED UP: $SET has $replicas replicas, $(( T_UP - T_LOAD ))s after the load started"
      fi
      # Done when another VMI answered at least a fifth of the last window's requests.
      if [ -n "$T_UP" ] && echo "$shares" | tr ' ' '\n' | grep -v "^$first_vmi=" | awk -F= '{sub("%", "", $2); if ($2 >= 20) f=1} END {exit !f}'; then
        log "the new VMI takes its share"; break
      fi
      next=$(( next + 5 ))
    fi
  done
  wait
  read -r n e _ _ _ shares <<< "$(window 0 9999999999)"
  log "load stopped: $n requests, $e failed; shares over the run: $shares"
  [ "$e" = 0 ] || { grep -v ' 2[0-9][0-9] ' "$LOADLOG" | head -5 >&2; fail "$e of $n requests failed"; }
  "${CURL[@]}" -H "$TABLE" "$BASE$VMIS" | print_table | sed 's/^/           /'
  get "/api/v1/namespaces/$NS/endpoints/$SET" | jq -r '"           endpoints: " + ([.subsets[]?.addresses[]?.ip] | join(","))'
  T_STOP=$(date +%s)
else
  reply=$(console "$LOAD_LINE" "burn started")
  T_LOAD=$(date +%s)
  log "load started in $VMI: \`$LOAD_LINE\` → guest: $reply"
  watch_replicas -ge 2 $(( T_LOAD + UP_TIMEOUT )) || fail "no scale-up within ${UP_TIMEOUT}s of the load: $last"
  T_UP=$(date +%s)
  log "SCALED UP: $SET has 2 replicas, $(( T_UP - T_LOAD ))s after the load started"
  get "/api/v1/namespaces/$NS/events" | jq -r --arg h "$HPA_NAME" '[.items[]
    | select(.involvedObject.kind == "HorizontalPodAutoscaler" and .involvedObject.name == $h and .reason == "SuccessfulRescale")]
    | sort_by(.lastTimestamp) | last | "           event: \(.reason): \(.message)"'
  # The second VMI boots while the first keeps burning (the lab's `oc get vmi`).
  deadline=$(( $(date +%s) + 120 ))
  while :; do
    ready=$(ready_vmis | tr '\n' ' ')
    [ "$(echo "$ready" | wc -w)" -ge 2 ] && break
    [ "$(date +%s)" -lt "$deadline" ] || fail "the second VMI did not become Ready within 120s"
    sleep 2
  done
  log "2 VMIs Ready: $ready"
  "${CURL[@]}" -H "$TABLE" "$BASE$VMIS" | print_table | sed 's/^/           /'
  sleep 5
  hpa_row | sed 's/^/           /'
  top_pods | sed 's/^/           top: /'
  last=$(hpa_row | tail -1)
fi

# ---- 4. stop the load, wait out the window ----------------------------------------------------
if [ "$SERVICE" = 0 ]; then
  reply=$(console "" "burn stopped")
  T_STOP=$(date +%s)
  log "load stopped (Enter in the console) → guest: $reply"
fi
MARGIN=60
watch_replicas -le 1 $(( T_STOP + WINDOW + MARGIN )) || fail "no scale-down within the ${WINDOW}s window + ${MARGIN}s"
T_DOWN=$(date +%s)
log "SCALED DOWN: $SET back to 1 replica, $(( T_DOWN - T_STOP ))s after the load stopped"
# The highest recommendation of the window wins: the scale-down comes a window after the last
# loaded sample (which may predate the stop by a sampling period and a sync).
EARLY=$(( WINDOW > 40 ? WINDOW - 40 : 0 ))
[ $(( T_DOWN - T_STOP )) -ge "$EARLY" ] || fail "scaled down $(( T_DOWN - T_STOP ))s after the load stopped, before the ${WINDOW}s stabilization window"

echo
echo "timeline"
echo "  load started         t+$(( T_LOAD - T0 ))s"
echo "  scaled 1 → 2         t+$(( T_UP - T0 ))s   ($(( T_UP - T_LOAD ))s after the load started)"
echo "  load stopped         t+$(( T_STOP - T0 ))s"
echo "  scaled 2 → 1         t+$(( T_DOWN - T0 ))s   ($(( T_DOWN - T_STOP ))s after the load stopped; window ${WINDOW}s)"
if [ "$KEEP" = 0 ]; then
  [ "$SERVICE" = 1 ] && api DELETE "/api/v1/namespaces/$NS/services/$SET"
  api DELETE "$HPAS/$HPA_NAME"
  api DELETE "$RS/$SET"
  log "deleted the HPA and the set (--keep keeps them)"
fi
log "PASS"
