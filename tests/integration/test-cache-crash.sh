#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# SIGKILL during a fill, at several points: early, mid-fill, during a bitmap persist
# (its header half written: test-only FERRY_DCACHE_CRASH_AT), and from outside while
# fetching.  Reopening and filling again gives an image identical to the snapshot, and
# the bytes fetched twice are at most the bytes in flight plus one batch.  Then two
# openers of one cache: the second is refused with a clear message.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit jq curl cmp
requires_plugin

start_double
# 160 MiB of data in a 512 MiB disk, in scattered areas.
make_sparse_disk "$tmpdir/disk" 512M 0:400 1000:600 3000:800 6000:760
create_vm crash "disks=512M&power=on&cbt=1" >/dev/null
place_disk crash 2000 "$tmpdir/disk"
allocated=$(((400 + 600 + 800 + 760) * 65536))
snap=$(control POST "/vms/crash/snapshot?name=round1" | jq -r .moref)
disk_view crash 2000 "$tmpdir/view" "$snap"
img=$tmpdir/disk.img
# Bound: 4 connections x 4 MiB requests in flight, plus one 32 MiB batch.
slack=$(((4 * 4 + 32) << 20))
export NBDKIT_FLAGS="-v -D ferry.stats=1"

# crash_and_resume LABEL CRASH-SETTING: fill with a crash, then fill again.
crash_and_resume ()
{
  local label=$1 before after
  rm -f "$img" "$img.dcache"
  control POST /stats/reset >/dev/null
  if FERRY_DCACHE_CRASH_AT=$2 start_ferry vm=crash snapshot="$snap" cache="$img" fill=true
  then
    fail "$label: the crash point was not reached"
  fi
  before=$(double_stat folder_bytes)
  resume "$label" "$before"
}

resume ()
{
  local label=$1 before=$2 after
  control POST /stats/reset >/dev/null
  start_ferry vm=crash snapshot="$snap" cache="$img" fill=true
  after=$(double_stat folder_bytes)
  cmp "$img" "$tmpdir/view" || fail "$label: the resumed cache differs from the snapshot"
  stop_ferry "$NBDKIT_PID"
  echo "$label: fetched $before before the crash, $after after; allocated $allocated," \
    "refetched $((before + after - allocated)) (bound $slack)"
  [ $((before + after - allocated)) -le "$slack" ] ||
    fail "$label: refetched $((before + after - allocated)) bytes, more than $slack"
}

crash_and_resume early fetch:2
crash_and_resume mid fetch:25
crash_and_resume persist persist:3

# From outside: SIGKILL when about half has been fetched.
rm -f "$img" "$img.dcache"
control POST /stats/reset >/dev/null
control POST "/faults?r503=0.1" >/dev/null # slower, so the kill lands mid-fill
nbdkit -f -U "$tmpdir/kill.sock" "$plugin" provider=vsphere server="$SERVER" user=user \
  password=+"$tmpdir/password" cacert="$CACERT" vm=crash snapshot="$snap" cache="$img" \
  fill=true connections=1 2>>"$tmpdir/nbdkit.err" &
pid=$!
cleanup_fn "kill -9 $pid 2>/dev/null"
half_fetched () { [ "$(double_stat folder_bytes)" -ge $((allocated / 3)) ]; }
wait_for half_fetched
kill -9 "$pid" || { tail -n 5 "$tmpdir/nbdkit.err"; fail "nbdkit exited before the kill"; }
wait "$pid" 2>/dev/null || true
control POST "/faults?r503=0" >/dev/null
before=$(double_stat folder_bytes)
[ "$before" -lt "$allocated" ] || echo "note: the fill had finished before the kill"
resume sigkill "$before"

# Two openers: the second is refused, naming the cache and the holder.
start_ferry vm=crash snapshot="$snap" cache="$img"
first=$NBDKIT_PID
if start_ferry vm=crash snapshot="$snap" cache="$img"; then
  fail "a second opener of one cache was accepted"
fi
grep -q "cache $img is in use by another process (pid $first" "$tmpdir/nbdkit.err" ||
  fail "no clear message for the second opener: $(tail -n 3 "$tmpdir/nbdkit.err")"
stop_ferry "$first"
echo OK
