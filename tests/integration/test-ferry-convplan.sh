#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A conversion-only plan ("type": "conversion"), NetApp Shift's flow: the disks of a
# powered-off VM already sit in PVCs, cloned on the storage array from the datastore's
# files, and ferry only checks, converts and writes the manifests.  The real Debian guest
# (tests/guest/build-guest.sh, cached) is disk 0 of a two-disk VM in the vSphere double;
# disk 0's target is a clone of the datastore's VMDK descriptor and flat file, disk 1's a
# raw disk.img.  Before any conversion, targets that are not the disks' clones are refused
# with the reason: a size that differs, a descriptor whose ddb.uuid is another disk's,
# content that differs from the source in the sampled blocks.  Then one conversion covers
# both target formats: the flat extent is converted in place (the descriptor untouched),
# the digests before and after are recorded, the manifests name both claims, and the
# converted disk boots on virtio to the boot marker and powers off.  Nothing is copied:
# only the identity sample (at most 16 blocks per disk) is read from /folder.
# timeout: 1800
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq qemu-img qemu-nbd qemu-system-x86_64 virt-v2v-in-place guestfish debugfs
requires_guest "$tmpdir/guest.img"
guest_set_poweroff "$tmpdir/guest.img"

start_double
create_vm shiftvm "disks=1G,64M&power=off&cbt=1&cpus=2&memory=1024" >/dev/null
place_disk shiftvm 2000 "$tmpdir/guest.img"
make_sparse_disk "$tmpdir/d1" 64M 0:2 500:2
place_disk shiftvm 2001 "$tmpdir/d1"
rm "$tmpdir/d1"

