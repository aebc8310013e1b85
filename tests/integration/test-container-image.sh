#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# timeout: 2700
# The importer image: `make container`'s script builds it with buildah from the debootstrap
# base (or finds it cached by its inputs) and prints its id and size.  The image runs as
# 107:107 with no capabilities, carries its labels, ferry --version works, nbdkit loads the
# plugin, only the expected programs are there (no compiler, no kernel, nothing setuid), and the libguestfs
# appliance is fixed in the image: with no network, as 107, an inspection of a real Debian
# guest boots it without building one.  A second build is the cached image.  The later
# container tests reuse this build.  A first build takes about 20 minutes here (timeout).
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
# shellcheck source-path=SCRIPTDIR source=container-functions.sh
source "$(dirname "$0")/container-functions.sh"
set -euo pipefail
requires jq
requires_ferry

build_image
requires_image
grep -Eq '^container: image id [0-9a-f]{64}$' "$tmpdir/build.out" || fail "no image id printed"
grep -Eq '^container: size [0-9]+ bytes' "$tmpdir/build.out" || fail "no image size printed"
id=$(sed -n 's/^container: image id //p' "$tmpdir/build.out")
# A second build with the same inputs is the cached image.
build_image >/dev/null
grep -q "^container: ${image%:latest} is cached" "$tmpdir/build.out" || fail "the second build was not cached"
grep -q "^container: image id $id\$" "$tmpdir/build.out" || fail "the cached image is another one"

# Labels, user, entrypoint.
podman image inspect "$image" >"$tmpdir/inspect.json"
version=$("$ferry" --version)
jq -e --arg v "${version#ferry }" '.[0].Config.Labels as $l |
    $l["org.opencontainers.image.version"] == $v and
    $l["org.opencontainers.image.licenses"] == "Apache-2.0" and
    ($l["org.opencontainers.image.source"] | length > 0) and
    ($l["io.ferry.inputs"] | length == 16) and
    .[0].Config.User == "107:107" and
    .[0].Config.Entrypoint == ["/usr/local/bin/ferry-entrypoint"]' "$tmpdir/inspect.json" \
  >/dev/null || fail "labels/user/entrypoint: $(jq '.[0].Config' "$tmpdir/inspect.json")"
[ "$(podman image inspect --format '{{.Id}}' localhost/ferry:"${version#ferry }")" = \
  "$(jq -r '.[0].Id' "$tmpdir/inspect.json")" ] || fail "not tagged with the version"

# It runs as 107:107, with every capability dropped, and the entrypoint passes arguments on.
[ "$(run_image --cap-drop=ALL --entrypoint id -- -u):$(run_image --entrypoint id -- -g)" = 107:107 ] ||
  fail "the image does not run as 107:107"
[ "$(run_image --cap-drop=ALL --security-opt=no-new-privileges -- --version)" = "$version" ] ||
  fail "ferry --version in the image is not '$version'"
run_image --entrypoint nbdkit -- --dump-plugin ferry >"$tmpdir/dump" 2>&1 ||
  fail "nbdkit in the image cannot load the ferry plugin: $(cat "$tmpdir/dump")"

# The programs: ferry's and the tools it runs; no compiler, no kernel, nothing setuid; every
# ELF file finds its libraries and every script its interpreter (the image purges the
# packages only the appliance runs: container/install-packages.sh).
# shellcheck disable=SC2016
run_image --entrypoint sh -- -c '
  ls /usr/local/bin
  for p in ferry ferryfs nbdkit nbdcopy nbdinfo qemu-img virt-v2v-in-place; do
    command -v $p >/dev/null || echo "missing $p"; done
  for p in gcc cc make; do command -v $p >/dev/null && echo "unexpected $p"; done
  ls /boot/vmlinuz* /lib/modules/* 2>/dev/null | sed "s/^/unexpected /"
  find / -xdev -perm /6000 -type f 2>/dev/null | sed "s/^/setuid /"
  { find /usr/bin /usr/sbin /usr/local/bin /usr/libexec /usr/lib/*/nbdkit -xdev -type f
    find /usr/lib/*-linux-gnu -maxdepth 1 -type f -name "*.so*"; } |
  while read -r f; do
    magic=$(head -c 4 "$f" | od -An -c | tr -d " ")
    case $magic in
      177ELF) ldd "$f" 2>/dev/null | grep "not found" | sed "s|^|$f: |" ;;
      "#!"*) i=$(head -n 1 "$f" | sed "s/^#! *//; s/ .*//")
             [ -x "$i" ] || echo "$f: interpreter $i not found" ;;
    esac
  done' >"$tmpdir/programs" 2>&1
cat "$tmpdir/programs"
[ "$(grep -Ev '^(ferry|ferryfs|ferry-entrypoint)$' "$tmpdir/programs")" = "" ] ||
  fail "unexpected programs or libraries: $(grep -Ev '^(ferry|ferryfs|ferry-entrypoint)$' "$tmpdir/programs")"

# The fixed appliance: present, readable by 107, and enough offline (--network=none): an
# inspection of a Debian guest in the image (ferryfs's inspection child, TCG here) finds it,
# and no appliance was built into libguestfs' cache.
rc=0
"$top/tests/guest/build-guest.sh" "$tmpdir/guest.img" >"$tmpdir/guest.log" 2>&1 || rc=$?
[ $rc != 77 ] || skip "no guest image: $(tail -1 "$tmpdir/guest.log")"
[ $rc = 0 ] || fail "build-guest.sh: $(tail -20 "$tmpdir/guest.log")"
chmod 0644 "$tmpdir/guest.img"
start=$SECONDS rc=0
# shellcheck disable=SC2016
run_image --network=none -v "$tmpdir/guest.img:/guest.img:ro" --entrypoint sh -- -c '
  test -f "$LIBGUESTFS_PATH/README.fixed" -a -r "$LIBGUESTFS_PATH/root" || exit 3
  ferryfs --internal-inspect /guest.img || exit 4
  ls -d /var/tmp/.guestfs-107/appliance.d "$TMPDIR"/.guestfs-107/appliance.d 2>/dev/null && exit 5
  exit 0' >"$tmpdir/inspection.json" 2>"$tmpdir/inspection.err" || rc=$?
echo "inspection in the image: $((SECONDS - start)) s"
case $rc in
  0) ;;
  3) fail "no fixed appliance readable by 107 at LIBGUESTFS_PATH" ;;
  5) fail "libguestfs built an appliance at run time: $(cat "$tmpdir/inspection.json")" ;;
  *) fail "inspection in the image failed ($rc): $(tail -20 "$tmpdir/inspection.err")" ;;
esac
jq -e '[.. | objects | .distro? // empty] | any(. == "debian")' "$tmpdir/inspection.json" >/dev/null ||
  fail "the inspection did not find Debian: $(cat "$tmpdir/inspection.json")"
