#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The cutover's shutdown: a running VM whose VMware Tools run is shut down through the
# guest (ShutdownGuest), one without Tools is powered off (PowerOffVM_Task); both end
# powered off and verified, and the journal and results record that they were found
# poweredOn.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq curl cmp
requires_ferry

start_double
create_vm tools "disks=32M&power=on&cbt=1&tools=1" >/dev/null
create_vm notools "disks=32M&power=on&cbt=1" >/dev/null
for vm in tools notools; do
  make_sparse_disk "$tmpdir/$vm.src" 32M 0:16 200:32
  place_disk "$vm" 2000 "$tmpdir/$vm.src"
  make_targets "$vm" 1
done
write_plan "$tmpdir/plan.json" '. * {"shutdownTimeoutSeconds": 30,
  "vms": [{"name": "tools"}, {"name": "notools"}]}'

control POST /stats/reset >/dev/null
"$ferry" migrate "$tmpdir/plan.json" --progress=none 2>"$tmpdir/ferry.err" ||
  fail "ferry migrate failed: $(cat "$tmpdir/ferry.err")"
cat "$tmpdir/ferry.err"

calls=$(control GET /stats | jq -c '.soap_calls')
echo "SOAP calls: $calls"
[ "$(jq '.ShutdownGuest // 0' <<<"$calls")" = 1 ] ||
  fail "expected one ShutdownGuest (the VM with Tools), saw: $calls"
[ "$(jq '.PowerOffVM_Task // 0' <<<"$calls")" = 1 ] ||
  fail "expected one PowerOffVM_Task (the VM without Tools), saw: $calls"
# Which VM got which: ferry says so per VM.
tools_moref=$(vm_json tools | jq -r .moref)
notools_moref=$(vm_json notools | jq -r .moref)
grep -q "$tools_moref (tools): shutting the guest down through VMware Tools" "$tmpdir/ferry.err" ||
  fail "no guest shutdown of $tools_moref (tools) in ferry's messages"
grep -q "$notools_moref (notools): VMware Tools do not run in the guest; powering the VM off" "$tmpdir/ferry.err" ||
  fail "no power-off of $notools_moref (notools) in ferry's messages"

for vm in tools notools; do
  [ "$(vm_json "$vm" | jq -r .powerState)" = poweredOff ] || fail "$vm is not powered off"
  [ "$(jq -r --arg v "$vm" '.vms[$v].originalPowerState' "$tmpdir/state/journal.json")" = poweredOn ] ||
    fail "$vm: the journal does not record originalPowerState poweredOn"
  [ "$(jq -r --arg v "$vm" '.vms[] | select(.name == $v) | "\(.originalPowerState) \(.state)"' \
    "$tmpdir/state/results.json")" = "poweredOn verified" ] ||
    fail "$vm: results.json does not say poweredOn, verified: $(cat "$tmpdir/state/results.json")"
  cmp "$tmpdir/pvc/$vm-disk0/disk.img" "$tmpdir/$vm.src" || fail "$vm: the target differs from the source"
done
