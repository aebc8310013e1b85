#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# libvixDiskLib.so.8 is shaped as its consumers need: an ELF shared object with soname
# libvixDiskLib.so.8 that exports the 23 VixDiskLib_* functions nbdkit's vddk plugin
# resolves and nothing else, binds its own symbols (-Bsymbolic), has no constructor of its
# own, resolves all its dependencies (ldd -r), and installs as
# vmware-vix-disklib-distrib/lib64/{libvixDiskLib.so.8, libvixDiskLib.so} where Forklift's
# validation (file -E .../lib64/libvixDiskLib.so) and nbdkit's library search find it.
source "$(dirname "$0")/functions.sh"
source "$top/tests/vddk/functions.sh"
set -euo pipefail
requires file nm readelf objdump ldd make
requires_vddk

lib=$vddk_libdir/lib64/libvixDiskLib.so.8
file -L "$lib" | grep -q 'ELF 64-bit LSB shared object' || fail "$(file -L "$lib")"

# Exactly the 23 functions.
nm -D --defined-only "$lib" | awk '{ print $3 }' | sort >"$tmpdir/exports"
sort >"$tmpdir/expected" <<'NAMES'
VixDiskLib_AllocateConnectParams
VixDiskLib_Close
VixDiskLib_ConnectEx
VixDiskLib_Create
VixDiskLib_Disconnect
VixDiskLib_Exit
VixDiskLib_Flush
VixDiskLib_FreeBlockList
VixDiskLib_FreeConnectParams
VixDiskLib_FreeErrorText
VixDiskLib_FreeInfo
VixDiskLib_GetErrorText
VixDiskLib_GetInfo
VixDiskLib_GetTransportMode
VixDiskLib_InitEx
VixDiskLib_ListTransportModes
VixDiskLib_Open
VixDiskLib_QueryAllocatedBlocks
VixDiskLib_Read
VixDiskLib_ReadAsync
VixDiskLib_Wait
VixDiskLib_Write
VixDiskLib_WriteAsync
NAMES
diff -u "$tmpdir/expected" "$tmpdir/exports" || fail "the exported symbols differ"

readelf -d "$lib" >"$tmpdir/dynamic"
grep -q 'Library soname: \[libvixDiskLib.so.8\]' "$tmpdir/dynamic" || fail "soname"
grep -E -q 'FLAGS.*SYMBOLIC' "$tmpdir/dynamic" || fail "not linked with -Bsymbolic"

# Nothing runs at load time but the C runtime's own frame_dummy.
objdump -s -j .init_array "$lib" | awk '/^ [0-9a-f]+ / {
  for (i = 2; i <= 4; i += 2)
    if ($i ~ /^[0-9a-f]{8}$/ && $(i+1) ~ /^[0-9a-f]{8}$/) print $i $(i+1) }' >"$tmpdir/init"
[ -s "$tmpdir/init" ] || fail "no .init_array entries found (objdump output changed?)"
while read -r le; do
  addr=$(echo "$le" | sed -E 's/(..)(..)(..)(..)(..)(..)(..)(..)/\8\7\6\5\4\3\2\1/' | sed 's/^0*//')
  nm "$lib" | grep -E "^0*$addr [tT] " | grep -qw frame_dummy ||
    fail "a constructor at 0x$addr: $(nm "$lib" | grep -E "^0*$addr " || true)"
done <"$tmpdir/init"

ldd -r "$lib" >"$tmpdir/ldd" 2>&1
if grep -E 'undefined symbol|not found' "$tmpdir/ldd"; then
  fail "unresolved dependencies"
fi

# The install layout, under DESTDIR.
make -s -C "$top" install-vddk DESTDIR="$tmpdir/root" VDDK_DISTRIB=/opt/vmware-vix-disklib-distrib >/dev/null
distrib=$tmpdir/root/opt/vmware-vix-disklib-distrib
[ "$(readlink "$distrib/lib64/libvixDiskLib.so")" = libvixDiskLib.so.8 ] || fail "no libvixDiskLib.so link"
cmp "$distrib/lib64/libvixDiskLib.so.8" "$lib"
# Forklift's whole validation of a VDDK init image.
file -E "$distrib/lib64/libvixDiskLib.so"
file -E -L "$distrib/lib64/libvixDiskLib.so" | grep -q 'ELF 64-bit LSB shared object'
# nbdkit --dump-plugin's sequence, from the installed tree.
"$vddk_driver" "$distrib" dump >"$tmpdir/dump"
cat "$tmpdir/dump"
grep -qx 'vddk_library_version=8' "$tmpdir/dump"
grep -qx 'vddk_symbols=23' "$tmpdir/dump"
