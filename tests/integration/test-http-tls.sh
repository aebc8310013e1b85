#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry: common/http.c end to end against a local HTTPS server (range_server.py):
# TLS verification with a CA (chain and host name), thumbprint pinning (SHA-1, SHA-256,
# wrong), sslverify=false (a warning, not an error),
# parallel ranged GETs, retries on 503/reset/truncated/short bodies, and 401 -> reauth.
# shellcheck disable=SC1091
source tests/integration/functions.sh
set -e

requires openssl cmp /usr/bin/python3
fetch=$top/tests/integration/http-fetch
[ -x "$fetch" ] || skip "$fetch is not built (make tests/integration/http-fetch)"

# A CA and a server certificate for 127.0.0.1 signed by it (http_certs); another CA nobody
# uses; a certificate from the test CA for another host name.
http_certs
cd "$tmpdir"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other CA" \
  -keyout other.key -out other.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=elsewhere.example" \
  -keyout elsewhere.key -out elsewhere.csr 2>/dev/null
printf 'subjectAltName=DNS:elsewhere.example,IP:192.0.2.7\nbasicConstraints=CA:FALSE\n' \
  >elsewhere.ext
openssl x509 -req -in elsewhere.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile elsewhere.ext -out elsewhere.pem 2>/dev/null
cd "$top"

# 5 MiB + a bit, so the last chunk is partial and 4 threads all work.
size=$((5 * 1024 * 1024 + 12345))
head -c $size /dev/urandom >"$tmpdir/disk"

start_server () { start_range_server "$@"; }
stop_server () { stop_range_server; }

# fetch NAME [http-fetch flags]: copy /disk into $tmpdir/NAME.img, output in NAME.log.
fetch ()
{
  local name=$1
  shift
  rm -f "$tmpdir/$name.img"
  "$fetch" "$@" "$URL" /disk $size "$tmpdir/$name.img" >"$tmpdir/$name.log" 2>&1
}

show () { echo "--- $1:"; cat "$tmpdir/$1.log"; }

start_server plain

# Right CA: identical.
fetch ca --cacert "$tmpdir/ca.pem" || { show ca; fail "fetch with the right CA failed"; }
cmp "$tmpdir/disk" "$tmpdir/ca.img"
grep -q '^requests=.* retries=0 ' "$tmpdir/ca.log" || { show ca; fail "unexpected retries"; }

# Unknown CA (the system store, then another CA): fails, naming the verification problem.
for ca in "" "$tmpdir/other.pem"; do
  if fetch unknown ${ca:+--cacert "$ca"}; then
    show unknown
    fail "fetch with an unknown CA succeeded"
  fi
  show unknown
  grep -q 'TLS: .*certificate' "$tmpdir/unknown.log" ||
    fail "the error does not name the certificate problem"
done

# Pinned thumbprints, SHA-1 (as vSphere shows it) and SHA-256 (lower case, no colons),
# without any CA: identical.
fetch sha1 --thumbprint "$sha1" || { show sha1; fail "SHA-1 thumbprint rejected"; }
cmp "$tmpdir/disk" "$tmpdir/sha1.img"
lower256=$(echo "$sha256" | tr -d : | tr 'A-F' 'a-f')
fetch sha256 --thumbprint "$lower256" || { show sha256; fail "SHA-256 thumbprint rejected"; }
cmp "$tmpdir/disk" "$tmpdir/sha256.img"

