#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry, warm, from RHV: `ferry precopy` twice on a running VM with guest writes between,
# then `ferry cutover`.  Each round after the first is an incremental backup since the
# checkpoint the targets hold (ferry passes it from its journal), so round 2 fetches only
# the dirty blocks (counted at the double); the targets equal the guest's disks after the
# cutover, and no transfer or backup is left open.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/rhv-functions.sh"
set -euo pipefail
requires qemu-img jq curl
[ -x "$ferry" ] || fail "$ferry is not built (run make)"

start_rhv_double
vm=$(rhv_create_vm app01 up 16M)
d0=$(rhv_disk "$vm" 0 id)
K=65536
rhv_write_random "$vm" "$d0" 0 $((4 * K))
rhv_write_random "$vm" "$d0" $((100 * K)) $((2 * K))

mkdir -p "$tmpdir/secret"
printf '%s' "$RHV_USER" >"$tmpdir/secret/user"
printf '%s' "$RHV_PASSWORD" >"$tmpdir/secret/password"
cp "$CACERT" "$tmpdir/secret/cacert"
make_targets app01 1
jq -n --arg url "$ENGINE_URL" --arg secret "$tmpdir/secret" --arg state "$tmpdir/state" \
  --arg pvc "$tmpdir/pvc" '{
    name: "rhv-warm", source: { type: "ovirt", url: $url, secret: $secret },
    warm: true, stateDir: $state, verifySamplePercent: 0, skipGuestConversion: true,
    storageMap: [ { source: { name: "data1" },
                    destination: { kind: "filesystem", path: ($pvc + "/{vm}-disk{index}") } } ],
    vms: [ { name: "app01" } ] }' >"$tmpdir/plan.json"

before=$(rhv_stat imageio_bytes)
"$ferry" precopy "$tmpdir/plan.json" --progress=none || fail "precopy 1"
r1=$(($(rhv_stat imageio_bytes) - before))
[ "$r1" = $((6 * K)) ] || fail "round 1 fetched $r1 bytes, the data is $((6 * K))"

rhv_write_random "$vm" "$d0" $((50 * K)) $((2 * K))
rhv_write_random "$vm" "$d0" $((1 * K)) "$K"
before=$(rhv_stat imageio_bytes)
"$ferry" precopy "$tmpdir/plan.json" --progress=none || fail "precopy 2"
r2=$(($(rhv_stat imageio_bytes) - before))
[ "$r2" = $((3 * K)) ] || fail "round 2 fetched $r2 bytes, the changed blocks are $((3 * K))"

rhv_write_random "$vm" "$d0" $((200 * K)) "$K"
before=$(rhv_stat imageio_bytes)
"$ferry" cutover "$tmpdir/plan.json" --progress=none || fail "cutover"
r3=$(($(rhv_stat imageio_bytes) - before))
[ "$r3" = "$K" ] || fail "the cutover round fetched $r3 bytes, the changed block is $K"
qemu-img compare -U -f raw -F qcow2 "$tmpdir/pvc/app01-disk0/disk.img" "$(rhv_disk "$vm" 0 path)" ||
  fail "the target differs from the guest's disk"
jq -e '.vms[0].state == "verified" and (.vms[0].rounds | length) == 3' \
  "$tmpdir/state/results.json" >/dev/null || fail "results: $(cat "$tmpdir/state/results.json")"
timeout=10 wait_for rhv_transfers_ended
[ "$(rhv_open_transfers)" = 0 ] || fail "a transfer was left open"
rhv_control GET /backups | jq -e 'all(.phase == "succeeded")' >/dev/null ||
  fail "a backup was left open: $(rhv_control GET /backups)"

# SIGTERM in the middle of a round of another plan (ferry stopped right after its backup
# and transfer were made): ferry ends them; none is left open.
vm2=$(rhv_create_vm app02 up 8M)
rhv_write_random "$vm2" "$(rhv_disk "$vm2" 0 id)" 0 $((2 * K))
make_targets app02 1
jq '.name = "rhv-term" | .stateDir += "-term" | .vms = [{name: "app02"}]' \
  "$tmpdir/plan.json" >"$tmpdir/plan2.json"
FERRY_TEST_STOP_AT=snapshot-created:1 "$ferry" precopy "$tmpdir/plan2.json" --progress=none &
pid=$!
wait_stopped "$pid"
[ "$(rhv_open_transfers)" = 1 ] || fail "expected the round's transfer open: $(rhv_control GET /transfers)"
kill -TERM "$pid"
kill -CONT "$pid"
if wait "$pid"; then fail "ferry precopy succeeded after SIGTERM"; fi
timeout=10 wait_for rhv_transfers_ended
[ "$(rhv_open_transfers)" = 0 ] || fail "a transfer was left open after SIGTERM: $(rhv_control GET /transfers)"
rhv_control GET /backups | jq -e 'all(.phase == "succeeded")' >/dev/null ||
  fail "a backup was left open after SIGTERM: $(rhv_control GET /backups)"
