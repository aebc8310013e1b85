#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferryfs and the nbdkit it starts, over the vSphere double with snapshot=create:
# - snapshot creation slower than --start-timeout: ferryfs gives up without killing nbdkit
#   in its get_ready (which would leave the snapshot): no snapshot, no nbdkit, no mount;
#   the same for SIGINT during the start, also to the process that waits for a detaching
#   ferryfs; slow but within the timeout, it mounts;
# - nbdkit stopped with SIGTERM under the mount: reads fail with EIO (not ESHUTDOWN), and
#   nbdkit, whose clients ferryfs lets go, exits and removes its snapshot;
# - nbdkit killed: reads fail with EIO;
# - ferryfs killed with SIGKILL: its private directory goes too (and nbdkit, and the
#   snapshot).
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit fusermount3 mountpoint jq curl dd
requires_plugin
[ -e /dev/fuse ] || skip "/dev/fuse is missing"

start_double
make_sparse_disk "$tmpdir/disk0" 64M 0:1 3:2 100:17 1023:1
create_vm running "disks=64M&power=on&cbt=1" >/dev/null
place_disk running 2000 "$tmpdir/disk0"
printf pass >"$tmpdir/password"
plugin_args=(provider=vsphere server="$SERVER" user=user password=+"$tmpdir/password"
  cacert="$CACERT" vm=running snapshot=create)
mp=$tmpdir/mnt
mkdir -p "$mp"

snapshots ()
{
  vm_json running | jq '.snapshots | length'
}
has_snapshots ()
{
  [ "$(snapshots)" = "$1" ]
}

# run_ferryfs ARGS...: ferryfs -f in the background (FFS_PID), stderr in $tmpdir/ffs.err.
run_ferryfs ()
{
  "$ferryfs" -f "$@" 2>"$tmpdir/ffs.err" &
  FFS_PID=$!
  cleanup_fn "stop_ferryfs '$mp' $FFS_PID"
}

# expect_gave_up MESSAGE: ferryfs exits 1 saying MESSAGE; nbdkit and the snapshot are gone.
expect_gave_up ()
{
  local nbdkit_pid rc=0
  nbdkit_pid=$(pgrep -P "$FFS_PID" -x nbdkit) || fail "no nbdkit child"
  timeout=60 wait_for sh -c "! kill -0 $FFS_PID 2>/dev/null"
  wait "$FFS_PID" || rc=$?
  cat "$tmpdir/ffs.err"
  [ $rc = 1 ] || fail "ferryfs exited with $rc"
  grep -q "ferryfs: $1" "$tmpdir/ffs.err" || fail "no '$1' message"
  ! kill -0 "$nbdkit_pid" 2>/dev/null || fail "nbdkit $nbdkit_pid outlived ferryfs"
  has_snapshots 0 || fail "the snapshot was left behind: $(vm_json running | jq -c .snapshots)"
  ! mountpoint -q "$mp" || fail "mounted"
}

# Snapshot creation takes 6 s; ferryfs waits 2 s.  The double shows the snapshot at once,
# while its task runs: that is when nbdkit is inside get_ready.
control POST "/tasks?delay=6s" >/dev/null
run_ferryfs --start-timeout 2 "$mp" -- nbdkit "$plugin" "${plugin_args[@]}"
wait_for has_snapshots 1
expect_gave_up "nbdkit did not start serving within 2 s"
grep -q "waiting for nbdkit (pid [0-9]*) to serve or to exit" "$tmpdir/ffs.err"

# SIGINT (^C) during the start: the same.
run_ferryfs "$mp" -- nbdkit "$plugin" "${plugin_args[@]}"
wait_for has_snapshots 1
kill -INT "$FFS_PID"
expect_gave_up "interrupted while nbdkit was starting"

# Without -f, the ^C goes to the process that waits for the mount: it passes it on, and
# exits 1 once the detached ferryfs has stopped nbdkit in order.
cleanup_fn "fusermount3 -u '$mp' 2>/dev/null" # (when it was mounted after all)
"$ferryfs" "$mp" -- nbdkit "$plugin" "${plugin_args[@]}" 2>"$tmpdir/ffs.err" &
FFS_PID=$!
wait_for has_snapshots 1
kill -INT "$FFS_PID"
rc=0
wait "$FFS_PID" || rc=$?
cat "$tmpdir/ffs.err"
[ $rc = 1 ] || fail "ferryfs (detaching) exited with $rc after SIGINT"
grep -q "ferryfs: interrupted while nbdkit was starting" "$tmpdir/ffs.err" || fail "not interrupted"
has_snapshots 0 || fail "the snapshot was left behind"

