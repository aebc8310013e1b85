#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferryfs over the ferry plugin on the vSphere double: one file per disk, byte-identical
# (cmp) with SEEK_DATA/SEEK_HOLE equal to the written areas; vm.json as the double's
# inventory says; EROFS for every write; fusermount3 -u and SIGTERM leave no process and no
# mount; with snapshot=create the snapshot is gone once ferryfs has exited.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit fusermount3 mountpoint jq curl python3
requires_plugin
[ -e /dev/fuse ] || skip "/dev/fuse is missing"

start_double

make_sparse_disk "$tmpdir/disk0" 256M 0:1 3:2 100:17 4095:1
make_sparse_disk "$tmpdir/disk1" 64M 7:3 1023:1
create_vm "web 01" "disks=256M,64M&power=off&cbt=1&cpus=2&memory=2048" >"$tmpdir/vm-created.json"
place_disk "web 01" 2000 "$tmpdir/disk0"
place_disk "web 01" 2001 "$tmpdir/disk1"
printf pass >"$tmpdir/password"

mp=$tmpdir/mnt
plugin_args=(provider=vsphere server="$SERVER" user=user password=+"$tmpdir/password"
  cacert="$CACERT")
start_ferryfs "$mp" -t 10 -- nbdkit "$plugin" "${plugin_args[@]}" vm="web 01"
nbdkit_pid=$(pgrep -P "$FERRYFS_PID" -x nbdkit) || fail "no nbdkit child of ferryfs"

# The tree.
[ "$(cd "$mp" && echo *)" = "disks inspection.json vm.json" ]
[ "$(cd "$mp/disks" && echo *)" = "hard-disk-1 hard-disk-2" ]
[ "$(stat -c %s "$mp/disks/hard-disk-1")" = 268435456 ]
[ "$(stat -c %s "$mp/disks/hard-disk-2")" = 67108864 ]

# Byte-identical, and the holes where the source has them.
cmp "$mp/disks/hard-disk-1" "$tmpdir/disk0"
cmp "$mp/disks/hard-disk-2" "$tmpdir/disk1"
seek_map "$tmpdir/disk0" >"$tmpdir/map.expected"
seek_map "$mp/disks/hard-disk-1" >"$tmpdir/map"
diff -u "$tmpdir/map.expected" "$tmpdir/map" || fail "SEEK_DATA/SEEK_HOLE differ from the source"
# pread at odd offsets and sizes, across an area boundary and at the very end.
python3 - "$mp/disks/hard-disk-1" "$tmpdir/disk0" <<'PY'
import os, random, sys
a, b = (os.open(p, os.O_RDONLY) for p in sys.argv[1:3])
size = os.fstat(b).st_size
random.seed(7)
cases = [(0, 1), (65535, 3), (196607, 70000), (size - 1, 1), (size - 5, 100), (size, 10)]
cases += [(random.randrange(size), random.randrange(1, 300000)) for _ in range(200)]
for off, n in cases:
    if os.pread(a, n, off) != os.pread(b, n, off):
        sys.exit("pread(%d, %d) differs" % (off, n))
PY

# vm.json: the double's inventory.
jq -S '{moref, name, uuid, instanceUuid, powerState,
        disks: [.disks[] | {key: (.key|tostring), "label": .label, fileName, capacity, uuid, changeId}]}' \
  <(vm_json "web 01") >"$tmpdir/inventory"
jq -S '{moref, name, uuid, instanceUuid, powerState,
        disks: [.disks[] | {key: (.key|tostring), "label": .label, fileName, capacity, uuid, changeId}]}' \
  "$mp/vm.json" >"$tmpdir/served"
diff -u "$tmpdir/inventory" "$tmpdir/served" || fail "vm.json differs from the double's inventory"
jq -e '.cpus == 2 and .memoryMB == 2048 and .firmware == "bios" and .snapshot == null
       and (.nics | length) == 1 and .source.provider == "vsphere"
       and ([.disks[].file] == ["hard-disk-1", "hard-disk-2"])
       and ([.disks[].export] == ["2000-hard-disk-1", "2001-hard-disk-2"])' \
  "$mp/vm.json" >/dev/null || fail "vm.json: $(cat "$mp/vm.json")"

# Read-only everywhere: each attempt fails with EROFS.
python3 - "$mp" <<'PY'
import errno, os, sys
mp = sys.argv[1]
disk = mp + "/disks/hard-disk-1"
attempts = {
    "open for write": lambda: os.open(disk, os.O_WRONLY),
    "open rw": lambda: os.open(disk, os.O_RDWR),
    "truncate": lambda: os.truncate(disk, 0),
    "chmod": lambda: os.chmod(disk, 0o666),
    "create": lambda: os.open(mp + "/disks/new", os.O_CREAT | os.O_WRONLY, 0o644),
    "mkdir": lambda: os.mkdir(mp + "/d"),
    "unlink": lambda: os.unlink(mp + "/vm.json"),
    "rename": lambda: os.rename(disk, mp + "/disks/x"),
    "utime": lambda: os.utime(disk, (0, 0)),
}
for what, fn in attempts.items():
    try:
        fn()
    except OSError as e:
        if e.errno != errno.EROFS:
            sys.exit("%s: %s, expected EROFS" % (what, e))
    else:
        sys.exit("%s succeeded" % what)
PY

# fusermount3 -u: ferryfs exits 0, its nbdkit is gone, nothing is mounted.
fusermount3 -u "$mp"
timeout=30 wait_for sh -c "! kill -0 $FERRYFS_PID 2>/dev/null"
wait "$FERRYFS_PID" || fail "ferryfs exited with $? after fusermount3 -u"
! kill -0 "$nbdkit_pid" 2>/dev/null || fail "nbdkit $nbdkit_pid outlived the mount"
! mountpoint -q "$mp" || fail "still mounted"

# A running VM through snapshot=create; SIGTERM unmounts and the snapshot is removed.
create_vm running "disks=64M&power=on&cbt=1" >/dev/null
place_disk running 2000 "$tmpdir/disk1"
start_ferryfs "$mp" -- nbdkit "$plugin" "${plugin_args[@]}" vm=running snapshot=create
nbdkit_pid=$(pgrep -P "$FERRYFS_PID" -x nbdkit)
jq -e '.snapshot.createdByFerry == true and .powerState == "poweredOn"' "$mp/vm.json" >/dev/null ||
  fail "vm.json does not show the ferry snapshot: $(cat "$mp/vm.json")"
[ "$(vm_json running | jq '.snapshots | length')" = 1 ]
cmp "$mp/disks/hard-disk-1" "$tmpdir/disk1"
kill -TERM "$FERRYFS_PID"
timeout=30 wait_for sh -c "! kill -0 $FERRYFS_PID 2>/dev/null"
wait "$FERRYFS_PID" || fail "ferryfs exited with $? on SIGTERM"
! kill -0 "$nbdkit_pid" 2>/dev/null || fail "nbdkit $nbdkit_pid outlived SIGTERM"
! mountpoint -q "$mp" || fail "still mounted after SIGTERM"
[ "$(vm_json running | jq '.snapshots | length')" = 0 ] || fail "the ferry snapshot was left behind"
echo "$0: OK"
