#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# timeout: 2700
# The VDDK init image (make vddk-image): run as CDI's and Forklift's init container does —
# its default entrypoint, as 107:107, with no capabilities, an empty directory at /opt — it
# copies vmware-vix-disklib-distrib/ there: libvixDiskLib.so.8 and the libvixDiskLib.so
# link, which passes Forklift's validation (`file -E`) and resolves every symbol (`ldd -r`).
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
# shellcheck source-path=SCRIPTDIR source=container-functions.sh
source "$(dirname "$0")/container-functions.sh"
set -euo pipefail
requires file ldd

image=localhost/ferry-vddk:latest
build_image --vddk
requires_image "$image"
[ "$(podman image inspect --format '{{.Config.User}}' "$image")" = 107:107 ] ||
  fail "$image does not run as 107:107"

mkdir "$tmpdir/opt"
chown 107:107 "$tmpdir/opt"
run_image --cap-drop=ALL -v "$tmpdir/opt:/opt" -- >"$tmpdir/out" 2>&1 ||
  fail "the init container failed: $(cat "$tmpdir/out")"
lib=$tmpdir/opt/vmware-vix-disklib-distrib/lib64
ls -ln "$lib"
[ "$(readlink "$lib/libvixDiskLib.so")" = libvixDiskLib.so.8 ] ||
  fail "libvixDiskLib.so is not a link to libvixDiskLib.so.8"
[ "$(stat -c %u:%g "$lib/libvixDiskLib.so.8")" = 107:107 ] || fail "not copied as 107:107"
file -E "$lib/libvixDiskLib.so" || fail "file -E (Forklift's validation) fails"
file -L "$lib/libvixDiskLib.so" | grep -q 'ELF 64-bit LSB shared object' ||
  fail "not a shared object: $(file -L "$lib/libvixDiskLib.so")"
ldd -r "$lib/libvixDiskLib.so.8" >"$tmpdir/ldd" 2>&1 || fail "ldd -r: $(cat "$tmpdir/ldd")"
! grep -Eq 'not found|undefined symbol' "$tmpdir/ldd" || fail "ldd -r: $(cat "$tmpdir/ldd")"
# The copied library is the one make builds (stripped, so compare its exports).
diff <(nm -D --defined-only "$lib/libvixDiskLib.so.8" | awk '{ print $3 }' | sort) \
  <(nm -D --defined-only "$top/vddk/lib64/libvixDiskLib.so.8" | awk '{ print $3 }' | sort) ||
  fail "the image's library exports differ from vddk/lib64/libvixDiskLib.so.8"
