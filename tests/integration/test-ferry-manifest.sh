#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry migrate, raw copy (skipGuestConversion): each VM's stateDir/VM/vm.yaml holds a
# KubeVirt VirtualMachine and one PersistentVolumeClaim per target, valid against the
# published schemas (../shared/schemas, strict) and saying what the source VM was: a
# DNS-1123 name (unique in the plan) with the original in an annotation, Forklift's
# vmID/vmUUID labels, CPUs, memory, EFI, SATA disks -> the targets' claims in disk order,
# an e1000e NIC with the source's MAC on the pod network, runStrategy from the original
# power state, and PVC sizes with CDI's filesystem overhead.  A third VM has three NICs on
# named networks: without a networkMap only the first is in vm.yaml (with a warning); with
# one (by network name and by moref), each NIC keeps its MAC on the pod network or a Multus
# network, or is left out ("ignored"); a NIC the map misses, or two NICs on the pod
# network, fail the VM with the reason.  Its name collides with the second VM's suffixed
# one: no two VMs get the same name.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq
requires_schemas
start_double

create_vm Web_01.prod "disks=64M,5000000&cbt=1&power=on&cpus=4&memory=3072&firmware=efi" >/dev/null
create_vm web-01-prod "disks=8M&cbt=1&power=off" >/dev/null
create_vm web-01-prod-2 "disks=4M&cbt=1&power=on&nics=vmxnet3:VM%20Network,e1000e:prod-net,e1000:backup-net" >/dev/null
make_sparse_disk "$tmpdir/d0" 64M 0:4 100:2
place_disk Web_01.prod 2000 "$tmpdir/d0"
make_targets Web_01.prod 2
make_targets web-01-prod 1
make_targets web-01-prod-2 1
write_plan "$tmpdir/plan.json" '.vms = [{"name": "Web_01.prod"}, {"name": "web-01-prod"},
  {"name": "web-01-prod-2"}] | .storageMap[0].destination.storageClass = "fast"'

"$ferry" migrate "$tmpdir/plan.json" --progress=none || fail "ferry migrate failed"
results=$tmpdir/state/results.json
jq -e '[.vms[].state] == ["verified", "verified", "verified"]' "$results" >/dev/null ||
  fail "not verified: $(jq -c '[.vms[] | {state, error}]' "$results")"

/usr/bin/python3 "$top/tests/integration/check-manifests.py" "$schemas" \
  "$tmpdir/state/Web_01.prod/vm.yaml" >"$tmpdir/m1.json" ||
  fail "vm.yaml of Web_01.prod: $(cat "$tmpdir/state/Web_01.prod/vm.yaml")"
/usr/bin/python3 "$top/tests/integration/check-manifests.py" "$schemas" \
  "$tmpdir/state/web-01-prod/vm.yaml" >"$tmpdir/m2.json" || fail "vm.yaml of web-01-prod"
[ "$(jq -r '.vms[0].manifests' "$results")" = "$tmpdir/state/Web_01.prod/vm.yaml" ]

cat "$tmpdir/state/Web_01.prod/vm.yaml"
src=$(vm_json Web_01.prod)
mac=$(jq -r '.. | objects | select(has("macAddress")) | .macAddress' <<<"$src" | head -1)
[ -n "$mac" ] || mac=$(jq -r '.vms[0].description.nics[0].mac' "$results")
moref=$(jq -r '.vms[0].sourceId' "$results")
uuid=$(jq -r '.vms[0].description.uuid' "$results")
[[ $moref = vm-* && -n $uuid && $uuid != null ]] || fail "no source identity in the results"
vm=$(jq '.[0]' "$tmpdir/m1.json")
check () { jq -e "$1" <<<"$vm" >/dev/null || fail "VirtualMachine: $1: $(jq -c . <<<"$vm")"; }
check '.metadata.name == "web-01-prod"'
check '.metadata.annotations["ferry.io/source-vm-name"] == "Web_01.prod"'
check ".metadata.labels.vmID == \"$moref\" and .metadata.labels.vmUUID == \"$uuid\""
check ".spec.template.metadata.labels.vmID == \"$moref\""
check '.spec.runStrategy == "Always"'
d='.spec.template.spec.domain'
check "$d.cpu.cores * $d.cpu.sockets * $d.cpu.threads == 4 and $d.memory.guest == \"3072Mi\""
check "$d.firmware.bootloader | has(\"efi\") and (has(\"bios\") | not)"
check "[$d.devices.disks[] | [.name, .bootOrder, .disk.bus]] == [[\"disk0\", 1, \"sata\"], [\"disk1\", 2, \"sata\"]]"
check '[.spec.template.spec.volumes[] | [.name, .persistentVolumeClaim.claimName]] ==
       [["disk0", "web-01-prod-disk0"], ["disk1", "web-01-prod-disk1"]]'
check "$d.devices.interfaces == [{\"name\": \"net0\", \"model\": \"e1000e\", \"masquerade\": {}, \"macAddress\": \"$mac\"}]"
check '.spec.template.spec.networks == [{"name": "net0", "pod": {}}]'

# PVCs: CDI's rule, computed here independently in bytes: ceil(aligned / 0.945), in MiB.
pvc_mib () { python3 -c "import math,sys; a=-(-int(sys.argv[1])//2**20)*2**20; print(-(-math.ceil(a/0.945)//2**20))" "$1"; }
for i in 0 1; do
  size=$(jq -r ".vms[0].disks[$i].capacity" "$results")
  want="$(pvc_mib "$size")Mi"
  pvc=$(jq ".[$((i + 1))]" "$tmpdir/m1.json")
  jq -e --arg want "$want" --arg name "web-01-prod-disk$i" --arg moref "$moref" '
    .kind == "PersistentVolumeClaim" and .metadata.name == $name and
    .spec.resources.requests.storage == $want and .spec.volumeMode == "Filesystem" and
    .spec.accessModes == ["ReadWriteOnce"] and .metadata.labels.vmID == $moref and
    .spec.storageClassName == "fast" and
    (.metadata.annotations["ferry.io/disk-source"] | test("Web_01.prod"))' <<<"$pvc" >/dev/null ||
    fail "PVC $i (want $want): $(jq -c . <<<"$pvc")"
