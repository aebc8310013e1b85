#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# VDDK drop-in benchmark: libvixDiskLib.so.8 behind the test-only forwarding plugin
# (tests/vddk/vddkfwd.c, nbdkit-vddk's call order) + nbdcopy against ferry's own plugin +
# nbdcopy, on the same disk of the vSphere double over loopback HTTPS, in the same run.
#
# The disk: BENCH_SIZE (default 1G), 75% allocated with random data in areas of 1 to 8 MiB
# (seeded, the same every run), in a powered-off VM with CBT on, so both read only the
# allocated areas (CBT "*").  The contenders run BENCH_RUNS times (default 5), interleaved;
# every time is printed, then the best and the median and the ratio vddk speed / ferry
# speed (target >= 0.9).  On a shared machine the spread matters as much as the ratio: CPU
# seconds of nbdkit are printed too.  One copy through the library is compared with cmp.
#
# Environment: BENCH_SIZE, BENCH_RUNS, TMPDIR (default /var/tmp; needs ~2x BENCH_SIZE).
# shellcheck source-path=SCRIPTDIR source=../tests/integration/functions.sh
export TMPDIR=${TMPDIR:-/var/tmp}
source "$(dirname "$0")/../tests/integration/functions.sh"
# shellcheck source=../tests/vddk/functions.sh
source "$top/tests/vddk/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy curl jq cmp awk make
# make bench builds the library but not the test-only forwarding plugin.
make -s -C "$top" vddk/lib64/libvixDiskLib.so.8 tests/vddk/nbdkit-vddkfwd-plugin.so >/dev/null ||
  fail "cannot build the library and the forwarding plugin"

size=${BENCH_SIZE:-1G}
runs=${BENCH_RUNS:-5}
size_bytes=$(numfmt --from=iec "$size")
vm=bench-vddk

# Areas as OFFSET:LENGTH in 64 KiB blocks: per 32 MiB (512 blocks), 384 blocks of data in
# areas of 16..128 blocks (1..8 MiB) with holes between them.
awk -v blocks=$((size_bytes / 65536)) 'BEGIN {
  srand(2)
  for (pos = 0; pos + 512 <= blocks; pos = end) {
    end = pos + 512; data = 384
    while (data > 0) {
      d = 16 + int(rand() * 113); if (d > data) d = data
      print pos ":" d; pos += d + 8; data -= d
    }
  }
}' >"$tmpdir/areas"
allocated=$(awk -F: '{ s += $2 } END { printf "%d", s * 65536 }' "$tmpdir/areas")
echo "disk: $size, $(wc -l <"$tmpdir/areas") data areas of 1..8 MiB, $allocated bytes allocated"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"

start_double
mapfile -t areas <"$tmpdir/areas"
make_sparse_disk "$tmpdir/disk" "$size" "${areas[@]}"
create_vm "$vm" "disks=$size&power=off&cbt=1" >"$tmpdir/vm.json"
place_disk "$vm" 2000 "$tmpdir/disk"
moref=$(jq -r .moref "$tmpdir/vm.json")
file=$(jq -r '.disks[0].fileName' "$tmpdir/vm.json")

cpu_ticks () { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# measure NAME: nbdcopy the export at $SOCK (nbdkit $NBDKIT_PID) to null:, one line
# "name seconds nbdkit-cpu-seconds requests" in $tmpdir/results.
measure ()
{
  local t0 t1 c0 c1
  control POST /stats/reset >/dev/null
  c0=$(cpu_ticks "$NBDKIT_PID")
  t0=$(date +%s.%N)
  nbdcopy "$(nbd_uri)" null:
  t1=$(date +%s.%N)
  c1=$(cpu_ticks "$NBDKIT_PID")
  awk -v n="$1" -v t0="$t0" -v t1="$t1" -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" \
    -v r="$(double_stat folder_requests)" \
    'BEGIN { printf "%s %.3f %.2f %d\n", n, t1 - t0, c / hz, r }' >>"$tmpdir/results"
}

: >"$tmpdir/results"
for ((run = 1; run <= runs; run++)); do
  start_ferry vm="$vm"
  measure ferry
  stop_ferry "$NBDKIT_PID"
  start_vddkfwd vm="moref=$moref" file="$file"
  measure vddk
  stop_ferry "$NBDKIT_PID"
done

# Wrong bytes make a benchmark worthless.
start_vddkfwd vm="moref=$moref" file="$file"
nbdcopy "$(nbd_uri)" "$tmpdir/copy"
stop_ferry "$NBDKIT_PID"
cmp "$tmpdir/copy" "$tmpdir/disk" || fail "the copy through libvixDiskLib differs from the disk"
rm -f "$tmpdir/copy"
echo "correctness: the copy through libvixDiskLib is byte-identical to the disk (cmp)"

echo
printf '%-9s %-40s %7s %7s %7s %9s %8s\n' contender "seconds (every run)" best median MiB/s cpu-nbdkit requests
for c in ferry vddk; do
  awk -v c="$c" -v size="$size_bytes" '$1 == c { t[n] = $2; cpu += $3; req += $4; all = all " " $2; n++ }
    END { asort(t); med = n % 2 ? t[(n + 1) / 2] : (t[n / 2] + t[n / 2 + 1]) / 2
          printf "%-9s %-40s %7.2f %7.2f %7.1f %9.2f %8d\n", c, all, t[1], med,
                 size / 1048576 / t[1], cpu / n, req / n }' "$tmpdir/results"
done
stat_of () { awk -v c="$1" -v f="$2" '$1 == c { t[n++] = $2 } END { asort(t)
  print f == "best" ? t[1] : (n % 2 ? t[(n + 1) / 2] : (t[n / 2] + t[n / 2 + 1]) / 2) }' "$tmpdir/results"; }
best=$(awk -v a="$(stat_of ferry best)" -v b="$(stat_of vddk best)" 'BEGIN { printf "%.2f", a / b }')
median=$(awk -v a="$(stat_of ferry median)" -v b="$(stat_of vddk median)" 'BEGIN { printf "%.2f", a / b }')
# Per run: each vddk run against the ferry run just before it.
per_run=$(awk '$1 == "ferry" { f = $2 } $1 == "vddk" { printf "%s%.2f", sep, f / $2; sep = " " }' "$tmpdir/results")
verdict=ok
awk -v v="$best" 'BEGIN { exit !(v >= 0.9) }' || verdict="target missed"
echo "speed libvixDiskLib / ferry plugin: best $best x, median $median x, per run: $per_run" \
  "(target >= 0.9 x)  $verdict"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit 0
