#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Install every Debian package that ferry's build, tests and benchmarks need.
# Idempotent: does nothing when all are present; runs apt-get update at most once.
set -euo pipefail

packages=(
  build-essential pkg-config perl
  libcurl4-openssl-dev libxml2-dev libssl-dev libjansson-dev
  nbdkit nbdkit-plugin-dev libnbd-dev libnbd-bin python3-libnbd
  libcmocka-dev qemu-utils curl openssl
  golang-go golang-github-vmware-govmomi-dev python3-pyvmomi
  cppcheck shellcheck clang-format valgrind time jq
  clang libclang-rt-14-dev
  libfuse3-dev fuse3 libguestfs-dev libguestfs-tools linux-image-amd64 debootstrap
  qemu-system-x86 fio zstd
  virt-v2v python3-yaml python3-jsonschema
  buildah podman runc catatonit file
  iproute2
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages are installed"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "deps: missing packages: ${missing[*]}" >&2
  echo "deps: run 'make deps' as root to install them" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
