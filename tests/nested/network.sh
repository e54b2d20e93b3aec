# network: the seed set on pod networks with real Linux guests. Each VMI gets a pod IP (CNI
# bridge + host-local in L1) and KubeVirt's masquerade binding; the CirrOS-like guest's udhcpc
# gets its lease from corral's DHCP server. Checks: lease (10.0.2.2/24, router 10.0.2.1, the
# node's DNS, MTU), default route, resolv.conf, hostname; wget guest -> a server in L1 (which
# sees the pod IP: masquerade) and guest -> the other VMI's pod IP; curl L1 -> each guest's
# httpd; the set's template carries an httpGet readiness probe (busybox httpd on port 80), so a
# VMI is Running but not Ready until its guest serves; a NodePort Service (corral expose) spreads
# curl from L1 over both guests, on 127.0.0.1 and on the ClusterIP; deleting the Service and the
# set leaves no namespace, veth, tap, IPAM lease or rule.
POD_NETWORK=1
mount_cgroup2
net_modules
# The node's resolvers (documentation addresses: nothing is ever sent to them).
printf 'nameserver 192.0.2.53\nnameserver 198.51.100.53\nsearch corral.test\n' > /etc/resolv.conf
mkdir -p /tmp/www && echo "hello from l1" > /tmp/www/index.html
httpd -f -vv -p 8080 -h /tmp/www 2> /out/l1-httpd.log &
import_image
start_daemon
# The seed set with what a KubeVirt user adds before putting a Service in front of it.
sed "s#quay.io/kubevirt/cirros-container-disk-demo#$IMAGE#" /nested/fixtures/vmirs.yaml \
  | awk '{print} /^    spec:$/ && !done {print "      readinessProbe:\n        httpGet:\n          port: 80\n        periodSeconds: 2"; done=1}' \
  > /tmp/vmirs.yaml
grep -q readinessProbe /tmp/vmirs.yaml || fail "no probe in /tmp/vmirs.yaml"
corral apply -f /tmp/vmirs.yaml || fail "corral apply of the seed set with a readiness probe"
both_running() { [ "$(vmis | wc -l)" -eq 2 ] && for v in $(vmis); do [ "$(vmi_phase "$v")" = Running ] || return 1; done; }
wait_until 90 "both VMIs Running" both_running
for v in $(vmis); do
  c=$(api_get "$NS/virtualmachineinstances/$v" | jq -c '.status.conditions[] | select(.type == "Ready") | [.status, .reason]')
  say "$v Running, Ready condition while its guest boots: $c"
  [ "$c" = '["False","ReadinessProbeFailed"]' ] || fail "$v: Ready before its httpd answered the probe: $c"
done
wait_until 240 "2/2 Ready (readiness probes pass)" set_is 2
set -- $(vmis)
A=$1; B=$2
IPA=$(vmi_ip "$A"); IPB=$(vmi_ip "$B")
say "pod IPs: $A=$IPA $B=$IPB"
[ -n "$IPA" ] && [ -n "$IPB" ] || fail "no pod IP in status.interfaces: $A=$IPA $B=$IPB"
[ "$IPA" != "$IPB" ] || fail "both VMIs got $IPA"
case $IPA$IPB in 10.244.0.*10.244.0.*) ;; *) fail "pod IPs outside 10.244.0.0/24: $IPA $IPB" ;; esac
corral get vmi > /out/get-vmi.txt 2>&1
cat /out/get-vmi.txt
grep -q "$IPA" /out/get-vmi.txt && grep -q "$IPB" /out/get-vmi.txt || fail "corral get vmi shows no IPs"
wait_until 180 "both guests at GUEST-READY" all_guests_ready
leased() { console_of "$1" | grep -q 'udhcpc: bound'; }
for v in $A $B; do
  wait_until 60 "$v's DHCP lease" leased "$v"
  lease=$(console_of "$v" | grep 'udhcpc: bound' | head -1 | tr -d '\r')
  say "$v: $lease"
  case $lease in
    *"bound 10.0.2.2/24 router=10.0.2.1 dns=192.0.2.53 198.51.100.53 mtu=1500 "*) ;;
    *) fail "$v: unexpected lease: $lease" ;;
  esac
  console_login "$v"
  route=$(run_in "$v" 'ip -4 route show default')
  echo "$route" | grep -q '^default via 10.0.2.1 dev eth0' || fail "$v: default route: $route"
  resolv=$(run_in "$v" 'cat /etc/resolv.conf')
  echo "$resolv" | grep -q '^search corral.test' && echo "$resolv" | grep -q '^nameserver 192.0.2.53' \
    || fail "$v: resolv.conf: $resolv"
  hn=$(run_in "$v" 'hostname')
  [ "$hn" = "$v" ] || fail "$v: hostname is $hn"
  addr=$(run_in "$v" 'ip -4 -o addr show dev eth0')
  echo "$addr" | grep -q 'inet 10.0.2.2/24' || fail "$v: eth0: $addr"
