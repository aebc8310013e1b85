#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Disk cache benchmark: a warm round after the guest changed 1% of a 4 GiB disk, against
# the full fill of round 1, and a cached re-read through the plugin against the first
# read.  On the vSphere double over loopback HTTPS; the bytes fetched are counted by the
# double (/folder bytes, GET /stats), not by ferry.
#
# Targets (ok / target missed; a miss does not fail the script): warm-round bytes fetched
# <= 1.05x the changed bytes, warm-round wall time <= 10% of the full fill's.  The cached
# re-read speedup is printed without a target.
#
# Then the first fill of a large, mostly empty disk (2 TiB holding 64 MiB in 16 areas):
# its time must follow the data, not the capacity (target: under 10 s, and the reopen
# with nothing to fetch under 5 s).
#
# Environment: BENCH_CACHE_SIZE (default 4G; 50% allocated with random data),
# BENCH_CACHE_BIG (default 2T).
# shellcheck source-path=SCRIPTDIR source=../tests/integration/functions.sh
source "$(dirname "$0")/../tests/integration/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy jq curl cmp

size=${BENCH_CACHE_SIZE:-4G}
bytes=$(numfmt --from=iec "$size")
windows=$((bytes / (16 << 20)))

start_double
# Each 16 MiB window: 8 MiB of data in two areas (64 KiB blocks: 0..63 and 128..191).
areas=()
for ((w = 0; w < windows; w++)); do
  areas+=("$((w * 256)):64" "$((w * 256 + 128)):64")
done
make_sparse_disk "$tmpdir/disk" "$size" "${areas[@]}"
rm -f "$tmpdir/disk.tmp"
create_vm bench "disks=$size&power=on&cbt=1" >/dev/null
place_disk bench 2000 "$tmpdir/disk"
rm -f "$tmpdir/disk"
allocated=$((windows * 128 * 65536))
img=$tmpdir/cache.img

now () { date +%s.%N; }
secs () { echo "$2 - $1" | bc -l; }

# round: one warm-migration round as a user runs it (nbdkit-ferry-plugin(1), EXAMPLES):
# snapshot, fill, remove the snapshot, exit.  Sets SECS (wall) and FETCHED.
round ()
{
  local t0 t1
  control POST /stats/reset >/dev/null
  t0=$(now)
  nbdkit -U - "$plugin" provider=vsphere server="$SERVER" user=user \
    password=+"$tmpdir/password" cacert="$CACERT" vm=bench snapshot=create \
    cache="$img" fill=true --run true 2>>"$tmpdir/nbdkit.err"
  t1=$(now)
  [ "$(vm_json bench | jq '.snapshots | length')" = 0 ] || fail "snapshot left behind"
  FETCHED=$(double_stat folder_bytes)
  SECS=$(secs "$t0" "$t1")
}

printf pass >"$tmpdir/password"
round
full=$SECS
full_fetched=$FETCHED
[ "$full_fetched" = "$allocated" ] || fail "round 1 fetched $full_fetched, allocated $allocated"

# The guest changes 1% of the disk: scattered 64 KiB blocks and one sequential run.
changed=$((bytes / 100 / 65536 * 65536))
seq_len=$((changed * 2 / 5 / 65536 * 65536))
nscatter=$(((changed - seq_len) / 65536))
nblocks=$((bytes / 65536))
head -c 65536 /dev/urandom >"$tmpdir/blk"
declare -A seen
n=0
while ((n < nscatter)); do
  b=$(((RANDOM * 32768 + RANDOM) % nblocks))
  [ -z "${seen[$b]:-}" ] || continue
  ((b * 65536 < bytes / 2 || b * 65536 >= bytes / 2 + seq_len)) || continue
  seen[$b]=1
  n=$((n + 1))
  guest_write bench 2000 $((b * 65536)) "$tmpdir/blk"
done
guest_write_random bench 2000 $((bytes / 2)) "$seq_len"

round
warm=$SECS
warm_fetched=$FETCHED

# Cached re-read vs first read, at one snapshot: a fresh cache, then the same again.
snap=$(control POST "/vms/bench/snapshot?name=bench-read" | jq -r .moref)
mkdir -p "$tmpdir/dir"
start_ferry vm=bench snapshot="$snap" cache-dir="$tmpdir/dir"
t0=$(now)
nbdcopy "$(nbd_uri)" null:
t1=$(now)
nbdcopy "$(nbd_uri)" null:
t2=$(now)
stop_ferry "$NBDKIT_PID"
first=$(secs "$t0" "$t1")
cached=$(secs "$t1" "$t2")

ratio () { echo "scale=3; $1 / $2" | bc -l; }
verdict () { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo ok; else echo "target missed"; fi; }
fetch_ratio=$(ratio "$warm_fetched" "$changed")
time_ratio=$(ratio "$warm" "$full")
printf 'disk %s, %d MiB allocated; guest changed %d MiB (1%%)\n' "$size" \
  $((allocated >> 20)) $((changed >> 20))
printf '%-28s %10s %14s\n' round seconds fetched
printf '%-28s %10.2f %14d\n' "full fill (round 1)" "$full" "$full_fetched"
printf '%-28s %10.2f %14d\n' "warm round (1% changed)" "$warm" "$warm_fetched"
printf 'warm fetched / changed bytes: %sx (target <= 1.05x): %s\n' "$fetch_ratio" \
  "$(verdict "$fetch_ratio <= 1.05")"
printf 'warm round / full fill time:  %sx (target <= 0.10x): %s\n' "$time_ratio" \
  "$(verdict "$time_ratio <= 0.10")"
printf 'read through the plugin: first (fetch + cache) %.2f s, cached re-read %.2f s:' \
  "$first" "$cached"
printf ' speedup %sx\n' "$(ratio "$first" "$cached")"

# A large, mostly empty disk: 16 areas of 4 MiB spread over it.
big=${BENCH_CACHE_BIG:-2T}
big_bytes=$(numfmt --from=iec "$big")
areas=()
for ((i = 0; i < 16; i++)); do
  areas+=("$((i * (big_bytes / 16 / 65536))):64")
done
make_sparse_disk "$tmpdir/big" "$big" "${areas[@]}"
create_vm big "disks=$big&power=off&cbt=1" >/dev/null
place_disk big 2000 "$tmpdir/big"
rm -f "$tmpdir/big"
# big_fill: one fill=true run of the big disk's cache; sets SECS and FETCHED.
big_fill ()
{
  local t0 t1
  control POST /stats/reset >/dev/null
  t0=$(now)
  nbdkit -U - "$plugin" provider=vsphere server="$SERVER" user=user \
    password=+"$tmpdir/password" cacert="$CACERT" vm=big cache="$tmpdir/big.img" \
    fill=true --run true 2>>"$tmpdir/nbdkit.err"
  t1=$(now)
  SECS=$(secs "$t0" "$t1")
  FETCHED=$(double_stat folder_bytes)
}
big_fill
first_big=$SECS
[ "$FETCHED" = $((16 * 64 * 65536)) ] || fail "big disk: fetched $FETCHED, not 64 MiB"
big_fill
again_big=$SECS
[ "$FETCHED" = 0 ] || fail "big disk, second run: fetched $FETCHED"
printf '%s disk with 64 MiB of data: first fill %.2f s (target < 10 s): %s; ' "$big" \
  "$first_big" "$(verdict "$first_big < 10")"
printf 'reopen with nothing to fetch %.2f s (target < 5 s): %s\n' "$again_big" \
  "$(verdict "$again_big < 5")"
