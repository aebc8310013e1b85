#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry cdi-import's Resize phase, as CDI's (IMPORTER_IMAGE_SIZE): a cold import grows
# disk.img to the requested size, or to the filesystem's room after FILESYSTEM_OVERHEAD
# when that is less (warned; a small tmpfs, root only), with the disk's bytes first and
# zeros after, mode 0660.  A warm import grows it at its first stage: a restarted stage
# fetches nothing, a delta stage only the changed blocks and does not resize again, and
# the final disk is grown and correct, also when the final stage runs again.  A block
# volume is not resized.  A junk or too small size fails with a clear error.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
# shellcheck source-path=SCRIPTDIR source=cdi-functions.sh
source "$(dirname "$0")/cdi-functions.sh"
set -euo pipefail
requires jq curl cmp python3
requires_ferry
/usr/bin/python3 -c 'import pyVmomi' 2>/dev/null || skip "python3-pyvmomi is not installed"

start_double

# import_fails VM DIR LOG WANT [VAR=VALUE...]: exit 1, WANT in the message, no image.
import_fails ()
{
  local vm=$1 dir=$2 log=$3 want=$4 rc=0
  shift 4
  mkdir -p "$dir"
  cdi_import "$vm" "$dir" "$log" "$@" || rc=$?
  [ $rc = 1 ] || fail "$*: exit $rc, not 1: $(cat "$log")"
  grep -q -- "$want" <<<"$(check_message "$dir.msg")" ||
    fail "$*: message: $(cat "$dir.msg")"
  [ ! -e "$dir/disk.img" ] || fail "$*: a failed import left disk.img"
}

cap=$((64 << 20))
# check_image FILE SIZE VIEW: FILE has SIZE bytes, the disk's (VIEW) first, zeros after,
# and mode 0660.
check_image ()
{
  local size
  size=$(stat -c %s "$1")
  [ "$size" = "$2" ] || fail "$1 has $size bytes, not $2"
  cmp -n "$cap" "$1" "$3" || fail "$1 differs from the disk in its first $cap bytes"
  cmp -i "$cap:0" -n $(($2 - cap)) "$1" /dev/zero || fail "$1's new space is not zeros"
  [ "$(stat -c %a "$1")" = 660 ] || fail "$1 has mode $(stat -c %a "$1"), not 660"
}

# fetched_ok WHAT CHANGED: the last stage fetched the CHANGED bytes (up to 5% more).
fetched_ok ()
{
  local fetched
  fetched=$(double_stat folder_bytes)
  echo "$1: changed $2 bytes, fetched $fetched"
  ((fetched >= $2 && fetched * 100 <= $2 * 105)) || fail "$1 fetched $fetched bytes for $2 changed"
}

make_sparse_disk "$tmpdir/src" 64M 0:400 500:400
create_vm cold01 "disks=64M&cbt=1" >/dev/null
place_disk cold01 2000 "$tmpdir/src"
disk_view cold01 2000 "$tmpdir/view-cold"

# Bad sizes: junk, and less than the disk (an image does not shrink).
import_fails cold01 "$tmpdir/bad1" "$tmpdir/bad1.err" \
  "IMPORTER_IMAGE_SIZE 10Gx: not a quantity's suffix" IMPORTER_IMAGE_SIZE=10Gx
import_fails cold01 "$tmpdir/bad2" "$tmpdir/bad2.err" \
  "IMPORTER_IMAGE_SIZE 32Mi is 33554432 bytes, less than the 67108864 bytes of the disk" \
  IMPORTER_IMAGE_SIZE=32Mi

# Cold import: the requested size (an exponent form, not a multiple of 512).
mkdir -p "$tmpdir/pvc-cold"
cdi_import cold01 "$tmpdir/pvc-cold" "$tmpdir/cold.err" IMPORTER_IMAGE_SIZE=1e8 ||
  fail "cold import failed: $(cat "$tmpdir/cold.err")"
[ "$(check_message "$tmpdir/pvc-cold.msg")" = "Import Complete" ] || fail "cold message"
check_image "$tmpdir/pvc-cold/disk.img" 100000000 "$tmpdir/view-cold"
! grep -q warning "$tmpdir/cold.err" || fail "cold import warned: $(cat "$tmpdir/cold.err")"

