# SPDX-License-Identifier: Apache-2.0
# ferry: helpers for the real Debian guest (tests/guest/build-guest.sh) running as a VM in
# the vSphere double, shared by the integration tests (functions.sh sources this file) and
# scripts/demo.sh.
#
# The caller provides $top (the repository), control METHOD PATH [CURL-ARGS...] (the
# double's control API) and fail MESSAGE, as functions.sh does; requires_guest also needs
# functions.sh's requires, skip and $tmpdir.
# shellcheck shell=bash disable=SC2154
# (top and tmpdir come from the caller: functions.sh or scripts/demo.sh)

# guest_write NAME KEY OFFSET FILE: write FILE into the VM's disk as its guest would.
guest_write ()
{
  control PUT "/vms/$(jq -rn --arg v "$1" '$v|@uri')/disks/$2/data?offset=$3" \
    --data-binary @"$4" -o /dev/null
}

# requires_guest IMAGE: build the guest (cached) at IMAGE, or skip the test when it cannot
# be built here (root and debootstrap are needed).
requires_guest ()
{
  local rc=0
  [ "$(id -u)" = 0 ] || skip "root is needed to build the guest disk"
  requires debootstrap
  "$top/tests/guest/build-guest.sh" "$1" >"$tmpdir/build.log" 2>&1 || rc=$?
  [ $rc = 77 ] && skip "$(grep -m1 SKIP "$tmpdir/build.log")"
  [ $rc = 0 ] || fail "build-guest.sh: $(tail -20 "$tmpdir/build.log")"
}

# guest_set_poweroff IMAGE: the guest powers itself off after its boot marker (the switch
# of build-guest.sh), set in its ext4 root at 1 MiB without mounting anything.
guest_set_poweroff ()
{
  debugfs -w -R "write /dev/null /etc/guestlab-poweroff" "$1?offset=1048576" >/dev/null 2>&1
  debugfs -R "stat /etc/guestlab-poweroff" "$1?offset=1048576" 2>/dev/null |
    grep -q 'Type: regular' || fail "debugfs could not set /etc/guestlab-poweroff in $1"
}

# guest_boot LOG IMAGE...: boot the raw IMAGEs under qemu TCG on virtio (the first one
# boots), serial console to LOG; the images are not written (snapshot=on).  Prints qemu's
# exit status: 0 when the guest powered itself off.
guest_boot ()
{
  local log=$1 rc=0 drives=() img
  shift
  for img in "$@"; do drives+=(-drive "file=$img,format=raw,if=virtio,snapshot=on"); done
  timeout 900 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp "${SMP:-2}" \
    -nographic -nodefaults -serial "file:$log" -no-reboot -nic none -machine q35 \
    "${drives[@]}" </dev/null >/dev/null 2>&1 || rc=$?
  echo "$rc"
}

# guest_writes_file DIR VM NAME TEXT: the running guest of VM writes /root/NAME: debugfs
# writes it into a copy of DIR/current.img (the disk's current state, which the caller
# starts as a copy of the guest's image), and the 64 KiB blocks that differ go to the VM's
# disk 2000 through the double's guest-write channel, as the guest's own writes would.
# Prints how many blocks changed.
guest_writes_file ()
{
  local dir=$1 vm=$2 off n=0
  cp --sparse=always "$dir/current.img" "$dir/next.img"
  printf '%s\n' "$4" >"$dir/content.tmp"
  debugfs -w -R "write $dir/content.tmp /root/$3" "$dir/next.img?offset=1048576" >/dev/null 2>&1
  for off in $(python3 - "$dir/current.img" "$dir/next.img" <<'PY'
import sys
a, b, i = open(sys.argv[1], "rb"), open(sys.argv[2], "rb"), 0
while True:
    x, y = a.read(65536), b.read(65536)
    if not x:
        break
    if x != y:
        print(i * 65536)
    i += 1
PY
  ); do
    dd if="$dir/next.img" of="$dir/block.tmp" bs=64K skip=$((off / 65536)) count=1 status=none
    guest_write "$vm" 2000 "$off" "$dir/block.tmp"
    n=$((n + 1))
  done
  mv "$dir/next.img" "$dir/current.img"
  echo "$n"
}
