#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry: the user's HTTP timeouts reach the requests.  Through the plugin in nbdkit, against
# the vSphere double held still (its /folder answers delayed, or the process stopped with
# SIGSTOP): stall-timeout=, read-timeout=, connect-timeout=, control-timeout= and
# retry-budget= each end the request in the time they say, with an error naming the
# request, the timeout and the budget, where the defaults would still be waiting for
# minutes.  Bad values are refused at start, naming the key.  A plan's source.timeouts is
# checked by ferry validate, and its retryBudget makes a run against a failing server fail
# in seconds, naming the budget.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit nbdsh jq curl
requires_plugin
requires_ferry

start_double
# A stopped double ignores SIGTERM: continue it first (cleanups run last to first).
cleanup_fn "kill -CONT $DOUBLE_PID 2>/dev/null"
make_sparse_disk "$tmpdir/disk" 64M 0:1024
create_vm knobs "disks=64M&power=off&cbt=1" >/dev/null
place_disk knobs 2000 "$tmpdir/disk"

# nbdkit in the background: errors to stderr, which it keeps only when verbose.
export NBDKIT_FLAGS="-v --log=stderr"
now_ms () { echo $(($(date +%s%N) / 1000000)); }

# 1. Bad values are refused at start, each naming its key.
for bad in stall-timeout=0 retry-budget=abc read-timeout=86401 connect-timeout=-1 \
  control-timeout=; do
  : >"$tmpdir/nbdkit.err"
  if start_ferry vm=knobs "$bad"; then fail "$bad was accepted"; fi
  grep -v "debug: " "$tmpdir/nbdkit.err" || true
  grep -qF "$bad: give the seconds, from 1 to 86400" "$tmpdir/nbdkit.err" ||
    fail "the error for $bad does not name the key and what it takes"
done
nbdkit "$plugin" --help | grep -q '^retry-budget=SECONDS .*default 300' ||
  fail "--help does not describe retry-budget="

# read_fails NAME: read 64 KiB at 0 from the running plugin, which must fail; the wall
# time in milliseconds in $ms.
read_fails ()
{
  local t0
  t0=$(now_ms)
  # (timeout: a knob that did not arrive fails the test in seconds, not minutes)
  if timeout 40 nbdsh -u "$(nbd_uri)" -c 'h.pread(65536, 0)' 2>"$tmpdir/$1.nbdsh"; then
    fail "$1: a read from a held server succeeded"
  fi
  ms=$(($(now_ms) - t0))
  stop_ferry "$NBDKIT_PID"
  echo "--- $1: the read failed after $ms ms:"
  grep -v "debug: " "$tmpdir/nbdkit.err" || true
}
folder="GET https://$SERVER/folder/knobs/knobs-flat.vmdk \\(bytes 0-[0-9]*\\)"

# 2. A read whose answer does not come: with stall-timeout=2 each attempt is abandoned
# after 2 s, and retry-budget=6 ends the request after about 6 s (defaults: 30 s a try,
# 5 minutes in all).
: >"$tmpdir/nbdkit.err"
start_ferry vm=knobs stall-timeout=2 retry-budget=6
control POST "/inject?folder-delay=1h" >/dev/null
read_fails stall
control POST "/inject?folder-delay=0s" >/dev/null
grep -Eq "$folder: Operation too slow. Less than 1024 bytes/sec transferred the last 2 seconds \(gave up after [1-9][0-9]* retr[a-z]* in [0-9.]* s, retry budget 6 s\)" \
  "$tmpdir/nbdkit.err" || fail "the stall error does not name the read, the stall and the budget"
((ms >= 5000 && ms < 15000)) || fail "a read with a 6 s budget failed after $ms ms"

# 3. read-timeout=1 bounds a whole attempt (the stall window, 30 s, never comes).
: >"$tmpdir/nbdkit.err"
start_ferry vm=knobs read-timeout=1 retry-budget=3
control POST "/inject?folder-delay=1h" >/dev/null
read_fails read
grep -Eq "$folder: Operation timed out after 1[0-9]{3} milliseconds.* \(gave up after [1-9][0-9]* retr[a-z]* in [0-9.]* s, retry budget 3 s\)" \
  "$tmpdir/nbdkit.err" || fail "the read timeout error does not name the read, 1 s and the budget"
((ms >= 2000 && ms < 10000)) || fail "a read with a 3 s budget failed after $ms ms"
control POST "/inject?folder-delay=0s" >/dev/null

