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

# No url= / server= for rhv / thumbprint=.
for args in "server=localhost" "url=https://engine.example.com/ovirt-engine" "url=$ENGINE_URL thumbprint=AA:BB"; do
  : >"$tmpdir/nbdkit.err"
  # shellcheck disable=SC2086
  if nbdkit -U "$tmpdir/x.sock" "$plugin" provider=rhv user=u password=p vm=web01 $args \
    2>"$tmpdir/nbdkit.err"; then
    fail "nbdkit accepted $args"
  fi
  grep -q "url=" "$tmpdir/nbdkit.err" || grep -q "thumbprint=" "$tmpdir/nbdkit.err" ||
    fail "$args: $(cat "$tmpdir/nbdkit.err")"
done
[ "$(rhv_stat transfers)" = 0 ]
