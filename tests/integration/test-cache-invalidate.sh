#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# When the source cannot say what changed, the cache refetches everything and is still
# identical to the snapshot — never stale: a CBT reset between rounds, a changeId the
# server does not know (InvalidArgument), truncated or corrupted metadata.  One bad
# metadata slot falls back to the other and stays correct.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit jq curl cmp /usr/bin/python3
requires_plugin

start_double
make_sparse_disk "$tmpdir/disk" 256M 0:16 100:40 2000:30
create_vm inv "disks=256M&power=on&cbt=1" >/dev/null
place_disk inv 2000 "$tmpdir/disk"
img=$tmpdir/disk.img
meta=$img.dcache
export NBDKIT_FLAGS="-v -D ferry.stats=1"

# round: fill at a new snapshot, check the image against it; sets FETCHED.
round ()
{
  local snap
  control POST /stats/reset >/dev/null
  start_ferry vm=inv snapshot=create cache="$img" fill=true vm-json="$tmpdir/vm.json"
  snap=$(vm_json inv | jq -r '.snapshots[0].moref')
  FETCHED=$(double_stat folder_bytes)
  ALLOCATED=$(jq '.disks[0].allocated' "$tmpdir/vm.json") # CBT "*" at the snapshot
  disk_view inv 2000 "$tmpdir/view" "$snap"
  cmp "$img" "$tmpdir/view" || fail "$1: the cache differs from snapshot $snap"
  stop_ferry "$NBDKIT_PID"
  echo "$1: fetched $FETCHED"
}
# scribble: guest writes over data and into a hole.
scribble ()
{
  guest_write_random inv 2000 $((100 * 65536 + 10)) 5000
  guest_write_random inv 2000 $(((3000 + RANDOM % 1000) * 65536)) 65536
}
full_refetch ()
{
  [ "$FETCHED" = "$ALLOCATED" ] || fail "$1: fetched $FETCHED, a full refetch is $ALLOCATED"
  grep 'debug: cache .*: hits' "$tmpdir/nbdkit.err" | tail -n1 | grep -q 'full refetch' ||
    fail "$1: the plugin did not report a full refetch"
}

round "round 1"

# CBT reset between rounds.
scribble
control POST /vms/inv/cbt-reset >/dev/null
round "after a CBT reset"
full_refetch "CBT reset"
grep -q 'full refetch.*CBT was reset' "$tmpdir/nbdkit.err"

# Back to incremental: one changed block.
guest_write_random inv 2000 $((2000 * 65536)) 100
round "incremental"
[ "$FETCHED" = 65536 ] || fail "incremental round fetched $FETCHED, not one block"

# A changeId the server does not know: same CBT uuid, a sequence it never issued.
# (Rewrites the current metadata slot with a valid checksum, as a buggy writer could.)
set_change_id ()
{
  /usr/bin/python3 - "$meta" "$1" <<'PY'
import hashlib, struct, sys
path, seq = sys.argv[1], sys.argv[2]
with open(path, "r+b") as f:
    data = bytearray(f.read())
    gens = [struct.unpack_from("<Q", data, s * 4096 + 16)[0] for s in (0, 1)]
    slot = 0 if gens[0] > gens[1] else 1
    h = slot * 4096
    nblocks = struct.unpack_from("<Q", data, h + 32)[0]
    bmlen = (nblocks + 7) // 8
    area = (bmlen + 4095) & ~4095
    bm = 8192 + slot * area
    old = bytes(data[h + 272:h + 528]).split(b"\0")[0].decode()
    new = old.rsplit("/", 1)[0] + "/" + seq
    data[h + 272:h + 528] = new.encode().ljust(256, b"\0")
    digest = hashlib.sha256(bytes(data[h:h + 4064]) + bytes(data[bm:bm + bmlen])).digest()
    data[h + 4064:h + 4096] = digest
    f.seek(0)
    f.write(data)
PY
}
scribble
set_change_id 999
round "unknown changeId"
full_refetch "unknown changeId"
grep -q 'full refetch.*InvalidArgument' "$tmpdir/nbdkit.err"

# Truncated metadata.
scribble
truncate -s 6000 "$meta"
round "truncated metadata"
full_refetch "truncated metadata"

# Both headers corrupted.
scribble
printf 'garbage!' | dd of="$meta" bs=1 seek=100 conv=notrunc status=none
printf 'garbage!' | dd of="$meta" bs=1 seek=$((4096 + 300)) conv=notrunc status=none
round "corrupted metadata"
full_refetch "corrupted metadata"

# One slot's bitmap corrupted: the other slot is used (or, if it was the current one,
# the earlier durable generation); either way the result is not stale.
guest_write_random inv 2000 $((16 * 65536)) 1000
printf '\377\377' | dd of="$meta" bs=1 seek=8192 conv=notrunc status=none
round "one slot corrupted"
[ "$FETCHED" -lt "$ALLOCATED" ] || fail "one bad slot caused a full refetch"
echo OK
