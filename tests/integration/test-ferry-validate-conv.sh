#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry validate on a conversion-only plan ("type": "conversion"): each target is checked
# as ferry migrate's checking state checks it, not as a copy destination.  Clones of a
# powered-off VM's disks (random data) — a VMDK descriptor with its flat extent, and a raw
# disk.img — on a filesystem far smaller than the disks pass with no "too small", their
# blocks compared with the source; a powered-on VM gets a warning that its blocks are not
# compared.  Then each wrong target by itself is the one Critical concern, naming the
# target: a short disk.img, a descriptor with another disk's ddb.uuid, a sparse VMDK, a
# multi-extent VMDK, a disk.img of the right size with other content.  validate writes
# nothing: no state directory, no target changed, no snapshot or reconfiguration.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq qemu-img
requires_ferry

start_double
create_vm convvm "disks=64M,32M&power=off&cbt=1" >/dev/null
create_vm onvm "disks=32M&power=on&cbt=1" >/dev/null
make_sparse_disk "$tmpdir/d" 64M 0:2 300:4 900:1
place_disk convvm 2000 "$tmpdir/d"
make_sparse_disk "$tmpdir/d" 32M 0:1 200:3
place_disk convvm 2001 "$tmpdir/d"
make_sparse_disk "$tmpdir/d" 32M 0:1 100:2
place_disk onvm 2000 "$tmpdir/d"
rm "$tmpdir/d"

# The targets on a 16 MiB filesystem where one can be mounted: a copy would not fit.
pvc=$tmpdir/pvc
mkdir -p "$pvc"
if mount -t tmpfs -o size=16M ferry-test "$pvc" 2>/dev/null; then
  cleanup_fn "umount '$pvc'"
else
  echo "note: cannot mount a small tmpfs here; the targets sit on $tmpdir's filesystem"
