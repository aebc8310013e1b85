#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Warm rounds of a running RHV VM through the cache (cache-dir= fill=true): the first
# round is a full backup and fetches the data; the guest writes; the second round is an
# incremental backup since the first one's checkpoint (the disks' changeId) and fetches
# only the dirty blocks (counted at the double); a checkpoint the engine does not know
# means a full backup and a full refetch.  Every round's cache images equal the guest's
# disks, and every transfer and backup is finalized.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/rhv-functions.sh"
set -euo pipefail
requires nbdkit qemu-img jq curl
requires_plugin

start_rhv_double
vm=$(rhv_create_vm app01 up 16M 8M)
d0=$(rhv_disk "$vm" 0 id) d1=$(rhv_disk "$vm" 1 id)
K=65536
rhv_write_random "$vm" "$d0" 0 $((4 * K))
rhv_write_random "$vm" "$d0" $((100 * K)) $((2 * K))
rhv_write_random "$vm" "$d1" $((10 * K)) $((3 * K))

# round N [ARGS...]: one fill of both disks; sets FETCHED (bytes the double served).
round ()
{
  local n=$1 before
  shift
  before=$(rhv_stat imageio_bytes)
  start_ferry_rhv vm=app01 cache-dir="$tmpdir/cache" fill=true vm-json="$tmpdir/vm$n.json" "$@"
  stop_ferry "$NBDKIT_PID"
  FETCHED=$(($(rhv_stat imageio_bytes) - before))
  echo "round $n: fetched $FETCHED"
  for i in 0 1; do
    qemu-img compare -U -f raw -F qcow2 \
      "$tmpdir/cache/$(jq -r ".disks[$i].export" "$tmpdir/vm$n.json").img" \
      "$(rhv_disk "$vm" $i path)" || fail "round $n: disk $i differs from the guest's"
  done
  timeout=10 wait_for rhv_transfers_ended
  [ "$(rhv_open_transfers)" = 0 ]
  rhv_control GET /backups | jq -e 'all(.phase == "succeeded")' >/dev/null ||
    fail "round $n left a backup open: $(rhv_control GET /backups)"
}

mkdir "$tmpdir/cache"
round 1
[ "$FETCHED" = $((9 * K)) ] || fail "round 1 fetched $FETCHED, the data is $((9 * K))"
cp1=$(jq -r '.disks[0].changeId' "$tmpdir/vm1.json")
[ "$(jq -r '.disks[1].changeId' "$tmpdir/vm1.json")" = "$cp1" ]
[ "$(jq -r .fromCheckpoint "$tmpdir/vm1.json")" = null ]

# The guest writes: new data, data over data, zeros over data (dirty but zero: the cache
# drops the old block without fetching), and on the other disk.
rhv_write_random "$vm" "$d0" $((50 * K)) $((2 * K))
rhv_write_random "$vm" "$d0" $((1 * K)) "$K"
rhv_zero "$vm" "$d0" $((100 * K)) "$K"
rhv_write_random "$vm" "$d1" $((20 * K)) "$K"

round 2 checkpoint="$cp1"
[ "$(jq -r .fromCheckpoint "$tmpdir/vm2.json")" = "$cp1" ]
[ "$FETCHED" = $((4 * K)) ] || fail "round 2 fetched $FETCHED, the changed data blocks are $((4 * K))"

# A checkpoint the engine does not know: full backup, everything fetched again.
rhv_write_random "$vm" "$d1" 0 "$K"
: >"$tmpdir/nbdkit.err"
round 3 checkpoint=00000000-0000-0000-0000-000000000000
grep -q "has no valid checkpoint 00000000-0000-0000-0000-000000000000; taking a full backup" "$tmpdir/nbdkit.err"
[ "$(jq -r .fromCheckpoint "$tmpdir/vm3.json")" = null ]
[ "$FETCHED" = $((12 * K)) ] || fail "round 3 fetched $FETCHED, all the data is $((12 * K))"
