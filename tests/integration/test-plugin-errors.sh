#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Bad input gets a clear error naming the object, the operation and the server's words,
# and the password never appears in any output.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit nbdinfo jq curl
requires_plugin

start_double -username admin -password 'Corr3ct-h0rse'
export PASSWORD='Corr3ct-h0rse' FERRY_USER=admin
make_sparse_disk "$tmpdir/disk" 64M 0:4 500:4
create_vm plain "disks=64M&power=off&cbt=1" >/dev/null
place_disk plain 2000 "$tmpdir/disk"
create_vm snapped "disks=64M&power=off&cbt=1&snapshots=2" >/dev/null
create_vm nocbt "disks=64M&power=off&cbt=0" >/dev/null
place_disk nocbt 2000 "$tmpdir/disk"

# Wrong password: the server's own message, never the password.
PASSWORD='wr0ng-Secret-42' expect_failure 'Login as admin' 'InvalidLogin' \
  'incorrect user name or password' -- vm=plain
if grep -q 'wr0ng-Secret-42' "$tmpdir/all.err"; then fail "the password was printed"; fi

expect_failure 'no VM named "ghost"' -- vm=ghost
expect_failure 'no disk "2009"' '2000 "\[ferry ds 1\] plain/plain.vmdk"' -- vm=plain disk=2009
expect_failure 'snapshot(s)' 'user-snap-1' 'delta chains are not supported' -- vm=snapped
expect_failure 'snapshot(s)' -- vm=snapped snapshot=create
[ "$(vm_json snapped | jq '.snapshots | length')" = 2 ] # nothing was added

# TLS: a wrong thumbprint names both; an unknown CA says it cannot verify.
bad=00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33
TLS_ARGS="thumbprint=$bad" expect_failure "$bad" "$THUMBPRINT_SHA1" -- vm=plain
TLS_ARGS="" expect_failure 'certificate' -- vm=plain
TLS_ARGS="" expect_failure 'thumbprint=' 'SHA-1 (20 bytes)' -- vm=plain thumbprint=AB:CD

# Unreachable server: named, with the cause.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SERVER=127.0.0.1:$port expect_failure "127.0.0.1:$port" -- vm=plain

# The right thumbprints (SHA-1 as vSphere shows it, lower case SHA-256) work.
TLS_ARGS="thumbprint=$THUMBPRINT_SHA1" start_ferry vm=plain
cmp <(nbdcopy "$(nbd_uri)" - ) "$tmpdir/disk"
stop_ferry "$NBDKIT_PID"
TLS_ARGS="thumbprint=${THUMBPRINT_SHA256,,}" start_ferry vm=plain
stop_ferry "$NBDKIT_PID"

# sslverify=false works and warns.
: >"$tmpdir/nbdkit.err"
TLS_ARGS="sslverify=false" start_ferry vm=plain
grep -qi 'warning.*verif' "$tmpdir/nbdkit.err"
stop_ferry "$NBDKIT_PID"

# CBT off: served, but without holes (everything is data).
start_ferry vm=nocbt
cmp <(nbdcopy "$(nbd_uri)" - ) "$tmpdir/disk"
[ "$(data_map "$(nbd_uri)")" = "0 67108864" ]
stop_ferry "$NBDKIT_PID"

# Debug output of a whole session never shows the password either.
: >"$tmpdir/nbdkit.err"
NBDKIT_FLAGS="-v -D ferry.soap=1 -D ferry.http=1 -D ferry.stats=1" start_ferry vm=plain
nbdinfo --map "$(nbd_uri)" >/dev/null
stop_ferry "$NBDKIT_PID"
grep -q 'soap: .*Login' "$tmpdir/nbdkit.err"
if grep -q "$PASSWORD" "$tmpdir/nbdkit.err"; then fail "the password was printed in debug output"; fi

# password=SECRET on the command line works as in nbdkit, with a plain warning (not an
# error) that the process list shows it; the warning never repeats the password.
: >"$tmpdir/nbdkit.err"
start_ferry vm=plain password="$PASSWORD"
cmp <(nbdcopy "$(nbd_uri)" - ) "$tmpdir/disk"
stop_ferry "$NBDKIT_PID"
grep -q '^nbdkit: ferry: warning: password= .*process list' "$tmpdir/nbdkit.err" ||
  fail "no warning about password= on the command line: $(cat "$tmpdir/nbdkit.err")"
if grep -q 'error.*password=' "$tmpdir/nbdkit.err"; then fail "the warning is an error"; fi
if grep -q "$PASSWORD" "$tmpdir/nbdkit.err"; then fail "the password was printed"; fi
# +FILE gives no warning.
: >"$tmpdir/nbdkit.err"
start_ferry vm=plain
stop_ferry "$NBDKIT_PID"
if grep -q 'warning: password=' "$tmpdir/nbdkit.err"; then fail "password=+FILE warned"; fi
