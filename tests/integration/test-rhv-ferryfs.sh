#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferryfs over the ferry plugin on the RHV double: a running VM's disks (read through a
# backup) as files, byte-identical to the guest's disks, with SEEK_DATA/SEEK_HOLE where
# the guest wrote; vm.json names the RHV source; fusermount3 -u ends the transfers and
# the backup.  Then the VM's snapshot (snapshot=ID), stopped with SIGTERM: nothing is
# left open either.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
# shellcheck source=rhv-functions.sh
source "$(dirname "$0")/rhv-functions.sh"
set -euo pipefail
requires nbdkit fusermount3 mountpoint jq curl python3 qemu-img
requires_plugin
[ -e /dev/fuse ] || skip "/dev/fuse is missing"

start_rhv_double
vm=$(rhv_create_vm "inspect 01" down 16M 4M)
d0=$(rhv_disk "$vm" 0 id) d1=$(rhv_disk "$vm" 1 id)
rhv_write_random "$vm" "$d0" 0 $((1 << 20))
rhv_write_random "$vm" "$d0" $((10 << 20)) 65536
rhv_write_random "$vm" "$d1" $((1 << 20)) 131072
snap=$(rhv_snapshot "$vm")
rhv_write_random "$vm" "$d0" $((4 << 20)) 65536
rhv_control POST "/vms/$vm/status" --data-binary '{"status": "up"}' -o /dev/null
for i in 0 1; do
  qemu-img convert -U -O raw "$(rhv_disk "$vm" $i path)" "$tmpdir/guest$i"
done
printf '%s' "$RHV_PASSWORD" >"$tmpdir/password"
plugin_args=(provider=rhv url="$ENGINE_URL" user="$RHV_USER" password=+"$tmpdir/password"
  cacert="$CACERT" vm="inspect 01")

mp=$tmpdir/mnt
start_ferryfs "$mp" -t 30 -- nbdkit "$plugin" "${plugin_args[@]}"
mapfile -t files < <(cd "$mp/disks" && ls)
[ ${#files[@]} = 2 ] || fail "disks/: ${files[*]}"
for i in 0 1; do
  f=$mp/disks/${files[$i]}
  [ "$(stat -c %s "$f")" = "$(rhv_disk "$vm" $i size)" ] || fail "$f: size"
  cmp "$f" "$tmpdir/guest$i" || fail "$f differs from the guest's disk $i"
done
# The data areas where the guest wrote (64 KiB granularity of qcow2 clusters).
seek_map "$mp/disks/${files[0]}" >"$tmpdir/map"
printf '0 %d\n%d %d\n%d %d\n' $((1 << 20)) $((4 << 20)) 65536 $((10 << 20)) 65536 |
  diff -u - "$tmpdir/map" || fail "SEEK_DATA/SEEK_HOLE differ from the guest's writes"
jq -e --arg id "$vm" '.source.provider == "rhv" and .id == $id and .name == "inspect 01"
    and .backup != null and (.disks | length) == 2' "$mp/vm.json" >/dev/null ||
  fail "vm.json: $(cat "$mp/vm.json")"
[ "$(rhv_open_transfers)" = 2 ]

fusermount3 -u "$mp"
timeout=30 wait_for sh -c "! kill -0 $FERRYFS_PID 2>/dev/null"
wait "$FERRYFS_PID" || fail "ferryfs exited with $? after fusermount3 -u"
timeout=10 wait_for rhv_transfers_ended
[ "$(rhv_open_transfers)" = 0 ] || fail "transfers left open: $(rhv_control GET /transfers)"
rhv_control GET /backups | jq -e 'length == 1 and all(.phase == "succeeded")' >/dev/null ||
  fail "the backup was not finalized: $(rhv_control GET /backups)"

# The snapshot, ended by SIGTERM.
start_ferryfs "$mp" -t 30 -- nbdkit "$plugin" "${plugin_args[@]}" snapshot="$snap"
jq -e --arg s "$snap" '.snapshot == $s' "$mp/vm.json" >/dev/null || fail "vm.json: $(cat "$mp/vm.json")"
qemu-img compare -U -f raw "$mp/disks/${files[0]}" \
  "$(rhv_vm "$vm" | jq -r ".disks[0].snapshots[0].path")" >/dev/null ||
  fail "disk 0 differs from its snapshot"
kill -TERM "$FERRYFS_PID"
timeout=30 wait_for sh -c "! kill -0 $FERRYFS_PID 2>/dev/null"
! mountpoint -q "$mp" || fail "still mounted after SIGTERM"
timeout=10 wait_for rhv_transfers_ended
[ "$(rhv_open_transfers)" = 0 ] || fail "transfers left open after SIGTERM: $(rhv_control GET /transfers)"
[ "$(rhv_stat logins)" = "$(rhv_stat logouts)" ] || fail "a token was not revoked"
