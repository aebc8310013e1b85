#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A conversion that fails never damages the copy: a VM whose disk holds no operating
# system is copied and verified, then virt-v2v-in-place fails on it.  The VM is
# conversion-failed with virt-v2v's own words in its error, the target's digest is still
# the verified one, the overlay and virt-v2v's log are kept for diagnosis, and ferry
# convert tries again without fetching a byte from the source.
# timeout: 1800
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq qemu-img qemu-nbd virt-v2v-in-place guestfish
start_double

create_vm blank "disks=64M&cbt=1&power=off" >/dev/null
make_sparse_disk "$tmpdir/d0" 64M 0:8 500:8
place_disk blank 2000 "$tmpdir/d0"
make_targets blank 1
# No preflight: it would refuse this VM before the copy (test-ferry-inspect.sh).
write_plan "$tmpdir/plan.json" '.skipGuestConversion = false | .preflightInspection = false |
  .vms = [{"name": "blank"}]'
target=$tmpdir/pvc/blank-disk0/disk.img
results=$tmpdir/state/results.json

rc=0
"$ferry" migrate "$tmpdir/plan.json" --progress=json >"$tmpdir/progress.jsonl" \
  2>"$tmpdir/ferry.err" || rc=$?
[ $rc = 1 ] || fail "ferry migrate exit $rc, want 1: $(cat "$tmpdir/ferry.err")"
jq -c '.vms[0] | {state, error, conversion}' "$results"
jq -e '.vms[0].state == "conversion-failed"' "$results" >/dev/null || fail "state"
# virt-v2v's own words, e.g. "inspection could not detect the source guest".
jq -e '.vms[0].error | test("virt-v2v-in-place failed \\(exit [0-9]+\\): .*virt-v2v-in-place: error: .*inspection")' \
  "$results" >/dev/null || fail "error: $(jq -r '.vms[0].error' "$results")"
jq -e '.vms[0].error | test("If reporting bugs") | not' "$results" >/dev/null ||
  fail "the error keeps virt-v2v's boilerplate"
jq -se 'map(select(.event == "done"))[-1] | .state == "conversion-failed" and (.error | test("inspection"))' \
  "$tmpdir/progress.jsonl" >/dev/null || fail "done event: $(grep '"done"' "$tmpdir/progress.jsonl")"

# The copy stands: the target is what was verified, byte for byte the source.
ver=$(jq -r '.vms[0].disks[0].digest.target' "$results")
[ "$ver" = "$(jq -r '.vms[0].disks[0].digest.source' "$results")" ] || fail "not verified"
[ "$("$ferry" digest "$target" | cut -d' ' -f1)" = "$ver" ] || fail "the failed conversion changed the target"
disk_view blank 2000 "$tmpdir/v0"
cmp "$tmpdir/v0" "$target" || fail "the target differs from the source"
jq -e '.vms[0].disks[0].digest.afterConversion == null' "$results" >/dev/null
# Kept for diagnosis: the overlay (backed by the target) and virt-v2v's log.
qemu-img info --output=json "$tmpdir/state/blank/disk0.overlay.qcow2" |
  jq -e --arg t "$target" '."backing-filename" == $t' >/dev/null || fail "no overlay kept"
grep -q 'error:' "$tmpdir/state/blank/virt-v2v.log" || fail "virt-v2v.log"
"$ferry" status "$tmpdir/plan.json" | grep -q 'conversion-failed' || fail "status"

# SIGTERM while virt-v2v runs: ferry stops it and its NBD servers, and keeps the state.
fetched=$(double_stat folder_bytes)
"$ferry" convert "$tmpdir/plan.json" --vm blank --progress=none 2>"$tmpdir/cancel.err" &
convert_pid=$!
cleanup_fn "kill $convert_pid 2>/dev/null; wait $convert_pid 2>/dev/null"
v2v_running ()
{
  kill -0 "$convert_pid" 2>/dev/null || fail "ferry convert exited early: $(cat "$tmpdir/cancel.err")"
  pgrep -f "^virt-v2v-in-place .*$tmpdir/" >/dev/null
}
timeout=600 wait_for v2v_running
kill -TERM "$convert_pid"
rc=0
wait "$convert_pid" || rc=$?
[ $rc = 75 ] || fail "ferry convert after SIGTERM: exit $rc, not 75 (retryable)"
! pgrep -f "^(virt-v2v-in-place|qemu-nbd) .*$tmpdir/" >/dev/null ||
  fail "left running: $(pgrep -af "$tmpdir/")"
jq -e '.vms.blank.state == "converting" and .vms.blank.error == "cancelled"' \
  "$tmpdir/state/journal.json" >/dev/null || fail "after SIGTERM: $(jq -c .vms.blank "$tmpdir/state/journal.json")"
[ "$("$ferry" digest "$target" | cut -d' ' -f1)" = "$ver" ] || fail "the target changed"

# ferry convert tries again: no copy, the same failure, the target still untouched.
rc=0
"$ferry" convert "$tmpdir/plan.json" --vm blank --progress=none 2>"$tmpdir/convert.err" || rc=$?
[ $rc = 1 ] || fail "ferry convert exit $rc: $(cat "$tmpdir/convert.err")"
grep -q 'inspection' "$tmpdir/convert.err" || fail "ferry convert: $(cat "$tmpdir/convert.err")"
[ "$(double_stat folder_bytes)" = "$fetched" ] || fail "ferry convert fetched from the source"
[ "$("$ferry" digest "$target" | cut -d' ' -f1)" = "$ver" ] || fail "the target changed"
jq -e '.vms[0].state == "conversion-failed"' "$results" >/dev/null || fail "state after convert"
# A VM that is not there, or not ready, is a usage error.
rc=0
"$ferry" convert "$tmpdir/plan.json" --vm nosuch 2>/dev/null || rc=$?
[ $rc = 2 ] || fail "ferry convert --vm nosuch: exit $rc"
echo "$0: OK"
