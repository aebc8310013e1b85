#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A task that does not finish by task-timeout= is given up with a clear error naming the
# task and its last state, and no snapshot is left behind; task-timeout=0 is refused.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy jq curl
requires_plugin

start_double
make_sparse_disk "$tmpdir/disk" 64M 0:8
create_vm running "disks=64M&power=on&cbt=1" >/dev/null
place_disk running 2000 "$tmpdir/disk"
nsnap () { vm_json running | jq '.snapshots | length'; }

control POST "/tasks?delay=5s" >/dev/null
: >"$tmpdir/nbdkit.err"
start=$SECONDS
if start_ferry vm=running snapshot=create task-timeout=1; then
  fail "nbdkit started although its snapshot task did not finish in time"
fi
grep -Eq 'CreateSnapshot_Task \(task-[0-9]+\): not finished after 1 s \(task-timeout=1\); its last state: running, [0-9]+%' \
  "$tmpdir/nbdkit.err" || fail "no clear timeout error: $(cat "$tmpdir/nbdkit.err")"
# Given up after about the deadline, not after the task's 5 s (twice: create, remove).
((SECONDS - start < 8)) || fail "took $((SECONDS - start)) s"

# Whatever the timed-out tasks left is gone once they have finished: at the latest the
# next run removes it as a leftover.
control POST "/tasks?delay=0s" >/dev/null
start_ferry vm=running snapshot=create task-timeout=30
[ "$(nsnap)" = 1 ]
cmp <(nbdcopy "$(nbd_uri)" -) "$tmpdir/disk"
stop_ferry "$NBDKIT_PID"
[ "$(nsnap)" = 0 ] || fail "a snapshot was left: $(vm_json running | jq -c .snapshots)"

: >"$tmpdir/nbdkit.err"
if start_ferry vm=running snapshot=create task-timeout=0; then fail "task-timeout=0 accepted"; fi
grep -q 'task-timeout=0' "$tmpdir/nbdkit.err"
