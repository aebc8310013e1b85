#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A block-mode target (a loop device standing in for a block PVC): ferry migrates a disk
# into a device bigger than the disk and full of old data.  The first CAPACITY bytes then
# equal the source (holes included: a device is not sparse), the bytes after them are
# untouched, and the results' digests equal `ferry digest DEV --size CAPACITY`.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq curl cmp losetup
requires_ferry

cap=$((48 << 20))
head -c $((64 << 20)) /dev/urandom >"$tmpdir/backing"
cp "$tmpdir/backing" "$tmpdir/old"
dev=$(losetup -f --show "$tmpdir/backing" 2>"$tmpdir/losetup.err") ||
  skip "no loop device here (losetup -f --show: $(cat "$tmpdir/losetup.err"))"
cleanup_fn "losetup -d $dev"
[ -b "$dev" ] || skip "losetup gave $dev, which is not a block device here"

start_double
create_vm blk "disks=$cap&power=off&cbt=1" >/dev/null
make_sparse_disk "$tmpdir/src" "$cap" 0:4 17:33 400:100 767:1
place_disk blk 2000 "$tmpdir/src"
write_plan "$tmpdir/plan.json" \
  ".storageMap[0].destination = {kind: \"block\", path: \"$dev\"} | .vms = [{name: \"blk\"}]"

"$ferry" validate "$tmpdir/plan.json" || fail "ferry validate of the block plan"
"$ferry" migrate "$tmpdir/plan.json" --progress=none || fail "ferry migrate into $dev failed"

res=$tmpdir/state/results.json
jq . "$res"
[ "$(jq -r '.vms[0].state' "$res")" = verified ] || fail "blk is not verified"
[ "$(jq -r '.vms[0].disks[0].target' "$res")" = "$dev" ] || fail "the target in results is not $dev"
disk_view blk 2000 "$tmpdir/view"
cmp -n "$cap" "$dev" "$tmpdir/view" || fail "the first $cap bytes of $dev differ from the source"
cmp -i "$cap" "$dev" "$tmpdir/old" || fail "ferry wrote past the disk's capacity on $dev"

read -r digest _ < <("$ferry" digest "$dev" --size "$cap")
echo "ferry digest $dev --size $cap: $digest"
[ "$(jq -r '.vms[0].disks[0].digest.target' "$res")" = "$digest" ] ||
  fail "results' target digest differs from ferry digest of $dev"
[ "$(jq -r '.vms[0].disks[0].digest.source' "$res")" = "$digest" ] ||
  fail "results' source digest differs from ferry digest of $dev"
