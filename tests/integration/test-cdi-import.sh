#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry cdi-import, driven by CDI's IMPORTER_* environment as CDI's controller sets it for
# a VDDK DataVolume with checkpoints: stage 1 at snapshot S1 into a data dir (a filesystem
# PVC) equals the disk at S1; the guest writes; S1 goes, S2 is made; stage 2 with
# IMPORTER_PREVIOUS_CHECKPOINT = S1's changeId equals the disk at S2 and fetches only the
# changed 64 KiB blocks (the double's /folder byte counts).  Both termination messages
# follow CDI's TerminationMessage schema.  The same stages on a block volume (a loop
# device, when one can be made) using only the checkpoints.  Bad input: a wrong password
# and an unknown backing file fail with a clear error, exit 1, and say so in the message.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
# shellcheck source-path=SCRIPTDIR source=cdi-functions.sh
source "$(dirname "$0")/cdi-functions.sh"
set -euo pipefail
requires jq curl cmp python3
requires_ferry
/usr/bin/python3 -c 'import pyVmomi' 2>/dev/null || skip "python3-pyvmomi is not installed"

start_double

create_vm web01 "disks=64M&cbt=1&power=on" >/dev/null
make_sparse_disk "$tmpdir/src" 64M 0:400 500:400
place_disk web01 2000 "$tmpdir/src"
mkdir -p "$tmpdir/pvc"

s1=$(control POST "/vms/web01/snapshot?name=fl-1" | jq -r .moref)

# Bad input first: nothing may be written, the message says why, exit 1.
rc=0
cdi_import web01 "$tmpdir/pvc" "$tmpdir/bad1.err" IMPORTER_SECRET_KEY=wrong || rc=$?
[ $rc = 1 ] || fail "wrong password: exit $rc, not 1: $(cat "$tmpdir/bad1.err")"
msg=$(check_message "$tmpdir/pvc.msg")
grep -q "incorrect user name or password" <<<"$msg" || fail "wrong password: message: $msg"
! grep -q wrong "$tmpdir/pvc.msg" "$tmpdir/bad1.err" || fail "the password was printed"
rc=0
cdi_import web01 "$tmpdir/pvc" "$tmpdir/bad2.err" IMPORTER_CURRENT_CHECKPOINT="$s1" \
  IMPORTER_BACKING_FILE="[$DATASTORE] web01/nosuch.vmdk" || rc=$?
[ $rc = 1 ] || fail "unknown backing file: exit $rc, not 1"
msg=$(check_message "$tmpdir/pvc.msg")
grep -q "nosuch.vmdk: VM .* has no such disk; its disks: .*web01.vmdk (2000)" <<<"$msg" ||
  fail "unknown backing file: message: $msg"
[ ! -e "$tmpdir/pvc/disk.img" ] || fail "a failed import left disk.img"

# SIGTERM in the middle of stage 1 (slow /folder answers): 75 (the pod is restarted), a
# message that says so; the stage run again below resumes.
control POST "/inject?folder-delay=1s" >/dev/null # 13 GETs of 4 MiB, 4 at a time
cdi_import web01 "$tmpdir/pvc" "$tmpdir/term.err" IMPORTER_CURRENT_CHECKPOINT="$s1" &
sub=$!
cleanup_fn "kill -9 $sub 2>/dev/null"
timeout=30 wait_for sh -c "[ \"\$(curl -s $CONTROL/stats | jq .folder_206)\" -ge 4 ]"
pid=$(pgrep -P "$sub" -f cdi-import)
kill -TERM "$pid"
rc=0
wait "$sub" || rc=$?
control POST "/inject?folder-delay=0s" >/dev/null
[ $rc = 75 ] || fail "SIGTERM: exit $rc, not 75: $(cat "$tmpdir/term.err")"
grep -q "Unable to process data: cancelled by a signal" <<<"$(check_message "$tmpdir/pvc.msg")" ||
  fail "SIGTERM: message: $(cat "$tmpdir/pvc.msg")"

# Stage 1 at S1.
control POST /stats/reset >/dev/null
cdi_import web01 "$tmpdir/pvc" "$tmpdir/stage1.err" IMPORTER_CURRENT_CHECKPOINT="$s1" ||
  fail "stage 1 failed: $(cat "$tmpdir/stage1.err")"
[ "$(check_message "$tmpdir/pvc.msg")" = "Import Complete" ] || fail "stage 1 message"
jq -e '.vddkInfo.Version | startswith("ferry")' "$tmpdir/pvc.msg" >/dev/null ||
  fail "no vddkInfo: $(cat "$tmpdir/pvc.msg")"
