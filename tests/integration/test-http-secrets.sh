#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry: the password never reaches a message, even from a server that echoes the Login
# request back: as the faultstring of a SOAP fault, or as a 200 answer that is not SOAP
# (range_server.py --soap).  The error still names the server, the user and the fault type.
# shellcheck disable=SC1091
source tests/integration/functions.sh
set -e

requires openssl /usr/bin/python3
probe=$top/tests/integration/vs-probe
[ -x "$probe" ] || skip "$probe is not built (make tests/integration/vs-probe)"

http_certs
: >"$tmpdir/disk"
# XML specials, so that its escaped form is what an echo carries.
password='s3cr&t<pw>"Qx'
printf '%s\n' "$password" >"$tmpdir/password"

for mode in echo-fault echo-raw; do
  start_range_server "$mode" --soap "$mode"
  if "$probe" "127.0.0.1:${URL##*:}" migrator "$tmpdir/password" "$tmpdir/ca.pem" vm-1 \
    "$tmpdir/out" >"$tmpdir/$mode.log" 2>&1; then
    fail "$mode: the login succeeded"
  fi
  echo "--- $mode:"
  cat "$tmpdir/$mode.log"
  # Not the password, raw or escaped, nor any part of it, nor the echoed request.
  if grep -E 's3cr|Qx|&amp;t|userName|password>|password&gt;|echo:' "$tmpdir/$mode.log"; then
    fail "$mode: the password or the request was printed"
  fi
  case $mode in
    echo-fault) type=InvalidRequest ;;
    echo-raw) type=InvalidResponse ;;
  esac
  grep -q "127.0.0.1:${URL##*:}: Login as migrator: $type" "$tmpdir/$mode.log" ||
    fail "$mode: the error does not name the server, the user and the fault type"
  stop_range_server
done
# The HTTP layer does not show the body of an answer to a POST either (its caller knows
# whether it may): a 503 that echoes a Login request stays out of the debug lines.
start_range_server echo503 --fail-503 1 --echo-503
"$top/tests/integration/http-fetch" --cacert "$tmpdir/ca.pem" --debug \
  --post "<Login><password>s3cr3tQx</password></Login>" "$URL" /sdk 0 /dev/null \
  >"$tmpdir/echo503.log" 2>&1 || { cat "$tmpdir/echo503.log"; fail "POST after a 503"; }
grep '^ferry' "$tmpdir/echo503.log" >"$tmpdir/echo503.msgs"
cat "$tmpdir/echo503.msgs"
if grep -E 's3cr|password' "$tmpdir/echo503.msgs"; then
  fail "the body of an answer to a POST was logged"
fi
grep -q 'POST .*/sdk: HTTP 503: retry 1 in' "$tmpdir/echo503.msgs" || fail "the 503 was not retried"
stop_range_server
echo "$0: OK"