# Wrong thumbprint: fails, and the message names both fingerprints.
wrong=00${sha256#??}
[ "$wrong" != "$sha256" ] || wrong=11${sha256#??}
if fetch wrong --thumbprint "$wrong"; then
  show wrong
  fail "a wrong thumbprint was accepted"
fi
show wrong
grep -q "thumbprint $sha256 does not match the expected thumbprint $wrong" \
  "$tmpdir/wrong.log" || fail "the error does not name both thumbprints"
grep -q "$URL" "$tmpdir/wrong.log" || fail "the error does not name the server"

# A garbage thumbprint is refused up front.
if fetch garbage --thumbprint "AB:CD"; then fail "a garbage thumbprint was accepted"; fi
grep -q 'thumbprint=AB:CD' "$tmpdir/garbage.log" || { show garbage; fail "no message"; }

# --no-verify: works, and warns once, as a warning (not as an error).
fetch noverify --no-verify || { show noverify; fail "--no-verify failed"; }
cmp "$tmpdir/disk" "$tmpdir/noverify.img"
[ "$(grep -c '^ferry: warning: .*sslverify=false' "$tmpdir/noverify.log")" = 1 ] ||
  { show noverify; fail "--no-verify did not warn exactly once"; }
if grep -q 'error' "$tmpdir/noverify.log"; then show noverify; fail "the warning is an error"; fi

# A missing file: the error names the URL and the status and the server's words.
URL_SAVED=$URL
if "$fetch" --cacert "$tmpdir/ca.pem" --no-head "$URL" '/nothing?secret=x' 10 "$tmpdir/x.img" \
  >"$tmpdir/404.log" 2>&1; then
  fail "a missing file was fetched"
fi
show 404
grep -q "GET $URL_SAVED/nothing (bytes 0-9): HTTP 404: Not Found: no such file" \
  "$tmpdir/404.log" || fail "bad 404 message"
if grep -q secret "$tmpdir/404.log"; then fail "the query string was logged"; fi
stop_server

# A certificate signed by the trusted CA, but for another host name: refused (host-name
# verification is on whenever the chain is verified), with a message naming the mismatch.
CERT=$tmpdir/elsewhere.pem KEY=$tmpdir/elsewhere.key start_server elsewhere
if fetch elsewhere --cacert "$tmpdir/ca.pem"; then
  show elsewhere
  fail "a certificate for another host name was accepted"
fi
show elsewhere
grep -q "HEAD $URL/disk: TLS: .*\(subject name\|does not match\).*'127.0.0.1'" \
  "$tmpdir/elsewhere.log" || fail "the error does not name the host-name mismatch"
[ ! -s "$tmpdir/elsewhere.img" ] || ! cmp -s "$tmpdir/disk" "$tmpdir/elsewhere.img" ||
  fail "data was read from a server with another host name"
# Pinning that certificate's own thumbprint is the explicit way to trust it.
elsewhere_sha256=$(openssl x509 -in "$tmpdir/elsewhere.pem" -noout -fingerprint -sha256 |
  sed 's/.*=//')
fetch elsewherepin --thumbprint "$elsewhere_sha256" ||
  { show elsewherepin; fail "the pinned thumbprint of the other certificate"; }
cmp "$tmpdir/disk" "$tmpdir/elsewherepin.img"
stop_server

# Faults: every one is retried and the copy is still identical.
for fault in "--fail-503 6" "--reset 5" "--truncate 4" "--short 3"; do
  name=fault-$(echo "$fault" | tr -d ' -')
  # shellcheck disable=SC2086
  start_server "$name" $fault
  fetch "$name" --cacert "$tmpdir/ca.pem" --no-head --debug ||
    { show "$name"; fail "fetch with $fault failed"; }
  cmp "$tmpdir/disk" "$tmpdir/$name.img"
  n=${fault##* }
  grep -q "^requests=.* retries=$n " "$tmpdir/$name.log" ||
    { show "$name"; fail "$fault: expected $n retries"; }
  grep -q 'retry 1 in' "$tmpdir/$name.log" || { show "$name"; fail "retries not logged"; }
  if grep -q 'error' "$tmpdir/$name.log"; then
    show "$name"
    fail "$fault: a recovered failure was logged as an error"
  fi
  stop_server
done

# POST (not idempotent): a 503 is repeated, the answer and its cookie come back; a SOAP
# fault (500 with a body) is an answer, not repeated.
start_server post --fail-503 2
post ()
{
  local name=$1
  shift
  "$fetch" --cacert "$tmpdir/ca.pem" "$@" "$URL" /sdk 0 /dev/null >"$tmpdir/$name.log" 2>&1
}
post post --post hello || { show post; fail "POST failed"; }
grep -qx 'status=200 set_cookie=vmware_soap_session=abc body=echo:hello' "$tmpdir/post.log" ||
  { show post; fail "POST answer"; }
grep -qx 'requests=3 retries=2' "$tmpdir/post.log" || { show post; fail "POST retries"; }
post postfault --post fault || { show postfault; fail "POST of a fault failed"; }
grep -qx 'status=500 set_cookie=(none) body=<Fault>InvalidArgument</Fault>' \
  "$tmpdir/postfault.log" || { show postfault; fail "POST fault answer"; }
grep -qx 'requests=1 retries=0' "$tmpdir/postfault.log" ||
  { show postfault; fail "a SOAP fault was repeated"; }
stop_server

# POST after a reset: it may have been processed, so it is not repeated.
start_server postreset --reset 1
if post postreset --post hello; then show postreset; fail "a reset POST was repeated"; fi
grep -q 'POST .*/sdk: .*reset' "$tmpdir/postreset.log" || { show postreset; fail "message"; }
stop_server

# Retries exhausted: a clear failure, not a hang.
start_server exhausted --fail-503 100
if fetch exhausted --cacert "$tmpdir/ca.pem" --no-head --max-retries 2 --connections 1; then
  fail "fetch succeeded through 100 503s"
fi
show exhausted
grep -q "HTTP 503: Service Unavailable: fault injected (gave up after 2 retries in [0-9.]* s)" \
  "$tmpdir/exhausted.log" || fail "bad message after exhausted retries"
stop_server

# 401: the stale session is renewed once, even with 4 threads hitting it at once.
start_server auth --require-cookie session=fresh
fetch auth --cacert "$tmpdir/ca.pem" --no-head --debug --cookie session=stale \
  --reauth-cookie session=fresh || { show auth; fail "fetch with reauth failed"; }
cmp "$tmpdir/disk" "$tmpdir/auth.img"
grep -q '^requests=.* reauths=1$' "$tmpdir/auth.log" || { show auth; fail "not one reauth"; }
# Secrets stay out of the logs: the cookie's name is shown, never its value.
if grep -Eq 'stale|fresh' "$tmpdir/auth.log"; then
  show auth
  fail "a cookie value was logged"
fi
grep -q 'session cookie session set' "$tmpdir/auth.log" || { show auth; fail "no cookie log"; }
# With HEAD first: the HEAD renews the session.
fetch authhead --cacert "$tmpdir/ca.pem" --cookie session=stale \
  --reauth-cookie session=fresh || { show authhead; fail "HEAD with reauth failed"; }
cmp "$tmpdir/disk" "$tmpdir/authhead.img"
grep -q '^requests=.* reauths=1$' "$tmpdir/authhead.log" || { show authhead; fail "reauths"; }
# Without a reauth callback the 401 is an error naming the status.
if fetch noauth --cacert "$tmpdir/ca.pem" --no-head --cookie session=stale; then
  fail "fetch succeeded with a stale cookie"
fi
show noauth
grep -q "GET $URL/disk (bytes .*): HTTP 401: Unauthorized: session expired" \
  "$tmpdir/noauth.log" ||
  fail "bad 401 message"
stop_server

echo "$0: OK"
