#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry migrate, raw copy (skipGuestConversion): each VM's stateDir/VM/vm.yaml holds a
# KubeVirt VirtualMachine and one PersistentVolumeClaim per target, valid against the
# published schemas (../shared/schemas, strict) and saying what the source VM was: a
# DNS-1123 name (unique in the plan) with the original in an annotation, Forklift's
# vmID/vmUUID labels, CPUs, memory, EFI, SATA disks -> the targets' claims in disk order,
# an e1000e NIC with the source's MAC on the pod network, runStrategy from the original
# power state, and PVC sizes with CDI's filesystem overhead.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq
schemas=${FERRY_SCHEMAS:-}
for d in "$top/../shared/schemas" "$top/../../shared/schemas"; do
  [ -n "$schemas" ] || [ ! -f "$d/kubevirt-virtualmachine.crd.json" ] || schemas=$d
done
[ -n "$schemas" ] || skip "the published schemas (../shared/schemas or \$FERRY_SCHEMAS) are absent"
/usr/bin/python3 -c 'import yaml, jsonschema' 2>/dev/null || skip "python3-yaml or python3-jsonschema is missing"
start_double

create_vm Web_01.prod "disks=64M,5000000&cbt=1&power=on&cpus=4&memory=3072&firmware=efi" >/dev/null
create_vm web-01-prod "disks=8M&cbt=1&power=off" >/dev/null
make_sparse_disk "$tmpdir/d0" 64M 0:4 100:2
place_disk Web_01.prod 2000 "$tmpdir/d0"
make_targets Web_01.prod 2
make_targets web-01-prod 1
write_plan "$tmpdir/plan.json" '.vms = [{"name": "Web_01.prod"}, {"name": "web-01-prod"}] |
  .storageMap[0].destination.storageClass = "fast"'

"$ferry" migrate "$tmpdir/plan.json" --progress=none || fail "ferry migrate failed"
results=$tmpdir/state/results.json
jq -e '[.vms[].state] == ["verified", "verified"]' "$results" >/dev/null ||
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

# The second VM's name collides once made DNS-1123: it gets a suffix; it was off.
jq -e '.[0].metadata.name == "web-01-prod-2" and .[0].spec.runStrategy == "Halted" and
       .[0].metadata.annotations["ferry.io/source-vm-name"] == "web-01-prod" and
       .[0].spec.template.spec.domain.firmware.bootloader == {"bios": {}}' "$tmpdir/m2.json" >/dev/null ||
  fail "second VM: $(jq -c '.[0]' "$tmpdir/m2.json")"
echo "$0: OK"
