#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A CreateSnapshot_Task that made its snapshot but whose answer was lost never leaves a
# snapshot behind:
#  - answered with a fault after the fact: ferry finds the snapshot by its unique name,
#    removes it, and fails;
#  - connection dropped before the answer: the HTTP layer may send the request again on a
#    fresh connection (libcurl does so for a reused connection), which makes a second
#    snapshot with the same name; ferry keeps the one the task answered with and removes
#    the other, and removes its own at exit.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit jq curl
requires_plugin

start_double
create_vm running "disks=64M&power=on&cbt=1" >/dev/null
nsnap () { vm_json running | jq '.snapshots | length'; }

control POST "/inject?create-snapshot=fault" >/dev/null
: >"$tmpdir/nbdkit.err"
if start_ferry vm=running snapshot=create; then fail "nbdkit started after a fault"; fi
grep -q 'CreateSnapshot_Task.*injected by the double' "$tmpdir/nbdkit.err"
grep -q 'removing snapshot "ferry:inspect:[0-9a-f]*" (snapshot-[0-9]*) whose creation was reported as failed' \
  "$tmpdir/nbdkit.err" || fail "the removal was not said: $(cat "$tmpdir/nbdkit.err")"
[ "$(nsnap)" = 0 ] || fail "a snapshot was left: $(vm_json running | jq -c .snapshots)"
[ "$(control GET /stats | jq '.soap_calls.CreateSnapshot_Task')" = 1 ]

control POST /stats/reset >/dev/null
control POST "/inject?create-snapshot=drop" >/dev/null
: >"$tmpdir/nbdkit.err"
if start_ferry vm=running snapshot=create; then
  [ "$(nsnap)" = 1 ] || fail "serving with snapshots $(vm_json running | jq -c .snapshots)"
  sent=$(control GET /stats | jq '.soap_calls.CreateSnapshot_Task')
  if [ "$sent" = 2 ]; then
    grep -q 'a second one made by a resent CreateSnapshot_Task' "$tmpdir/nbdkit.err" ||
      fail "the twin's removal was not said: $(cat "$tmpdir/nbdkit.err")"
  fi
  stop_ferry "$NBDKIT_PID"
else
  grep -q 'whose creation was reported as failed' "$tmpdir/nbdkit.err"
fi
[ "$(nsnap)" = 0 ] || fail "a snapshot was left: $(vm_json running | jq -c .snapshots)"
