#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# provider=rhv errors: a bad password is one clear error that names the engine, the user
# and the engine's words, never the password; an unknown VM names the VM; a running VM's
# disk transfer is refused by the engine and nothing is left open; parameters are checked
# before connecting.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/rhv-functions.sh"
set -euo pipefail
requires nbdkit nbdinfo jq curl
requires_plugin

start_rhv_double
vm=$(rhv_create_vm web01 down 8M)

# Bad password.
good=$RHV_PASSWORD
RHV_PASSWORD="Wrong-$RANDOM-Pass"
: >"$tmpdir/nbdkit.err"
if start_ferry_rhv vm=web01; then fail "nbdkit started with a bad password"; fi
cat "$tmpdir/nbdkit.err"
[ "$(grep -c 'error' "$tmpdir/nbdkit.err")" = 1 ] || fail "expected one error line"
grep -q "login as $RHV_USER: HTTP 400: Cannot authenticate user '$RHV_USER': The username or password is incorrect" \
  "$tmpdir/nbdkit.err" || fail "the error does not say what the engine said"
grep -q "$ENGINE_URL" "$tmpdir/nbdkit.err" || fail "the error does not name the engine"
if grep -q -e "$RHV_PASSWORD" -e "$good" "$tmpdir/nbdkit.err"; then fail "a password was printed"; fi
[ "$(rhv_stat failed_logins)" = 1 ]
RHV_PASSWORD=$good

# Unknown VM.
: >"$tmpdir/nbdkit.err"
if start_ferry_rhv vm=nosuchvm; then fail "nbdkit started for an unknown VM"; fi
grep -q "vm nosuchvm: .* has no VM with this id or name" "$tmpdir/nbdkit.err" || fail "$(cat "$tmpdir/nbdkit.err")"

# Another tool's backup of the VM is running: the engine refuses ours, the error carries
# its words, and nothing of ours is left open.
rhv_control POST "/vms/$vm/status" --data-binary '{"status": "up"}' -o /dev/null
token=$(curl -sS --fail --cacert "$CACERT" -H 'Accept: application/json' \
  --data-urlencode grant_type=password --data-urlencode scope=ovirt-app-api \
  --data-urlencode "username=$RHV_USER" --data-urlencode "password=$RHV_PASSWORD" \
  "${ENGINE_URL%/api}/sso/oauth/token" | jq -r .access_token)
curl -sS --fail --cacert "$CACERT" -H "Authorization: Bearer $token" -H 'Accept: application/json' \
  -H 'Content-Type: application/xml' --data "<backup><disks><disk id=\"$(rhv_disk "$vm" 0 id)\"/></disks></backup>" \
  "$ENGINE_URL/vms/$vm/backups" -o /dev/null
: >"$tmpdir/nbdkit.err"
if start_ferry_rhv vm=web01; then fail "nbdkit started while another backup runs"; fi
grep -q "vm $vm (web01): full backup: POST .*/backups: HTTP 409: Operation Failed: \[Cannot backup VM. The VM is during a backup operation.\]" \
  "$tmpdir/nbdkit.err" || fail "$(cat "$tmpdir/nbdkit.err")"
[ "$(rhv_control GET /backups | jq length)" = 1 ]

# No url= / server= for rhv / datacenter=.
for args in "server=localhost" "url=https://engine.example.com/ovirt-engine" "url=$ENGINE_URL datacenter=dc1"; do
  : >"$tmpdir/nbdkit.err"
  # shellcheck disable=SC2086
  if nbdkit -U "$tmpdir/x.sock" "$plugin" provider=rhv user=u password=p vm=web01 $args \
    2>"$tmpdir/nbdkit.err"; then
    fail "nbdkit accepted $args"
  fi
  grep -q "url=" "$tmpdir/nbdkit.err" || grep -q "datacenter=" "$tmpdir/nbdkit.err" ||
    fail "$args: $(cat "$tmpdir/nbdkit.err")"
done
[ "$(rhv_stat transfers)" = 0 ]

# thumbprint= instead of cacert=: it pins the engine's certificate, for the API and the
# imageio proxy (a host has its own certificate, so the proxy is used even when the
# host's transfer_url works); a wrong one is refused, naming both thumbprints.
fp=$(openssl x509 -noout -fingerprint -sha256 -in "$tmpdir/rhv/server.pem" | cut -d= -f2)
vmp=$(rhv_create_vm pin01 down 4M)
rhv_write_random "$vmp" "$(rhv_disk "$vmp" 0 id)" 65536 65536
rhv_fault '{"transfer_url": "direct"}'
printf '%s' "$RHV_PASSWORD" >"$tmpdir/rhv-password"
for pin in "$fp" "AA${fp:2}"; do
  : >"$tmpdir/nbdkit.err"
  if nbdkit -v -U "$tmpdir/pin.sock" "$plugin" provider=rhv url="$ENGINE_URL" user="$RHV_USER" \
    password=+"$tmpdir/rhv-password" thumbprint="$pin" vm=pin01 \
    --run "qemu-img compare -U -f raw -F qcow2 \"\$uri\" $(rhv_disk "$vmp" 0 path)" \
    2>"$tmpdir/nbdkit.err"; then
    [ "$pin" = "$fp" ] || fail "a wrong thumbprint was accepted"
    grep -q "transfer .* on https://localhost:" "$tmpdir/nbdkit.err" ||
      fail "not read through the proxy: $(grep transfer "$tmpdir/nbdkit.err")"
  else
    [ "$pin" != "$fp" ] || fail "the engine's thumbprint was refused: $(grep error "$tmpdir/nbdkit.err")"
    grep -q "server certificate thumbprint .* does not match the expected thumbprint" \
      "$tmpdir/nbdkit.err" || fail "$(grep error "$tmpdir/nbdkit.err")"
  fi
