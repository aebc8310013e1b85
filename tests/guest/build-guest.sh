#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# build-guest.sh OUT.img: a small bootable Debian 12 guest disk made from Debian packages
# only (debootstrap + the cloud kernel + grub), as ../shared/reference/guest-lab.md
# describes: raw, 1 GiB virtual, MBR, one ext4 partition, hostname "guestlab",
# root password "root", a GUESTLAB-BOOT-OK marker on ttyS0 after boot.
#
# The .debs and the finished image are cached under ${FERRY_CACHE:-/var/cache/ferry},
# the image keyed by a hash of this script, so repeated test runs copy it in a second
# (the first build takes about 90 s).  Root is needed (debootstrap, chroot); exit 77 when
# it is missing, so tests that need a guest skip.
#
# Environment: FERRY_CACHE, MIRROR (default http://deb.debian.org/debian), and the
# libguestfs variables; when LIBGUESTFS_BACKEND_SETTINGS is unset and a default appliance
# launch fails (KVM unusable here), TCG is used.
set -euo pipefail

out=${1:?usage: build-guest.sh OUT.img}
[ "$(id -u)" = 0 ] || { echo "build-guest: SKIP: root is required" >&2; exit 77; }
for cmd in debootstrap guestfish sfdisk mkfs.ext4 chpasswd; do
  command -v "$cmd" >/dev/null || { echo "build-guest: SKIP: $cmd is not installed" >&2; exit 77; }
done

cache=${FERRY_CACHE:-/var/cache/ferry}
key=$(sha256sum "$0" | cut -c1-16)
image=$cache/guest-debian12-$key.img
mkdir -p "$cache/debs"

# One build at a time; the others wait and then copy.
exec 9>"$cache/guest.lock"
flock 9
if [ -f "$image" ]; then
  cp --sparse=always "$image" "$out"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/build-guest.XXXXXX")
R=$work/root
cleanup ()
{
  local m
  # An interrupted debootstrap may leave proc/sys mounted inside the tree.
  for m in "$R/proc" "$R/sys" "$R/dev/pts" "$R/dev"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

uuid=5e1f0c2a-6d7b-4c1e-9a3b-0f4d2c8b7a61
start=$SECONDS
echo "build-guest: debootstrap (cache $cache/debs)"
debootstrap --variant=minbase --cache-dir="$cache/debs" \
  --include=linux-image-cloud-amd64,grub-pc,systemd-sysv,udev,initramfs-tools,kmod,e2fsprogs,passwd,ifupdown,iproute2,open-vm-tools \
  bookworm "$R" "${MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 ||
  { tail -20 "$work/debootstrap.log" >&2; exit 1; }
echo "build-guest: debootstrap done in $((SECONDS - start)) s"

# Configuration as plain files.
echo guestlab >"$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 guestlab\n' >"$R/etc/hosts"
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" >"$R/etc/fstab"
echo 'root:root' | chpasswd -R "$R"
printf 'auto lo\niface lo inet loopback\n' >"$R/etc/network/interfaces"
cat >"$R/etc/default/grub" <<'EOF'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200n8"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
EOF
cat >"$R/etc/systemd/system/guestlab-marker.service" <<'EOF'
[Unit]
Description=guestlab boot marker
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "GUESTLAB-BOOT-OK $(uname -r) $(cat /proc/cmdline)" >/dev/ttyS0; if [ -e /etc/guestlab-poweroff ]; then systemctl poweroff; fi'

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/guestlab-marker.service \
  "$R/etc/systemd/system/multi-user.target.wants/guestlab-marker.service"

# A small initramfs with the VMware-like buses only (no virtio: see guest-lab.md).
sed -i 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=gzip/' \
  "$R/etc/initramfs-tools/initramfs.conf"
echo 'FSTYPE=ext4' >"$R/etc/initramfs-tools/conf.d/fstype"
printf '%s\n' vmw_pvscsi sd_mod ata_piix ata_generic >>"$R/etc/initramfs-tools/modules"
chroot "$R" update-initramfs -c -k all >/dev/null 2>&1 || chroot "$R" update-initramfs -u -k all

rm -rf "$R"/var/cache/apt/* "$R"/var/lib/apt/lists/* "$R"/usr/share/doc/* \
  "$R"/usr/share/man/* "$R"/usr/share/locale/*

# The disk: MBR, one bootable partition at 1 MiB, filled without mounting anything.
disk=$work/disk.img
truncate -s 1G "$disk"
echo 'start=2048, type=83, bootable' | sfdisk -q "$disk"
features=^metadata_csum_seed
mkfs.ext4 -O list 2>&1 | grep -q orphan_file && features=$features,^orphan_file
mkfs.ext4 -q -U "$uuid" -O "$features" -d "$R" -E offset=1048576 "$disk" \
  $(((1024 - 1) * 1024))k

# grub from the guest itself, run inside the appliance.
if [ -z "${LIBGUESTFS_BACKEND_SETTINGS:-}" ] && ! guestfish -a /dev/null run >/dev/null 2>&1; then
  export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
fi
guestfish --rw -a "$disk" -m /dev/sda1 <<'EOF'
command "grub-install --target=i386-pc /dev/sda"
command "update-grub"
EOF

mv "$disk" "$image.tmp"
mv "$image.tmp" "$image"
cp --sparse=always "$image" "$out"
echo "build-guest: $out built in $((SECONDS - start)) s (cached as $image)"
