#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# install-packages.sh full|slim: the qemu user (107:107) and the Debian packages of ferry's
# importer image, for container/Containerfile.
#
# full: everything, as the appliance stage needs it: supermin builds libguestfs' appliance
#       from the packages installed here.
# slim: the same, then the packages that only the appliance runs are purged in the same
#       layer (about 190 MB).  libguestfs0 depends on every package its appliance is made
#       from, but with a fixed appliance the host side runs none of them: they are inside the
#       appliance's root already.  APPLIANCE_ONLY was computed as the installed packages
#       that nothing else here needs: not the roots below, not their dependencies (taking
#       only libguestfs0's libraries, qemu-system-x86, supermin and osinfo-db), not an
#       essential or required package.  test-container-image checks that every ELF file in
#       the image still finds its libraries and that an inspection runs in it.
set -eu

ROOTS="virt-v2v nbdkit libnbd-bin qemu-utils ca-certificates libcurl4 libxml2 libssl3
  libjansson4 libfuse3-3 fuse3"

APPLIANCE_ONLY="acl attr binutils binutils-common binutils-x86-64-linux-gnu bsdextrautils
  btrfs-progs bzip2 cryptsetup-bin curl db-util db5.3-util debootstrap dmeventd dmidecode
  dosfstools exfatprogs extlinux f2fs-tools fdisk file gdisk gettext-base grub-common
  grub2-common icoutils iproute2 isc-dhcp-client kmod kpartx ldmtool less libbinutils
  libcbor0.8 libclone-perl libctf-nobfd0 libctf0 libdate-manip-perl libdeflate0
  libdevmapper-event1.02.1 libedit2 libefiboot1 libefivar1 libencode-locale-perl libfido2-1
  libfile-listing-perl libfreetype6 libgdbm-compat4 libgdbm6 libgprofng0 libhtml-parser-perl
  libhtml-tagset-perl libhtml-tree-perl libhttp-cookies-perl libhttp-date-perl
  libhttp-message-perl libhttp-negotiate-perl libio-html-perl libio-socket-ssl-perl libjbig0
  libjson-glib-1.0-0 libjson-glib-1.0-common libldm-1.0-0 liblerc4 liblvm2cmd2.03
  liblwp-mediatypes-perl liblwp-protocol-https-perl liblzo2-2 libmnl0 libnet-http-perl
  libnet-ssleay-perl libnetpbm11 libntfs-3g89 libparted2 libpci3 libperl5.36 libregexp-ipv6-perl
  libtiff6 libtimedate-perl libtry-tiny-perl liburi-perl libwebp7 libwww-perl
  libwww-robotrules-perl libx11-6 libx11-data libxau6 libxcb1 libxdmcp6 libxtables12 lsscsi
  lvm2 lzop mdadm mtools netpbm ntfs-3g openssh-client parted pciutils perl perl-modules-5.36
  perl-openssl-defaults psmisc scrub sleuthkit squashfs-tools syslinux udev uuid-runtime wget
  xz-utils zerofree zstd"

case "${1:-}" in
  full | slim) ;;
  *) echo "usage: install-packages.sh full|slim" >&2; exit 2 ;;
esac

# qemu (107:107) first, so that no package's system user takes that id.
groupadd --system --gid 107 qemu
useradd --system --uid 107 --gid 107 --home-dir /var/lib/ferry --create-home \
  --shell /usr/sbin/nologin qemu

apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the lists is meant
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $ROOTS >/dev/null
if [ "$1" = slim ]; then
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive dpkg --purge --force-depends $APPLIANCE_ONLY >/dev/null
fi
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
  /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old /var/lib/dpkg/*-old
