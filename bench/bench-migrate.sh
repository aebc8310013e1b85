#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Migration benchmark: `ferry migrate` against its peers on the vSphere double, measured in
# the same run.  Ratios and targets are printed ("ok" / "target missed"), never asserted.
#
#  1. Cold, one disk (BENCH_SIZE, default 4 GiB, 50% allocated like bench-read.sh's disk,
#     powered off, CBT on): `ferry migrate` into a filesystem target, against the ferry
#     plugin + `nbdcopy` into a file, and against one `curl` stream of the whole flat file
#     into a file.  Wall time of each whole job (ferry: plan to verified results, including
#     its digests and sample verification; the plugin: nbdkit start to stop).  CPU seconds
#     of the client processes only (ferry; nbdkit + nbdcopy; curl), per GiB fetched.
#  2. Aggregate scaling: one VM with 4 disks of BENCH_SIZE/4 at once against one VM with one
#     such disk (maxInFlightPerHost=4, maxInFlightPerDatastore=4).
#  3. Warm: the disk of 1, powered on, `ferry precopy` twice with 1% of the disk rewritten by
#     the guest before each round after the first, then `ferry cutover`: round-2 time /
#     round-1 time, bytes fetched (the double's /stats folder_bytes) / bytes changed (the
#     64 KiB blocks the writes touched), and the final round's predicted time (recorded
#     after round 2) against its actual time (results.json).
#
# Environment: BENCH_SIZE (default 4G; 256M for a quick try), BENCH_RUNS (default 1; best
# of N for part 1), TMPDIR (default /var/tmp; needs about 3x BENCH_SIZE of real space).
# shellcheck source-path=SCRIPTDIR source=../tests/integration/functions.sh disable=SC2119
export TMPDIR=${TMPDIR:-/var/tmp}
source "$(dirname "$0")/../tests/integration/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy curl jq cmp awk /usr/bin/time numfmt
requires_ferry
requires_plugin

size=${BENCH_SIZE:-4G}
runs=${BENCH_RUNS:-1}
size_bytes=$(numfmt --from=iec "$size")
blk=65536
hz=$(getconf CLK_TCK)

# layout BYTES: data areas "OFFSET:LENGTH" in 64 KiB blocks, 50% allocated: per 16 MiB
# window 8 MiB of data in 1..8 pieces (seeded, bench-read.sh's layout).
layout ()
{
  awk -v blocks=$(($1 / blk)) 'BEGIN {
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
  }'
}

# new_vm NAME DISK-SIZE N: a powered-off VM with CBT and N disks of the 50% layout.
new_vm ()
{
  local areas
  mapfile -t areas < <(layout "$2")
  make_sparse_disk "$tmpdir/src.$2" "$2" "${areas[@]}"
  create_vm "$1" "disks=$(printf "$2%.0s," $(seq 1 "$3") | sed 's/,$//')&power=off&cbt=1" >/dev/null
  for ((i = 0; i < $3; i++)); do place_disk "$1" $((2000 + i)) "$tmpdir/src.$2"; done
  rm -f "$tmpdir/src.$2"
}

