#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry's exit status and termination log (--termination-log, $FERRY_TERMINATION_LOG):
# 2 for usage errors, 1 for failures a retry will not cure (a bad plan, a VM that does not
# exist), 75 for retryable ones (the server unreachable — for migrate and validate —, the
# plan locked by another ferry, SIGTERM).  A SIGTERM in the middle of a fill ends ferry within a pod's grace period
# (measured; well under 30 s), with no snapshot left and the journal saying "cancelled";
# a rerun resumes.  Every termination log is JSON under 4096 bytes, also for a plan whose
# 40 VMs all fail with long errors (shortened, VMs left out, still valid JSON).
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq curl cmp python3
requires_ferry

# check_log FILE RESULT EXIT: FILE is a termination log under 4096 bytes with that result.
check_log ()
{
  local size
  size=$(stat -c %s "$1")
  ((size > 0 && size < 4096)) || fail "$1: $size bytes"
  jq -e --arg r "$2" --argjson x "$3" '.result == $r and .exitCode == $x' "$1" >/dev/null ||
    fail "$1: not result $2 / exit $3: $(cat "$1")"
}

# ferry_rc LOG ARGS...: run ferry with a termination log at LOG; prints its exit status.
ferry_rc ()
{
  local log=$1 rc=0
  shift
  FERRY_TERMINATION_LOG=$log "$ferry" "$@" --progress=none >/dev/null 2>"$log.err" || rc=$?
  echo "$rc"
}

start_double

# Usage: 2.
[ "$(ferry_rc "$tmpdir/t1" frobnicate x)" = 2 ] || fail "unknown command: not exit 2"
check_log "$tmpdir/t1" usage 2
[ "$(ferry_rc "$tmpdir/t1b" migrate)" = 2 ] || fail "no plan: not exit 2"

# A plan ferry refuses: 1.
write_plan "$tmpdir/bad.json" '.vms = [{"name": "x"}] | .colour = "blue"'
[ "$(ferry_rc "$tmpdir/t2" migrate "$tmpdir/bad.json")" = 1 ] || fail "bad plan: not exit 1"
check_log "$tmpdir/t2" failed 1
jq -e '.error | contains("colour")' "$tmpdir/t2" >/dev/null || fail "t2: $(cat "$tmpdir/t2")"

# A VM that does not exist: it fails for good, 1.
make_targets nosuch 1
write_plan "$tmpdir/nosuch.json" ".stateDir = \"$tmpdir/nosuch.state\" | .vms = [{\"name\": \"nosuch\"}]"
[ "$(ferry_rc "$tmpdir/t3" migrate "$tmpdir/nosuch.json")" = 1 ] || fail "no such VM: not exit 1"
check_log "$tmpdir/t3" failed 1
jq -e '.counts.failed == 1 and .vms[0].state == "failed" and (.vms[0].error | contains("nosuch"))' \
  "$tmpdir/t3" >/dev/null || fail "t3: $(cat "$tmpdir/t3")"

# The server does not answer (nothing listens on the port): retryable, 75.
write_plan "$tmpdir/down.json" ".stateDir = \"$tmpdir/down.state\" | .source.url = \"https://127.0.0.1:9/sdk\" | .vms = [{\"name\": \"nosuch\"}]"
[ "$(ferry_rc "$tmpdir/t4" migrate "$tmpdir/down.json")" = 75 ] ||
  fail "server down: not exit 75: $(cat "$tmpdir/t4.err")"
check_log "$tmpdir/t4" retryable 75
[ "$(ferry_rc "$tmpdir/t4v" validate "$tmpdir/down.json")" = 75 ] ||
  fail "validate, server down: not exit 75"
[ "$(ferry_rc "$tmpdir/t3v" validate "$tmpdir/nosuch.json")" = 1 ] ||
  fail "validate, no such VM: not exit 1"

