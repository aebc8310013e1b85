#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry's own leftover snapshots (from an nbdkit that was SIGKILLed, or that aborted) are
# removed at the next run and said; a snapshot whose maker still runs on this host is in
# use and refused; anyone else's snapshot is never touched and the VM is refused naming it.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy jq curl
requires_plugin

start_double
make_sparse_disk "$tmpdir/disk" 64M 0:8 300:20
for vm in killed aborted mixed; do
  create_vm "$vm" "disks=64M&power=on&cbt=1" >/dev/null
  place_disk "$vm" 2000 "$tmpdir/disk"
done

snapshots () { vm_json "$1" | jq -r '[.snapshots[] | .moref + " " + .name] | join(",")'; }

# kill_leaving_snapshot VM SIGNAL: start nbdkit with snapshot=create, kill it with SIGNAL
# so that nothing of its own can run, and check that its snapshot stayed behind.
kill_leaving_snapshot ()
{
  start_ferry vm="$1" snapshot=create
  kill -"$2" "$NBDKIT_PID"
  timeout=30 wait_for sh -c "! kill -0 $NBDKIT_PID 2>/dev/null"
  [ "$(vm_json "$1" | jq '.snapshots | length')" = 1 ] || fail "no snapshot was left behind"
  left=$(vm_json "$1" | jq -r '.snapshots[0].moref')
  left_name=$(vm_json "$1" | jq -r '.snapshots[0].name')
  [[ $left_name == ferry:inspect:* ]] || fail "ferry's snapshot is named '$left_name'"
}

# A leftover of a SIGKILLed nbdkit: the next run removes it, says so, and serves.
kill_leaving_snapshot killed KILL
: >"$tmpdir/nbdkit.err"
start_ferry vm=killed snapshot=create
grep -q "removing ferry's leftover snapshot \"$left_name\" ($left)" "$tmpdir/nbdkit.err" ||
  fail "the leftover's removal was not said: $(cat "$tmpdir/nbdkit.err")"
now=$(vm_json killed | jq -r '.snapshots[].moref')
if [ "$(wc -w <<<"$now")" != 1 ] || [ "$now" = "$left" ]; then fail "snapshots now: $now"; fi
cmp <(nbdcopy "$(nbd_uri)" -) "$tmpdir/disk"
stop_ferry "$NBDKIT_PID"
[ -z "$(snapshots killed)" ] || fail "snapshots left: $(snapshots killed)"

# nbdkit 1.32 can abort (SIGABRT) when a client disconnects mid-read, before .cleanup: its
# snapshot is a leftover as well.
kill_leaving_snapshot aborted ABRT
: >"$tmpdir/nbdkit.err"
start_ferry vm=aborted snapshot=create
grep -q "removing ferry's leftover snapshot \"$left_name\" ($left)" "$tmpdir/nbdkit.err"
stop_ferry "$NBDKIT_PID"
[ -z "$(snapshots aborted)" ] || fail "snapshots left: $(snapshots aborted)"

# A snapshot whose maker still runs on this host is in use: refused, and not touched.
start_ferry vm=killed snapshot=create
first_pid=$NBDKIT_PID
in_use=$(snapshots killed)
: >"$tmpdir/nbdkit.err"
if start_ferry vm=killed snapshot=create; then fail "a snapshot in use was taken over"; fi
grep -q "is in use by another ferry process on this host" "$tmpdir/nbdkit.err"
grep -q "snapshot \"$(vm_json killed | jq -r '.snapshots[0].name')\"" "$tmpdir/nbdkit.err"
[ "$(snapshots killed)" = "$in_use" ] || fail "the snapshot in use was touched"
stop_ferry "$first_pid"
[ -z "$(snapshots killed)" ]

# Someone else's snapshot next to a leftover of ours: ours is removed, theirs is never
# touched, and the VM is refused naming it.
control POST "/vms/mixed/snapshot?name=nightly-backup" >/dev/null
theirs=$(snapshots mixed)
# (ferry refuses a VM with snapshots, so its leftover is made the way a run that died
# right after creating it would have left it: through the double's control channel.)
control POST "/vms/mixed/snapshot?name=ferry:inspect:0123456789ab" >/dev/null
: >"$tmpdir/nbdkit.err"
if start_ferry vm=mixed snapshot=create; then fail "a VM with a foreign snapshot was served"; fi
grep -q "removing ferry's leftover snapshot \"ferry:inspect:0123456789ab\"" "$tmpdir/nbdkit.err"
grep -q 'snapshot(s): "nightly-backup"' "$tmpdir/nbdkit.err" ||
  fail "the refusal does not name the foreign snapshot: $(cat "$tmpdir/nbdkit.err")"
[ "$(snapshots mixed)" = "$theirs" ] || fail "snapshots now: $(snapshots mixed), were: $theirs"
# ...and again without a leftover: refused the same way, theirs still there.
: >"$tmpdir/nbdkit.err"
if start_ferry vm=mixed snapshot=create; then fail "a VM with a foreign snapshot was served"; fi
grep -q 'snapshot(s): "nightly-backup"' "$tmpdir/nbdkit.err"
if grep -q "removing" "$tmpdir/nbdkit.err"; then fail "something was removed"; fi
[ "$(snapshots mixed)" = "$theirs" ]

# A ferry snapshot named by snapshot=MOREF is served, not removed as a leftover.
named=$(control POST "/vms/aborted/snapshot?name=ferry:inspect:aaaaaaaaaaaa" | jq -r .moref)
: >"$tmpdir/nbdkit.err"
start_ferry vm=aborted snapshot="$named"
cmp <(nbdcopy "$(nbd_uri)" -) "$tmpdir/disk"
stop_ferry "$NBDKIT_PID"
if grep -q "removing" "$tmpdir/nbdkit.err"; then fail "the snapshot asked for was removed"; fi
[ "$(vm_json aborted | jq -r '.snapshots[].moref')" = "$named" ]
