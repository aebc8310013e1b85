#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry migrate, cold, from RHV: a plan with "source": {"type": "ovirt"} and a Secret laid
# out like Forklift's oVirt provider Secret (user, password, cacert).  ferry shuts the
# running 2-disk VM down, copies its disks into filesystem targets through image
# transfers, verifies them, and leaves no transfer open; only the data was fetched; with
# maxInFlightPerDatastore=1 the disks of the one storage domain are read one at a time.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/rhv-functions.sh"
set -euo pipefail
requires qemu-img jq curl
[ -x "$ferry" ] || fail "$ferry is not built (run make)"

start_rhv_double
vm=$(rhv_create_vm web01 up 16M 5000000)
rhv_write_random "$vm" "$(rhv_disk "$vm" 0 id)" 0 $((1 << 20))
rhv_write_random "$vm" "$(rhv_disk "$vm" 0 id)" $((8 << 20)) 65536
rhv_write_random "$vm" "$(rhv_disk "$vm" 1 id)" 0 5000000

mkdir -p "$tmpdir/secret"
printf '%s' "$RHV_USER" >"$tmpdir/secret/user"
printf '%s' "$RHV_PASSWORD" >"$tmpdir/secret/password"
cp "$CACERT" "$tmpdir/secret/cacert"
make_targets web01 2
jq -n --arg url "$ENGINE_URL" --arg secret "$tmpdir/secret" --arg state "$tmpdir/state" \
  --arg pvc "$tmpdir/pvc" '{
    name: "rhv", source: { type: "ovirt", url: $url, secret: $secret },
    stateDir: $state, skipGuestConversion: true, maxInFlightPerDatastore: 1,
    storageMap: [ { source: { name: "data1" },
                    destination: { kind: "filesystem", path: ($pvc + "/{vm}-disk{index}") } } ],
    vms: [ { name: "web01" } ] }' >"$tmpdir/plan.json"

"$ferry" validate "$tmpdir/plan.json"
"$ferry" migrate "$tmpdir/plan.json" --progress=json >"$tmpdir/progress.jsonl" ||
  fail "ferry migrate failed: $(tail "$tmpdir/progress.jsonl")"

for i in 0 1; do
  qemu-img compare -U -f raw -F qcow2 "$tmpdir/pvc/web01-disk$i/disk.img" "$(rhv_disk "$vm" $i path)" ||
    fail "disk $i: the target differs from the source"
done
results=$tmpdir/state/results.json
[ "$(jq -r '.vms[0].state' "$results")" = verified ] || fail "not verified: $(cat "$results")"
[ "$(jq -r '.vms[0].originalPowerState' "$results")" = poweredOn ] || fail "power state"
[ "$(rhv_vm "$vm" | jq -r .status)" = down ] || fail "ferry did not shut the VM down"
timeout=10 wait_for rhv_transfers_ended
[ "$(rhv_open_transfers)" = 0 ]
rhv_control GET /transfers | jq -e 'all(.phase == "finished_success")' >/dev/null
[ "$(rhv_control GET /backups | jq length)" = 0 ] || fail "a cold migration made a backup"
[ "$(rhv_stat logins)" = "$(rhv_stat logouts)" ] || fail "a token was not revoked"

# Both disks are on storage domain data1 and the plan allows one transfer in flight per
# storage domain: no GET of one disk overlaps a GET of the other.
rhv_control GET /transfers | jq -e --arg a "$(rhv_disk "$vm" 0 id)" --arg b "$(rhv_disk "$vm" 1 id)" '
  [.[] | select(.disk == $a) | .gets[]] as $x | [.[] | select(.disk == $b) | .gets[]] as $y |
  ($x | length) > 0 and ($y | length) > 0 and
  all($x[]; . as $g | all($y[]; .[1] <= $g[0] or $g[1] <= .[0]))' >/dev/null ||
  fail "the two disks of storage domain data1 were read at the same time"

# Data only: 1 MiB + 64 KiB + the 5000000 bytes (in 4 KiB pieces), plus at most a 10%
# verification sample.
data=$((1048576 + 65536 + 5001216))
fetched=$(rhv_stat imageio_bytes)
echo "fetched $fetched for $data bytes of data"
((fetched >= data && fetched <= data * 115 / 100)) || fail "fetched $fetched bytes, the data is $data"
