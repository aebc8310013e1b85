#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What libvixDiskLib.so.8 cannot read correctly is refused at ConnectEx or Open, with the
# VIX code a consumer expects and a text that says why in the server's or the disk's own
# words: a disk the VM does not have, snapshot deltas, vSAN and vVol objects, raw device
# mappings, split disks, a descriptor that disagrees with the VM, a running VM without a
# snapshot, a VM with a chain of snapshots, an unsupported vmxSpec, a wrong password and a
# wrong thumbprint.
source "$(dirname "$0")/functions.sh"
source "$top/tests/vddk/functions.sh"
set -euo pipefail
requires jq curl
requires_vddk

start_double

create_vm "vddk three" "disks=1G&power=off&cbt=1" >"$tmpdir/vm.json"
vddk_env "$tmpdir/vm.json" 0
desc="$tmpdir/double/datastores/$DATASTORE/vddk three/vddk three.vmdk"
[ -f "$desc" ] || fail "no descriptor at $desc"
cp "$desc" "$tmpdir/desc.orig"

# The unchanged disk opens.
"$vddk_driver" "$vddk_libdir" open 2>"$tmpdir/open.err" || fail "$(cat "$tmpdir/open.err")"

# A disk the VM does not have: the text lists the VM's disks.
VDDK_FILE="[$DATASTORE] vddk three/other.vmdk" expect_refused 4 "its disks are \"[$DATASTORE] vddk three/vddk three.vmdk\""

# Descriptors ferry must not read as one raw file.
refuse_descriptor ()
{
  local sed_expr=$1 text=$2
  sed -e "$sed_expr" "$tmpdir/desc.orig" >"$desc"
  expect_refused 6 "$text"
  cp "$tmpdir/desc.orig" "$desc"
}
refuse_descriptor 's/ VMFS "/ VMFSSPARSE "/' "VMFSSPARSE (a snapshot delta"
refuse_descriptor 's/ VMFS "/ SESPARSE "/' "SESPARSE (a snapshot delta"
refuse_descriptor 's/^parentCID=.*/parentCID=1234abcd/' "it has a parent disk"
# shellcheck disable=SC2016 # a sed expression
refuse_descriptor '$a parentFileNameHint="base.vmdk"' "parent base.vmdk"
refuse_descriptor 's/ VMFS "[^"]*"/ VSANSPARSE "vsan:\/\/52e5-7a"/' "vSAN object"
refuse_descriptor 's/ VMFS "[^"]*"/ VMFS "vvol:\/\/rfc4122.1234\/x"/' "vVol"
refuse_descriptor 's/ VMFS "/ VMFSRDM "/' "raw device mapping"
refuse_descriptor 's/^createType=.*/createType="vmfsPassthroughRawDeviceMap"/' "raw device mapping"
refuse_descriptor 's/^\(RW .*\)$/\1\n\1/' "split into 2 extents"
refuse_descriptor 's/^RW [0-9]*/RW 1024/' "configuration says 1073741824 bytes"
refuse_descriptor 's/-flat.vmdk"/-s001.vmdk"/' "ferry reads only <name>-flat.vmdk"
printf 'KDMV\0\0\0\1' >"$desc"
expect_refused 6 "monolithic sparse VMDK"
cp "$tmpdir/desc.orig" "$desc"

# Credentials and TLS fail at ConnectEx, in the server's words.
PASSWORD=wrong vddk_env "$tmpdir/vm.json" 0
expect_refused 35 "incorrect user name or password"
vddk_env "$tmpdir/vm.json" 0
VDDK_THUMBPRINT=$(echo "$THUMBPRINT_SHA1" | tr '0-9A-F' '1-9A-F0') expect_refused 18000 "$(echo "$THUMBPRINT_SHA1" | tr '0-9A-F' '1-9A-F0')"
VDDK_VM="[$DATASTORE] vddk three/vddk three.vmx?dcPath=$DATACENTER&dsName=$DATASTORE" \
  expect_refused 6 'only "moref=<vm moref>" is supported'
VDDK_VM=moref=vm-999999 expect_refused 4 "vm-999999"

# A running VM without a snapshot changes under the reader.
control POST "/vms/vddk%20three/power?state=on" >/dev/null
expect_refused 1 "powered on"

# A chain of two snapshots: the first one's base is not the disk at the second.
s1=$(control POST "/vms/vddk%20three/snapshot?name=one" | jq -r .moref)
control POST "/vms/vddk%20three/snapshot?name=two" >/dev/null
VDDK_SNAPSHOT=$s1 expect_refused 1 "delta chains are not supported"

# What is accepted around the edges: the port in its own field, a config file with VDDK's
# keys and ferry's.  (Session cookies: test-vddk-session.sh.)
control POST "/vms/vddk%20three/power?state=off" >/dev/null
create_vm "vddk four" "disks=1G&power=off&cbt=1" >"$tmpdir/vm4.json"
vddk_env "$tmpdir/vm4.json" 0
VDDK_SERVER=${SERVER%:*} VDDK_PORT=${SERVER##*:} "$vddk_driver" "$vddk_libdir" open 2>"$tmpdir/open.err" ||
  fail "port= in its own field: $(cat "$tmpdir/open.err")"
cat >"$tmpdir/vddk.conf" <<'CONF'
# VDDK's own keys are ignored
vixDiskLib.nfcAio.Session.BufSizeIn64KB=16
vixDiskLib.nfcAio.Session.BufCount = "4"
ferry.connections = "2"
ferry.workers=3
CONF
VDDK_CONFIG=$tmpdir/vddk.conf "$vddk_driver" "$vddk_libdir" open 2>"$tmpdir/open.err" ||
  fail "a config file: $(cat "$tmpdir/open.err")"
grep -q 'ignoring vixDiskLib.nfcAio.Session.BufCount' "$tmpdir/open.err" || fail "VDDK's key was not read"
echo 'ferry.connections = "100"' >>"$tmpdir/vddk.conf"
if VDDK_CONFIG=$tmpdir/vddk.conf "$vddk_driver" "$vddk_libdir" open 2>"$tmpdir/open.err"; then
  fail "ferry.connections=100 was accepted"
fi
grep -F 'ferry.connections = "100": want a number from 1 to 64 (error 3:' "$tmpdir/open.err" ||
  fail "$(cat "$tmpdir/open.err")"