done
rhv_fault '{"transfer_url": "unresolvable"}'
timeout=10 wait_for rhv_transfers_ended
[ "$(rhv_open_transfers)" = 0 ]
transfers0=$(rhv_stat transfers)

# Unknown disk.
: >"$tmpdir/nbdkit.err"
if start_ferry_rhv vm=web01 disk=nosuchdisk; then fail "nbdkit started for an unknown disk"; fi
grep -q "nosuchdisk" "$tmpdir/nbdkit.err" || fail "the error does not name the disk: $(cat "$tmpdir/nbdkit.err")"
[ "$(rhv_stat transfers)" = "$transfers0" ] || fail "a transfer was made for an unknown disk"

# Failure in the middle of start-up: the second disk's transfer is paused by the engine
# (its host failed).  Both transfers are cancelled and the backup finalized: none is open.
vm3=$(rhv_create_vm pair01 up 4M 4M)
rhv_fault "{\"pause_disk\": \"$(rhv_disk "$vm3" 1 id)\"}"
: >"$tmpdir/nbdkit.err"
if start_ferry_rhv vm=pair01; then fail "nbdkit started with a paused transfer"; fi
rhv_fault '{"pause_disk": null}'
grep -q "disk $(rhv_disk "$vm3" 1 id) (pair01_Disk2): transfer .*: phase paused_system instead of transferring" \
  "$tmpdir/nbdkit.err" || fail "$(cat "$tmpdir/nbdkit.err")"
timeout=10 wait_for rhv_transfers_ended
[ "$(rhv_open_transfers)" = 0 ] || fail "transfers left open after a failure: $(rhv_control GET /transfers)"
# Cancelled, not finalized: nothing was read.
rhv_control GET /transfers | jq -e --arg b "$(rhv_control GET /backups | jq -r .[-1].id)" \
  '[.[] | select(.backup == $b)] | length == 2 and all(.phase == "finished_failure")' >/dev/null ||
  fail "the transfers were not cancelled: $(rhv_control GET /transfers)"
rhv_control GET /backups | jq -e --arg vm "$vm3" '[.[] | select(.vm.id == $vm)] |
    length == 1 and all(.phase == "succeeded")' >/dev/null ||
  fail "the backup was left open: $(rhv_control GET /backups)"

# A warm plan with a disk without incremental backup (raw): ferry validate and ferry
# precopy say which disk, before any backup or transfer is made.
if [ -x "$ferry" ]; then
  vm2=$(rhv_create_vm warm02 up 8M 4M/raw)
  raw=$(rhv_disk "$vm2" 1 id)
  mkdir -p "$tmpdir/secret"
  printf '%s' "$RHV_USER" >"$tmpdir/secret/user"
  printf '%s' "$RHV_PASSWORD" >"$tmpdir/secret/password"
  cp "$CACERT" "$tmpdir/secret/cacert"
  make_targets warm02 2
  jq -n --arg url "$ENGINE_URL" --arg secret "$tmpdir/secret" --arg state "$tmpdir/state" \
    --arg pvc "$tmpdir/pvc" '{
      name: "rhv-warm", source: { type: "ovirt", url: $url, secret: $secret },
      warm: true, stateDir: $state, skipGuestConversion: true,
      storageMap: [ { source: { name: "data1" },
                      destination: { kind: "filesystem", path: ($pvc + "/{vm}-disk{index}") } } ],
      vms: [ { name: "warm02" } ] }' >"$tmpdir/plan.json"
  backups=$(rhv_control GET /backups | jq length)
  want="disk $raw (warm02_Disk2, raw, backup none) has no incremental backup"
  if "$ferry" validate "$tmpdir/plan.json" >"$tmpdir/validate.out" 2>&1; then
    fail "ferry validate accepted a warm plan with a raw disk"
  fi
  cat "$tmpdir/validate.out"
  grep -q "Critical.*$want" "$tmpdir/validate.out" || fail "validate: $(cat "$tmpdir/validate.out")"
  if "$ferry" precopy "$tmpdir/plan.json" --progress=none >"$tmpdir/precopy.out" 2>&1; then
    fail "ferry precopy ran a warm plan with a raw disk"
  fi
  cat "$tmpdir/precopy.out"
  grep -q "$want" "$tmpdir/precopy.out" "$tmpdir/state/results.json" ||
    fail "precopy: $(cat "$tmpdir/precopy.out")"
  [ "$(rhv_control GET /backups | jq length)" = "$backups" ] || fail "a backup was made"
  [ "$(rhv_stat transfers)" = $((transfers0 + 2)) ] || fail "a transfer was made"
fi
