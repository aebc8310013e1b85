#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Rounds driven from outside, as a controller or a cron job does: `ferry precopy` twice
# (one round each, then exit) with guest writes in between, then `ferry cutover` with no
# migrate running, which cuts over itself.  The second precopy fetches only what changed;
# the target equals the disk at cutover.
source "$(dirname "$0")/functions.sh"
set -e
requires jq
start_double

create_vm app01 "disks=48M&cbt=1&power=on" >/dev/null
make_sparse_disk "$tmpdir/d0" 48M 0:100 500:50
place_disk app01 2000 "$tmpdir/d0"
make_targets app01 1
write_plan "$tmpdir/plan.json" '.warm = true | .vms = [{"name": "app01"}]'

"$ferry" precopy "$tmpdir/plan.json" --progress=none || fail "precopy 1"
[ "$(jq -r '.vms.app01.state' "$tmpdir/state/journal.json")" = precopy-wait ] || fail "state"
[ "$(vm_json app01 | jq -r .powerState)" = poweredOn ] || fail "precopy powered the VM off"
guest_write_random app01 2000 3000000 100000
before=$(double_stat folder_bytes)
"$ferry" precopy "$tmpdir/plan.json" --progress=none || fail "precopy 2"
fetched=$(($(double_stat folder_bytes) - before))
changed=$(changed_bytes 3000000:100000)
((fetched == changed)) || fail "precopy 2 fetched $fetched bytes for $changed changed"
[ "$(jq '.vms[0].rounds | length' "$tmpdir/state/results.json")" = 2 ] || fail "rounds"

guest_write_random app01 2000 40000000 70000
"$ferry" cutover "$tmpdir/plan.json" --progress=none || fail "cutover"
disk_view app01 2000 "$tmpdir/final"
cmp "$tmpdir/final" "$tmpdir/pvc/app01-disk0/disk.img" || fail "the target differs"
jq -e '.vms[0].state == "verified" and (.vms[0].rounds | length) == 3' \
  "$tmpdir/state/results.json" >/dev/null || fail "results: $(cat "$tmpdir/state/results.json")"
[ "$(vm_json app01 | jq -r .powerState)" = poweredOff ] || fail "the VM is still on"
[ "$(vm_json app01 | jq '.snapshots | length')" = 0 ] || fail "a snapshot was left"
