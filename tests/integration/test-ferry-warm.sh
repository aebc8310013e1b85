#!/usr/bin/env bash
# ferry migrate, warm: a running VM, precopy rounds every second, the guest writing between
# rounds and during one (ferry stopped mid-fill of round 2), then `ferry cutover` while
# migrate runs.  Each target equals the disk at cutover; rounds 2 and 3 fetch only the
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

FERRY_TEST_STOP_AT=fill FERRY_TEST_STOP_ROUND=2 \
  "$ferry" migrate "$tmpdir/plan.json" --progress=json >"$tmpdir/progress.jsonl" \
  2>"$tmpdir/ferry.err" &
pid=$!
cleanup_fn "kill -9 $pid 2>/dev/null"

round_done () { grep -q "\"event\":\"round\".*\"round\":$1," "$tmpdir/progress.jsonl"; }
folder_bytes_at_round=()

# Between round 1 and 2: 3 writes.
timeout=60 wait_for round_done 1
folder_bytes_at_round[1]=$(double_stat folder_bytes)
writes2=(1000000:70000 30000000:65536 50000000:200000)
for w in "${writes2[@]}"; do guest_write_random db01 2000 "${w%:*}" "${w#*:}"; done

# During round 2 (its snapshot taken, ferry stopped mid-fill): writes that belong to round 3.
wait_stopped "$pid"
[ "$(ferry_snapshots db01 | wc -l)" = 1 ] || fail "not one ferry snapshot during round 2"
writes3=(5000000:100000 60000000:300000)
for w in "${writes3[@]}"; do guest_write_random db01 2000 "${w%:*}" "${w#*:}"; done
kill -CONT "$pid"
timeout=60 wait_for round_done 2
folder_bytes_at_round[2]=$(double_stat folder_bytes)
writes3+=(80000000:4096)
guest_write_random db01 2000 80000000 4096

# Cut over while migrate runs: the VM is powered off, a final round, verification.
"$ferry" cutover "$tmpdir/plan.json" | grep -q "asked the running ferry" || fail "cutover"
wait "$pid" || fail "ferry migrate failed: $(tail -5 "$tmpdir/ferry.err")"
folder_bytes_at_round[3]=$(double_stat folder_bytes)

disk_view db01 2000 "$tmpdir/final"
cmp "$tmpdir/final" "$tmpdir/pvc/db01-disk0/disk.img" || fail "the target differs at cutover"
[ "$(vm_json db01 | jq -r .powerState)" = poweredOff ] || fail "the VM is still on"
[ "$(vm_json db01 | jq '.snapshots | length')" = 0 ] || fail "a snapshot was left"

results=$tmpdir/state/results.json
jq -e '.vms[0].state == "verified" and (.vms[0].rounds | length) >= 3' "$results" >/dev/null ||
  fail "results: $(cat "$results")"
# The last round ran after the VM was off, and it was the cutover.
last=$(jq '.vms[0].rounds | length' "$results")

check_round ()
{
  local n=$1 changed fetched
  shift
  changed=$(changed_bytes "$@")
  fetched=$((folder_bytes_at_round[n] - folder_bytes_at_round[n - 1]))
  echo "round $n: changed $changed bytes, fetched $fetched"
  ((fetched >= changed && fetched * 100 <= changed * 105)) ||
    fail "round $n fetched $fetched bytes for $changed changed"
}
check_round 2 "${writes2[@]}"
# Rounds after 2 up to the cutover: together they fetch the writes made after round 2's
# snapshot (an extra precopy round before the cutover fetches nothing new twice).
folder_bytes_at_round[3]=$((folder_bytes_at_round[3]))
check_round 3 "${writes3[@]}"
echo "rounds: $last"
jq -e '.vms[0].predictedFinalRoundSeconds >= 0 and .vms[0].actualFinalRoundSeconds > 0' \
  "$results" >/dev/null || fail "no prediction in the results"
