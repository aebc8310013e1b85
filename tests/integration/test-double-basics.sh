#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The vSphere double's /folder service with curl: TLS against the test CA,
# 401 without a session, 206 with the Login cookie, bytes equal to the
# guest's view, snapshot freeze and consolidation, Basic auth, session
# expiry and injected 503s.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail

requires curl cmp

start_double -seed 1
control POST "/vms?name=basic%20vm&disks=8M&cbt=1&power=on" >/dev/null

# Guest data: 1 MiB of a pattern at 64 KiB.
head -c 1048576 /dev/urandom >"$tmpdir/pat"
control PUT "/vms/basic%20vm/disks/2000/data?offset=65536" --data-binary @"$tmpdir/pat" >/dev/null

ds_q=${DATASTORE// /%20}
folder="https://$SERVER/folder/basic%20vm/basic%20vm-flat.vmdk?dcPath=$DATACENTER&dsName=$ds_q"
# virt-v2v double-quotes the query values.
folder2="https://$SERVER/folder/basic%20vm/basic%20vm-flat.vmdk?dcPath=$DATACENTER&dsName=${DATASTORE// /%2520}"

code=$(curl -sS --cacert "$CACERT" -o /dev/null -w '%{http_code}' "$folder")
[ "$code" = 401 ] || fail "no cookie: HTTP $code, want 401"

soap ()
{
  curl -sS --cacert "$CACERT" -b "$tmpdir/cj" -c "$tmpdir/cj" -H 'Content-Type: text/xml' \
    -H 'SOAPAction: "urn:vim25/6.5"' --data-binary @- "https://$SERVER/sdk"
}
login ()
{
  soap <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this>
<userName>user</userName><password>$1</password></Login></soapenv:Body></soapenv:Envelope>
EOF
}

login wrong >"$tmpdir/bad.xml" || true
grep -q 'InvalidLoginFault' "$tmpdir/bad.xml" || fail "wrong password: $(cat "$tmpdir/bad.xml")"
grep -q 'incorrect user name or password' "$tmpdir/bad.xml" || fail "InvalidLogin message"
login pass >"$tmpdir/login.xml"
grep -q '<userName>user</userName>' "$tmpdir/login.xml" || fail "login: $(cat "$tmpdir/login.xml")"
grep -q vmware_soap_session "$tmpdir/cj" || fail "no session cookie"

get ()
{
  curl -sS --fail --cacert "$CACERT" -b "$tmpdir/cj" "$@"
}

# HEAD: size and ranges.
get -I "$folder" >"$tmpdir/head"
grep -qi '^content-length: 8388608' "$tmpdir/head" || fail "HEAD: $(cat "$tmpdir/head")"
grep -qi '^accept-ranges: bytes' "$tmpdir/head" || fail "HEAD without Accept-Ranges"
grep -qi '^content-type: application/octet-stream' "$tmpdir/head" || fail "HEAD content type"

# A range read gives 206 and the guest's bytes; both query quotings work.
code=$(get -o "$tmpdir/range" -w '%{http_code}' -r 65536-1114111 "$folder")
[ "$code" = 206 ] || fail "range: HTTP $code, want 206"
cmp "$tmpdir/range" "$tmpdir/pat"
get -o "$tmpdir/range2" -r 65536-1114111 "$folder2"
cmp "$tmpdir/range2" "$tmpdir/pat"

# The whole file equals the control channel's view.
get -o "$tmpdir/full" "$folder"
curl -sS --fail "$CONTROL/vms/basic%20vm/disks/2000/view" -o "$tmpdir/view"
cmp "$tmpdir/full" "$tmpdir/view"

# Snapshot: later guest writes must not change the served base.
snap=$(control POST "/vms/basic%20vm/snapshot?name=s1" | sed -n 's/.*"moref": "\(.*\)".*/\1/p')
[ -n "$snap" ] || fail "no snapshot moref"
printf 'CHANGED!' | control PUT "/vms/basic%20vm/disks/2000/data?offset=65536" --data-binary @- >/dev/null
get -o "$tmpdir/frozen" "$folder"
cmp "$tmpdir/frozen" "$tmpdir/full" || fail "base changed while snapshotted"
curl -sS --fail "$CONTROL/vms/basic%20vm/disks/2000/view" -o "$tmpdir/view2"
cmp -s "$tmpdir/view2" "$tmpdir/full" && fail "guest view did not change"
curl -sS --fail "$CONTROL/vms/basic%20vm/disks/2000/view?snapshot=$snap" -o "$tmpdir/view3"
cmp "$tmpdir/view3" "$tmpdir/full"
control GET "/vms/basic%20vm" | grep -q 'basic vm-000001.vmdk' || fail "live disk is not the delta"

# RemoveSnapshot (consolidate) over SOAP: the base now has the write.
soap >"$tmpdir/rm.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<RemoveSnapshot_Task xmlns="urn:vim25"><_this type="VirtualMachineSnapshot">$snap</_this>
<removeChildren>false</removeChildren><consolidate>true</consolidate></RemoveSnapshot_Task>
</soapenv:Body></soapenv:Envelope>
EOF
grep -q '<returnval type="Task">' "$tmpdir/rm.xml" || fail "RemoveSnapshot: $(cat "$tmpdir/rm.xml")"
get -o "$tmpdir/merged" "$folder"
cmp "$tmpdir/merged" "$tmpdir/view2" || fail "consolidated base differs from the guest view"
[ "$(head -c 65544 "$tmpdir/merged" | tail -c 8)" = 'CHANGED!' ] || fail "write not merged"

# Basic auth works and hands out a cookie, like ESXi.
curl -sS --fail --cacert "$CACERT" -u user:pass -I "$folder" >"$tmpdir/basic"
grep -qi '^set-cookie: vmware_soap_session=' "$tmpdir/basic" || fail "Basic auth gave no cookie"
code=$(curl -sS --cacert "$CACERT" -u user:nope -o /dev/null -w '%{http_code}' "$folder")
[ "$code" = 401 ] || fail "bad Basic auth: HTTP $code"

# Session expiry: the cookie is dead.
control POST /sessions/expire >/dev/null
code=$(curl -sS --cacert "$CACERT" -b "$tmpdir/cj" -o /dev/null -w '%{http_code}' "$folder")
[ "$code" = 401 ] || fail "expired session: HTTP $code, want 401"

# Fault injection: every GET is a 503 with Retry-After.
login pass >/dev/null
control POST "/faults?r503=1" >/dev/null
curl -sS --cacert "$CACERT" -b "$tmpdir/cj" -D "$tmpdir/h503" -o /dev/null -r 0-99 "$folder"
grep -q '^HTTP/1.1 503' "$tmpdir/h503" || fail "no 503: $(cat "$tmpdir/h503")"
grep -qi '^retry-after: 0' "$tmpdir/h503" || fail "503 without Retry-After"
control POST "/faults?r503=0&truncate=1" >/dev/null
rc=0
curl -sS --cacert "$CACERT" -b "$tmpdir/cj" -o "$tmpdir/trunc" "$folder" 2>/dev/null || rc=$?
[ "$rc" = 18 ] || fail "truncated body: curl exit $rc, want 18"
control POST "/faults?truncate=0&reset=1" >/dev/null
rc=0
curl -sS --cacert "$CACERT" -b "$tmpdir/cj" -o /dev/null "$folder" 2>/dev/null || rc=$?
[ "$rc" != 0 ] || fail "reset: curl succeeded"
control POST "/faults?reset=0" >/dev/null
get -o /dev/null -r 0-99 "$folder"

control GET /stats >"$tmpdir/stats"
grep -q '"faults_503": 1' "$tmpdir/stats" || fail "stats: $(cat "$tmpdir/stats")"
grep -q '"folder_206": [1-9]' "$tmpdir/stats" || fail "stats 206"
echo "$0: ok"
