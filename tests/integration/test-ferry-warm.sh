#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry migrate, warm: a running VM, precopy rounds every second, the guest writing between
# rounds and during one (ferry stopped by its test seam after round 1, mid-fill of round 2
# and after round 2), then `ferry cutover` while migrate runs.  Each target equals the disk at cutover; rounds 2 and 3 fetch only the
# changed bytes (the double's /folder byte counts, <= 1.05x the changed 64 KiB blocks);
# one ferry snapshot at a time, none left.
source "$(dirname "$0")/functions.sh"
set -e
requires jq
start_double

create_vm db01 "disks=96M&cbt=1&power=on" >/dev/null
make_sparse_disk "$tmpdir/d0" 96M 0:200 700:300
place_disk db01 2000 "$tmpdir/d0"
make_targets db01 1
write_plan "$tmpdir/plan.json" \
  '.warm = true | .precopyIntervalSeconds = 1 | .verifySamplePercent = 0 | .vms = [{"name": "db01"}]'

# ferry stops (SIGSTOP) after round 1, mid-fill of round 2 and after round 2, so that the
# guest writes land deterministically between and during rounds.
FERRY_TEST_STOP_AT=precopy-wait:1,fill:2,precopy-wait:2 \
  "$ferry" migrate "$tmpdir/plan.json" --progress=json >"$tmpdir/progress.jsonl" \
  2>"$tmpdir/ferry.err" &
pid=$!
cleanup_fn "kill -9 $pid 2>/dev/null"
folder=()

# Between round 1 and 2: 3 writes.
wait_stopped "$pid"
folder[1]=$(double_stat folder_bytes)
writes2=(1000000:70000 30000000:65536 50000000:200000)
for w in "${writes2[@]}"; do guest_write_random db01 2000 "${w%:*}" "${w#*:}"; done
kill -CONT "$pid"

# During round 2 (its snapshot taken, ferry stopped mid-fill): writes that belong to round 3.
wait_stopped "$pid"
[ "$(ferry_snapshots db01 | wc -l)" = 1 ] || fail "not one ferry snapshot during round 2"
# ferry status, from the journal, while the round runs.
"$ferry" status "$tmpdir/plan.json" --json >"$tmpdir/status.json"
jq -e '.running and .vms[0].state == "copying" and .vms[0].round == 2 and
       .vms[0].bytesToCopy > 0 and .vms[0].bytesCopied > 0 and
       .vms[0].predictedDowntimeSeconds >= 0' "$tmpdir/status.json" >/dev/null ||
  fail "status during round 2: $(cat "$tmpdir/status.json")"
writes3=(5000000:100000 60000000:300000)
for w in "${writes3[@]}"; do guest_write_random db01 2000 "${w%:*}" "${w#*:}"; done
kill -CONT "$pid"

# After round 2: one more write, then a cutover asked of the running migrate.
wait_stopped "$pid"
folder[2]=$(double_stat folder_bytes)
writes3+=(80000000:4096)
guest_write_random db01 2000 80000000 4096
"$ferry" cutover "$tmpdir/plan.json" | grep -q "asked the running ferry" || fail "cutover"
kill -CONT "$pid"
wait "$pid" || fail "ferry migrate failed: $(tail -5 "$tmpdir/ferry.err")"
folder[3]=$(double_stat folder_bytes)

disk_view db01 2000 "$tmpdir/final"
cmp "$tmpdir/final" "$tmpdir/pvc/db01-disk0/disk.img" || fail "the target differs at cutover"
[ "$(vm_json db01 | jq -r .powerState)" = poweredOff ] || fail "the VM is still on"
[ "$(vm_json db01 | jq '.snapshots | length')" = 0 ] || fail "a snapshot was left"

results=$tmpdir/state/results.json
jq -e '.vms[0].state == "verified" and (.vms[0].rounds | length) == 3' "$results" >/dev/null ||
  fail "results: $(cat "$results")"

check_round ()
{
  local n=$1 changed fetched
  shift
  changed=$(changed_bytes "$@")
  fetched=$((folder[n] - folder[n - 1]))
  echo "round $n: changed $changed bytes, fetched $fetched"
  ((fetched >= changed && fetched * 100 <= changed * 105)) ||
    fail "round $n fetched $fetched bytes for $changed changed"
  [ "$(jq ".vms[0].rounds[$((n - 1))].bytesFetched" "$results")" = "$fetched" ] ||
    fail "round $n: results.json disagrees with the double"
}
check_round 2 "${writes2[@]}"
check_round 3 "${writes3[@]}"
jq -e '.vms[0].predictedFinalRoundSeconds >= 0 and .vms[0].actualFinalRoundSeconds > 0' \
  "$results" >/dev/null || fail "no prediction in the results"
