#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# CBT answers split into many windows (at most 3 areas and 8 MiB per answer) on disks
# whose size is not a multiple of 64 KiB: the bytes read through the plugin are the
# double's, and the extents nbdinfo --map reports are exactly the source's allocation
# (the flat file's data regions at CBT's 64 KiB granularity), not merely something
# qemu-img compare accepts.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy nbdinfo jq curl python3
requires_plugin

start_double -qcda-max-areas 3 -qcda-window 8M
# 50000 KiB = 781.25 blocks of 64 KiB: the last block is partial, and written.
size=$((50000 * 1024))
make_sparse_disk "$tmpdir/disk" "$size" 0:1 3:2 7:1 20:30 126:4 127:1 130:1 200:64 \
  400:1 402:1 404:1 406:1 408:1 640:16
truncate -s "$size" "$tmpdir/disk"
dd if=/dev/urandom of="$tmpdir/disk" bs=1024 seek=$((50000 - 20)) count=20 conv=notrunc status=none
create_vm odd "disks=${size}&power=off&cbt=1" >/dev/null
place_disk odd 2000 "$tmpdir/disk"
[ "$(vm_json odd | jq '.disks[0].capacity')" = "$size" ]

control POST /stats/reset >/dev/null
start_ferry vm=odd

# The map first, alone (nbdcopy below would also notice a data area reported as a hole).
# merge: join adjacent "offset length" lines.
merge () { awk 'NR > 1 && $1 == e { e += $2; next } NR > 1 { print s, e - s } { s = $1; e = $1 + $2 } END { if (NR) print s, e - s }'; }
# The source's allocation: the flat file's data regions, widened to 64 KiB blocks,
# clipped at the capacity.
flat="$tmpdir/double/datastores/$DATASTORE/odd/odd-flat.vmdk"
seek_map "$flat" |
  awk -v B=65536 -v cap="$size" '{ s = int($1 / B) * B; e = int(($1 + $2 + B - 1) / B) * B;
    if (e > cap) e = cap; print s, e - s }' | merge >"$tmpdir/expected"
data_map "$(nbd_uri)" | merge >"$tmpdir/actual"
[ -s "$tmpdir/expected" ] && [ "$(wc -l <"$tmpdir/expected")" -gt 5 ]
diff -u "$tmpdir/expected" "$tmpdir/actual" || fail "nbdinfo --map differs from the source's allocation"

# The bytes: nbdcopy (which skips what the map calls holes) gives the double's view.
disk_view odd 2000 "$tmpdir/view"
cmp "$tmpdir/view" "$tmpdir/disk"
nbdcopy "$(nbd_uri)" "$tmpdir/copy"
cmp "$tmpdir/copy" "$tmpdir/view"
[ "$(stat -c %s "$tmpdir/copy")" = "$size" ]
stop_ferry "$NBDKIT_PID"

# The answers really were split: at least one per 8 MiB window.
calls=$(double_stat qcda_calls)
((calls >= (size + 8388607) / 8388608)) || fail "only $calls QueryChangedDiskAreas calls"
echo "$calls QueryChangedDiskAreas calls, $(wc -l <"$tmpdir/expected") data extents"
