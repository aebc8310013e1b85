#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One VM of two deleted in the middle of its round (Destroy_Task through the double's
# control channel, while it is being copied): the other VM is migrated and verified,
# ferry migrate exits 1, and results.json says why the deleted one failed in the
# server's own words.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq curl cmp
requires_ferry

start_double
for vm in ok gone; do
  create_vm "$vm" "disks=64M&power=off&cbt=1" >/dev/null
  make_sparse_disk "$tmpdir/$vm.src" 64M 0:16 300:700 900:8
  place_disk "$vm" 2000 "$tmpdir/$vm.src"
  make_targets "$vm" 1
done
# One 4 MiB request at a time per disk: a round of 45 MiB takes seconds.
write_plan "$tmpdir/plan.json" '. * {"connectionsPerDisk": 1, "vms": [{"name": "ok"}, {"name": "gone"}]}'

# Slow reads (the double's /folder delay (POST /inject)), so that gone is deleted once a progress
# line shows its round copying.
control POST "/inject?folder-delay=300ms" >/dev/null
"$ferry" migrate "$tmpdir/plan.json" --progress=json >"$tmpdir/progress" 2>"$tmpdir/ferry.err" &
pid=$!
cleanup_fn "kill -9 $pid 2>/dev/null"
timeout=60 wait_for json_line_matches "$tmpdir/progress" \
  'select(.event == "progress" and .vm == "gone" and .bytesDone > 0 and .bytesDone < .bytesTotal)'
[ "$(vm_json gone | jq '.snapshots | length')" = 1 ] || fail "gone has no snapshot in its round"
control DELETE /vms/gone
control POST "/inject?folder-delay=0s" >/dev/null
rc=0
wait "$pid" || rc=$?
cat "$tmpdir/ferry.err"
[ $rc = 1 ] || fail "ferry migrate exited $rc with one VM failed, not 1"

res=$tmpdir/state/results.json
jq . "$res"
[ "$(jq -r '.vms[] | select(.name == "ok") | .state' "$res")" = verified ] || fail "ok is not verified"
cmp "$tmpdir/pvc/ok-disk0/disk.img" "$tmpdir/ok.src" || fail "ok: the target differs from the source"
[ "$(jq -r '.vms[] | select(.name == "gone") | .state' "$res")" = failed ] || fail "gone is not failed"
why=$(jq -r '.vms[] | select(.name == "gone") | .error // empty' "$res")
echo "gone: $why"
# The server's words: /folder answers 404 for the deleted disk files, SOAP calls on the
# VM ManagedObjectNotFound.
grep -Eq '404|Not Found|ManagedObjectNotFound|has already been deleted' <<<"$why" ||
  fail "results.json does not say why gone failed in the server's words: '$why'"
[ "$(jq -r '.vms.gone.state' "$tmpdir/state/journal.json")" = failed ] || fail "the journal does not say gone failed"
# The progress stream says so too.
jq -e -s 'any(.[]; .event == "done" and .vm == "gone" and .state == "failed" and (.error | length > 0))' \
  "$tmpdir/progress" >/dev/null || fail "no failed done event for gone in the progress stream"
jq -e -s 'any(.[]; .event == "done" and .vm == "ok" and .state == "verified")' \
  "$tmpdir/progress" >/dev/null || fail "no verified done event for ok in the progress stream"