# The array's clones of the datastore's files: descriptor + flat extent, and a raw image.
ds=$tmpdir/double/datastores/$DATASTORE/shiftvm
vmdk=$tmpdir/pvc/shift-vmdk raw=$tmpdir/pvc/shift-raw
mkdir -p "$vmdk" "$raw"
cp "$ds/shiftvm.vmdk" "$vmdk/"
cp --sparse=always "$ds/shiftvm-flat.vmdk" "$vmdk/"
cp "$vmdk/shiftvm.vmdk" "$tmpdir/descriptor"
grep -q 'createType="vmfs"' "$vmdk/shiftvm.vmdk" || fail "descriptor: $(cat "$vmdk/shiftvm.vmdk")"
write_plan "$tmpdir/plan.json" ".type = \"conversion\" | .skipGuestConversion = false |
  .storageMap = [] | .vms = [{\"name\": \"shiftvm\", \"targets\": {\"2000\": \"$vmdk\", \"1\": \"$raw\"}}]"
results=$tmpdir/state/results.json
flat_digest=$("$ferry" digest "$vmdk/shiftvm-flat.vmdk" | cut -d' ' -f1)

# refused WHAT PATTERN: ferry migrate refuses the targets before converting anything.
refused ()
{
  local rc=0
  "$ferry" migrate "$tmpdir/plan.json" --progress=none 2>"$tmpdir/refused.err" || rc=$?
  [ $rc = 1 ] || fail "$1: ferry migrate exit $rc: $(cat "$tmpdir/refused.err")"
  jq -e --arg p "$2" '.vms[0].state == "failed" and (.vms[0].error | test($p))' "$results" \
    >/dev/null || fail "$1: $(jq -c '.vms[0] | {state, error}' "$results")"
  grep -q "$2" "$tmpdir/refused.err" || fail "$1: $(cat "$tmpdir/refused.err")"
  if [ -e "$tmpdir/state/shiftvm/virt-v2v.log" ] || [ -e "$tmpdir/state/shiftvm/guest.xml" ]; then
    fail "$1: conversion started"
  fi
  [ "$("$ferry" digest "$vmdk/shiftvm-flat.vmdk" | cut -d' ' -f1)" = "$flat_digest" ] ||
    fail "$1: the flat extent changed"
}

# A disk.img one MiB short of the source disk.
truncate -s 63M "$raw/disk.img"
refused "short disk.img" 'target .*shift-raw/disk.img holds 66060288 bytes, the source disk .*shiftvm_1.vmdk is 67108864'
# The right size, but not the disk's content.
truncate -s 64M "$raw/disk.img"
refused "other content" 'shift-raw/disk.img: the block at offset 0 differs from the source disk 2001'
# The descriptor of another disk.
sed -i 's/^ddb.uuid = .*/ddb.uuid = "60 00 C2 90 00 00 00 00-00 00 00 00 00 00 00 01"/' "$vmdk/shiftvm.vmdk"
cp --sparse=always "$ds/shiftvm_1-flat.vmdk" "$raw/disk.img"
refused "other uuid" 'has ddb.uuid "60 00 C2 90 .*another disk'
cp "$tmpdir/descriptor" "$vmdk/shiftvm.vmdk"
raw_digest=$("$ferry" digest "$raw/disk.img" | cut -d' ' -f1)

# The clones: checked, converted, no copy.
control POST /stats/reset >/dev/null
"$ferry" migrate "$tmpdir/plan.json" --progress=json >"$tmpdir/progress.jsonl" \
  2>"$tmpdir/ferry.err" || fail "ferry migrate: $(cat "$tmpdir/ferry.err"; jq -c '.vms[0] | {state, error}' "$results")"
jq -c '.vms[0] | {state, error, warnings, disks: [.disks[] | {target, identity, digest}]}' "$results"
jq -e '.vms[0].state == "converted" and .vms[0].error == null and .vms[0].warnings == []' \
  "$results" >/dev/null || fail "$(jq -c '.vms[0] | {state, error, warnings}' "$results")"
jq -se 'map(select(.event == "state") | .state) | index("checking") < index("verified") and
   index("verified") < index("converted")' "$tmpdir/progress.jsonl" >/dev/null ||
  fail "states: $(jq -sc 'map(select(.event == "state") | .state)' "$tmpdir/progress.jsonl")"
fetched=$(double_stat folder_bytes)
((fetched > 0 && fetched <= 2 * 16 * 65536)) || fail "$fetched bytes fetched from /folder"
jq -e --arg vmdk "$vmdk" --arg raw "$raw" --arg fd "$flat_digest" --arg rd "$raw_digest" '
  .vms[0].disks as $d |
  $d[0].target == ($vmdk + "/shiftvm-flat.vmdk") and $d[0].targetDescriptor == ($vmdk + "/shiftvm.vmdk") and
  $d[1].target == ($raw + "/disk.img") and ($d[1] | has("targetDescriptor") | not) and
  $d[0].digest.target == $fd and $d[1].digest.target == $rd and
  $d[0].identity == {"sampledBlocks": 16, "mismatches": 0, "uuidChecked": true} and
  $d[1].identity.sampledBlocks > 0 and $d[1].identity.mismatches == 0 and $d[0].conversion.changedBlocks > 0' "$results" \
  >/dev/null || fail "disks: $(jq -c '.vms[0].disks' "$results")"
for i in 0 1; do
  t=$(jq -r ".vms[0].disks[$i].target" "$results")
  [ "$(jq -r ".vms[0].disks[$i].digest.afterConversion" "$results")" = \
    "$("$ferry" digest "$t" | cut -d' ' -f1)" ] || fail "disk $i: afterConversion is not the target's digest"
done
[ "$("$ferry" digest "$vmdk/shiftvm-flat.vmdk" | cut -d' ' -f1)" != "$flat_digest" ] ||
  fail "the flat extent was not converted"
cmp "$tmpdir/descriptor" "$vmdk/shiftvm.vmdk" || fail "the descriptor changed"
ls "$tmpdir/state/shiftvm"
[ -z "$(compgen -G "$tmpdir/state/shiftvm/*.overlay.qcow2")" ] || fail "an overlay was left"

# The manifests: the two claims in disk order, virtio, Halted (the VM was off).
y=$tmpdir/state/shiftvm/vm.yaml
grep -q 'runStrategy: "Halted"' "$y" || fail "runStrategy: $(cat "$y")"
[ "$(grep -o 'claimName: "[a-z-]*"' "$y" | tr '\n' ' ')" = 'claimName: "shift-vmdk" claimName: "shift-raw" ' ] ||
  fail "claims: $(grep claimName "$y")"
grep -q '"sata"\|"e1000e"' "$y" && fail "vm.yaml: raw-copy devices"
for d in "$top/../shared/schemas" "$top/../../shared/schemas"; do
  if [ -f "$d/kubevirt-virtualmachine.crd.json" ] && /usr/bin/python3 -c 'import jsonschema' 2>/dev/null; then
    /usr/bin/python3 "$top/tests/integration/check-manifests.py" "$d" "$y" >/dev/null ||
      fail "vm.yaml does not validate"
    break
  fi
done

# The converted flat extent boots on virtio (the second disk beside it) and powers off.
rc=$(guest_boot "$tmpdir/boot.log" "$vmdk/shiftvm-flat.vmdk" "$raw/disk.img")
tail -3 "$tmpdir/boot.log"
grep -q 'GUESTLAB-BOOT-OK' "$tmpdir/boot.log" || fail "no boot marker (qemu exit $rc)"
[ "$rc" = 0 ] || fail "qemu exit $rc after the marker: the guest did not power off"
echo "$0: OK"
