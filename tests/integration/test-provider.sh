#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The vSphere provider on its own (no nbdkit), through the vs-probe driver: login, lookup,
# enabling CBT, snapshot, CBT allocated areas, a parallel copy of the frozen disk,
# snapshot removal.
# It is what make check-asan runs of the provider, where nbdkit cannot load the plugin.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq curl
probe=$top/tests/integration/vs-probe
[ -x "$probe" ] || fail "$probe is not built (run make check)"

start_double
make_sparse_disk "$tmpdir/disk" 256M 0:3 100:50 4000:96
create_vm "probe vm" "disks=256M,64M&power=on&cbt=1" >"$tmpdir/vm.json"
place_disk "probe vm" 2000 "$tmpdir/disk"
printf 'pass\n' >"$tmpdir/password"

"$probe" "$SERVER" user "$tmpdir/password" "$CACERT" "probe vm" "$tmpdir/copy" >"$tmpdir/out"
cat "$tmpdir/out"
grep -q "^vm $(jq -r .moref "$tmpdir/vm.json") name probe vm uuid $(jq -r .uuid "$tmpdir/vm.json") power poweredOn cbt 1 snapshots 0$" "$tmpdir/out"
grep -q '^disk 2000 capacity 268435456 file \[ferry ds 1\] probe vm/probe vm.vmdk$' "$tmpdir/out"
grep -q '^disk 2001 capacity 67108864 ' "$tmpdir/out"
# The allocated areas: 3 areas, (3 + 50 + 96) blocks of 64 KiB.
grep -q '^snapshot disk 2000 changeId 52 .*/[0-9]* areas 3 allocated 9764864$' "$tmpdir/out"
grep -q '^snapshot disk 2001 changeId .* areas 0 allocated 0$' "$tmpdir/out"
cmp "$tmpdir/copy" "$tmpdir/disk"
# The snapshot is gone again.
[ "$(vm_json "probe vm" | jq '.snapshots | length')" = 0 ]

# A VM without CBT: ReconfigVM_Task turns it on (a task that stays running for a while),
# and the next snapshot's disks carry changeIds.
create_vm "no cbt" "disks=64M&power=off&cbt=0" >/dev/null
control POST "/tasks?delay=1s" >/dev/null
"$probe" "$SERVER" user "$tmpdir/password" "$CACERT" "no cbt" "$tmpdir/copy2" >"$tmpdir/out2"
cat "$tmpdir/out2"
grep -q '^vm .* cbt 0 snapshots 0$' "$tmpdir/out2"
grep -q '^enabled cbt: 1$' "$tmpdir/out2"
grep -q '^snapshot disk 2000 changeId 52 .*/[0-9]* areas 0 allocated 0$' "$tmpdir/out2"
[ "$(vm_json "no cbt" | jq -r .cbt)" = true ]
