#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# RHV read benchmark: the ferry plugin (provider=rhv) + nbdcopy against one curl stream of
# an image transfer's ticket, both reading the same disk from the RHV double (imageio over
# loopback HTTPS in front of qemu-nbd), measured in the same run.
#
# The disk: a qcow2 of $BENCH_SIZE (default 1G), 50% allocated: in each 16 MiB window, two
# 4 MiB areas of random data (the same 4 MiB each time: TLS does not compress).  The VM is
# down, so each contender reads an image transfer of the disk (format raw).  The plugin
# asks /extents?context=zero and fetches only the data; curl GETs the whole image.
#
# Bytes fetched are the double's own count (GET /stats imageio_bytes).  Each contender runs
# $BENCH_RUNS times (default 2), interleaved; the best time is kept.  Ratios are printed,
# with "ok" or "target missed" for: ferry at least as fast as one curl stream (disk size /
# time), and bytes fetched at most 1.02x the allocated bytes.  A missed target does not
# fail the script; wrong bytes read do.
#
# Environment: BENCH_SIZE (default 1G; 256M for a quick try), BENCH_RUNS, TMPDIR (default
# /var/tmp; needs about BENCH_SIZE/2 of real space).
# shellcheck source-path=SCRIPTDIR source=../tests/integration/functions.sh
export TMPDIR=${TMPDIR:-/var/tmp}
source "$(dirname "$0")/../tests/integration/functions.sh"
# shellcheck source=../tests/integration/rhv-functions.sh
source "$(dirname "$0")/../tests/integration/rhv-functions.sh"
set -euo pipefail
requires nbdkit nbdcopy curl jq qemu-io qemu-img awk
requires_plugin

size=${BENCH_SIZE:-1G}
runs=${BENCH_RUNS:-2}
size_bytes=$(numfmt --from=iec "$size")
win=$((16 << 20)) area=$((4 << 20))
((size_bytes % win == 0)) || fail "BENCH_SIZE must be a multiple of 16M"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
start_rhv_double
vm=$(rhv_create_vm bench-rhv down "$size_bytes")
img=$(rhv_disk "$vm" 0 path)
disk=$(rhv_disk "$vm" 0 id)
# The guest's writes, straight into the image (the VM is down and nothing reads it yet).
head -c $area /dev/urandom >"$tmpdir/area"
cmds=()
for ((off = 0; off < size_bytes; off += win)); do
  cmds+=(-c "write -s $tmpdir/area $off $area" -c "write -s $tmpdir/area $((off + win / 2)) $area")
done
qemu-io -f qcow2 "${cmds[@]}" "$img" >/dev/null
allocated=$((size_bytes * 2 * area / win))
echo "disk: $size ($size_bytes bytes), $allocated bytes allocated ($((allocated * 100 / size_bytes))%)"

# seconds CMD...: wall time of CMD in seconds (3 decimals).
seconds ()
{
  local t0 t1
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

# The engine's REST API, as curl would use it (the token from the SSO endpoint).
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

# curl_run: one transfer, one curl stream of the whole ticket (its proxy_url), finalize.
curl_run ()
{
  local t url before
  t=$(api POST /imagetransfers --data "<image_transfer><disk id=\"$disk\"/><direction>download</direction><format>raw</format></image_transfer>" | jq -r .id)
  until [ "$(api GET "/imagetransfers/$t" | jq -r .phase)" = transferring ]; do sleep 0.1; done
  url=$(api GET "/imagetransfers/$t" | jq -r .proxy_url)
  before=$(rhv_stat imageio_bytes)
  CURL_S=$(seconds curl -sS --fail --cacert "$CACERT" -o /dev/null "$url")
  CURL_FETCHED=$(($(rhv_stat imageio_bytes) - before))
  api POST "/imagetransfers/$t/finalize" --data '<action/>' -o /dev/null
  timeout=30 wait_for rhv_transfers_ended
}

# ferry_run: nbdkit (its transfer made before the clock starts), nbdcopy to null:.
ferry_run ()
{
  local before
  start_ferry_rhv vm=bench-rhv connections=4
  before=$(rhv_stat imageio_bytes)
  FERRY_S=$(seconds nbdcopy "$(nbd_uri)" null:)
  FERRY_FETCHED=$(($(rhv_stat imageio_bytes) - before))
  stop_ferry "$NBDKIT_PID"
  timeout=30 wait_for rhv_transfers_ended
}

best_curl=999999 best_ferry=999999
for ((r = 1; r <= runs; r++)); do
  curl_run
  ferry_run
  printf 'run %d: curl %s s (%d bytes fetched), ferry %s s (%d bytes fetched)\n' \
    "$r" "$CURL_S" "$CURL_FETCHED" "$FERRY_S" "$FERRY_FETCHED"
  best_curl=$(awk -v a="$best_curl" -v b="$CURL_S" 'BEGIN { print (b < a ? b : a) }')
  best_ferry=$(awk -v a="$best_ferry" -v b="$FERRY_S" 'BEGIN { print (b < a ? b : a) }')
done

# The bytes ferry serves are the guest's.
start_ferry_rhv vm=bench-rhv
qemu-img compare -U -q -f raw -F qcow2 "$(nbd_uri)" "$img" || fail "ferry read wrong bytes"
stop_ferry "$NBDKIT_PID"
timeout=30 wait_for rhv_transfers_ended
[ "$(rhv_open_transfers)" = 0 ] || fail "a transfer was left open"

awk -v size="$size_bytes" -v alloc="$allocated" -v c="$best_curl" -v f="$best_ferry" \
  -v cf="$CURL_FETCHED" -v ff="$FERRY_FETCHED" 'BEGIN {
  mib = size / 1048576
  printf "%-10s %9s %9s %14s %16s\n", "contender", "seconds", "MiB/s", "fetched", "fetched/alloc"
  printf "%-10s %9.3f %9.1f %14d %16.3f\n", "curl", c, mib / c, cf, cf / alloc
  printf "%-10s %9.3f %9.1f %14d %16.3f\n", "ferry-c4", f, mib / f, ff, ff / alloc
  printf "ratio ferry/curl speed: %.2fx  %s\n", c / f, c / f >= 1 ? "ok" : "target missed (>= 1x)"
  printf "ratio fetched/allocated: ferry %.3f  %s; curl %.3f\n", ff / alloc,
    ff / alloc <= 1.02 ? "ok" : "target missed (<= 1.02)", cf / alloc
}'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