disk_view web01 2000 "$tmpdir/view1" "$s1"
cmp "$tmpdir/pvc/disk.img" "$tmpdir/view1" || fail "stage 1 differs from the disk at $s1"
change1=$(vm_json web01 | jq -r --arg s "$s1" '.snapshots[] | select(.moref == $s) | .changeIds["2000"]')
[[ -n $change1 && $change1 != null ]] || fail "no changeId at $s1"

# The guest writes; S1 goes, S2 comes (Forklift's order).
writes=(1000000:70000 30000000:65536 50000000:200000)
for w in "${writes[@]}"; do guest_write_random web01 2000 "${w%:*}" "${w#*:}"; done
remove_snapshot web01 "$s1"
s2=$(control POST "/vms/web01/snapshot?name=fl-2" | jq -r .moref)
guest_write_random web01 2000 40000000 65536 # after S2: not part of stage 2

# Stage 2 on a copy of the PVC without ferry's state (as if stage 1 had been CDI's own):
# only the changeId tells what changed.
cp -a "$tmpdir/pvc" "$tmpdir/pvc-nostate"
rm -rf "$tmpdir/pvc-nostate/.ferry"
changed=$(changed_bytes "${writes[@]}")
for dir in pvc pvc-nostate; do
  control POST /stats/reset >/dev/null
  cdi_import web01 "$tmpdir/$dir" "$tmpdir/stage2-$dir.err" IMPORTER_CURRENT_CHECKPOINT="$s2" \
    IMPORTER_PREVIOUS_CHECKPOINT="$change1" IMPORTER_FINAL_CHECKPOINT=true ||
    fail "stage 2 ($dir) failed: $(cat "$tmpdir/stage2-$dir.err")"
  [ "$(check_message "$tmpdir/$dir.msg")" = "Import Complete" ] || fail "stage 2 message"
  fetched=$(double_stat folder_bytes)
  echo "stage 2 ($dir): changed $changed bytes, fetched $fetched"
  ((fetched >= changed && fetched * 100 <= changed * 105)) ||
    fail "stage 2 ($dir) fetched $fetched bytes for $changed changed"
  disk_view web01 2000 "$tmpdir/view2" "$s2"
  cmp "$tmpdir/$dir/disk.img" "$tmpdir/view2" || fail "stage 2 ($dir) differs from the disk at $s2"
  [ ! -e "$tmpdir/$dir/.ferry" ] || fail "the final stage left ferry's state on the PVC"
done
[ "$(vm_json web01 | jq '.snapshots | length')" = 1 ] || fail "ferry touched the snapshots"

# Block volume: a loop device over a sparse file (root only), the stages from the
# checkpoints alone.
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null &&
  truncate -s 64M "$tmpdir/blk" && loop=$(losetup -f --show "$tmpdir/blk" 2>/dev/null); then
  cleanup_fn "losetup -d $loop"
  remove_snapshot web01 "$s2"
  s3=$(control POST "/vms/web01/snapshot?name=fl-3" | jq -r .moref)
  BLOCK=$loop cdi_import web01 "$tmpdir/blkpvc" "$tmpdir/b1.err" IMPORTER_CURRENT_CHECKPOINT="$s3" ||
    fail "block stage 1 failed: $(cat "$tmpdir/b1.err")"
  disk_view web01 2000 "$tmpdir/view3" "$s3"
  cmp "$loop" "$tmpdir/view3" || fail "block stage 1 differs from the disk at $s3"
  change3=$(vm_json web01 | jq -r --arg s "$s3" '.snapshots[] | select(.moref == $s) | .changeIds["2000"]')
  guest_write_random web01 2000 20000000 100000
  remove_snapshot web01 "$s3"
  s4=$(control POST "/vms/web01/snapshot?name=fl-4" | jq -r .moref)
  control POST /stats/reset >/dev/null
  BLOCK=$loop cdi_import web01 "$tmpdir/blkpvc" "$tmpdir/b2.err" IMPORTER_CURRENT_CHECKPOINT="$s4" \
    IMPORTER_PREVIOUS_CHECKPOINT="$change3" ||
    fail "block stage 2 failed: $(cat "$tmpdir/b2.err")"
  disk_view web01 2000 "$tmpdir/view4" "$s4"
  cmp "$loop" "$tmpdir/view4" || fail "block stage 2 differs from the disk at $s4"
  changed=$(changed_bytes 20000000:100000)
  fetched=$(double_stat folder_bytes)
  echo "block stage 2: changed $changed bytes, fetched $fetched"
  ((fetched >= changed && fetched * 100 <= changed * 105)) ||
    fail "block stage 2 fetched $fetched bytes for $changed changed"
else
  echo "block variant skipped: no loop device here"
fi
