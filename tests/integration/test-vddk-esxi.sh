#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# libvixDiskLib.so.8 against a stand-alone ESXi host (the double's -esx mode: datacenter
# ha-datacenter, HostAgent API): the conformance driver reads a disk byte-identically and
# maps it as CBT does.
source "$(dirname "$0")/functions.sh"
source "$top/tests/vddk/functions.sh"
set -euo pipefail
requires jq curl python3
requires_vddk

start_double -esx
[ "$DATACENTER" = ha-datacenter ] || fail "the double is not in ESXi mode ($DATACENTER)"

make_sparse_disk "$tmpdir/disk0" 256M 1:3 4000:2
create_vm "esxi vm" "disks=256M&power=off&cbt=1" >"$tmpdir/vm.json"
place_disk "esxi vm" 2000 "$tmpdir/disk0"
vddk_env "$tmpdir/vm.json" 0
mkdir "$tmpdir/out"
"$vddk_driver" "$vddk_libdir" conform "$tmpdir/out" >"$tmpdir/driver.out" 2>"$tmpdir/driver.err" ||
  fail "the driver failed: $(cat "$tmpdir/driver.err")"
cmp "$tmpdir/out/disk.raw" "$tmpdir/disk0"
cmp "$tmpdir/out/disk-b.raw" "$tmpdir/disk0"
expected_map "$tmpdir/disk0" $((256 << 20)) | diff -u - "$tmpdir/out/map"
