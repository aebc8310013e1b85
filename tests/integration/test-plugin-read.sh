#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The plugin serves a powered-off VM's disks: qemu-img compare and nbdcopy against the
# source file, nbdinfo --map equal to the allocated areas, one export per disk, lookup by
# name, moref and BIOS uuid.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit nbdinfo nbdcopy qemu-img jq curl
requires_plugin

start_double

# A 4 GiB sparse disk: random data in scattered areas (in 64 KiB blocks), some touching
# each other, one at the very end.
make_sparse_disk "$tmpdir/disk0" 4G 0:1 3:2 5:1 1000:17 16384:64 30000:1 65535:1
make_sparse_disk "$tmpdir/disk1" 1G 7:3
create_vm "web 01 (prod)" "disks=4G,1G&power=off&cbt=1" >"$tmpdir/vm.json"
place_disk "web 01 (prod)" 2000 "$tmpdir/disk0"
place_disk "web 01 (prod)" 2001 "$tmpdir/disk1"

start_ferry vm="web 01 (prod)"

# One export per disk, the first one the default.
nbdinfo --list --json "$(nbd_uri)" >"$tmpdir/list.json"
jq -r '.exports[]."export-name"' "$tmpdir/list.json" >"$tmpdir/names"
printf '%s\n' 2000-hard-disk-1 2001-hard-disk-2 | cmp - "$tmpdir/names"
[ "$(nbdinfo --size "$(nbd_uri)")" = 4294967296 ]
[ "$(nbdinfo --size "$(nbd_uri 2001-hard-disk-2)")" = 1073741824 ]

# Byte-identical, two different readers.
qemu-img compare -f raw -F raw "$(nbd_uri 2000-hard-disk-1)" "$tmpdir/disk0"
nbdcopy "$(nbd_uri 2001-hard-disk-2)" "$tmpdir/copy1"
cmp "$tmpdir/copy1" "$tmpdir/disk1"

# The map: exactly the areas written, merged, in bytes.
data_map "$(nbd_uri 2000-hard-disk-1)" >"$tmpdir/map"
cat >"$tmpdir/expected" <<MAP
0 65536
196608 196608
65536000 1114112
1073741824 4194304
1966080000 65536
4294901760 65536
MAP
diff -u "$tmpdir/expected" "$tmpdir/map" || fail "nbdinfo --map differs from the areas written"

# The write path does not exist: a write is refused by nbdkit.
if nbdsh -u "$(nbd_uri)" -c 'h.pwrite(b"x" * 512, 0)' 2>"$tmpdir/write.err"; then
  fail "a write to the export succeeded"
fi
grep -qi "read-only\\|not permitted\\|EPERM\\|EROFS" "$tmpdir/write.err" || fail "unexpected write error: $(cat "$tmpdir/write.err")"
stop_ferry "$NBDKIT_PID"

# The same VM by moref and by BIOS uuid, one disk by key, by index and by path.
moref=$(jq -r .moref "$tmpdir/vm.json")
uuid=$(jq -r .uuid "$tmpdir/vm.json")
start_ferry vm="$moref" disk=2001
[ "$(nbdinfo --size "$(nbd_uri)")" = 1073741824 ]
[ "$(nbdinfo --list --json "$(nbd_uri)" | jq '.exports | length')" = 1 ]
stop_ferry "$NBDKIT_PID"
start_ferry vm-uuid="$uuid" disk=1
[ "$(nbdinfo --size "$(nbd_uri)")" = 1073741824 ]
stop_ferry "$NBDKIT_PID"
start_ferry vm-uuid="$uuid" disk="[$DATASTORE] web 01 (prod)/web 01 (prod).vmdk"
nbdcopy "$(nbd_uri)" "$tmpdir/copy0"
cmp "$tmpdir/copy0" "$tmpdir/disk0"
