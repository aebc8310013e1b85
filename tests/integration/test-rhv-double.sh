#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The RHV double speaks imageio as reference/rhv.md records it, checked with curl on a
# transfer made through the engine API: OPTIONS (features, max_readers), no HEAD (405),
# one range per request (206 with Content-Range and the exact length), 416 for multiple,
# suffix and past-the-end ranges, /extents?context=dirty 404 on a plain download, and 403
# once the transfer is finalized.  So the plugin's tests run against the real protocol.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/rhv-functions.sh"
set -euo pipefail
requires curl jq

start_rhv_double
vm=$(rhv_create_vm probe01 down 1M)
disk=$(rhv_disk "$vm" 0 id)
token=$(curl -sS --fail --cacert "$CACERT" -H 'Accept: application/json' \
  --data-urlencode grant_type=password --data-urlencode scope=ovirt-app-api \
  --data-urlencode "username=$RHV_USER" --data-urlencode "password=$RHV_PASSWORD" \
  "${ENGINE_URL%/api}/sso/oauth/token" | jq -r .access_token)
api ()
{
  local method=$1 path=$2
  shift 2
  curl -sS --fail --cacert "$CACERT" -H "Authorization: Bearer $token" \
    -H 'Accept: application/json' -H 'Content-Type: application/xml' -X "$method" \
    "$ENGINE_URL$path" "$@"
}
t=$(api POST /imagetransfers --data "<image_transfer><disk id=\"$disk\"/><direction>download</direction><format>raw</format></image_transfer>" | jq -r .id)
transferring () { [ "$(api GET "/imagetransfers/$t" | jq -r .phase)" = transferring ]; }
wait_for transferring
url=$(api GET "/imagetransfers/$t" | jq -r .proxy_url)

# status [CURL ARGS...]: the HTTP status of a request on the ticket.
status () { curl -s --cacert "$CACERT" -o "$tmpdir/body" -D "$tmpdir/headers" -w '%{http_code}' "$@"; }

[ "$(status -X OPTIONS "$url")" = 200 ]
jq -e '.max_readers == 8 and (.features | index("extents"))' "$tmpdir/body" >/dev/null
[ "$(status -I "$url")" = 405 ] || fail "HEAD is not 405"
[ "$(status -r 100-199 "$url")" = 206 ] || fail "a range is not 206"
grep -qi '^content-range: bytes 100-199/1048576' "$tmpdir/headers"
[ "$(stat -c %s "$tmpdir/body")" = 100 ]
for r in 0-1,4-5 -100 1048576-1048577; do
  [ "$(status -r "$r" "$url")" = 416 ] || fail "range $r is not 416"
done
[ "$(status "$url/extents?context=zero")" = 200 ]
jq -e 'length == 1 and .[0].zero and .[0].length == 1048576' "$tmpdir/body" >/dev/null
[ "$(status "$url/extents?context=dirty")" = 404 ] || fail "dirty extents of a download"

api POST "/imagetransfers/$t/finalize" --data '<action/>' -o /dev/null
[ "$(status -r 0-99 "$url")" = 403 ] || fail "the ticket works after finalize"
grep -qi '^connection: close' "$tmpdir/headers"