# 4. control-timeout=2: the SOAP Logout at exit, sent to a stopped server on a kept-alive
# connection, is abandoned after 2 s (default 120 s), the budget being shorter than one try.
: >"$tmpdir/nbdkit.err"
start_ferry vm=knobs control-timeout=2 retry-budget=1
kill -STOP "$DOUBLE_PID"
t0=$(now_ms)
stop_ferry "$NBDKIT_PID"
ms=$(($(now_ms) - t0))
kill -CONT "$DOUBLE_PID"
echo "--- control: nbdkit exited after $ms ms:"
grep -v "debug: " "$tmpdir/nbdkit.err" || true
grep -Eq "POST https://$SERVER/sdk: .*[Tt]imed out after 2[0-9]{3} milliseconds.* \(gave up after 0 retries in [0-9.]* s, retry budget 1 s\)" \
  "$tmpdir/nbdkit.err" || fail "the SOAP timeout error does not name the call, 2 s and the budget"
((ms < 10000)) || fail "nbdkit with control-timeout=2 took $ms ms to log out from a stopped server"

# 5. connect-timeout=1: a stopped server accepts TCP but never finishes the TLS handshake.
# Before its first answer the budget is the first-contact one (10 s), or retry-budget=
# when shorter.
: >"$tmpdir/nbdkit.err"
kill -STOP "$DOUBLE_PID"
t0=$(now_ms)
if start_ferry vm=knobs connect-timeout=1 retry-budget=3; then
  fail "nbdkit started against a stopped server"
fi
ms=$(($(now_ms) - t0))
kill -CONT "$DOUBLE_PID"
echo "--- connect: nbdkit gave up after $ms ms:"
grep -v "debug: " "$tmpdir/nbdkit.err" || true
# libcurl's words do not say how long ("SSL connection timeout"), the time does: with
# the default 30 s the first attempt alone would outlast the budget.
grep -Eq "POST https://$SERVER/sdk: .*([Tt]imeout|[Tt]imed out).* \(gave up after [1-9][0-9]* retr[a-z]* in [0-9.]* s, first-contact budget 3 s\)" \
  "$tmpdir/nbdkit.err" || fail "the connect error does not name the call, the timeout and the budget"
((ms >= 2000 && ms < 8000)) || fail "connecting with a 3 s budget failed after $ms ms"

# 6. Plans: source.timeouts is checked, naming the key ...
write_plan "$tmpdir/bad.json" \
  '.vms = [{name: "knobs"}] | .source.timeouts = {stall: 0, retryBudget: "5", read: 86401, conect: 5}'
rc=0
"$ferry" validate "$tmpdir/bad.json" >"$tmpdir/bad.out" 2>&1 || rc=$?
cat "$tmpdir/bad.out"
[ $rc = 1 ] || fail "ferry validate of bad timeouts exited $rc, not 1"
for key in stall retryBudget read; do
  grep -q "source.timeouts: \"$key\" must be an integer from 1 to 86400" "$tmpdir/bad.out" ||
    fail "ferry validate does not name source.timeouts.$key"
done
grep -q 'source.timeouts: unknown key "conect"' "$tmpdir/bad.out" ||
  fail "ferry validate does not name the unknown key source.timeouts.conect"
write_plan "$tmpdir/bad2.json" '.vms = [{name: "knobs"}] | .source.timeouts = 30'
rc=0
"$ferry" validate "$tmpdir/bad2.json" >"$tmpdir/bad2.out" 2>&1 || rc=$?
cat "$tmpdir/bad2.out"
[ $rc = 1 ] || fail "ferry validate of \"timeouts\": 30 exited $rc, not 1"
grep -q 'source.timeouts: must be an object' "$tmpdir/bad2.out" ||
  fail "ferry validate does not say source.timeouts must be an object"

# ... and reaches the source: every /folder read reset, a 2 s retry budget makes the run
# fail in seconds (the default would retry each read for 5 minutes), naming the budget.
make_targets knobs 1
write_plan "$tmpdir/plan.json" \
  '.vms = [{name: "knobs"}] | .source.timeouts = {retryBudget: 2, connect: 5}'
"$ferry" validate "$tmpdir/plan.json" >"$tmpdir/validate.out" 2>&1 ||
  { cat "$tmpdir/validate.out"; fail "ferry validate refused good timeouts"; }
control POST "/faults?reset=1" >/dev/null
t0=$(now_ms)
rc=0
timeout -k 10 90 "$ferry" migrate "$tmpdir/plan.json" >"$tmpdir/migrate.out" 2>&1 || rc=$?
ms=$(($(now_ms) - t0))
control POST "/faults?reset=0" >/dev/null
echo "--- migrate exited $rc after $ms ms:"
cat "$tmpdir/migrate.out"
[ $rc != 0 ] || fail "ferry migrate succeeded against a server that resets every read"
grep -Eq "GET https://$SERVER/folder/.*\(gave up after [1-9][0-9]* retr[a-z]* in [0-9.]* s, retry budget 2 s\)" \
  "$tmpdir/migrate.out" "$tmpdir/state/results.json" || fail "the run's error does not name the 2 s budget"
((ms < 60000)) || fail "a run with a 2 s retry budget took $ms ms to fail"
[ -z "$(ferry_snapshots knobs)" ] || fail "the failed run left a snapshot"

echo "$0: OK"
