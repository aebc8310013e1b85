#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A flaky server (5% of /folder requests answered 503, reset or truncated) and a session
# that expires in the middle of a copy: the copy is still byte-identical.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy jq curl
requires_plugin

start_double -fault-503 0.02 -fault-reset 0.015 -fault-truncate 0.015
make_sparse_disk "$tmpdir/disk" 1G 0:800 2000:1200 6000:800 12000:400
create_vm flaky "disks=1G&power=off&cbt=1" >/dev/null
place_disk flaky 2000 "$tmpdir/disk"

NBDKIT_FLAGS="-D ferry.stats=1 -v" start_ferry vm=flaky
nbdcopy "$(nbd_uri)" "$tmpdir/copy"
cmp "$tmpdir/copy" "$tmpdir/disk"
stats=$(control GET /stats)
[ "$(jq .faults_injected <<<"$stats")" -gt 0 ] || fail "no faults were injected: $stats"
stop_ferry "$NBDKIT_PID"
# Every 503 and truncated body was retried by us (a reset on a kept-alive connection may
# be retried inside libcurl already, so those are not counted).
retries=$(grep -o 'retries [0-9]*' "$tmpdir/nbdkit.err" | tail -1 | cut -d' ' -f2)
must=$(jq '.faults_503 + .faults_truncate' <<<"$stats")
[ "$must" -gt 0 ] || fail "no 503 or truncated answer was injected: $stats"
[ "$retries" -ge "$must" ] || fail "$retries retries for $must 503/truncated answers"
echo "$must 503/truncated answers, $retries retries"

# Session expiry in the middle of a copy: re-login, still identical.
control POST "/faults?r503=0&reset=0&truncate=0" >/dev/null
control POST /stats/reset >/dev/null
NBDKIT_FLAGS="-D ferry.stats=1 -v" start_ferry vm=flaky connections=2
# Read the first half, expire every session on the server, read the second half, over
# the same NBD connection.
nbdsh -u "$(nbd_uri)" -c "
import subprocess
size = h.get_size()
with open('$tmpdir/copy2', 'wb') as f:
    for half in (0, 1):
        if half == 1:
            subprocess.run(['curl', '-sS', '--fail', '-X', 'POST',
                            '$CONTROL/sessions/expire'], check=True)
        for off in range(half * size // 2, (half + 1) * size // 2, 4 << 20):
            f.write(h.pread(4 << 20, off))
"
cmp "$tmpdir/copy2" "$tmpdir/disk"
stop_ferry "$NBDKIT_PID"
grep -E 'stats:.*re-logins [1-9]' "$tmpdir/nbdkit.err"