done
[ "$(pvc_mib $((64 << 20)))" = 68 ] # 64 MiB / 0.945 = 67.7 MiB

# The second VM's name collides once made DNS-1123: it gets a suffix, not the third VM's
# own name; it was off.
jq -e '.[0].metadata.name == "web-01-prod-3" and .[0].spec.runStrategy == "Halted" and
       .[0].metadata.annotations["ferry.io/source-vm-name"] == "web-01-prod" and
       .[0].spec.template.spec.domain.firmware.bootloader == {"bios": {}}' "$tmpdir/m2.json" >/dev/null ||
  fail "second VM: $(jq -c '.[0]' "$tmpdir/m2.json")"

# Three NICs, no networkMap: the first on the pod network, the others left out, said so.
m3=$tmpdir/state/web-01-prod-2/vm.yaml
nics=$(jq -c '.vms[2].description.nics' "$results")
jq -e 'length == 3 and ([.[].network] == ["VM Network", "prod-net", "backup-net"]) and
  ([.[].type] == ["VirtualVmxnet3", "VirtualE1000e", "VirtualE1000"]) and
  (map(.mac) | unique | length == 3) and all(.networkId | test("^network-"))' <<<"$nics" >/dev/null ||
  fail "the double's NICs: $nics"
mac () { jq -r ".[$1].mac" <<<"$nics"; }
/usr/bin/python3 "$top/tests/integration/check-manifests.py" "$schemas" "$m3" >"$tmpdir/m3.json" ||
  fail "vm.yaml of web-01-prod-2"
jq -e --arg m "$(mac 0)" '.[0] | .metadata.name == "web-01-prod-2" and .spec.runStrategy == "Always" and
  .spec.template.spec.domain.devices.interfaces == [{"name": "net0", "model": "e1000e", "masquerade": {}, "macAddress": $m}]' \
  "$tmpdir/m3.json" >/dev/null || fail "no networkMap: $(jq -c '.[0].spec.template.spec' "$tmpdir/m3.json")"
jq -e '.vms[2].warnings | any(test("2 NIC\\(s\\) beyond the first"))' "$results" >/dev/null ||
  fail "warnings: $(jq -c '.vms[2].warnings' "$results")"

# remap FILTER: the plan with this networkMap; ferry migrate writes the manifests again.
remap ()
{
  jq --argjson map "$1" '.networkMap = $map' "$tmpdir/plan.json" >"$tmpdir/plan2.json"
  rc=0
  "$ferry" migrate "$tmpdir/plan2.json" --progress=none 2>"$tmpdir/remap.err" || rc=$?
}
prod_id=$(jq -r '.[1].networkId' <<<"$nics")
pod='{"source": {"name": "VM Network"}, "destination": {"type": "pod"}}'
multus="{\"source\": {\"id\": \"$prod_id\"}, \"destination\": {\"type\": \"multus\", \"namespace\": \"infra\", \"name\": \"prod-vlan\"}}"
ignored='{"source": {"name": "backup-net"}, "destination": {"type": "ignored"}}'
# A NIC the map misses, then two on the pod network: refused with the reason.
remap "[$pod, $ignored]"
[ $rc = 1 ] || fail "unmapped NIC: exit $rc"
jq -e '.vms[2].state == "conversion-failed" and (.vms[2].error |
  test("NIC 1 \\(.*\\) is on network \"prod-net\" \\(network-[0-9]+\\), which the networkMap does not map"))' \
  "$results" >/dev/null || fail "unmapped NIC: $(jq -c '.vms[2] | {state, error}' "$results")"
remap "[$pod, $ignored, {\"source\": {\"name\": \"prod-net\"}, \"destination\": {\"type\": \"pod\"}}]"
[ $rc = 1 ] || fail "two pod NICs: exit $rc"
jq -e '.vms[2].error | test("both map to the pod network")' "$results" >/dev/null ||
  fail "two pod NICs: $(jq -c '.vms[2] | {state, error}' "$results")"
# The map: NIC 0 on the pod network, NIC 1 on Multus (by moref), NIC 2 ignored.
remap "[$pod, $multus, $ignored]"
[ $rc = 0 ] || fail "networkMap: exit $rc: $(cat "$tmpdir/remap.err")"
/usr/bin/python3 "$top/tests/integration/check-manifests.py" "$schemas" "$m3" >"$tmpdir/m3.json" ||
  fail "vm.yaml with networkMap: $(cat "$m3")"
jq -e --arg m0 "$(mac 0)" --arg m1 "$(mac 1)" '.[0].spec.template.spec |
  .domain.devices.interfaces == [{"name": "net0", "model": "e1000e", "masquerade": {}, "macAddress": $m0},
                                 {"name": "net1", "model": "e1000e", "bridge": {}, "macAddress": $m1}] and
  .networks == [{"name": "net0", "pod": {}}, {"name": "net1", "multus": {"networkName": "infra/prod-vlan"}}]' \
  "$tmpdir/m3.json" >/dev/null || fail "networkMap: $(jq -c '.[0].spec.template.spec' "$tmpdir/m3.json")"
jq -e '.vms[2].state == "verified" and .vms[2].error == null' "$results" >/dev/null ||
  fail "after the fixed map: $(jq -c '.vms[2] | {state, error}' "$results")"
echo "$0: OK"
