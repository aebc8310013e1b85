#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# provider=rhv reads a down VM's two disks through image transfers: byte-identical to the
# qcow2 images' raw view (qemu-img compare), the zero extents of imageio as holes in
# nbdinfo --map, lookup by name and id, and no transfer left open after nbdkit ends —
# also when it is stopped with SIGTERM in the middle of reading.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/rhv-functions.sh"
set -euo pipefail
requires nbdkit nbdinfo nbdcopy qemu-img jq curl
requires_plugin

start_rhv_double
vm=$(rhv_create_vm "db 01" down 24M 8M)
d0=$(rhv_disk "$vm" 0 id) d1=$(rhv_disk "$vm" 1 id)
# Data, data that touches it, zeros written by the guest (allocated, reads as zero), data
# at the very end; disk 1: one area.
rhv_write_random "$vm" "$d0" 0 65536
rhv_write_random "$vm" "$d0" 65536 100000
rhv_zero "$vm" "$d0" $((4 << 20)) $((1 << 20))
rhv_write_random "$vm" "$d0" $((24 * 1048576 - 4096)) 4096
rhv_write_random "$vm" "$d1" $((3 << 20)) 300000

start_ferry_rhv vm="db 01"

nbdinfo --list --json "$(nbd_uri)" >"$tmpdir/list.json"
e0=$(jq -r '.exports[0]."export-name"' "$tmpdir/list.json")
e1=$(jq -r '.exports[1]."export-name"' "$tmpdir/list.json")
[[ $e0 == "$d0"-* && $e1 == "$d1"-* ]] || fail "exports $e0 $e1 are not named after disks $d0 $d1"
[ "$(nbdinfo --size "$(nbd_uri "$e0")")" = $((24 << 20)) ]
[ "$(nbdinfo --size "$(nbd_uri "$e1")")" = $((8 << 20)) ]

# Byte-identical to what the guest sees (qemu reads the qcow2 itself; -U: qemu-nbd of the
# transfer holds it open).
qemu-img compare -U -f raw -F qcow2 "$(nbd_uri "$e0")" "$(rhv_disk "$vm" 0 path)"
nbdcopy "$(nbd_uri "$e1")" "$tmpdir/copy1"
qemu-img compare -U -f raw -F qcow2 "$tmpdir/copy1" "$(rhv_disk "$vm" 1 path)"

# The map: the zero areas of the image (what imageio's /extents?context=zero reports,
# from qemu's own view of the qcow2) are exactly the plugin's holes.
zero_areas ()
{
  awk 'BEGIN { s = -1 }
       { if (s >= 0 && $1 == s + l) l += $2; else { if (s >= 0) print s, l; s = $1; l = $2 } }
       END { if (s >= 0) print s, l }'
}
for i in 0 1; do
  e=$e0
  [ $i = 0 ] || e=$e1
  qemu-img map -U --output=json -f qcow2 "$(rhv_disk "$vm" $i path)" |
    jq -r '.[] | select(.zero) | "\(.start) \(.length)"' | zero_areas >"$tmpdir/expected$i"
  nbdinfo --map "$(nbd_uri "$e")" | awk '$3 >= 2 { print $1, $2 }' | zero_areas >"$tmpdir/holes$i"
  [ -s "$tmpdir/expected$i" ] || fail "disk $i has no zero areas to compare"
  diff -u "$tmpdir/expected$i" "$tmpdir/holes$i" || fail "disk $i: holes differ from the zero extents"
done
# The guest's zeros are a hole: not fetched.
awk -v a=$((4 << 20)) -v b=$((5 << 20)) '$1 <= a && $1 + $2 >= b { found = 1 } END { exit !found }' \
  "$tmpdir/holes0" || fail "the zeros written at 4 MiB are not in a hole: $(cat "$tmpdir/holes0")"

# By id, one disk; then nbdkit ends (SIGTERM) and every transfer is finalized.
stop_ferry "$NBDKIT_PID"
timeout=10 wait_for rhv_transfers_ended
[ "$(rhv_open_transfers)" = 0 ]
rhv_control GET /transfers | jq -e 'all(.phase == "finished_success")' >/dev/null ||
  fail "a transfer was not finalized: $(rhv_control GET /transfers)"

start_ferry_rhv vm="$vm" disk=1
nbdcopy "$(nbd_uri)" "$tmpdir/copy1b"
cmp "$tmpdir/copy1" "$tmpdir/copy1b"
stop_ferry "$NBDKIT_PID"

# SIGTERM while a reader is in the middle of a copy: still nothing left open.
start_ferry_rhv vm="db 01"
nbdcopy --connections=1 --requests=1 "$(nbd_uri "$e0")" "$tmpdir/partial" &
copy=$!
wait_for test -s "$tmpdir/partial"
kill -TERM "$NBDKIT_PID"
wait "$copy" || true
timeout=30 wait_for sh -c "! kill -0 $NBDKIT_PID 2>/dev/null"
timeout=10 wait_for rhv_transfers_ended
[ "$(rhv_open_transfers)" = 0 ] || fail "transfers left open after SIGTERM: $(rhv_control GET /transfers)"
[ "$(rhv_control GET /transfers | jq length)" = 5 ]
[ "$(rhv_stat logins)" = "$(rhv_stat logouts)" ] || fail "a token was not revoked"
