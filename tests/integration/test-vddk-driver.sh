#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# libvixDiskLib.so.8 under the conformance driver, which replays nbdkit's vddk plugin's
# calls (dump-plugin sequence, fork, InitEx, ConnectEx/Open by offsets, GetInfo, the
# allocated-blocks probe and 32 GiB windows, 64 ReadAsync in flight with every callback
# counted, two handles in two threads) against the vSphere double: the bytes equal the
# disk, the map equals CBT's, and a disk whose size is not a multiple of 64 KiB gets its
# last sector and its partial last chunk right.
source "$(dirname "$0")/functions.sh"
source "$top/tests/vddk/functions.sh"
set -euo pipefail
requires jq curl python3
requires_vddk

start_double

# 131075 sectors: 1024 chunks of 64 KiB and 3 sectors; data at the start, in the middle
# across a chunk boundary, and in the very last sector.  The second disk is as large and
# empty.
size=$((131075 * 512))
make_sparse_disk "$tmpdir/disk0" "$size" 0:1 7:2 500:31
printf 'the last sector of the disk!' | dd of="$tmpdir/disk0" bs=512 seek=131074 conv=notrunc status=none
head -c 70000 /dev/urandom | dd of="$tmpdir/disk0" bs=1 seek=$((300 * 65536 - 1000)) conv=notrunc status=none
create_vm "vddk one" "disks=$size,$size&power=off&cbt=1" >"$tmpdir/vm.json"
place_disk "vddk one" 2000 "$tmpdir/disk0"
disk_view "vddk one" 2000 "$tmpdir/view0"
disk_view "vddk one" 2001 "$tmpdir/view1"
cmp "$tmpdir/view0" "$tmpdir/disk0"

vddk_env "$tmpdir/vm.json" 0
VDDK_FILE2=$(jq -r '.disks[1].fileName' "$tmpdir/vm.json")
export VDDK_FILE2
mkdir "$tmpdir/out"
"$vddk_driver" "$vddk_libdir" conform "$tmpdir/out" >"$tmpdir/driver.out" 2>"$tmpdir/driver.err" ||
  fail "the driver failed: $(cat "$tmpdir/driver.err")"
cat "$tmpdir/driver.out"

grep -qx 'vddk_library_version=8' "$tmpdir/driver.out"
grep -qx 'vddk_symbols=23' "$tmpdir/driver.out"
grep -qx 'vddk_transport_modes=nbdssl' "$tmpdir/driver.out"
grep -qx 'capacity=131075' "$tmpdir/driver.out"
# Every ReadAsync called back once (the driver checks each one; these are the totals).
grep -E "disk.raw: requests=([0-9]+) callbacks=\\1\$" "$tmpdir/driver.out" ||
  fail "callbacks do not match requests"

cmp "$tmpdir/out/disk.raw" "$tmpdir/view0"
cmp "$tmpdir/out/disk-a.raw" "$tmpdir/view0"
cmp "$tmpdir/out/disk-b.raw" "$tmpdir/view1"

# The map: the chunks with data (the last sector's partial chunk among them).
expected_map "$tmpdir/disk0" "$size" >"$tmpdir/expected"
diff -u "$tmpdir/expected" "$tmpdir/out/map" || fail "the allocated blocks differ from CBT's"

# The empty disk: nothing allocated but the partial chunk past the last whole one, which
# the window past the end reports as allocated.
export VDDK_FILE=$VDDK_FILE2
mkdir "$tmpdir/out1"
"$vddk_driver" "$vddk_libdir" conform "$tmpdir/out1" >"$tmpdir/driver1.out" 2>"$tmpdir/driver1.err" ||
  fail "the driver failed on the empty disk: $(cat "$tmpdir/driver1.err")"
echo "67108864 1536" | diff -u - "$tmpdir/out1/map" || fail "the empty disk's map is wrong"
cmp "$tmpdir/out1/disk.raw" "$tmpdir/view1"

# A 40 GiB disk is mapped in two windows (32 GiB + 8 GiB); an area across the boundary
# comes back from both and is merged.
make_sparse_disk "$tmpdir/big" 40G 0:1 524287:2 655359:1
create_vm "vddk big" "disks=40G&power=off&cbt=1" >"$tmpdir/big.json"
place_disk "vddk big" 2000 "$tmpdir/big"
vddk_env "$tmpdir/big.json" 0
mkdir "$tmpdir/out2"
"$vddk_driver" "$vddk_libdir" map "$tmpdir/out2" >"$tmpdir/driver2.out" 2>"$tmpdir/driver2.err" ||
  fail "the driver failed on the 40 GiB disk: $(cat "$tmpdir/driver2.err")"
expected_map "$tmpdir/big" $((40 << 30)) >"$tmpdir/expected2"
cat "$tmpdir/expected2"
grep -qx '34359672832 131072' "$tmpdir/expected2"
diff -u "$tmpdir/expected2" "$tmpdir/out2/map" || fail "the 40 GiB disk's map is wrong"
