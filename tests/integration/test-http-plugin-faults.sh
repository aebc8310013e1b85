#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry: the plugin copies a disk through a server that fails 60% of the reads — 20%
# answered 503 (Retry-After: 0), 20% reset, 20% truncated — and the copy is identical to
# the source: retries are bounded by a time budget, not by a count of 5 that such a
# server exhausts on some read of every copy.  Recovered failures are debug lines, never
# errors.  Also: sslverify=false through the plugin is a plain warning, not an error.
# shellcheck disable=SC1091
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy jq curl
requires_plugin

start_double
make_sparse_disk "$tmpdir/disk" 64M 0:1024
create_vm faulty "disks=64M&power=off&cbt=1" >/dev/null
place_disk faulty 2000 "$tmpdir/disk"
disk_view faulty 2000 "$tmpdir/source"

control POST "/faults?r503=0.2&reset=0.2&truncate=0.2" >/dev/null
control POST /stats/reset >/dev/null
# A 5 ms backoff floor keeps the test short; the budget is the default one.
export FERRY_HTTP_BACKOFF_MS=5
NBDKIT_FLAGS="-D ferry.stats=1 -D ferry.http=1 -v" start_ferry vm=faulty
nbdcopy "$(nbd_uri)" "$tmpdir/copy"
stop_ferry "$NBDKIT_PID"
cmp "$tmpdir/copy" "$tmpdir/source"

stats=$(control GET /stats)
echo "double: $stats"
for kind in faults_503 faults_reset faults_truncate; do
  [ "$(jq ".$kind" <<<"$stats")" -gt 3 ] || fail "too few $kind injected: $stats"
done
# Every fault cost a retry (a reset on a kept-alive connection may also be retried inside
# libcurl, so the count may be lower than the faults, but not below the 503s+truncations).
retries=$(grep -o 'retries [0-9]*' "$tmpdir/nbdkit.err" | tail -1 | cut -d' ' -f2)
must=$(jq '.faults_503 + .faults_truncate' <<<"$stats")
[ "$retries" -ge "$must" ] || fail "$retries retries for $must 503/truncated answers"
grep -q 'recovered after [0-9]* retr' "$tmpdir/nbdkit.err" ||
  fail "recovered reads are not logged as such"
if grep -E 'error|retries exhausted|gave up' "$tmpdir/nbdkit.err"; then
  fail "a recovered failure was reported as an error"
fi
echo "$must 503/truncated answers, $retries retries, copy identical"

# sslverify=false: one plain warning, no error.
control POST "/faults?r503=0&reset=0&truncate=0" >/dev/null
: >"$tmpdir/nbdkit.err"
TLS_ARGS="sslverify=false" start_ferry vm=faulty
nbdcopy "$(nbd_uri)" "$tmpdir/copy2"
stop_ferry "$NBDKIT_PID"
cmp "$tmpdir/copy2" "$tmpdir/source"
cat "$tmpdir/nbdkit.err"
grep -q 'warning: .*sslverify=false' "$tmpdir/nbdkit.err" || fail "no sslverify=false warning"
if grep -q 'error' "$tmpdir/nbdkit.err"; then fail "sslverify=false printed an error"; fi
echo "$0: OK"
