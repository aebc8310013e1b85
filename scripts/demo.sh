#!/usr/bin/env bash
# The README's demo: a running VM on the built-in vSphere double, served through
# `nbdkit ferry` with a snapshot made for the occasion, its allocation map, a copy, and a
# checksum comparison with the source.  Everything runs on 127.0.0.1 and is cleaned up.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/bin:/bin:$PATH

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")
pids=()
cleanup ()
{
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null && while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT
step () { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run () { printf '$ %s\n' "$*"; "$@"; }

step "Start the vSphere double (vcsim + CBT, snapshots, /folder) on 127.0.0.1"
"$top/tests/doubles/vsphere/vsphere-double" -dir "$work/double" >"$work/double.out" 2>"$work/double.err" &
pids+=($!)
until grep -q '^READY' "$work/double.out" 2>/dev/null; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/double.err"; exit 1; }
  sleep 0.05
done
# shellcheck source=/dev/null
source <(grep -E '^[A-Z_0-9]+=' "$work/double.out")
echo "vCenter double at https://$SERVER/sdk (CA $CACERT)"

step "Create a running VM 'demo web01' with CBT and a 1 GiB disk holding scattered data"
curl -sS --fail-with-body -X POST "$CONTROL/vms?name=demo%20web01&disks=1G&power=on&cbt=1" | jq -c '{moref, name, disks: [.disks[] | {key, fileName, capacity}]}'
truncate -s 1G "$work/source.img"
for block in 0 16 17 600 4096 12000 16376; do
  dd if=/dev/urandom of="$work/source.img" bs=64K seek=$block count=8 conv=notrunc status=none
done
curl -sS --fail-with-body -X PUT -o /dev/null \
  "$CONTROL/vms/demo%20web01/disks/2000/data?offset=0&path=$(jq -rn --arg p "$work/source.img" '$p|@uri')"

step "Serve it read-only over NBD with the ferry plugin (snapshot=create: the VM keeps running)"
printf 'pass' >"$work/password"
run nbdkit -U "$work/nbd.sock" -P "$work/nbdkit.pid" "$top/nbdkit-plugin/nbdkit-ferry-plugin.so" \
  provider=vsphere server="$SERVER" user=user password=+"$work/password" \
  vm="demo web01" snapshot=create cacert="$CACERT" -v -D ferry.stats=1 2>"$work/nbdkit.err"
until [ -s "$work/nbdkit.pid" ]; do sleep 0.05; done # written by nbdkit's background child
pids=("$(cat "$work/nbdkit.pid")" "${pids[@]}")
uri="nbd+unix:///?socket=$work/nbd.sock"
snapshot=$(curl -sS "$CONTROL/vms/demo%20web01" | jq -r '.snapshots[0] | "\(.name) (\(.moref))"')
echo "ferry created snapshot $snapshot"

step "The exports: one per disk"
run nbdinfo --list "$uri" | grep -E 'export=|description|export-size'

step "Allocation map from CBT (QueryChangedDiskAreas changeId=*): holes are never fetched"
run nbdinfo --map "$uri"

step "The guest keeps writing; the export stays at the snapshot's point in time"
curl -sS --fail-with-body "$CONTROL/vms/demo%20web01/disks/2000/view?snapshot=$(curl -sS "$CONTROL/vms/demo%20web01" | jq -r '.snapshots[0].moref')" -o "$work/at-snapshot.img"
head -c 4M /dev/urandom | curl -sS --fail-with-body -X PUT --data-binary @- -o /dev/null \
  "$CONTROL/vms/demo%20web01/disks/2000/data?offset=1048576"
echo "guest wrote 4 MiB at offset 1 MiB"

step "Copy the disk with nbdcopy and compare checksums"
run nbdcopy --progress "$uri" "$work/copy.img"
src_sum=$(sha256sum <"$work/at-snapshot.img" | cut -d' ' -f1)
copy_sum=$(sha256sum <"$work/copy.img" | cut -d' ' -f1)
echo "source at snapshot: $src_sum"
echo "ferry copy:         $copy_sum"
[ "$src_sum" = "$copy_sum" ] || { echo "MISMATCH"; exit 1; }
echo "checksums match"

step "Stop nbdkit: ferry removes its snapshot"
kill "$(cat "$work/nbdkit.pid")"
while kill -0 "$(cat "$work/nbdkit.pid")" 2>/dev/null; do sleep 0.1; done
grep -o 'stats: .*' "$work/nbdkit.err" || true
echo "snapshots left on the VM: $(curl -sS "$CONTROL/vms/demo%20web01" | jq '.snapshots | length')"
echo
echo "Done. Next: make check (the tests), make bench (the benchmarks)."
