#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The vSphere double, checked with an independent client (pyvmomi): login,
# lookup, disks, snapshots, changeIds, QueryChangedDiskAreas with windows
# and faults, RemoveSnapshot task info, delayed tasks, session expiry.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail

requires curl
[ -x /usr/bin/python3 ] || skip "/usr/bin/python3 is missing"
/usr/bin/python3 -c 'import pyVmomi' 2>/dev/null || skip "python3-pyvmomi is not installed"

start_double -qcda-window 16M
VMNAME='win vm #1 (ü)'
export VMNAME
name_q=$(/usr/bin/python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$VMNAME")

control POST "/vms?name=$name_q&disks=64M,1M&cbt=1&power=on&firmware=efi&cpus=4&memory=4096" >/dev/null

# Guest data: block 0 from a sparse file (only its data region is copied),
# block 5 and block 640 (40 MiB) through the request body.
truncate -s 1M "$tmpdir/seed.img"
printf 'ferry' | dd of="$tmpdir/seed.img" bs=1 seek=100 conv=notrunc status=none
control PUT "/vms/$name_q/disks/2000/data?offset=0&path=$tmpdir/seed.img" >/dev/null
printf 'five' | control PUT "/vms/$name_q/disks/2000/data?offset=$((5 * 65536 + 3))" --data-binary @- >/dev/null
printf 'forty' | control PUT "/vms/$name_q/disks/2000/data?offset=$((40 << 20))" --data-binary @- >/dev/null

/usr/bin/python3 "$top/tests/integration/double_pyvmomi.py"
