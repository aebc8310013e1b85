#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A powered-on VM: refused without a snapshot; with snapshot=create the export is the
# disk as it was when the snapshot was taken while the guest keeps writing, and no
# snapshot remains once nbdkit has exited on SIGTERM, even after its session expired.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit nbdinfo nbdcopy jq curl
requires_plugin

start_double
make_sparse_disk "$tmpdir/disk" 256M 0:16 100:40 2000:30
create_vm running "disks=256M&power=on&cbt=1" >/dev/null
place_disk running 2000 "$tmpdir/disk"

# Without a snapshot the running VM is refused, and why is said.
if start_ferry vm=running; then fail "a powered-on VM was served without a snapshot"; fi
grep -q 'powered on.*snapshot=create' "$tmpdir/nbdkit.err"

# Tasks that stay running for a while are polled until they finish.
control POST "/tasks?delay=1s" >/dev/null
NBDKIT_FLAGS="-v -D ferry.soap=1" start_ferry vm=running snapshot=create
grep -q 'CreateSnapshot_Task (task-[0-9]*) is running' "$tmpdir/nbdkit.err"
control POST "/tasks?delay=0s" >/dev/null
snap=$(vm_json running | jq -r '.snapshots[0].moref')
[ "$(vm_json running | jq '.snapshots | length')" = 1 ]
[ "$(vm_json running | jq -r '.snapshots[0].name')" != null ]
disk_view running 2000 "$tmpdir/at-snapshot" "$snap"
cmp "$tmpdir/at-snapshot" "$tmpdir/disk"

# The guest keeps writing: over data, into holes, across block boundaries.
head -c 3M /dev/urandom >"$tmpdir/w"
guest_write running 2000 0 "$tmpdir/w"
guest_write running 2000 $((150 * 65536 - 100)) "$tmpdir/w"
nbdcopy "$(nbd_uri)" "$tmpdir/copy" &
copy_pid=$!
for off in 1000 5000000 77777777 200000000; do
  guest_write running 2000 "$off" "$tmpdir/w"
done
wait "$copy_pid"
cmp "$tmpdir/copy" "$tmpdir/at-snapshot"
# ...and the guest's own view did change, so the comparison above meant something.
disk_view running 2000 "$tmpdir/now"
if cmp -s "$tmpdir/now" "$tmpdir/at-snapshot"; then fail "the guest writes had no effect"; fi

# SIGTERM after the session expired (a long inspection): nbdkit logs in again, removes
# its snapshot before exiting, and the guest's writes are consolidated.
control POST /sessions/expire >/dev/null
stop_ferry "$NBDKIT_PID"
grep -q 'session expired, logging in again' "$tmpdir/nbdkit.err"
[ "$(vm_json running | jq '.snapshots | length')" = 0 ]
disk_view running 2000 "$tmpdir/after"
cmp "$tmpdir/after" "$tmpdir/now"
