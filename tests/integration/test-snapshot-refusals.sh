#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Each thing ferry cannot read consistently is refused by itself, with its reason, and
# nothing is added to or removed from the VM: pre-existing snapshots (without snapshot=,
# with snapshot=create, with snapshot=MOREF among several), a delta disk (a linked
# clone), and disk= indexes that are not plain digits.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy jq curl
requires_plugin

start_double
make_sparse_disk "$tmpdir/disk" 64M 0:8
create_vm one-snap "disks=64M&power=off&cbt=1&snapshots=1" >/dev/null
create_vm two-snaps "disks=64M&power=off&cbt=1&snapshots=2" >/dev/null
create_vm clone "disks=64M&power=off&cbt=1" >/dev/null
create_vm two-disks "disks=64M,64M&power=off&cbt=1" >/dev/null
place_disk two-disks 2001 "$tmpdir/disk"
control POST "/inject?linked-clone=clone" >/dev/null

snapshots () { vm_json "$1" | jq -c '[.snapshots[].moref]'; }

# refuse VM WORDS... -- PARAMS...: nbdkit must refuse VM, say WORDS, and leave the VM's
# snapshots as they were.
refuse ()
{
  local vm=$1 words=() p before
  shift
  while [ "$1" != -- ]; do words+=("$1"); shift; done
  shift
  before=$(snapshots "$vm")
  : >"$tmpdir/nbdkit.err"
  if start_ferry vm="$vm" "$@"; then fail "$vm was served with: $*"; fi
  for p in "${words[@]}"; do
    grep -q -- "$p" "$tmpdir/nbdkit.err" || {
      cat "$tmpdir/nbdkit.err"; fail "the refusal of $vm ($*) does not say '$p'"; }
  done
  [ "$(snapshots "$vm")" = "$before" ] || fail "$vm's snapshots changed: $(snapshots "$vm")"
}

refuse one-snap 'snapshot(s): "user-snap-1"' 'delete or consolidate' --
refuse one-snap 'snapshot(s): "user-snap-1"' -- snapshot=create
second=$(vm_json two-snaps | jq -r '.snapshots[1].moref')
refuse two-snaps '"user-snap-1"' '"user-snap-2"' -- snapshot="$second"
refuse clone 'disk 2000' 'clone/clone.vmdk' 'has a parent' 'delta' --
refuse two-disks "no disk \"+1\"" -- disk=+1
refuse two-disks "no disk \" 1\"" -- disk=' 1'
refuse two-disks "no disk \"1x\"" -- disk=1x

# The same VMs' neighbours are served: index 1 is the second disk.
start_ferry vm=two-disks disk=1
cmp <(nbdcopy "$(nbd_uri)" -) "$tmpdir/disk"
stop_ferry "$NBDKIT_PID"
