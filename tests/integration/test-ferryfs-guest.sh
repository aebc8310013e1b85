#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferryfs with a real guest: the Debian 12 disk from tests/guest/build-guest.sh, hosted by
# the vSphere double and served by the ferry plugin.  guestfish -i on the mounted disk file
# sees the guest's filesystems and files; inspection.json says Debian 12 (libguestfs under
# TCG here: ferryfs must fall back to it by itself).  SIGTERM during an inspection stops
# it.  The appliance launches make this test take about a minute and a half.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdkit guestfish fusermount3 mountpoint jq curl
requires_plugin
[ -e /dev/fuse ] || skip "/dev/fuse is missing"
requires_guest "$tmpdir/guest.img"

start_double
create_vm guestlab "disks=1G&power=off&cbt=1" >/dev/null
place_disk guestlab 2000 "$tmpdir/guest.img"
printf pass >"$tmpdir/password"

# ferryfs starts before guestfs_env, so (unless the caller chose libguestfs settings) its
# inspection has to fall back to TCG by itself.
mp=$tmpdir/mnt
start_ferryfs "$mp" -- nbdkit "$plugin" provider=vsphere server="$SERVER" user=user \
  password=+"$tmpdir/password" cacert="$CACERT" vm=guestlab
disk=$mp/disks/hard-disk-1
cmp "$disk" "$tmpdir/guest.img"

# guestfish -i on the mounted file.
guestfs_env
guestfish --ro --format=raw -a "$disk" -i <<'EOF' >"$tmpdir/guestfish.out"
list-filesystems
cat /etc/hostname
is-file /etc/debian_version
EOF
cat "$tmpdir/guestfish.out"
grep -qx '/dev/sda1: ext4' "$tmpdir/guestfish.out" || fail "guestfish: no /dev/sda1 ext4"
grep -qx guestlab "$tmpdir/guestfish.out" || fail "guestfish: hostname is not guestlab"
[ "$(tail -1 "$tmpdir/guestfish.out")" = true ]

# inspection.json: "running" from the first open until the result is there, then cached.
start=$SECONDS
jq -e '.status == "running"' "$mp/inspection.json" >/dev/null ||
  fail "inspection.json at first: $(cat "$mp/inspection.json")"
timeout=600 wait_for jq -e '.status != "running"' "$mp/inspection.json" >/dev/null
cat "$mp/inspection.json" >"$tmpdir/inspection.json"
echo "inspection.json took $((SECONDS - start)) s"
cat "$tmpdir/inspection.json"
jq -e '.operating_systems | length == 1' "$tmpdir/inspection.json" >/dev/null ||
  fail "inspection.json: $(cat "$tmpdir/inspection.json")"
jq -e '.status == "done"' "$tmpdir/inspection.json" >/dev/null
jq -e '.operating_systems[0] | .type == "linux" and .distro == "debian" and
       .major_version == 12 and .hostname == "guestlab" and .root == "/dev/sda1" and
       .mountpoints["/"] == "/dev/sda1" and .firmware == "bios" and
       .virtio_drivers == true and (.kernels | length) >= 1 and
       (.kernels[0].version | test("cloud-amd64$")) and (.product_name | test("12"))' \
  "$tmpdir/inspection.json" >/dev/null || fail "inspection.json does not report the Debian 12 guest"
# Cached: the next read is the same; stat tells its size (once the kernel's attribute
# cache, 1 s, has expired).
cmp "$mp/inspection.json" "$tmpdir/inspection.json"
same_size ()
{
  [ "$(stat -c %s "$1")" = "$(stat -c %s "$2")" ]
}
wait_for same_size "$mp/inspection.json" "$tmpdir/inspection.json"

stop_ferryfs "$mp" "$FERRYFS_PID"
mountpoint -q "$mp" && fail "still mounted: $mp"

# SIGTERM while an inspection runs: the appliance reads through the mount, so ferryfs must
# stop the inspection (its process and qemu) to exit at all.
start_ferryfs "$mp" -- nbdkit "$plugin" provider=vsphere server="$SERVER" user=user \
  password=+"$tmpdir/password" cacert="$CACERT" vm=guestlab
jq -e '.status == "running"' "$mp/inspection.json" >/dev/null
wait_for pgrep -P "$FERRYFS_PID" -f -- --internal-inspect >/dev/null
inspect_pid=$(pgrep -P "$FERRYFS_PID" -f -- --internal-inspect)
timeout=60 wait_for pgrep -P "$inspect_pid" qemu-system >/dev/null
qemu_pid=$(pgrep -P "$inspect_pid" qemu-system)
kill -TERM "$FERRYFS_PID"
timeout=30 wait_for sh -c "! kill -0 $FERRYFS_PID 2>/dev/null"
timeout=30 wait_for sh -c "! kill -0 $inspect_pid 2>/dev/null && ! kill -0 $qemu_pid 2>/dev/null"
mountpoint -q "$mp" && fail "still mounted after SIGTERM: $mp"
echo "$0: OK"
