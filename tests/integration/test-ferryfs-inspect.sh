#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# No FUSE callback of ferryfs waits for the inspection.  The appliance's qemu is a script
# that blocks until the test releases it, so the inspection runs as long as the test wants:
# meanwhile inspection.json reads as a "running" document (also to many readers at once),
# stat answers, and the disk reads in full; released, inspection.json becomes the error
# document.  Unmounting while an inspection runs ends it and ferryfs.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit fusermount3 mountpoint jq
[ -e /dev/fuse ] || skip "/dev/fuse is missing"

make_sparse_disk "$tmpdir/a.img" 32M 0:1 10:40 511:1

# The hypervisor libguestfs runs: it records each start and blocks until released.
cat >"$tmpdir/qemu" <<EOF
#!/bin/sh
echo "\$\$ \$*" >>"$tmpdir/qemu.started"
while [ ! -e "$tmpdir/qemu.release" ] && [ -d "$tmpdir" ]; do sleep 0.1; done
exit 1
EOF
chmod +x "$tmpdir/qemu"
cleanup_fn "touch '$tmpdir/qemu.release'"
export LIBGUESTFS_HV=$tmpdir/qemu LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=""

# done_while_running WHAT PID...: the processes PID end, with status 0, while the
# inspection is held (a FUSE request that waits for the inspection cannot be interrupted,
# so the test waits for the processes, and releases the inspection if it must fail).
done_while_running ()
{
  local what=$1 pid
  shift
  for pid in "$@"; do
    (timeout=60 wait_for sh -c "! kill -0 $pid 2>/dev/null") 2>/dev/null ||
      fail "$what waited for the inspection"
    wait "$pid" || fail "$what failed"
  done
  [ ! -e "$tmpdir/qemu.release" ]
}

mp=$tmpdir/mnt
start_ferryfs "$mp" -- nbdkit file "$tmpdir/a.img"
cleanup_fn "touch '$tmpdir/qemu.release'" # before stop_ferryfs, if the test fails

# The first open starts the inspection and answers at once.
cat "$mp/inspection.json" >"$tmpdir/first.json" &
done_while_running "opening inspection.json" $!
jq -e '.status == "running" and (.message | test("running"))' "$tmpdir/first.json" >/dev/null ||
  fail "first inspection.json: $(cat "$tmpdir/first.json")"
timeout=300 wait_for test -s "$tmpdir/qemu.started"

# While it runs: stat, many readers of inspection.json, and the disk.
stat "$mp/inspection.json" >/dev/null &
done_while_running "stat" $!
pids=()
for i in $(seq 24); do
  cat "$mp/inspection.json" >"$tmpdir/reader.$i" &
  pids+=($!)
done
cmp "$mp/disks/disk0" "$tmpdir/a.img" &
done_while_running "reading the disk" $!
done_while_running "a reader of inspection.json" "${pids[@]}"
for i in $(seq 24); do
  jq -e '.status == "running"' "$tmpdir/reader.$i" >/dev/null ||
    fail "reader $i: $(cat "$tmpdir/reader.$i")"
done
jq -e '.status == "running"' "$mp/inspection.json" >/dev/null ||
  fail "inspection.json: $(cat "$mp/inspection.json")"

# Released: the launch fails, and inspection.json tells why.
touch "$tmpdir/qemu.release"
wait_for jq -e '.status != "running"' "$mp/inspection.json" >/dev/null
jq -e '.status == "error" and .error.stage == "launch"' "$mp/inspection.json" >/dev/null ||
  fail "inspection.json after the launch failed: $(cat "$mp/inspection.json")"
# stat tells the size of the result once the kernel's attribute cache (1 s) expired.
size_is_length ()
{
  [ "$(stat -c %s "$1")" = "$(wc -c <"$1")" ]
}
wait_for size_is_length "$mp/inspection.json"
stop_ferryfs "$mp" "$FERRYFS_PID"

# Unmounting during an inspection: ferryfs ends it (its process) and exits.
rm -f "$tmpdir/qemu.release" "$tmpdir/qemu.started"
start_ferryfs "$mp" -- nbdkit file "$tmpdir/a.img"
jq -e '.status == "running"' "$mp/inspection.json" >/dev/null
timeout=300 wait_for test -s "$tmpdir/qemu.started"
inspect_pid=$(pgrep -P "$FERRYFS_PID" -f -- --internal-inspect) || fail "no inspection process"
fusermount3 -u "$mp"
timeout=30 wait_for sh -c "! kill -0 $FERRYFS_PID 2>/dev/null"
wait "$FERRYFS_PID" || fail "ferryfs exited with $? after fusermount3 -u"
! kill -0 "$inspect_pid" 2>/dev/null || fail "the inspection process $inspect_pid outlived ferryfs"
echo "$0: OK"
