#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Stopping a migration in the middle of a round: `ferry cancel` (and a plain SIGTERM to
# ferry migrate, which must behave the same) leaves no snapshot on the VM and a journal
# that a rerun resumes to a verified copy equal to the source.  The progress stream is
# JSON lines only, and bytesDone never goes backwards within a round of a disk.
# The double's /folder delay (POST /inject) makes the rounds slow enough to act in the middle.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq curl cmp python3
requires_ferry

start_double

# check_progress FILE: every line is a JSON object; per (vm, disk, round) bytesDone never
# decreases.  Prints the number of progress events.
check_progress ()
{
  python3 - "$1" <<'PY'
import json, sys
last, n = {}, 0
for i, line in enumerate(open(sys.argv[1]), 1):
    try:
        e = json.loads(line)
    except ValueError:
        sys.exit("%s:%d: not JSON: %r" % (sys.argv[1], i, line))
    if not isinstance(e, dict) or "event" not in e:
        sys.exit("%s:%d: not an event: %r" % (sys.argv[1], i, line))
    if e["event"] != "progress":
        continue
    n += 1
    k = (e["vm"], e["disk"], e["round"])
    if e["bytesDone"] < last.get(k, 0):
        sys.exit("%s:%d: bytesDone went from %d back to %d" % (sys.argv[1], i, last[k], e["bytesDone"]))
    last[k] = e["bytesDone"]
print(n)
PY
}

# in_round FILE VM: a progress line of VM with bytes done is in FILE.
in_round ()
{
  json_line_matches "$1" "select(.event == \"progress\" and .vm == \"$2\" and .bytesDone > 0)"
}

# stop_mid_round VM HOW: migrate VM's plan with slow reads and stop it, once a progress
# line shows bytes copied, by HOW (cancel: ferry cancel; term: kill -TERM).
stop_mid_round ()
{
  local vm=$1 how=$2 plan=$tmpdir/$1.plan rc=0
  control POST "/inject?folder-delay=150ms" >/dev/null
  "$ferry" migrate "$plan" --progress=json >"$tmpdir/$vm.progress1" 2>"$tmpdir/$vm.err1" &
  local pid=$!
  cleanup_fn "kill -9 $pid 2>/dev/null"
  timeout=60 wait_for in_round "$tmpdir/$vm.progress1" "$vm"
  [ "$(vm_json "$vm" | jq '.snapshots | length')" = 1 ] || fail "$vm: no snapshot in the middle of the round"
  case $how in
    cancel) "$ferry" cancel "$plan" || fail "ferry cancel failed" ;;
    term) kill -TERM "$pid" ;;
  esac
  wait "$pid" || rc=$?
  control POST "/inject?folder-delay=0s" >/dev/null
  cat "$tmpdir/$vm.err1"
  [ $rc = 75 ] || fail "$vm: ferry migrate stopped by $how exited $rc, not 75 (retryable)"
  ! kill -0 "$pid" 2>/dev/null || fail "$vm: ferry migrate still runs after $how"
  [ "$(vm_json "$vm" | jq '.snapshots | length')" = 0 ] || fail "$vm: a snapshot is left after $how"
  [ "$(jq -r --arg v "$vm" '.vms[$v].error' "$tmpdir/$vm.state/journal.json")" = cancelled ] ||
    fail "$vm: the journal does not say the run was cancelled"
  [ "$(jq -r --arg v "$vm" '.vms[$v].state' "$tmpdir/$vm.state/journal.json")" != verified ] ||
    fail "$vm: verified although stopped in round 1"
  echo "$vm: $(check_progress "$tmpdir/$vm.progress1") progress events before $how"
}

# rerun VM: the rerun completes, verified, the target equal to the (now powered-off) VM.
rerun ()
{
  local vm=$1
  "$ferry" migrate "$tmpdir/$vm.plan" --progress=json >"$tmpdir/$vm.progress2" 2>"$tmpdir/$vm.err2" ||
    fail "$vm: the rerun failed: $(cat "$tmpdir/$vm.err2")"
  echo "$vm: $(check_progress "$tmpdir/$vm.progress2") progress events in the rerun"
  [ "$(jq -r '.vms[0].state' "$tmpdir/$vm.state/results.json")" = verified ] || fail "$vm: not verified"
  [ "$(vm_json "$vm" | jq '.snapshots | length')" = 0 ] || fail "$vm: a snapshot is left after the rerun"
  disk_view "$vm" 2000 "$tmpdir/$vm.view"
  cmp "$tmpdir/pvc/$vm-disk0/disk.img" "$tmpdir/$vm.view" || fail "$vm: the target differs from the source"
}

# Warm plans, cut over after the first round; 128 MiB of data on a 256 MiB disk, one
# connection: about 32 GETs of 150 ms each per round.
for vm in c t; do
  create_vm "$vm" "disks=256M&power=on&cbt=1" >/dev/null
  make_sparse_disk "$tmpdir/$vm.src" 256M 0:1024 3000:1024
  place_disk "$vm" 2000 "$tmpdir/$vm.src"
  make_targets "$vm" 1
  write_plan "$tmpdir/$vm.plan" ". * {\"warm\": true, \"cutover\": \"2020-01-01T00:00:00Z\",
    \"connectionsPerDisk\": 1, \"stateDir\": \"$tmpdir/$vm.state\", \"vms\": [{\"name\": \"$vm\"}]}"
done

stop_mid_round c cancel
rerun c
stop_mid_round t term
rerun t
