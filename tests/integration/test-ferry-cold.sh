#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry migrate, cold: a running 2-disk VM (one disk CBT-sparse, one dense and of a size
# that is not a multiple of 64 KiB) into filesystem targets.  The targets equal the
# source, the results' digests agree with each other, with `ferry digest` and with the
# documented recipe of standard tools; ferry powered the VM off and left no snapshot; only
# the allocated areas were fetched.
source "$(dirname "$0")/functions.sh"
set -e
requires qemu-img jq split basenc sha256sum
start_double

create_vm web01 "disks=64M,5000000&cbt=1&power=on" >/dev/null
make_sparse_disk "$tmpdir/d0" 64M 0:16 300:40 900:3
place_disk web01 2000 "$tmpdir/d0"
head -c 5000000 /dev/urandom >"$tmpdir/d1"
guest_write web01 2001 0 "$tmpdir/d1"
make_targets web01 2
write_plan "$tmpdir/plan.json" '.vms = [{"name": "web01"}] | .verifySamplePercent = 10'
control POST /stats/reset >/dev/null

"$ferry" migrate "$tmpdir/plan.json" --progress=json >"$tmpdir/progress.jsonl" ||
  fail "ferry migrate failed: $(tail "$tmpdir/progress.jsonl")"

# The targets hold the source, byte for byte.
disk_view web01 2000 "$tmpdir/v0"
disk_view web01 2001 "$tmpdir/v1"
qemu-img compare -q -f raw -F raw "$tmpdir/v0" "$tmpdir/pvc/web01-disk0/disk.img" ||
  fail "disk 2000: the target differs from the source"
cmp "$tmpdir/v1" "$tmpdir/pvc/web01-disk1/disk.img" ||
  fail "disk 2001: the target differs from the source"

# Digests: source side = target side = ferry digest = the recipe of the man page.
results=$tmpdir/state/results.json
[ "$(jq -r '.vms[0].state' "$results")" = verified ] || fail "not verified: $(cat "$results")"
for i in 0 1; do
  src=$(jq -r ".vms[0].disks[$i].digest.source" "$results")
  tgt=$(jq -r ".vms[0].disks[$i].digest.target" "$results")
  img=$tmpdir/pvc/web01-disk$i/disk.img
  own=$("$ferry" digest "$img" | cut -d' ' -f1)
  [[ $src = "$tgt" && $tgt = "$own" ]] ||
    fail "disk $i: digests differ: source $src, target $tgt, ferry digest $own"
  [ "$(jq -r ".vms[0].disks[$i].verifySample.mismatches" "$results")" = 0 ] || fail "sample"
  [ "$(jq -r ".vms[0].disks[$i].verifySample.blocks" "$results")" -gt 0 ] || fail "no sample"
done
recipe=$(split -b 65536 --filter='sha256sum | cut -c1-64 | tr a-f A-F | basenc -d --base16' \
  "$tmpdir/pvc/web01-disk1/disk.img" | sha256sum | cut -d' ' -f1)
[ "$recipe" = "$(jq -r '.vms[0].disks[1].digest.target' "$results")" ] ||
  fail "the documented recipe gives $recipe"

# ferry powered the VM off, said it was on, and left no snapshot.
[ "$(vm_json web01 | jq -r .powerState)" = poweredOff ] || fail "the VM is still on"
[ "$(jq -r '.vms[0].originalPowerState' "$results")" = poweredOn ] || fail "power state"
[ "$(vm_json web01 | jq '.snapshots | length')" = 0 ] || fail "a snapshot was left"

# Only allocated data was fetched: disk 0 holds 59 blocks, disk 1 all of its 77 blocks;
# the verification sample adds at most 10% of them.
fetched=$(double_stat folder_bytes)
allocated=$(((16 + 40 + 3 + 77) * 65536))
echo "fetched $fetched bytes for $allocated allocated"
((fetched >= allocated && fetched <= allocated * 115 / 100)) ||
  fail "fetched $fetched bytes, allocated $allocated"

# Progress lines parse, and a second migrate has nothing to do.
jq -e . "$tmpdir/progress.jsonl" >/dev/null || fail "progress lines do not parse"
"$ferry" migrate "$tmpdir/plan.json" --progress=none || fail "second migrate failed"
"$ferry" status "$tmpdir/plan.json" --json | jq -e '.vms[0].state == "verified"' >/dev/null
