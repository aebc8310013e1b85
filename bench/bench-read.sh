#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Read benchmark: the ferry plugin + nbdcopy against Debian's nbdkit-curl-plugin + nbdcopy and
# against one curl stream of the flat file, all reading the same disk from the vSphere double
# over loopback HTTPS, measured in the same run.
#
# The disk: 4 GiB, exactly 50% allocated with incompressible data (/dev/urandom).  Each 16 MiB
# window holds 8 MiB of data split into 1..8 areas with holes between them (sizes from 64 KiB
# to 8 MiB, seeded, so every run has the same ~1100 areas), which is closer to a used
# filesystem than one big run.  The VM is powered off with CBT on, so the plugin gets the
# allocated areas from QueryChangedDiskAreas("*").
#
# Bytes fetched are the double's own count of bytes served on /folder (GET /stats
# folder_bytes, reset before each copy).  Each contender runs $BENCH_RUNS times (default 3),
# interleaved; the best time is kept.  CPU seconds of the double, nbdkit and the client are
# printed too: on a shared machine they vary less than wall time.  Targets (from the product issue) are printed as "ok" or
# "target missed"; a missed target does not fail the script.
#
# Environment: BENCH_SIZE (default 4G, smaller for a quick try), BENCH_RUNS (default 2),
# TMPDIR (default /var/tmp; needs ~5 GiB of real space: the source image and the double's copy).
# shellcheck source-path=SCRIPTDIR source=../tests/integration/functions.sh disable=SC2119
export TMPDIR=${TMPDIR:-/var/tmp}
source "$(dirname "$0")/../tests/integration/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy curl jq cmp awk /usr/bin/time
nbdkit curl --dump-plugin >/dev/null 2>&1 || skip "nbdkit-curl-plugin is not installed"

size=${BENCH_SIZE:-4G}
runs=${BENCH_RUNS:-3}
size_bytes=$(numfmt --from=iec "$size")
vm=bench-read
blk=65536

# --- The disk ---------------------------------------------------------------------------
# Areas as OFFSET:LENGTH in 64 KiB blocks for make_sparse_disk: per 16 MiB window, 128 data
# blocks and 128 hole blocks, each split into k pieces (k = 1..8), data first.
awk -v blocks=$((size_bytes / blk)) 'BEGIN {
  srand(1)
  for (pos = 0; pos + 256 <= blocks; ) {
    k = 1 + int(rand() * 8); rd = 128; rh = 128; end = pos + 256
    for (i = 0; i < k; i++) {
      left = k - 1 - i
      if (left == 0) { d = rd; h = rh }
      else { d = 1 + int(rand() * (rd - left)); h = 1 + int(rand() * (rh - left)) }
      print pos ":" d
      pos += d + h; rd -= d; rh -= h
    }
    pos = end
  }
}' >"$tmpdir/areas"
allocated=$(awk -F: -v b=$blk '{ s += $2 } END { printf "%d", s * b }' "$tmpdir/areas")
echo "disk: $size ($size_bytes bytes), $(wc -l <"$tmpdir/areas") data areas of 64 KiB..8 MiB," \
  "$allocated bytes allocated ($((allocated * 100 / size_bytes))%), random data"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
start_double
mapfile -t areas <"$tmpdir/areas"
make_sparse_disk "$tmpdir/disk" "$size" "${areas[@]}"
create_vm "$vm" "disks=$size&power=off&cbt=1" >/dev/null
place_disk "$vm" 2000 "$tmpdir/disk"

# A session cookie for nbdkit-curl and curl: SOAP Login, as test-double-basics.sh does.
curl -sS --fail --cacert "$CACERT" -c "$tmpdir/cj" -H 'Content-Type: text/xml' \
  -H 'SOAPAction: "urn:vim25/6.5"' --data-binary @- "$URL" >"$tmpdir/login.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this>
