#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# End to end through nbdkit: a running VM's snapshot (as CDI's warm import passes it,
# snapshot=MOREF, file= the snapshot's disk) served by the library behind the test-only
# forwarding plugin; qemu-img compare and nbdcopy against the disk as of the snapshot
# (writes after it are not seen), nbdinfo --map against CBT's allocated chunks, and a disk
# whose size is not a multiple of 64 KiB with data in its last sector.
source "$(dirname "$0")/functions.sh"
source "$top/tests/vddk/functions.sh"
set -euo pipefail
requires nbdkit nbdinfo nbdcopy qemu-img jq curl python3
requires_vddk
[ -z "${FERRY_ASAN:-}" ] ||
  skip "nbdkit cannot load ASan-built code here (see requires_plugin); the driver test runs under ASan"

start_double

size1=$((131075 * 512))
make_sparse_disk "$tmpdir/disk0" 1G 0:2 9:1 4000:33 8000:256 16383:1
make_sparse_disk "$tmpdir/disk1" "$size1" 3:1
printf 'last sector' | dd of="$tmpdir/disk1" bs=512 seek=131074 conv=notrunc status=none
create_vm "vddk two" "disks=1G,$size1&power=on&cbt=1" >"$tmpdir/vm.json"
place_disk "vddk two" 2000 "$tmpdir/disk0"
place_disk "vddk two" 2001 "$tmpdir/disk1"
snap=$(control POST "/vms/vddk%20two/snapshot?name=cdi-warm-1" | jq -r .moref)
# The guest goes on writing after the snapshot: none of it may be served.
guest_write_random "vddk two" 2000 0 65536
guest_write_random "vddk two" 2001 $((131074 * 512)) 512
disk_view "vddk two" 2000 "$tmpdir/view0" "$snap"
disk_view "vddk two" 2001 "$tmpdir/view1" "$snap"
cmp "$tmpdir/view0" "$tmpdir/disk0"
cmp "$tmpdir/view1" "$tmpdir/disk1"

moref=$(jq -r .moref "$tmpdir/vm.json")
file0=$(jq -r '.disks[0].fileName' "$tmpdir/vm.json")
file1=$(jq -r '.disks[1].fileName' "$tmpdir/vm.json")

start_vddkfwd vm="moref=$moref" file="$file0" snapshot="$snap"
[ "$(nbdinfo --size "$(nbd_uri)")" = 1073741824 ]
qemu-img compare -f raw -F raw "$(nbd_uri)" "$tmpdir/view0"
expected_map "$tmpdir/disk0" $((1 << 30)) >"$tmpdir/expected0"
data_map "$(nbd_uri)" >"$tmpdir/map0"
diff -u "$tmpdir/expected0" "$tmpdir/map0" || fail "nbdinfo --map differs from CBT's chunks"
# nbdcopy's 256 KiB requests are coalesced into range reads of up to 1 MiB (read-ahead), so
# the double serves about one GET per MiB of data (plus a few at the start of each area),
# not one per request (4 per MiB).  nbdcopy's parallel requests race: one that arrives
# before the request it continues is read directly, so 31-38 GETs were seen for the 22 of a
# perfect run; the bound, 2 per MiB, is half of no coalescing at all (80 GETs).
control POST /stats/reset >/dev/null
nbdcopy --request-size=262144 "$(nbd_uri)" null:
gets=$(double_stat folder_requests)
limit=$(awk '{ b += $2; n++ } END { printf "%d", b / 1048576 * 2 + 2 * n }' "$tmpdir/expected0")
echo "nbdcopy: $gets range reads for $(awk '{ b += $2 } END { print b }' "$tmpdir/expected0") bytes of data (at most $limit)"
[ "$gets" -le "$limit" ] || fail "$gets range reads for nbdcopy's requests: not coalesced (at most $limit)"
stop_ferry "$NBDKIT_PID"

start_vddkfwd vm="moref=$moref" file="$file1" snapshot="$snap"
[ "$(nbdinfo --size "$(nbd_uri)")" = "$size1" ]
nbdcopy "$(nbd_uri)" "$tmpdir/copy1"
cmp "$tmpdir/copy1" "$tmpdir/view1"
qemu-img compare -f raw -F raw "$(nbd_uri)" "$tmpdir/view1"
expected_map "$tmpdir/disk1" "$size1" >"$tmpdir/expected1"
data_map "$(nbd_uri)" >"$tmpdir/map1"
diff -u "$tmpdir/expected1" "$tmpdir/map1" || fail "nbdinfo --map differs on the unaligned disk"
stop_ferry "$NBDKIT_PID"

# A read that fails on the server is a failed callback whose text, asked for on another
# thread, names the disk, the range and the server's answer.
flat="$tmpdir/double/datastores/$DATASTORE/vddk two/vddk two_1-flat.vmdk"
[ -f "$flat" ] || fail "no flat file at $flat"
start_vddkfwd vm="moref=$moref" file="$file1" snapshot="$snap"
# Open checks the flat file, so it goes away only once the connection is open; then a
# read of data (not a CBT hole, which is never fetched) must fail.
read -r data_at _ <"$tmpdir/map1"
if FLAT=$flat AT=$data_at nbdsh -u "$(nbd_uri)" -c 'import os' \
  -c 'os.rename (os.environ["FLAT"], os.environ["FLAT"] + ".away")' \
  -c 'h.pread (65536, int (os.environ["AT"]))' 2>"$tmpdir/copy2.err"; then
  fail "the read succeeded without the flat file"
fi
mv "$flat.away" "$flat"
grep -E "VixDiskLib_ReadAsync: ReadAsync \\[$DATASTORE\\] vddk two/vddk two_1.vmdk: [0-9]+ bytes at offset [0-9]+: .*404.* \\(error 1:" \
  "$tmpdir/nbdkit.err" || fail "no useful read error: $(tail -5 "$tmpdir/nbdkit.err")"
stop_ferry "$NBDKIT_PID"
