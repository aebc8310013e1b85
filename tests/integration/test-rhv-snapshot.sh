#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# provider=rhv and disk snapshots: a cold download of a raw and of a qcow2 disk; then, after
# two VM snapshots with guest writes between them, snapshot=ID of the running VM serves
# each disk as it was in that snapshot (an image transfer of the disk snapshot, the layers
# below it included, at virtual size), a disk snapshot id serves that one disk, and the
# VM down serves the whole chain at virtual size.  A snapshot the engine does not have is
# a clear error; nothing is left open and no backup is made.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/rhv-functions.sh"
set -euo pipefail
requires nbdkit nbdinfo nbdcopy qemu-img jq curl
requires_plugin

start_rhv_double
vm=$(rhv_create_vm chain01 down 16M 8M/raw)
d0=$(rhv_disk "$vm" 0 id) d1=$(rhv_disk "$vm" 1 id)
[ "$(rhv_disk "$vm" 1 format)" = raw ]
rhv_write_random "$vm" "$d0" 0 $((1 << 20))
rhv_write_random "$vm" "$d1" $((2 << 20)) 524288

# same EXPORT IMAGE FORMAT: the export is the image's guest view, at its virtual size.
same ()
{
  [ "$(nbdinfo --size "$(nbd_uri "$1")")" = "$(qemu-img info -U --output=json "$2" |
    jq '."virtual-size"')" ] || fail "$1: not served at the virtual size of $2"
  qemu-img compare -U -f raw -F "$3" "$(nbd_uri "$1")" "$2" >/dev/null ||
    fail "$1 differs from $2"
}
exports ()
{
  nbdinfo --list --json "$(nbd_uri)" | jq -r '.exports[]."export-name"'
}

# Cold, no snapshot: a qcow2 and a raw disk.
start_ferry_rhv vm=chain01
mapfile -t e < <(exports)
same "${e[0]}" "$(rhv_disk "$vm" 0 path)" qcow2
same "${e[1]}" "$(rhv_disk "$vm" 1 path)" raw
stop_ferry "$NBDKIT_PID"

# Two snapshots with guest writes before, between and after.
s1=$(rhv_snapshot "$vm")
rhv_write_random "$vm" "$d0" 524288 $((1 << 20))
rhv_write_random "$vm" "$d0" $((12 << 20)) 65536
rhv_write_random "$vm" "$d1" 0 65536
s2=$(rhv_snapshot "$vm")
rhv_write_random "$vm" "$d0" 0 4096
rhv_zero "$vm" "$d1" $((2 << 20)) 65536
rhv_control POST "/vms/$vm/status" --data-binary '{"status": "up"}' -o /dev/null
view=$(rhv_vm "$vm")
snap_path () { jq -r ".disks[$1].snapshots[] | select(.snapshot == \"$2\") | .$3" <<<"$view"; }

# The running VM at snapshot 1 (the base volumes), then at snapshot 2 (one layer up).
for s in "$s1" "$s2"; do
  start_ferry_rhv vm=chain01 snapshot="$s" vm-json="$tmpdir/vm.json"
  mapfile -t e < <(exports)
  for i in 0 1; do
    same "${e[$i]}" "$(snap_path $i "$s" path)" "$(snap_path $i "$s" format)"
  done
  jq -e --arg s "$s" '.snapshot == $s and .backup == null and
      .disks[0].diskSnapshot != null and .disks[0].changeId == null and .disks[0].actualSize > 0' "$tmpdir/vm.json" \
    >/dev/null || fail "vm.json: $(cat "$tmpdir/vm.json")"
  stop_ferry "$NBDKIT_PID"
done
# What the snapshot transfers read differs from the guest's disks now.
if qemu-img compare -U -q "$(snap_path 0 "$s2" path)" "$(rhv_disk "$vm" 0 path)"; then
  fail "the guest's writes after snapshot 2 did not change disk 0"
fi
rhv_control GET /transfers | jq -e --argjson n 4 '[.[] | select(.disk != null)] | length >= $n' >/dev/null

# One disk snapshot by its own id: that disk only (disk=1), as in snapshot 1.
ds=$(snap_path 1 "$s1" id)
start_ferry_rhv vm=chain01 snapshot="$ds" disk=1
same "$(exports)" "$(snap_path 1 "$s1" path)" raw
stop_ferry "$NBDKIT_PID"

# The VM down: the whole chain (two snapshots and the active layer) at virtual size.
rhv_control POST "/vms/$vm/status" --data-binary '{"status": "down"}' -o /dev/null
start_ferry_rhv vm=chain01
mapfile -t e < <(exports)
same "${e[0]}" "$(rhv_disk "$vm" 0 path)" qcow2
same "${e[1]}" "$(rhv_disk "$vm" 1 path)" qcow2
stop_ferry "$NBDKIT_PID"

# A snapshot the engine does not have; snapshot=create and checkpoint= with snapshot=.
: >"$tmpdir/nbdkit.err"
if start_ferry_rhv vm=chain01 snapshot=00000000-0000-0000-0000-00000000beef; then
  fail "nbdkit started with an unknown snapshot"
fi
grep -q "vm $vm (chain01) disk $d0 (.*): no disk snapshot 00000000-0000-0000-0000-00000000beef, nor one in VM snapshot" \
  "$tmpdir/nbdkit.err" || fail "$(cat "$tmpdir/nbdkit.err")"
for args in snapshot=create "snapshot=$s1 checkpoint=$s1"; do
  : >"$tmpdir/nbdkit.err"
  # shellcheck disable=SC2086
  if start_ferry_rhv vm=chain01 $args; then fail "nbdkit accepted $args"; fi
  grep -q "provider=rhv: .*snapshot=" "$tmpdir/nbdkit.err" || fail "$args: $(cat "$tmpdir/nbdkit.err")"
done

timeout=10 wait_for rhv_transfers_ended
[ "$(rhv_open_transfers)" = 0 ] || fail "a transfer was left open: $(rhv_control GET /transfers)"
rhv_control GET /transfers | jq -e 'all(.phase == "finished_success")' >/dev/null ||
  fail "a transfer was not finalized: $(rhv_control GET /transfers)"
[ "$(rhv_control GET /backups | jq length)" = 0 ] || fail "a snapshot read made a backup"
