#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# FUSE read benchmark: ferryfs against libnbd's nbdfuse, both mounting the same export of
# one `nbdkit memory` (filled with random data) over a unix socket, measured in the same
# run.  fio reads 64 KiB blocks with O_DIRECT (so each read goes through FUSE and NBD, not
# the page cache): sequential with one reader, random with one reader, and random with four
# readers at once (where multi-threaded reads and several NBD connections matter).
#
# Prints MiB/s for both and the ratio ferryfs / nbdfuse; the target is >= 1.0x (a missed
# target is printed as "target missed" and does not fail the script).
#
# Environment: BENCH_FERRYFS_SIZE (default 1G), BENCH_SECONDS per fio run (default 5),
# BENCH_RUNS (default 2, the best run is kept).
# shellcheck source-path=SCRIPTDIR source=../tests/integration/functions.sh
source "$(dirname "$0")/../tests/integration/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy nbdfuse fio fusermount3 mountpoint jq
[ -e /dev/fuse ] || skip "/dev/fuse is missing"
[ -x "$ferryfs" ] || skip "$ferryfs is not built (run make)"

size=${BENCH_FERRYFS_SIZE:-1G}
secs=${BENCH_SECONDS:-5}
runs=${BENCH_RUNS:-2}

# The export: nbdkit memory with random data in it.
sock=$tmpdir/mem.sock
nbdkit -U "$sock" -P "$tmpdir/mem.pid" --threads 16 memory "$size"
cleanup_fn "kill $(cat "$tmpdir/mem.pid") 2>/dev/null"
uri="nbd+unix:///?socket=$sock"
head -c "$size" /dev/urandom >"$tmpdir/data"
nbdcopy "$tmpdir/data" "$uri"
rm -f "$tmpdir/data"
echo "export: nbdkit memory $size, random data, unix socket; fio 64 KiB O_DIRECT reads," \
  "${secs} s per run, best of $runs"

start_ferryfs "$tmpdir/ferryfs" "$uri"
mkdir -p "$tmpdir/nbdfuse"
nbdfuse -r -P "$tmpdir/nbdfuse.pid" "$tmpdir/nbdfuse" "$uri" &
nbdfuse_pid=$!
cleanup_fn "fusermount3 -u '$tmpdir/nbdfuse' 2>/dev/null; wait $nbdfuse_pid 2>/dev/null"
wait_for test -s "$tmpdir/nbdfuse.pid"
wait_for mountpoint -q "$tmpdir/nbdfuse"

declare -A files
files=([ferryfs]="$tmpdir/ferryfs/disks/disk0" [nbdfuse]="$tmpdir/nbdfuse/nbd")
cmp -n 16M "${files[ferryfs]}" "${files[nbdfuse]}"

# mibs FILE RW JOBS: the best MiB/s of $runs fio runs.
mibs ()
{
  local best=0 i bw
  for ((i = 0; i < runs; i++)); do
    bw=$(fio --name=bench --filename="$1" --readonly --rw="$2" --bs=64k --direct=1 \
      --ioengine=psync --numjobs="$3" --group_reporting --time_based --runtime="$secs" \
      --randseed=$((i + 1)) --output-format=json |
      jq '.jobs[0].read.bw_bytes / 1048576 | floor')
    ((bw > best)) && best=$bw
  done
  echo "$best"
}

missed=0
printf '%-26s %12s %12s %8s\n' "64 KiB reads" "ferryfs" "nbdfuse" "ratio"
for test in "sequential read 1" "random randread 1" "random-4-readers randread 4"; do
  read -r label rw jobs <<<"$test"
  f=$(mibs "${files[ferryfs]}" "$rw" "$jobs")
  n=$(mibs "${files[nbdfuse]}" "$rw" "$jobs")
  ratio=$(awk -v f="$f" -v n="$n" 'BEGIN { printf "%.2f", n ? f / n : 0 }')
  verdict=ok
  awk -v r="$ratio" 'BEGIN { exit !(r < 1.0) }' && { verdict="target missed (>= 1.0x)"; missed=1; }
  printf '%-26s %7s MiB/s %7s MiB/s %7sx  %s\n' "$label" "$f" "$n" "$ratio" "$verdict"
done
if [ $missed = 0 ]; then echo "ferryfs: all targets met (>= 1.0x nbdfuse)"; fi
