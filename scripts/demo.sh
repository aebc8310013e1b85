#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The README's demo: a warm migration of a running VM from the built-in vSphere double
# into two PVC-style targets with `ferry migrate` — precopy rounds while the guest keeps
# writing, a cutover, and the verified digests.  Everything runs on 127.0.0.1 and is
# cleaned up.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/bin:/bin:$PATH
ferry=$top/orchestrator/ferry

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
control () { curl -sS --fail-with-body -X "$1" "$CONTROL$2" "${@:3}"; }

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

step "A running VM 'web01' with CBT and two disks (2 GiB and 1 GiB) holding scattered data"
echo "(random data, no operating system: the plan asks for a raw copy, skipGuestConversion;"
echo " tests/integration/test-ferry-convert.sh migrates, converts and boots a real guest)"
control POST "/vms?name=web01&disks=2G,1G&power=on&cbt=1" |
  jq -c '{moref, name, powerState, disks: [.disks[] | {key, fileName, capacity}]}'
for d in 0:2000:2G:24 1:2001:1G:8; do
  IFS=: read -r i key size areas <<<"$d"
  truncate -s "$size" "$work/src$i.img"
  for ((a = 0; a < areas; a++)); do
    dd if=/dev/urandom of="$work/src$i.img" bs=1M seek=$((RANDOM % (${size%G} * 1000))) count=12 \
      conv=notrunc status=none
  done
  control PUT "/vms/web01/disks/$key/data?offset=0&path=$(jq -rn --arg p "$work/src$i.img" '$p|@uri')" -o /dev/null
done

step "The PVC targets, the provider Secret (Forklift's layout) and the plan"
mkdir -p "$work/pvc/web01-disk0" "$work/pvc/web01-disk1" "$work/secret"
printf user >"$work/secret/user"
printf pass >"$work/secret/password"
cp "$CACERT" "$work/secret/cacert"
cutover=$(date -u -d '+25 seconds' +%Y-%m-%dT%H:%M:%SZ)
jq -n --arg url "https://$SERVER/sdk" --arg work "$work" --arg ds "$DATASTORE" --arg at "$cutover" '{
  name: "demo", source: { type: "vsphere", url: $url, secret: ($work + "/secret") },
  warm: true, precopyIntervalSeconds: 8, cutover: $at, stateDir: ($work + "/state"),
  skipGuestConversion: true,
  storageMap: [ { source: { name: $ds },
                  destination: { kind: "filesystem", path: ($work + "/pvc/{vm}-disk{index}") } } ],
  vms: [ { name: "web01" } ] }' | tee "$work/plan.json"
run "$ferry" validate "$work/plan.json"

step "The guest keeps writing 4 MiB a second while ferry migrates, until it is shut down"
(
  while [ "$(control GET /vms/web01 | jq -r .powerState)" = poweredOn ]; do
    head -c 4M /dev/urandom | curl -sS -X PUT --data-binary @- -o /dev/null \
      "$CONTROL/vms/web01/disks/2000/data?offset=$(((RANDOM % 2000) * 1048576))" || exit 0
    sleep 1
  done
) &
writer=$!
pids=("$writer" "${pids[@]}")

step "Warm migration: precopy rounds every 8 s, cutover at $cutover"
run "$ferry" migrate "$work/plan.json" --progress="${FERRY_PROGRESS:-auto}"
kill "$writer" 2>/dev/null || true

step "Verified: the digests of what was fetched and of the targets re-read from storage"
jq -r '.vms[] | "\(.name): \(.state), \(.rounds | length) rounds, original power state \(.originalPowerState)",
  (.rounds[] | "  round \(.round): \(.bytesChanged) bytes changed, \(.bytesFetched) fetched in \(.seconds * 100 | round / 100) s"),
  (.disks[] | "  disk \(.key) -> \(.target)\n    source \(.digest.source)\n    target \(.digest.target)")' \
  "$work/state/results.json"
for i in 0 1; do
  run "$ferry" digest "$work/pvc/web01-disk$i/disk.img"
done
for i in 0 1; do
  control GET "/vms/web01/disks/200$i/view" -o "$work/view$i.img"
  cmp "$work/view$i.img" "$work/pvc/web01-disk$i/disk.img" && echo "disk 200$i: the target equals the VM's disk at cutover"
done
echo "VM power state: $(control GET /vms/web01 | jq -r .powerState); snapshots left: $(control GET /vms/web01 | jq '.snapshots | length')"
echo
echo "Done. Next: make check (the tests), make bench (the benchmarks)."
