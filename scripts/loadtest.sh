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
#
# --window is the daemon's --hpa-downscale-stabilization (default 300 s, as in the lab); run the
# daemon with a shorter one (e.g. --hpa-downscale-stabilization 30s) and pass the same value to
# see the scale-down quickly.
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
LOAD_LINE='load() { dd if=/dev/zero of=/dev/null & }; load; read; killall dd'

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
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
    -h|--help) usage ;;
    *) echo "loadtest: unknown argument $1" >&2; usage ;;
  esac
done
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
body=$(mktemp); trap 'rm -f "$body" "$RESP"' EXIT
if [ -n "$IMAGE" ]; then
  sed "s|image: .*|image: $IMAGE|" "$VMIRS" > "$body"
else
  cp "$VMIRS" "$body"
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

# ---- 4. stop the load, wait out the window ----------------------------------------------------
reply=$(console "" "burn stopped")
T_STOP=$(date +%s)
log "load stopped (Enter in the console) → guest: $reply"
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
  api DELETE "$HPAS/$HPA_NAME"
  api DELETE "$RS/$SET"
  log "deleted the HPA and the set (--keep keeps them)"
fi
log "PASS"