fi
ds=$tmpdir/double/datastores/$DATASTORE
vmdk=$pvc/conv-vmdk raw=$pvc/conv-raw on=$pvc/on-raw
mkdir -p "$vmdk" "$raw" "$on"
cp "$ds/convvm/convvm.vmdk" "$vmdk/"
cp --sparse=always "$ds/convvm/convvm-flat.vmdk" "$vmdk/"
cp --sparse=always "$ds/convvm/convvm_1-flat.vmdk" "$raw/disk.img"
cp --sparse=always "$ds/onvm/onvm-flat.vmdk" "$on/disk.img"
grep -q '^ddb.uuid' "$vmdk/convvm.vmdk" || fail "descriptor: $(cat "$vmdk/convvm.vmdk")"
cp -a "$vmdk" "$tmpdir/vmdk.good"
cp -a --sparse=always "$raw/disk.img" "$tmpdir/raw.good"
plan=$tmpdir/plan.json
write_plan "$plan" ".type = \"conversion\" | .skipGuestConversion = false | .storageMap = [] |
  .vms = [{name: \"convvm\", targets: {\"2000\": \"$vmdk\", \"1\": \"$raw\"}},
          {name: \"onvm\", targets: {\"0\": \"$on\"}}]"

# The clones pass; the powered-off VM's blocks are read, and nothing is written.
touch -d '1 minute ago' "$tmpdir/stamp"
find "$pvc" -exec touch -d '2 minutes ago' {} +
control POST /stats/reset >/dev/null
rc=0
"$ferry" validate "$plan" >"$tmpdir/v.out" 2>"$tmpdir/v.err" || rc=$?
cat "$tmpdir/v.out" "$tmpdir/v.err"
[ $rc = 0 ] || fail "ferry validate of good clones exited $rc"
grep -q "^plan $plan: ready$" "$tmpdir/v.out" || fail "not ready"
grep -qi "too small\|Critical" "$tmpdir/v.out" && fail "a concern about a good clone"
"$ferry" validate "$plan" --json >"$tmpdir/v.json" || fail "--json: $(cat "$tmpdir/v.json")"
jq -e '.ready and ([.concerns[] | select(.category != "Information")] ==
  [{object: "vm onvm", category: "Warning",
    message: "onvm: the VM is not powered off: its targets were checked by size (and VMDK uuid) only, not compared with its disks, which may have changed since the clone"}])' \
  "$tmpdir/v.json" >/dev/null || fail "concerns: $(jq -c .concerns "$tmpdir/v.json")"
fetched=$(double_stat folder_bytes)
((fetched > 0 && fetched <= 2 * 2 * 16 * 65536)) || fail "$fetched bytes read from /folder"
[ ! -e "$tmpdir/state" ] || fail "validate created the state directory"
[ -z "$(find "$pvc" -newer "$tmpdir/stamp")" ] || fail "validate changed $(find "$pvc" -newer "$tmpdir/stamp")"
calls=$(control GET /stats | jq -c '.soap_calls | keys')
echo "SOAP calls: $calls"
jq -e 'map(select(test("Snapshot|Reconfig|PowerO"))) == []' <<<"$calls" >/dev/null ||
  fail "validate changed the VM: $calls"

# only OBJECT REGEX: validate finds one Critical concern, about OBJECT, matching REGEX,
# in --json and in the text output; then the good clones are put back.
only ()
{
  local rc=0
  "$ferry" validate "$plan" --json >"$tmpdir/v.json" 2>"$tmpdir/v.err" || rc=$?
  [ $rc = 1 ] || fail "$1: ferry validate --json exited $rc: $(cat "$tmpdir/v.err")"
  jq -e --arg o "$1" --arg re "$2" '[.concerns[] | select(.category == "Critical")] |
    length == 1 and .[0].object == $o and (.[0].message | test($re))' "$tmpdir/v.json" \
    >/dev/null || fail "$1: $(jq -c .concerns "$tmpdir/v.json")"
  rc=0
  "$ferry" validate "$plan" >"$tmpdir/v.out" 2>"$tmpdir/v.err" || rc=$?
  [ $rc = 1 ] || fail "$1: ferry validate exited $rc"
  grep -F "Critical: $1: " "$tmpdir/v.out" | cut -c$((${#1} + 13))- | grep -Eq "$2" ||
    fail "$1: no such text line: $(cat "$tmpdir/v.out")"
  grep -qi "too small" "$tmpdir/v.out" && fail "$1: too small: $(cat "$tmpdir/v.out")"
  rm -rf "$vmdk"
  cp -a "$tmpdir/vmdk.good" "$vmdk"
  cp --sparse=always "$tmpdir/raw.good" "$raw/disk.img"
}

truncate -s 31M "$raw/disk.img"
only "target $raw" "^convvm disk 2001: the target $raw/disk.img holds 32505856 bytes, the source disk .*convvm_1.vmdk is 33554432: not its clone$"
sed -i 's/^ddb.uuid = .*/ddb.uuid = "60 00 C2 90 00 00 00 00-00 00 00 00 00 00 00 01"/' "$vmdk/convvm.vmdk"
only "target $vmdk" "^convvm disk 2000: the descriptor $vmdk/convvm.vmdk has ddb.uuid \"60 00 C2 90 .*\", the source disk .*convvm.vmdk \".*\": another disk$"
rm "$vmdk"/*
qemu-img create -q -f vmdk "$vmdk/convvm.vmdk" 64M
only "target $vmdk" "^convvm disk 2000: target $vmdk/convvm.vmdk: a sparse VMDK \\(binary\\)"
echo 'RW 1024 VMFS "convvm-flat.vmdk"' >>"$vmdk/convvm.vmdk"
only "target $vmdk" "^convvm disk 2000: target $vmdk/convvm.vmdk: 2 extents: exactly one flat extent is supported$"
dd if=/dev/urandom of="$raw/disk.img" bs=64K count=1 conv=notrunc status=none
only "target $raw" "^convvm disk 2001: [0-9]+ of [0-9]+ sampled blocks of $raw/disk.img differ from the source disk: not its clone"
echo "$0: OK"
