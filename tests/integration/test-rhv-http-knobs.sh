#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# provider=rhv takes the user's HTTP timeouts too: with the engine and imageio stopped
# (SIGSTOP) in the middle of serving, a read with stall-timeout=1 connect-timeout=1
# control-timeout=1 retry-budget=12 fails after its 12 s budget, not before, with an error
# naming the imageio read and the budget (then the engine is asked whether it ended the
# transfer: a control call, bounded the same way).  Without a budget given, imageio reads
# give up after a count of 4 retries (about 5 s here): the user's budget replaces it.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
# shellcheck source=rhv-functions.sh
source "$(dirname "$0")/rhv-functions.sh"
set -euo pipefail
requires nbdkit nbdsh jq curl timeout
requires_plugin

start_rhv_double
# A stopped double ignores SIGTERM: continue it first (cleanups run last to first).
cleanup_fn "kill -CONT $RHV_DOUBLE_PID 2>/dev/null"
vm=$(rhv_create_vm knobs01 down 64M)
disk=$(rhv_disk "$vm" 0 id)
rhv_write_random "$vm" "$disk" 0 $((1 << 20))
rhv_write_random "$vm" "$disk" $((48 << 20)) $((1 << 20))
# nbdkit in the background: errors to stderr, which it keeps only when verbose.
export NBDKIT_FLAGS="-v --log=stderr"

start_ferry_rhv vm=knobs01 stall-timeout=1 connect-timeout=1 control-timeout=1 retry-budget=12
# One good read first, so that imageio has answered and the retry budget (not the
# first-contact one) applies.
nbdsh -u "$(nbd_uri)" -c 'h.pread(65536, 0)'
kill -STOP "$RHV_DOUBLE_PID"
t0=$(date +%s%N)
# (timeout: a budget that did not arrive fails the test in seconds, not minutes)
if timeout 60 nbdsh -u "$(nbd_uri)" -c 'h.pread(65536, 48 << 20)' 2>"$tmpdir/nbdsh.err"; then
  fail "a read from a stopped imageio succeeded"
fi
ms=$((($(date +%s%N) - t0) / 1000000))
kill -CONT "$RHV_DOUBLE_PID"
stop_ferry "$NBDKIT_PID"
echo "--- the read failed after $ms ms:"
grep -v "debug: " "$tmpdir/nbdkit.err" || true
grep -Eq "GET https://[^ ]*/images/[^ ]* \(bytes [0-9]+-[0-9]+\): .* \(gave up after [1-9][0-9]* retr[a-z]* in [0-9.]* s, retry budget 12 s\)" \
  "$tmpdir/nbdkit.err" || fail "the error does not name the imageio read and the 12 s budget"
((ms >= 11000 && ms < 40000)) || fail "a read with a 12 s budget failed after $ms ms"

echo "$0: OK"