cpu_ticks () { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
now () { date +%s.%N; }
fsub () { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
ratio () { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b ? a / b : 0 }'; }
cpu_of () { awk '{ printf "%.2f", $1 + $2 }' "$1"; }

missed=0
check () # LABEL VALUE OP TARGET UNIT
{
  local verdict=ok
  if ! awk -v v="$2" -v t="$4" -v op="$3" 'BEGIN { exit !(op == ">=" ? v >= t : v <= t) }'; then
    verdict="target missed"
    missed=$((missed + 1))
  fi
  printf '%-44s %8s %-2s (target %s %s)  %s\n' "$1" "$2" "$5" "$3" "$4" "$verdict"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
start_double
echo "disk: $size, 50% allocated in 1..8 areas per 16 MiB (random data), powered off, CBT on"
new_vm one "$size_bytes" 1
allocated=$(layout "$size_bytes" | awk -F: -v b=$blk '{ s += $2 } END { printf "%d", s * b }')

# A session cookie for curl (SOAP Login).
curl -sS --fail --cacert "$CACERT" -c "$tmpdir/cj" -H 'Content-Type: text/xml' \
  -H 'SOAPAction: "urn:vim25/6.5"' --data-binary @- "$URL" >"$tmpdir/login.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this>
<userName>user</userName><password>pass</password></Login></soapenv:Body></soapenv:Envelope>
EOF
folder="https://$SERVER/folder/one/one-flat.vmdk?dcPath=$DATACENTER&dsName=${DATASTORE// /%20}"

# --- 1. Cold, one disk ------------------------------------------------------------------
# Results: name seconds fetched_bytes client_cpu_seconds
: >"$tmpdir/results"
make_targets one 1
write_plan "$tmpdir/cold.json" '.vms = [{name: "one"}]'
for ((run = 1; run <= runs; run++)); do
  rm -rf "$tmpdir/state" "$tmpdir/pvc/one-disk0/disk.img"
  control POST /stats/reset >/dev/null
  t0=$(now)
  /usr/bin/time -f '%U %S' -o "$tmpdir/t" "$ferry" migrate "$tmpdir/cold.json" --progress=none \
    2>>"$tmpdir/ferry.err" || fail "ferry migrate (cold) failed: $(tail "$tmpdir/ferry.err")"
  t1=$(now)
  [ "$(jq -r '.vms[0].state' "$tmpdir/state/results.json")" = verified ] || fail "one is not verified"
  echo "ferry $(fsub "$t1" "$t0") $(double_stat folder_bytes) $(cpu_of "$tmpdir/t")" >>"$tmpdir/results"
  if [ "$run" = 1 ]; then
    echo "ferry's round: $(jq -c '.vms[0].rounds[0] | del(.changeRate)' "$tmpdir/state/results.json")," \
      "final round $(jq '.vms[0].actualFinalRoundSeconds * 100 | round / 100' "$tmpdir/state/results.json") s," \
      "verification $(jq '.vms[0].verifySeconds * 100 | round / 100' "$tmpdir/state/results.json") s"
  fi
  rm -f "$tmpdir/pvc/one-disk0/disk.img"

  control POST /stats/reset >/dev/null
  t0=$(now)
  start_ferry vm=one
  /usr/bin/time -f '%U %S' -o "$tmpdir/t" nbdcopy "$(nbd_uri)" "$tmpdir/nbdcopy.img"
  nb=$(cpu_ticks "$NBDKIT_PID")
  stop_ferry "$NBDKIT_PID"
  t1=$(now)
  echo "plugin+nbdcopy $(fsub "$t1" "$t0") $(double_stat folder_bytes)" \
    "$(awk -v c="$(cpu_of "$tmpdir/t")" -v n="$nb" -v hz="$hz" 'BEGIN { printf "%.2f", c + n / hz }')" \
    >>"$tmpdir/results"
  rm -f "$tmpdir/nbdcopy.img"

  control POST /stats/reset >/dev/null
  t0=$(now)
  /usr/bin/time -f '%U %S' -o "$tmpdir/t" \
    curl -sS --fail --cacert "$CACERT" -b "$tmpdir/cj" -o "$tmpdir/curl.img" "$folder"
  t1=$(now)
  echo "curl $(fsub "$t1" "$t0") $(double_stat folder_bytes) $(cpu_of "$tmpdir/t")" >>"$tmpdir/results"
  rm -f "$tmpdir/curl.img"
done
for c in ferry plugin+nbdcopy curl; do
  awk -v c="$c" '$1 == c' "$tmpdir/results" | sort -k2,2n | head -n1
done >"$tmpdir/best"
echo
echo "1. cold migration of one $size disk ($allocated bytes allocated), best of $runs:"
awk -v size="$size_bytes" '
  BEGIN { printf "%-15s %8s %8s %12s %8s %9s\n", "contender", "seconds", "MiB/s", "fetched", "cpu-cli", "cpu/GiB" }
  { printf "%-15s %8.2f %8.1f %12d %8.2f %9.2f\n", $1, $2, size / 1048576 / $2, $3, $4,
    $3 ? $4 / ($3 / 1073741824) : 0 }' "$tmpdir/best"
echo "(MiB/s = disk size / seconds; fetched = bytes the double served on /folder; cpu-cli = user+system"
echo " seconds of the client processes only: ferry / nbdkit+nbdcopy / curl)"
sec () { awk -v c="$1" '$1 == c { print $2 }' "$tmpdir/best"; }
cpg () { awk -v c="$1" '$1 == c { printf "%.4f", $3 ? $4 / ($3 / 1073741824) : 0 }' "$tmpdir/best"; }
check "speed ferry / plugin+nbdcopy" "$(ratio "$(sec plugin+nbdcopy)" "$(sec ferry)")" ">=" 1.2 x
check "speed ferry / one curl stream" "$(ratio "$(sec curl)" "$(sec ferry)")" ">=" 1.7 x
check "CPU per GiB fetched, ferry / curl" "$(ratio "$(cpg ferry)" "$(cpg curl)")" "<=" 1.5 x
rm -rf "$tmpdir/state" "$tmpdir/pvc"

# --- 2. Aggregate scaling: 4 disks at once vs 1 -------------------------------------------
quarter=$((size_bytes / 4))
new_vm single "$quarter" 1
new_vm quad "$quarter" 4
make_targets single 1
make_targets quad 4
scale_run () # VM -> seconds
{
  local t0 t1
  write_plan "$tmpdir/$1.json" ".maxInFlightPerHost = 4 | .maxInFlightPerDatastore = 4 |
    .stateDir = \"$tmpdir/state-$1\" | .vms = [{name: \"$1\"}]"
  t0=$(now)
  "$ferry" migrate "$tmpdir/$1.json" --progress=none 2>>"$tmpdir/ferry.err" ||
    fail "ferry migrate of $1 failed: $(tail "$tmpdir/ferry.err")"
  t1=$(now)
  fsub "$t1" "$t0"
}
t_single=$(scale_run single)
rm -rf "$tmpdir/pvc/single-disk0"
t_quad=$(scale_run quad)
rm -rf "$tmpdir/pvc"
echo
echo "2. aggregate scaling, disks of $(numfmt --to=iec "$quarter"): 1 disk ${t_single} s, 4 disks at once ${t_quad} s"
echo "   aggregate throughput 4 disks / 1 disk: $(ratio "$(awk -v a="$t_single" 'BEGIN { print 4 * a }')" "$t_quad")x" \
  "(4.00 = linear; bounded by $(nproc) CPUs shared with the double)"

# --- 3. Warm rounds with 1% changed per round ---------------------------------------------
control POST "/vms/one/power?state=on" >/dev/null
make_targets one 1
write_plan "$tmpdir/warm.json" '.warm = true | .stateDir = "'"$tmpdir/state-warm"'" | .vms = [{name: "one"}]'
percent_bytes=$((size_bytes / 100))
# churn: rewrite 1% of the disk in 1 MiB guest writes at random 64 KiB-aligned offsets;
# sets CHANGED (the bytes of the 64 KiB blocks touched).
churn ()
{
  local writes=() off i
  head -c $((1 << 20)) /dev/urandom >"$tmpdir/mib"
  for ((i = 0; i < percent_bytes >> 20; i++)); do
    off=$(((RANDOM * 32768 + RANDOM) % ((size_bytes >> 16) - 16) * 65536))
    guest_write one 2000 "$off" "$tmpdir/mib"
    writes+=("$off:1048576")
  done
  CHANGED=$(changed_bytes "${writes[@]}")
}
"$ferry" precopy "$tmpdir/warm.json" --progress=none 2>>"$tmpdir/ferry.err" ||
  fail "ferry precopy round 1 failed: $(tail "$tmpdir/ferry.err")"
churn
control POST /stats/reset >/dev/null
"$ferry" precopy "$tmpdir/warm.json" --progress=none 2>>"$tmpdir/ferry.err" ||
  fail "ferry precopy round 2 failed: $(tail "$tmpdir/ferry.err")"
fetched2=$(double_stat folder_bytes)
changed2=$CHANGED
churn
"$ferry" cutover "$tmpdir/warm.json" --progress=none 2>>"$tmpdir/ferry.err" ||
  fail "ferry cutover failed: $(tail "$tmpdir/ferry.err")"
res=$tmpdir/state-warm/results.json
[ "$(jq -r '.vms[0].state' "$res")" = verified ] || fail "the warm migration is not verified"
r1=$(jq -r '.vms[0].rounds[0].seconds * 1000 | round / 1000' "$res")
r2=$(jq -r '.vms[0].rounds[1].seconds * 1000 | round / 1000' "$res")
actual=$(jq -r '.vms[0].actualFinalRoundSeconds * 1000 | round / 1000' "$res")
# Predicted at the cutover, from the rounds before it (ferry records it before the final round).
predicted=$(jq -r '.vms[0].predictedFinalRoundSeconds * 1000 | round / 1000' "$res")
echo
echo "3. warm, 1% of the disk ($((percent_bytes >> 20)) MiB in 1 MiB writes) changed before rounds 2 and 3:"
echo "   rounds: $(jq -c '[.vms[0].rounds[] | {round, bytesChanged, bytesFetched, seconds: (.seconds * 1000 | round / 1000)}]' "$res")"
echo "   round 1 ${r1} s, round 2 ${r2} s; round 2 fetched $fetched2 bytes for $changed2 changed" \
  "(results: bytesChanged $(jq -r '.vms[0].rounds[1].bytesChanged' "$res"))"
echo "   final round: predicted ${predicted} s, actual ${actual} s" \
  "(verification apart: $(jq -r '.vms[0].verifySeconds * 1000 | round / 1000' "$res") s)"
check "round-2 time / round-1 time" "$(ratio "$r2" "$r1")" "<=" 0.1 x
check "round-2 bytes fetched / changed" "$(ratio "$fetched2" "$changed2")" "<=" 1.05 x
check "final round |actual - predicted| / actual" \
  "$(awk -v a="$actual" -v p="$predicted" 'BEGIN { d = a - p; if (d < 0) d = -d; printf "%.3f", a ? d / a : 0 }')" \
  "<=" 0.25 x
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) (wall times are only comparable when the machine is quiet)"
[ "$missed" = 0 ] || echo "bench-migrate: $missed target(s) missed"
exit 0