done
value lease "10.0.2.2/24,router=10.0.2.1,mtu=1500"
# Guest -> node: the gateway of the pod network is L1's bridge address. (Debian busybox 1.35's
# `wget -T` segfaults; `timeout` bounds it instead.)
for v in $A $B; do
  got=$(run_in "$v" 'timeout 15 wget -q -O - http://10.244.0.1:8080/')
  [ "$got" = "hello from l1" ] || fail "$v: wget from the guest to L1: $got"
done
# L1's server saw the pod IPs (masqueraded by the binding), not 10.0.2.2.
cat /out/l1-httpd.log
for ip in $IPA $IPB; do grep -q "$ip" /out/l1-httpd.log || fail "L1's httpd never saw $ip"; done
grep -q '10\.0\.2\.2' /out/l1-httpd.log && fail "L1's httpd saw the guest's private address"
# Guest -> guest through the pod IPs.
got=$(run_in "$A" "timeout 15 wget -q -O - http://$IPB/")
[ "$got" = "hello from $B" ] || fail "$A -> $B ($IPB): $got"
got=$(run_in "$B" "timeout 15 wget -q -O - http://$IPA/")
[ "$got" = "hello from $A" ] || fail "$B -> $A ($IPA): $got"
# Node -> guest: curl the pod IP, the guest's busybox httpd answers.
for pair in "$A $IPA" "$B $IPB"; do
  set -- $pair
  got=$(curl -sS --max-time 10 "http://$2/") || fail "curl http://$2/ from L1"
  [ "$got" = "hello from $1" ] || fail "curl http://$2/: $got"
  say "curl http://$2/ -> $got"
done
value reached "l1->guest,guest->l1,guest->guest"
# A Service in front of the set: NodePort on L1's loopback and the ClusterIP (by a default route,
# as a node has), round robin over both guests.
corral expose vmirs "$SET" --name web --port 80 --type NodePort || fail "corral expose"
NP=$(api_get /api/v1/namespaces/default/services/web | jq -r '.spec.ports[0].nodePort')
VIP=$(api_get /api/v1/namespaces/default/services/web | jq -r '.spec.clusterIP')
say "Service web: ClusterIP $VIP, node port $NP"
/usr/local/bin/ip route add default dev corral0
for url in "http://127.0.0.1:$NP/" "http://$VIP/"; do
  : > /tmp/answers
  for i in $(seq 20); do
    curl -sS --max-time 10 "$url" >> /tmp/answers || fail "request $i to $url failed"
  done
  na=$(grep -c "hello from $A" /tmp/answers); nb=$(grep -c "hello from $B" /tmp/answers)
  say "$url: $A $na, $B $nb"
  [ "$na" = 10 ] && [ "$nb" = 10 ] || fail "$url: not round robin: $A $na, $B $nb"
done
corral get svc > /out/get-svc.txt 2>&1; cat /out/get-svc.txt
grep -q "80:$NP/TCP" /out/get-svc.txt || fail "corral get svc: $(cat /out/get-svc.txt)"
corral delete svc web || fail "corral delete svc web"
no_service_table() { ! nft list tables | grep -q corral_services; }
wait_until 10 "the Service's table to go" no_service_table
value service "nodeport+clusterip,10/10"
# Delete: nothing left behind.
ip -o link > /out/links-before-delete.txt
n=$(ls /sys/class/net | grep -c '^veth')
[ "$n" -eq 2 ] || fail "$n veths on the node for 2 pods: $(node_links)"
corral delete vmirs "$SET" || fail "corral delete vmirs"
wait_until 90 "no VMM process left" vmm_count_is 0
# L1's links before the set: lo and the CNI bridge (made by the first ADD, kept like a node's).
node_links() { ls /sys/class/net | sort | tr '\n' ' '; }
no_pods_left() { [ -z "$(ls "$RUN/netns" 2>/dev/null)" ] && [ "$(node_links)" = "corral0 lo " ]; }
wait_until 30 "pod namespaces and veths to go" no_pods_left
leases=$(ls /var/lib/cni/networks/corral 2>/dev/null | grep -v -e '^last_reserved_ip' -e '^lock$')
[ -z "$leases" ] || fail "IPAM leases left: $leases"
ip -o link > /out/links-after-delete.txt
nft list ruleset > /out/nft-after-delete.txt 2>&1
grep -q "$IPA\|$IPB" /out/nft-after-delete.txt && fail "rules for the pod IPs left: $(cat /out/nft-after-delete.txt)"
say "nothing left: links $(node_links)"
