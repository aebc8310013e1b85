#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Warm rounds through the disk cache: snapshot -> fill -> remove the snapshot, three
# times, with the guest writing in between (scattered small writes, a large sequential
# write, writes straddling block boundaries, a write after a round's snapshot).  After
# every round the cache image equals the disk as of that round's snapshot, and round N
# fetches exactly the changed 64 KiB blocks (the double's own folder_bytes counter and
# the plugin's stats).  Then reads through the plugin are served from the cache.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy jq curl cmp
requires_plugin

start_double
make_sparse_disk "$tmpdir/disk" 512M 0:16 100:40 2000:30 5000:200
create_vm warm "disks=512M&power=on&cbt=1" >/dev/null
place_disk warm 2000 "$tmpdir/disk"
img=$tmpdir/cache/disk.img
mkdir -p "$tmpdir/cache"
export NBDKIT_FLAGS="-v -D ferry.stats=1"

# round N: fill the cache at a new snapshot; sets SNAP, FETCHED (server-side) and PLUGIN
# (the plugin's own count); leaves nbdkit running with the snapshot until end_round.
round ()
{
  control POST /stats/reset >/dev/null
  start_ferry vm=warm snapshot=create cache="$img" fill=true
  SNAP=$(vm_json warm | jq -r '.snapshots[0].moref')
  FETCHED=$(double_stat folder_bytes)
}
end_round ()
{
  # The snapshot view before nbdkit removes the snapshot.
  disk_view warm 2000 "$tmpdir/view" "$SNAP"
  cmp "$img" "$tmpdir/view" || fail "round $1: the cache differs from snapshot $SNAP"
  stop_ferry "$NBDKIT_PID"
  PLUGIN=$(cache_stat fetched)
  [ "$(vm_json warm | jq '.snapshots | length')" = 0 ] || fail "snapshot left behind"
}

# Round 1: the allocated areas only (16+40+30+200 blocks of 64 KiB).
round 1
end_round 1
allocated=$(((16 + 40 + 30 + 200) * 65536))
echo "round 1: fetched $FETCHED (plugin $PLUGIN), allocated $allocated"
[ "$FETCHED" = "$allocated" ] || fail "round 1 fetched $FETCHED, allocated is $allocated"
[ "$PLUGIN" = "$allocated" ] || fail "round 1: plugin says it fetched $PLUGIN"

# Guest writes before round 2.
writes2=()
gw ()
{
  guest_write_random warm 2000 "$1" "$2"
  writes2+=("$1:$2")
}
for _ in $(seq 1 25); do gw $(((RANDOM * 32768 + RANDOM) % (500 << 20))) 4096; done
gw $((300 << 20)) $((8 << 20))               # large sequential, into a hole
gw $((3 * 65536 - 100)) 200                   # straddles blocks 2|3, over data
gw $((7000 * 65536 - 1)) 2                    # straddles 6999|7000, in a hole
gw $((5100 * 65536 + 65000)) 70000            # three blocks over data
gw $(((512 << 20) - 512)) 512                 # the last sector

round 2
# A write after round 2's snapshot: not in round 2, in round 3.
guest_write_random warm 2000 $((200 << 20)) 100000
writes3=("$((200 << 20)):100000")
end_round 2
expect=$(changed_bytes "${writes2[@]}")
echo "round 2: fetched $FETCHED (plugin $PLUGIN), changed blocks $expect"
[ "$FETCHED" = "$expect" ] || fail "round 2 fetched $FETCHED, the changed blocks are $expect"
[ "$PLUGIN" = "$expect" ] || fail "round 2: plugin says it fetched $PLUGIN"

for _ in $(seq 1 10); do
  off=$(((RANDOM * 32768 + RANDOM) % (500 << 20)))
  guest_write_random warm 2000 "$off" 9000
  writes3+=("$off:9000")
done
round 3
end_round 3
expect=$(changed_bytes "${writes3[@]}")
echo "round 3: fetched $FETCHED (plugin $PLUGIN), changed blocks $expect"
[ "$FETCHED" = "$expect" ] || fail "round 3 fetched $FETCHED, the changed blocks are $expect"

# No change since round 3 and the same point in time: reads through the plugin come from
# the cache, nothing is fetched, and they equal the disk.
snap=$(control POST "/vms/warm/snapshot?name=inspect" | jq -r .moref)
control POST /stats/reset >/dev/null
start_ferry vm=warm snapshot="$snap" cache="$img"
nbdcopy "$(nbd_uri)" "$tmpdir/copy"
disk_view warm 2000 "$tmpdir/view" "$snap"
cmp "$tmpdir/copy" "$tmpdir/view"
[ "$(double_stat folder_bytes)" = 0 ] || fail "a read of an unchanged cache fetched data"
stop_ferry "$NBDKIT_PID"
grep -q 'debug: cache .*hits [1-9][0-9]* bytes, misses 0 bytes' "$tmpdir/nbdkit.err"
echo "OK"