# Slow, within the start timeout: mounted.
control POST "/tasks?delay=2s" >/dev/null
start_ferryfs "$mp" --start-timeout 60 -- nbdkit "$plugin" "${plugin_args[@]}"
cmp "$mp/disks/hard-disk-1" "$tmpdir/disk0"
stop_ferryfs "$mp" "$FERRYFS_PID"
has_snapshots 0
control POST "/tasks?delay=0s" >/dev/null

# read_error OFFSET-IN-64K: dd's message reading one block of the disk (O_DIRECT: the
# read itself goes to ferryfs, not a read-ahead whose error the kernel would not show).
read_error ()
{
  if dd if="$mp/disks/hard-disk-1" of=/dev/null bs=64K skip="$1" count=1 iflag=direct \
    2>"$tmpdir/dd.err"; then
    echo ok
  else
    sed -n 's/^dd: error reading .*: //p' "$tmpdir/dd.err"
  fi
}

# nbdkit stopped (SIGTERM) under the mount.  It answers ESHUTDOWN and waits for its
# clients; ferryfs answers EIO and closes its connections, so nbdkit can finish.
start_ferryfs "$mp" -t 5 -- nbdkit "$plugin" "${plugin_args[@]}"
nbdkit_pid=$(pgrep -P "$FERRYFS_PID" -x nbdkit)
cmp "$mp/disks/hard-disk-1" "$tmpdir/disk0"
has_snapshots 1
kill -TERM "$nbdkit_pid"
[ "$(read_error 100)" = "Input/output error" ] || fail "read after SIGTERM: $(cat "$tmpdir/dd.err")"
[ "$(read_error 3)" = "Input/output error" ] || fail "read after SIGTERM: $(cat "$tmpdir/dd.err")"
# (ferryfs reaps it at unmount: until then it is a zombie.)
(timeout=30 wait_for sh -c "ps -o stat= -p $nbdkit_pid | grep -q '^Z'") ||
  fail "nbdkit did not exit after SIGTERM: $(cat "$tmpdir/ferryfs.err")"
has_snapshots 0 || fail "nbdkit left its snapshot"
stop_ferryfs "$mp" "$FERRYFS_PID"

# nbdkit killed (SIGKILL) under the mount: EIO too.  (Its snapshot stays: nothing removes
# it then, except the next ferry run that adopts it.)
make_sparse_disk "$tmpdir/disk1" 16M 0:2 100:3
create_vm off "disks=16M&power=off" >/dev/null
place_disk off 2000 "$tmpdir/disk1"
start_ferryfs "$mp" -t 5 -- nbdkit "$plugin" "${plugin_args[@]::5}" vm=off
nbdkit_pid=$(pgrep -P "$FERRYFS_PID" -x nbdkit)
cmp "$mp/disks/hard-disk-1" "$tmpdir/disk1"
kill -9 "$nbdkit_pid"
[ "$(read_error 100)" = "Input/output error" ] || fail "read after SIGKILL: $(cat "$tmpdir/dd.err")"
stop_ferryfs "$mp" "$FERRYFS_PID"

# ferryfs killed (SIGKILL): its private directory is removed after nbdkit exited (which
# removed the snapshot, on the SIGTERM of --exit-with-parent).
mkdir "$tmpdir/private"
TMPDIR=$tmpdir/private start_ferryfs "$mp" -- nbdkit "$plugin" "${plugin_args[@]}"
nbdkit_pid=$(pgrep -P "$FERRYFS_PID" -x nbdkit)
[ -S "$(echo "$tmpdir"/private/ferryfs.*/nbd.sock)" ] || fail "no private directory with a socket"
has_snapshots 1
kill -9 "$FERRYFS_PID"
timeout=30 wait_for sh -c "! kill -0 $nbdkit_pid 2>/dev/null"
timeout=30 wait_for sh -c "[ -z \"\$(ls -A '$tmpdir/private')\" ]"
has_snapshots 0 || fail "the snapshot was left behind"
fusermount3 -u "$mp"
echo "$0: OK"
