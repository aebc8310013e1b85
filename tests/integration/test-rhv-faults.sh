#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# provider=rhv under the engine's and imageio's habits: the host's transfer_url is used
# when it works and the engine's proxy_url when its host name is unknown or it refuses;
# an expired token means one login again; an idle ticket is kept alive within a short
# inactivity timeout; a transfer the engine finalized on its own (every byte read, then
# idle) is replaced by a new one, and so is one whose ticket expires mid-read; a 500 from
# imageio is retried, and 5% of faulty GETs change nothing.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/rhv-functions.sh"
set -euo pipefail
requires nbdkit nbdcopy qemu-img jq curl
requires_plugin

start_rhv_double
vm=$(rhv_create_vm full01 down 4M)
rhv_write_random "$vm" "$(rhv_disk "$vm" 0 id)" 0 $((4 << 20))
path=$(rhv_disk "$vm" 0 path)
export NBDKIT_FLAGS=-v

# read_ok: the disk through nbdkit equals the guest's.
read_ok ()
{
  rm -f "$tmpdir/copy"
  nbdcopy "$(nbd_uri)" "$tmpdir/copy"
  qemu-img compare -U -f raw -F qcow2 "$tmpdir/copy" "$path"
}

# imageio URL: proxy for an unknown host (the default), direct, proxy after a refusal,
# which is not logged as an error.
for mode in unresolvable direct refused; do
  rhv_fault "{\"transfer_url\": \"$mode\"}"
  : >"$tmpdir/nbdkit.err"
  start_ferry_rhv vm=full01
  read_ok
  stop_ferry "$NBDKIT_PID"
  want=localhost
  [ $mode != direct ] || want=127.0.0.1
  grep -q "transfer .* on https://$want:" "$tmpdir/nbdkit.err" || fail "$mode: not read from $want"
  if [ $mode = refused ]; then
    grep -q "cannot be used (.*connect.*); trying the engine's proxy" "$tmpdir/nbdkit.err" ||
      fail "$mode: no fallback message with the reason: $(grep -i "proxy\|error" "$tmpdir/nbdkit.err")"
  fi
  # A failure ferry recovered from (the fallback) is no error.
  if grep 'error:' "$tmpdir/nbdkit.err"; then fail "$mode: error lines on a recovered fallback"; fi
done
rhv_fault '{"transfer_url": "unresolvable"}'

# The token expires while nbdkit serves: ending the transfers logs in again.
logins=$(rhv_stat logins)
start_ferry_rhv vm=full01
rhv_fault '{"expire_tokens": true}'
stop_ferry "$NBDKIT_PID"
[ "$(rhv_stat logins)" = $((logins + 2)) ] || fail "expected one login and one login again"
timeout=10 wait_for rhv_transfers_ended
rhv_control GET /transfers | jq -e 'all(.phase == "finished_success")' >/dev/null

# A 2 s inactivity timeout: the ticket stays while nbdkit idles (kept alive with
# OPTIONS), well past the timeout.
rhv_fault '{"max_inactivity": 2}'
start_ferry_rhv vm=full01
nbdcopy "$(nbd_uri)" - | head -c 4096 >/dev/null || true
# Six touches at a third of the timeout are at least 3.3 s: past the 2 s.
timeout=30 wait_for sh -c "[ \$(curl -s $CONTROL/transfers | jq '.[-1].touches') -ge 6 ]"
[ "$(rhv_control GET /transfers | jq -r '.[-1].phase')" = transferring ] ||
  fail "the idle transfer was ended: $(rhv_control GET /transfers | jq -c '.[-1]')"
read_ok
stop_ferry "$NBDKIT_PID"
rhv_fault '{"max_inactivity": null}'

# The ticket expires in the middle of a read (the engine cancels the transfer, the
# stream is cut): a new transfer, identical data.
: >"$tmpdir/nbdkit.err"
n=$(rhv_control GET /transfers | jq length)
rhv_fault '{"expire_ticket_after": 2097152}'
start_ferry_rhv vm=full01
read_ok
stop_ferry "$NBDKIT_PID"
rhv_control GET /transfers | jq -e --argjson n "$n" '.[$n].reason == "ticket expired"' >/dev/null ||
  fail "the ticket did not expire: $(rhv_control GET /transfers | jq -c ".[$n:]")"
[ "$(rhv_control GET /transfers | jq length)" = $((n + 2)) ] || fail "no new transfer"
grep -q "the engine ended transfer .*; starting a new one" "$tmpdir/nbdkit.err"

# Every byte read, then idle: the engine finalizes the transfer by itself; the next read
# starts a new transfer.
: >"$tmpdir/nbdkit.err"
start_ferry_rhv vm=full01
read_ok
timeout=10 wait_for sh -c "curl -s $CONTROL/transfers | jq -e '.[-1].phase == \"finished_success\"' >/dev/null"
n=$(rhv_control GET /transfers | jq length)
NBD_URI=$(nbd_uri) /usr/bin/python3 -c '
import nbd, os
h = nbd.NBD()
h.connect_uri(os.environ["NBD_URI"])
h.pread(65536, 3 << 20)
' || fail "a read after the engine ended the transfer failed"
grep -q "the engine ended transfer .*; starting a new one" "$tmpdir/nbdkit.err"
[ "$(rhv_control GET /transfers | jq length)" = $((n + 1)) ]
stop_ferry "$NBDKIT_PID"

# 5% of imageio's data GETs fail (500, reset, short body, slow first byte): identical,
# through the retries.
vm5=$(rhv_create_vm faulty01 down 4M)
rhv_write_random "$vm5" "$(rhv_disk "$vm5" 0 id)" 0 $((4 << 20))
faults=$(rhv_stat faults)
rhv_fault '{"fault_rate": 0.05}'
start_ferry_rhv vm=faulty01
# 64 KiB blocks in a shuffled order: no read-ahead, one GET each.
NBD_URI=$(nbd_uri) OUT=$tmpdir/copy5 /usr/bin/python3 -c '
import nbd, os, random
h = nbd.NBD()
h.connect_uri(os.environ["NBD_URI"])
size, bs = h.get_size(), 65536
blocks = list(range(0, size, bs))
random.Random(5).shuffle(blocks)
with open(os.environ["OUT"], "wb") as f:
    f.truncate(size)
    for off in blocks:
        f.seek(off)
        f.write(h.pread(bs, off))
'
qemu-img compare -U -f raw -F qcow2 "$tmpdir/copy5" "$(rhv_disk "$vm5" 0 path)"
stop_ferry "$NBDKIT_PID"
rhv_fault '{"fault_rate": 0}'
echo "faults injected: $(($(rhv_stat faults) - faults))"
[ "$(rhv_stat faults)" -gt $((faults + 2)) ] || fail "too few faults were injected"

# One 500 from imageio: retried.
rhv_fault '{"imageio_500": 1}'
start_ferry_rhv vm=full01
read_ok
stop_ferry "$NBDKIT_PID"
[ "$(rhv_control POST /faults --data '{}' | jq .imageio_500)" = 0 ] || fail "the 500 was not served"
timeout=10 wait_for rhv_transfers_ended
[ "$(rhv_open_transfers)" = 0 ]