# Many VMs, all failing with long errors: the log still fits and parses.
long=$(printf 'vm-with-a-rather-long-name-%.0s' 1 2 3)
write_plan "$tmpdir/many.json" ".stateDir = \"$tmpdir/many.state\" | .vms = [range(40) | {\"name\": \"$long\\(.)\"}]"
for ((i = 0; i < 40; i++)); do make_targets "$long$i" 1; done
[ "$(ferry_rc "$tmpdir/t5" migrate "$tmpdir/many.json")" = 1 ] || fail "many: not exit 1"
check_log "$tmpdir/t5" failed 1
jq -e '.counts.vms == 40 and .counts.failed == 40 and .truncated and .vmsOmitted > 0 and
       (.vms | length) + .vmsOmitted == 40' "$tmpdir/t5" >/dev/null ||
  fail "t5: $(cat "$tmpdir/t5")"
echo "40 failed VMs: $(stat -c %s "$tmpdir/t5") bytes, $(jq '.vms | length' "$tmpdir/t5") VMs listed"

# SIGTERM in the middle of a fill (slow /folder answers, one connection), and a second
# ferry on the same plan meanwhile: 75 for both.
create_vm db01 "disks=256M&power=on&cbt=1" >/dev/null
make_sparse_disk "$tmpdir/d0" 256M 0:1024 3000:1024
place_disk db01 2000 "$tmpdir/d0"
make_targets db01 1
write_plan "$tmpdir/plan.json" '. * {"warm": true, "cutover": "2020-01-01T00:00:00Z",
  "connectionsPerDisk": 1, "vms": [{"name": "db01"}]}'
control POST "/inject?folder-delay=150ms" >/dev/null
FERRY_TERMINATION_LOG=$tmpdir/t6 "$ferry" migrate "$tmpdir/plan.json" --progress=json \
  >"$tmpdir/progress" 2>"$tmpdir/ferry.err" &
pid=$!
cleanup_fn "kill -9 $pid 2>/dev/null"
timeout=60 wait_for json_line_matches "$tmpdir/progress" \
  'select(.event == "progress" and .bytesDone > 0 and .bytesDone < .bytesTotal)'
[ "$(ferry_rc "$tmpdir/t7" migrate "$tmpdir/plan.json")" = 75 ] || fail "plan locked: not exit 75"
check_log "$tmpdir/t7" retryable 75
[ "$(ferry_snapshots db01 | wc -l)" = 1 ] || fail "no ferry snapshot in the middle of the fill"
t0=$(date +%s%N)
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
echo "SIGTERM to exit: $ms ms"
control POST "/inject?folder-delay=0s" >/dev/null
[ $rc = 75 ] || fail "SIGTERM: exit $rc, not 75: $(tail -3 "$tmpdir/ferry.err")"
((ms < 10000)) || fail "SIGTERM to exit took $ms ms (a pod's grace period is 30 s)"
[ "$(vm_json db01 | jq '.snapshots | length')" = 0 ] || fail "a snapshot is left after SIGTERM"
jq -e '.vms.db01.error == "cancelled" and .vms.db01.snapshot == null' \
  "$tmpdir/state/journal.json" >/dev/null || fail "journal: $(jq -c .vms.db01 "$tmpdir/state/journal.json")"
check_log "$tmpdir/t6" retryable 75
jq -e '.counts.cancelled == 1 and .vms[0].name == "db01"' "$tmpdir/t6" >/dev/null ||
  fail "t6: $(cat "$tmpdir/t6")"

# The rerun resumes to a verified copy: 0.
[ "$(ferry_rc "$tmpdir/t8" migrate "$tmpdir/plan.json")" = 0 ] ||
  fail "rerun failed: $(cat "$tmpdir/t8.err")"
check_log "$tmpdir/t8" succeeded 0
jq -e '.counts.verified == 1' "$tmpdir/t8" >/dev/null || fail "t8: $(cat "$tmpdir/t8")"
disk_view db01 2000 "$tmpdir/view"
cmp "$tmpdir/pvc/db01-disk0/disk.img" "$tmpdir/view" || fail "the target differs from the source"
