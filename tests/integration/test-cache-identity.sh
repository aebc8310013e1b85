#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The cache's metadata is bound to its image: when the image is removed, truncated,
# hole-punched, replaced by another cache's image or (with verify=true) changed in place,
# fill=true refetches the whole disk and the image equals the snapshot again — never the
# old "0 bytes fetched" over zeros or another disk's bytes.  Cache files are created
# 0600, and a second process given the same image with another metadata file is refused
# with a message naming the holder.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit jq curl cmp fallocate stat
requires_plugin

start_double
make_sparse_disk "$tmpdir/disk" 64M 0:16 200:40 900:24
create_vm idn "disks=64M&power=on&cbt=1" >/dev/null
place_disk idn 2000 "$tmpdir/disk"
snap=$(control POST "/vms/idn/snapshot?name=s1" | jq -r .moref)
disk_view idn 2000 "$tmpdir/view" "$snap"
allocated=$(((16 + 40 + 24) * 65536))
img=$tmpdir/disk.img
export NBDKIT_FLAGS="-v -D ferry.stats=1"

# fill LABEL [PARAMS...]: one fill=true run; the image must then equal the snapshot.
# Sets FETCHED (bytes the double served) and STATS (the cache's line at unload).
fill ()
{
  local label=$1
  shift
  control POST /stats/reset >/dev/null
  : >"$tmpdir/nbdkit.err"
  start_ferry vm=idn snapshot="$snap" cache="$img" fill=true "$@"
  FETCHED=$(double_stat folder_bytes)
  cmp "$img" "$tmpdir/view" || fail "$label: the cache differs from the snapshot"
  stop_ferry "$NBDKIT_PID"
  STATS=$(grep 'debug: cache .*: hits' "$tmpdir/nbdkit.err" | tail -n1)
  echo "$label: fetched $FETCHED"
}
# full LABEL: the last fill found the image not to be its metadata's and refetched it all.
full ()
{
  [ "$FETCHED" = "$allocated" ] || fail "$1: fetched $FETCHED, a full refetch is $allocated"
  grep -q 'full refetch: image mismatch' <<<"$STATS" ||
    fail "$1: no image mismatch reported: $STATS"
}

fill first
[ "$FETCHED" = "$allocated" ] || fail "first: fetched $FETCHED of $allocated"
for f in "$img" "$img.dcache" "$img.dcache.lock"; do
  [ "$(stat -c %a "$f")" = 600 ] || fail "$f has mode $(stat -c %a "$f"), not 600"
done
fill untouched
[ "$FETCHED" = 0 ] || fail "untouched: fetched $FETCHED"

rm "$img"
fill removed
full removed

truncate -s 0 "$img"
fill truncated
full truncated

fallocate -p -o $((210 * 65536)) -l 65536 "$img"
fill hole-punched
full hole-punched

# Another cache of another disk, its image moved over ours.
make_sparse_disk "$tmpdir/disk2" 64M 0:16 200:40 900:24
create_vm other "disks=64M&power=off&cbt=1" >/dev/null
place_disk other 2000 "$tmpdir/disk2"
start_ferry vm=other cache="$tmpdir/other.img" fill=true
stop_ferry "$NBDKIT_PID"
mv "$tmpdir/other.img" "$img"
fill replaced
full replaced

# One byte changed in place: found by reading every block back.
printf x | dd of="$img" bs=1 seek=$((900 * 65536 + 12345)) conv=notrunc status=none
fill verify verify=true
full verify

# The same image with another metadata file, while the first holds it.
mkdir -p "$tmpdir/a" "$tmpdir/b"
start_ferry vm=idn snapshot="$snap" cache="$img" cache-dir="$tmpdir/a"
first=$NBDKIT_PID
if start_ferry vm=idn snapshot="$snap" cache="$img" cache-dir="$tmpdir/b"; then
  fail "a second opener of one image with another metadata file was accepted"
fi
grep -q "cache image $img is in use by another process (pid $first)" "$tmpdir/nbdkit.err" ||
  fail "no clear message for the second opener: $(tail -n 3 "$tmpdir/nbdkit.err")"
stop_ferry "$first"
echo OK
