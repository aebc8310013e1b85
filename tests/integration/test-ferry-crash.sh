#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry migrate killed (SIGKILL) at each point of a round — after the snapshot was made and
# before its changeIds were recorded, mid-fill, during verification, just before the
# snapshot's removal — then run again: the target equals the source, no ferry snapshot is
# left on the VM, and the rerun refetches at most the bytes in flight plus one persist
# batch (diskcache's default 32 MiB) beyond what the first run left valid.
source "$(dirname "$0")/functions.sh"
set -e
requires jq
start_double

inflight=$((4 * 4 * 1024 * 1024)) # connectionsPerDisk x diskcache's largest request
batch=$((32 * 1024 * 1024))

for point in snapshot-created fill verify snapshot-remove; do
  vm=vm-$point
  create_vm "$vm" "disks=160M&cbt=1&power=on" >/dev/null
  make_sparse_disk "$tmpdir/d0" 160M 0:2560
  place_disk "$vm" 2000 "$tmpdir/d0"
  make_targets "$vm" 1
  rm -rf "$tmpdir/state"
  write_plan "$tmpdir/plan.json" ".vms = [{\"name\": \"$vm\"}]"
  control POST /stats/reset >/dev/null

  FERRY_TEST_STOP_AT=$point "$ferry" migrate "$tmpdir/plan.json" --progress=none \
    2>"$tmpdir/ferry.err" &
  pid=$!
  wait_stopped "$pid"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  [ "$(ferry_snapshots "$vm" | wc -l)" = 1 ] || fail "$point: no ferry snapshot at the kill"
  first=$(double_stat folder_bytes)

  "$ferry" migrate "$tmpdir/plan.json" --progress=none 2>"$tmpdir/ferry2.err" ||
    fail "$point: the rerun failed: $(cat "$tmpdir/ferry2.err")"
  grep -q "removing ferry's leftover snapshot" "$tmpdir/ferry2.err" ||
    fail "$point: the rerun did not say it removed the leftover"
  [ "$(vm_json "$vm" | jq '.snapshots | length')" = 0 ] || fail "$point: a snapshot was left"
  disk_view "$vm" 2000 "$tmpdir/view"
  cmp "$tmpdir/view" "$tmpdir/pvc/$vm-disk0/disk.img" || fail "$point: the target differs"
  jq -e '.vms[0].state == "verified"' "$tmpdir/state/results.json" >/dev/null ||
    fail "$point: not verified"

  total=$(double_stat folder_bytes)
  allocated=$((2560 * 65536))
  refetched=$((total - allocated))
  echo "$point: first run fetched $first bytes, both runs $total, allocated $allocated"
  case $point in
  verify | snapshot-remove)
    # Everything was valid and recorded: the rerun fetches nothing but its sample.
    ((total - first <= allocated / 50)) || fail "$point: the rerun fetched $((total - first)) bytes" ;;
  *)
    ((refetched <= inflight + batch)) || fail "$point: refetched $refetched bytes" ;;
  esac
done