<userName>user</userName><password>pass</password></Login></soapenv:Body></soapenv:Envelope>
EOF
awk '$6 == "vmware_soap_session" { printf "%s=%s", $6, $7 }' "$tmpdir/cj" >"$tmpdir/cookie"
[ -s "$tmpdir/cookie" ] || fail "no vmware_soap_session cookie from Login: $(cat "$tmpdir/login.xml")"
folder="https://$SERVER/folder/$vm/$vm-flat.vmdk?dcPath=$DATACENTER&dsName=${DATASTORE// /%20}"

# --- Measuring --------------------------------------------------------------------------
cpu_ticks () # PID: user+system clock ticks so far
{
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

folder_stats () # prints "bytes requests"
{
  control GET /stats | jq -r '"\(.folder_bytes) \(.folder_requests)"'
}

# measure NAME SERVER_PID CMD...: run CMD once, append one line to $tmpdir/results:
# name seconds bytes requests double_cpu server_cpu client_cpu (server_pid 0 = none).
measure ()
{
  local name=$1 spid=$2 t0 t1 d0 d1 s0=0 s1=0 bytes reqs
  shift 2
  control POST /stats/reset >/dev/null
  d0=$(cpu_ticks "$DOUBLE_PID")
  [ "$spid" = 0 ] || s0=$(cpu_ticks "$spid")
  t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$tmpdir/client.time" "$@"
  t1=$(date +%s.%N)
  d1=$(cpu_ticks "$DOUBLE_PID")
  [ "$spid" = 0 ] || s1=$(cpu_ticks "$spid")
  read -r bytes reqs < <(folder_stats)
  awk -v n="$name" -v t0="$t0" -v t1="$t1" -v b="$bytes" -v r="$reqs" -v d=$((d1 - d0)) \
    -v s=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" '{ c = $1 + $2 }
    END { printf "%s %.3f %d %d %.2f %.2f %.2f\n", n, t1 - t0, b, r, d / hz, s / hz, c }' \
    "$tmpdir/client.time" >>"$tmpdir/results"
}

vm_hwm_kib () # PID
{
  awk '$1 == "VmHWM:" { print $2 }' "/proc/$1/status"
}

# Start nbdkit with Debian's curl plugin on a private socket; sets SOCK and NBDKIT_PID.
start_nbdkit_curl ()
{
  SOCK=$tmpdir/curl.$RANDOM.sock
  nbdkit -U "$SOCK" -P "$tmpdir/curl.pid" curl url="$folder" cookie=+"$tmpdir/cookie" \
    cainfo="$CACERT" 2>>"$tmpdir/nbdkit-curl.err"
  NBDKIT_PID=$(cat "$tmpdir/curl.pid")
  cleanup_fn "stop_ferry $NBDKIT_PID"
}

: >"$tmpdir/results"
: >"$tmpdir/rss"
for ((run = 1; run <= runs; run++)); do
  for conns in 4 8; do
    t0=$(date +%s.%N)
    start_ferry vm="$vm" connections="$conns"
    t1=$(date +%s.%N)
    echo "ferry-c$conns $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" >>"$tmpdir/startup"
    measure "ferry-c$conns" "$NBDKIT_PID" nbdcopy "$(nbd_uri)" null:
    echo "ferry-c$conns $(vm_hwm_kib "$NBDKIT_PID")" >>"$tmpdir/rss"
    stop_ferry "$NBDKIT_PID"
  done
  start_nbdkit_curl
  measure nbdkit-curl "$NBDKIT_PID" nbdcopy "$(nbd_uri)" null:
  stop_ferry "$NBDKIT_PID"
  measure curl 0 curl -sS --fail --cacert "$CACERT" -b "$tmpdir/cj" -o /dev/null "$folder"
done

# A benchmark that reads wrong bytes is worthless: one ferry copy compared with the source.
start_ferry vm="$vm"
nbdcopy "$(nbd_uri)" "$tmpdir/copy"
stop_ferry "$NBDKIT_PID"
cmp "$tmpdir/copy" "$tmpdir/disk" || fail "ferry's copy differs from the source disk"
rm -f "$tmpdir/copy"
echo "correctness: ferry copy (connections=4) is byte-identical to the source (cmp)"

# --- Report -----------------------------------------------------------------------------
# Best (shortest) run per contender, in a fixed order.
for c in ferry-c4 ferry-c8 nbdkit-curl curl; do
  awk -v c="$c" '$1 == c' "$tmpdir/results" | sort -k2,2n | head -n1
done >"$tmpdir/best"

echo
echo "best of $runs runs; MiB/s = disk size / seconds; fetched = bytes the double served on /folder;"
echo "CPU seconds during the copy: double (Go TLS server), nbdkit, client (nbdcopy or curl);"
echo "cpu/GiB = their sum per GiB fetched"
awk -v size="$size_bytes" '
  BEGIN { printf "%-12s %7s %7s %11s %8s %7s %7s %8s %7s %7s\n", "contender", "seconds", "MiB/s",
          "fetched", "requests", "KiB/req", "cpu-dbl", "cpu-nbdk", "cpu-cli", "cpu/GiB" }
  { printf "%-12s %7.2f %7.1f %11d %8d %7.0f %7.2f %8.2f %7.2f %7.2f\n", $1, $2, size / 1048576 / $2,
    $3, $4, $4 ? $3 / $4 / 1024 : 0, $5, $6, $7, $3 ? ($5 + $6 + $7) / ($3 / 1073741824) : 0 }' "$tmpdir/best"
echo "all runs (seconds): $(awk '{ t[$1] = t[$1] " " $2 } END { for (c in t) printf "%s:%s; ", c, t[c] }' "$tmpdir/results")"
echo "ferry startup (nbdkit ready, before the copy; not in the times above):" \
  "$(sort -k1,1 -k2,2n "$tmpdir/startup" | awk '!seen[$1]++ { printf "%s %ss  ", $1, $2 }')"

sec () { awk -v c="$1" '$1 == c { print $2 }' "$tmpdir/best"; }
fetched () { awk -v c="$1" '$1 == c { print $3 }' "$tmpdir/best"; }
rss_mib () { awk -v c="$1" '$1 == c && $2 > m { m = $2 } END { printf "%.1f", m / 1024 }' "$tmpdir/rss"; }

# check LABEL VALUE OP TARGET UNIT: one line with the verdict.
missed=0
check ()
{
  local verdict=ok
  if ! awk -v v="$2" -v t="$4" -v op="$3" 'BEGIN { exit !(op == ">=" ? v >= t : v <= t) }'; then
    verdict="target missed"
    missed=$((missed + 1))
  fi
  printf '%-38s %8s %-4s (target %s %s %s)  %s\n' "$1" "$2" "$5" "$3" "$4" "$5" "$verdict"
}
ratio () { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo
echo "ferry = default connections=4 (connections=8: $(ratio "$(sec nbdkit-curl)" "$(sec ferry-c8)")x nbdkit-curl," \
  "$(ratio "$(sec curl)" "$(sec ferry-c8)")x curl, peak RSS $(rss_mib ferry-c8) MiB)"
check "speed ferry / nbdkit-curl" "$(ratio "$(sec nbdkit-curl)" "$(sec ferry-c4)")" ">=" 2 x
check "speed ferry / one curl stream" "$(ratio "$(sec curl)" "$(sec ferry-c4)")" ">=" 1.5 x
check "ferry bytes fetched / allocated bytes" "$(ratio "$(fetched ferry-c4)" "$allocated")" "<=" 1.02 x
check "ferry nbdkit peak RSS (VmHWM)" "$(rss_mib ferry-c4)" "<=" 64 MiB
echo "(peak RSS is nbdkit's VmHWM with the plugin loaded, read just before stopping it: plugin + nbdkit)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) (wall times are only comparable when the machine is quiet)"
[ "$missed" = 0 ] || echo "bench-read: $missed target(s) missed"
exit 0
