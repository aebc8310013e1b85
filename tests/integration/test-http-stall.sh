#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry: common/http.c against servers that stall or ask to wait (range_server.py):
# a body that stops in the middle is abandoned by the low-speed limit and fetched again on
# a fresh connection; a server that always stalls, or is stopped (SIGSTOP), or was never
# there, fails the request with a clear error in a bounded time; Retry-After is waited for, really; a POST
# answer larger than the limit is refused.
# shellcheck disable=SC1091
source tests/integration/functions.sh
set -e

requires openssl cmp /usr/bin/python3
fetch=$top/tests/integration/http-fetch
[ -x "$fetch" ] || skip "$fetch is not built (make tests/integration/http-fetch)"

http_certs
size=$((4 * 1024 * 1024 + 777))
head -c $size /dev/urandom >"$tmpdir/disk"

# fetch NAME [http-fetch flags]: copy /disk into NAME.img; output in NAME.log, the wall
# time in milliseconds in $ms.
fetch ()
{
  local name=$1 t0 rc=0
  shift
  rm -f "$tmpdir/$name.img"
  t0=$(date +%s%N)
  "$fetch" --cacert "$tmpdir/ca.pem" "$@" "$URL" /disk $size "$tmpdir/$name.img" \
    >"$tmpdir/$name.log" 2>&1 || rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  return $rc
}
show () { echo "--- $1 (${ms:-?} ms):"; cat "$tmpdir/$1.log"; }

# 1. Two range GETs stop sending after half their body, the connection left open.  With
# a 1 s low-speed window each is abandoned within seconds (the speed is averaged over a
# few seconds) and fetched again on a fresh connection: identical, two retries.
start_range_server stall --stall 2
fetch stall --no-head --debug --low-speed-time 1 ||
  { show stall; fail "a stalled body was not recovered"; }
show stall
cmp "$tmpdir/disk" "$tmpdir/stall.img"
grep -q '^requests=.* retries=2 ' "$tmpdir/stall.log" || fail "expected 2 retries"
grep -q 'too slow.*retry 1 in [0-9]* ms on a fresh connection' "$tmpdir/stall.log" ||
  fail "the stall was not retried on a fresh connection"
[ $ms -lt 30000 ] || fail "recovering from 2 stalls took $ms ms"
stop_range_server
grep -q 'stall=2' "$tmpdir/stall.out" || fail "the server did not stall twice"

# 2. A server that always stalls: the request fails with a clear error, soon after its
# retry budget (8 s) runs out, never hours later.
start_range_server stallforever --stall 1000000
if fetch stallforever --no-head --connections 1 --low-speed-time 1 --budget-ms 8000; then
  fail "a server that never finishes a body served the disk"
fi
show stallforever
grep -q "GET $URL/disk (bytes 0-1048575): .*too slow.* (gave up after [1-9][0-9]* retr[a-z]* in [0-9.]* s, retry budget 8 s)" \
  "$tmpdir/stallforever.log" || fail "the error does not say what stalled and for how long"
[ $ms -lt 40000 ] || fail "an always stalling server held the request for $ms ms"
stop_range_server

# 3. A stopped server (SIGSTOP: the kernel still accepts the TCP connection, nobody
# answers the TLS handshake): HEAD, GET and POST fail within the connect timeout and the
# budget, naming the timeout.
start_range_server stopped
kill -STOP "$SERVER_PID"
if fetch stopped --connect-timeout 1 --budget-ms 3000; then
  fail "a stopped server answered"
fi
show stopped
grep -q "HEAD $URL/disk: .*[Tt]imeout.* (gave up after [1-9][0-9]* retr[a-z]* in" \
  "$tmpdir/stopped.log" || fail "the error does not name the timeout"
[ $ms -lt 15000 ] || fail "a stopped server held HEAD for $ms ms"
# A POST that never reached the server is repeated (it cannot have been processed), and
# gives up in the same time.
if fetch stoppedpost --connect-timeout 1 --budget-ms 3000 --post hello; then
  fail "a POST to a stopped server succeeded"
fi
show stoppedpost
grep -q "POST $URL/disk: .*[Tt]imeout.* (gave up after [1-9][0-9]* retr[a-z]* in" \
  "$tmpdir/stoppedpost.log" || fail "the POST error does not name the timeout"
[ $ms -lt 15000 ] || fail "a stopped server held POST for $ms ms"
stop_range_server

# A port nobody listens on, with the default budgets: the server has never answered, so
# the short first-contact budget (10 s) applies, not the 5 minutes of a request to a
# server known to be there.
URL=https://127.0.0.1:$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if fetch refused; then fail "a port nobody listens on served the disk"; fi
show refused
grep -q "HEAD $URL/disk: .*[Cc]onnect.* (gave up after [1-9][0-9]* retr[a-z]* in [0-9.]* s, first-contact budget 10 s)" \
  "$tmpdir/refused.log" || fail "the error does not name the connection failure"
((ms >= 9000 && ms < 20000)) || fail "a refused connection took $ms ms to report"

# 4. Retry-After: 1 on two answers: the client waits for it (the delay it logs, and the
# time it takes), instead of its own 10 ms backoff.
start_range_server retryafter --fail-503 2 --retry-after 1
fetch retryafter --no-head --connections 1 --debug --backoff-ms 10 ||
  { show retryafter; fail "fetch after two 503s failed"; }
show retryafter
cmp "$tmpdir/disk" "$tmpdir/retryafter.img"
[ "$(grep -c 'HTTP 503: .*retry [12] in 1000 ms (Retry-After: 1)' "$tmpdir/retryafter.log")" = 2 ] ||
  fail "Retry-After: 1 was not the delay used"
[ $ms -ge 2000 ] || fail "two Retry-After: 1 took only $ms ms"
stop_range_server
# Retry-After: 0 is not a busy loop: the floor (backoff-ms) is waited for each time.
start_range_server retryafter0 --fail-503 3 --retry-after 0
fetch retryafter0 --no-head --connections 1 --debug --backoff-ms 400 ||
  { show retryafter0; fail "fetch after three 503s failed"; }
[ "$(grep -c 'retry [123] in 400 ms (Retry-After: 0)' "$tmpdir/retryafter0.log")" = 3 ] ||
  { show retryafter0; fail "Retry-After: 0 did not wait for the floor"; }
[ $ms -ge 1200 ] || fail "three Retry-After: 0 with a 400 ms floor took only $ms ms"
stop_range_server

# 5. A POST answer larger than max_body is refused with a clear error, not read.
start_range_server big --post-size 100000
if fetch big --post hello --max-body 50000; then fail "a 100000-byte answer was accepted"; fi
show big
grep -q "POST $URL/disk: HTTP 200: the answer is larger than 50000 bytes" \
  "$tmpdir/big.log" || fail "bad message for a too large answer"
fetch bigok --post hello --max-body 100000 || { show bigok; fail "a 100000-byte answer"; }
grep -q '^status=200 ' "$tmpdir/bigok.log" || { show bigok; fail "no answer"; }
stop_range_server

echo "$0: OK"
