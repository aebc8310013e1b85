#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Inventory checks at open: a wrong datacenter= is refused naming it and the VM's own
# datacenter (not accepted, to fail every read with a bare 404 later); a disk /folder
# cannot serve is refused naming the datacenter and datastore; vm= takes an inventory
# path as govc users write it.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit nbdcopy jq curl
requires_plugin

start_double
make_sparse_disk "$tmpdir/disk" 64M 0:8 100:4
create_vm plain "disks=64M&power=off&cbt=1" >/dev/null
place_disk plain 2000 "$tmpdir/disk"
create_vm gone "disks=64M&power=off&cbt=1" >/dev/null

expect_failure 'datacenter=DC9: no datacenter at that inventory path' \
  "the VM's datacenter is \"$DATACENTER\"" -- vm=plain datacenter=DC9
expect_failure "datacenter=$DATACENTER/vm: not a datacenter" -- vm=plain datacenter="$DATACENTER/vm"

# The right datacenter, given explicitly, works.
start_ferry vm=plain datacenter="$DATACENTER"
cmp <(nbdcopy "$(nbd_uri)" -) "$tmpdir/disk"
stop_ferry "$NBDKIT_PID"

# vm= as an inventory path.
start_ferry vm="$DATACENTER/vm/plain"
cmp <(nbdcopy "$(nbd_uri)" -) "$tmpdir/disk"
stop_ferry "$NBDKIT_PID"
expect_failure "no VM at the inventory path \"$DATACENTER/vm/ghost\"" -- vm="$DATACENTER/vm/ghost"
expect_failure "vm=$DATACENTER/vm is a Folder, not a VM" -- vm="$DATACENTER/vm"

# A disk whose flat file /folder cannot serve: named with its datacenter and datastore.
rm "$tmpdir/double/datastores/$DATASTORE/gone/gone-flat.vmdk"
expect_failure 'disk 2000: cannot read \[ferry ds 1\] gone/gone.vmdk through /folder' \
  "datacenter \"$DATACENTER\" and datastore \"$DATASTORE\"" -- vm=gone