# More than the room: the room (a tmpfs of 80 MiB; its free space less the overhead,
# rounded down to 1 MiB), warned.
if [ "$(id -u)" = 0 ] && mkdir -p "$tmpdir/small" &&
  mount -t tmpfs -o size=80M ferry-test "$tmpdir/small" 2>/dev/null; then
  cleanup_fn "umount $tmpdir/small"
  room=$(python3 -c 'import os, sys; s = os.statvfs(sys.argv[1])
print(int(s.f_bavail * s.f_frsize * (1 - 0.055)) // 2**20 * 2**20)' "$tmpdir/small")
  cdi_import cold01 "$tmpdir/small" "$tmpdir/room.err" IMPORTER_IMAGE_SIZE=1Ei ||
    fail "import into a small PVC failed: $(cat "$tmpdir/room.err")"
  check_image "$tmpdir/small/disk.img" "$room" "$tmpdir/view-cold"
  grep -q "warning: .*IMPORTER_IMAGE_SIZE 1Ei asks for 1152921504606846976 bytes.* room for $room" \
    "$tmpdir/room.err" || fail "no warning of the room: $(cat "$tmpdir/room.err")"
else
  echo "room variant skipped: no tmpfs mount here"
fi

# Warm import of a running VM: stage 1 grows the image, once.
create_vm web01 "disks=64M&cbt=1&power=on" >/dev/null
place_disk web01 2000 "$tmpdir/src"
change_of () { vm_json web01 | jq -r --arg s "$1" '.snapshots[] | select(.moref == $s) | .changeIds["2000"]'; }
pvc=$tmpdir/pvc-warm
mkdir -p "$pvc"
s1=$(control POST "/vms/web01/snapshot?name=fl-1" | jq -r .moref)
disk_view web01 2000 "$tmpdir/view1" "$s1"
for run in 1 2; do
  control POST /stats/reset >/dev/null
  cdi_import web01 "$pvc" "$tmpdir/stage1-$run.err" IMPORTER_CURRENT_CHECKPOINT="$s1" \
    IMPORTER_IMAGE_SIZE=100Mi || fail "stage 1 (run $run) failed: $(cat "$tmpdir/stage1-$run.err")"
  check_image "$pvc/disk.img" $((100 << 20)) "$tmpdir/view1"
done
[ "$(double_stat folder_bytes)" = 0 ] ||
  fail "stage 1 run again fetched $(double_stat folder_bytes) bytes, not 0"
change1=$(change_of "$s1")

# Stage 2: only the changed blocks; asked for more, it still does not resize (CDI resizes
# after a full copy only); run again, it fetches nothing.
writes=(1000000:70000 30000000:65536)
for w in "${writes[@]}"; do guest_write_random web01 2000 "${w%:*}" "${w#*:}"; done
remove_snapshot web01 "$s1"
s2=$(control POST "/vms/web01/snapshot?name=fl-2" | jq -r .moref)
disk_view web01 2000 "$tmpdir/view2" "$s2"
for run in 1 2; do
  control POST /stats/reset >/dev/null
  cdi_import web01 "$pvc" "$tmpdir/stage2-$run.err" IMPORTER_CURRENT_CHECKPOINT="$s2" \
    IMPORTER_PREVIOUS_CHECKPOINT="$change1" IMPORTER_IMAGE_SIZE=120Mi ||
    fail "stage 2 (run $run) failed: $(cat "$tmpdir/stage2-$run.err")"
  check_image "$pvc/disk.img" $((100 << 20)) "$tmpdir/view2"
  [ $run = 2 ] || fetched_ok "stage 2" "$(changed_bytes "${writes[@]}")"
done
[ "$(double_stat folder_bytes)" = 0 ] ||
  fail "stage 2 run again fetched $(double_stat folder_bytes) bytes, not 0"
change2=$(change_of "$s2")

# The final stage, and the same again (ferry's state is gone then: the changeId tells).
writes=(50000000:200000)
guest_write_random web01 2000 50000000 200000
remove_snapshot web01 "$s2"
s3=$(control POST "/vms/web01/snapshot?name=fl-3" | jq -r .moref)
disk_view web01 2000 "$tmpdir/view3" "$s3"
for run in 1 2; do
  control POST /stats/reset >/dev/null
  cdi_import web01 "$pvc" "$tmpdir/stage3-$run.err" IMPORTER_CURRENT_CHECKPOINT="$s3" \
    IMPORTER_PREVIOUS_CHECKPOINT="$change2" IMPORTER_FINAL_CHECKPOINT=true \
    IMPORTER_IMAGE_SIZE=100Mi || fail "final stage (run $run) failed: $(cat "$tmpdir/stage3-$run.err")"
  [ "$(check_message "$pvc.msg")" = "Import Complete" ] || fail "final stage message"
  check_image "$pvc/disk.img" $((100 << 20)) "$tmpdir/view3"
  fetched_ok "final stage (run $run)" "$(changed_bytes "${writes[@]}")"
  [ ! -e "$pvc/.ferry" ] || fail "the final stage left ferry's state on the PVC"
done

# Block volume: no resize, whatever the size asked.
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null &&
  truncate -s 64M "$tmpdir/blk" && loop=$(losetup -f --show "$tmpdir/blk" 2>/dev/null); then
  cleanup_fn "losetup -d $loop"
  mkdir -p "$tmpdir/blkpvc"
  BLOCK=$loop cdi_import cold01 "$tmpdir/blkpvc" "$tmpdir/blk.err" IMPORTER_IMAGE_SIZE=1Gi ||
    fail "block import failed: $(cat "$tmpdir/blk.err")"
  cmp "$loop" "$tmpdir/view-cold" || fail "the block volume differs from the disk"
  ! grep -q "resized\|warning" "$tmpdir/blk.err" || fail "block volume: $(cat "$tmpdir/blk.err")"
else
  echo "block variant skipped: no loop device here"
fi
