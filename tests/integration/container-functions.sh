# SPDX-License-Identifier: Apache-2.0
# Helpers for the tests that run ferry's importer image (localhost/ferry:latest, made by
# `make container`) with podman here: rootful, runc (crun fails with this machine's hybrid
# cgroups), container/containers.conf, the host's network.  Source after functions.sh:
#
#   source "$(dirname "$0")/container-functions.sh"
#   requires_image              # skips, with the reason, when podman/buildah/the image is missing
#   run_image --version         # podman run --rm ... localhost/ferry:latest --version
# shellcheck shell=bash disable=SC2154
# (top, tmpdir and skip/fail/requires come from functions.sh, sourced first)

export CONTAINERS_CONF=$top/container/containers.conf
image=${FERRY_IMAGE:-localhost/ferry:latest}

# requires_image [IMAGE]: skip unless rootful podman and buildah are here and IMAGE (default
# the importer image) exists; `make container` (container/build.sh) builds it.
requires_image ()
{
  local img=${1:-$image}
  [ "$(id -u)" = 0 ] || skip "rootful podman is needed (not root)"
  requires podman buildah runc
  podman image exists "$img" || skip "$img is not built (run make container)"
}

# build_image [--vddk]: build the image with container/build.sh (cached by its inputs) and
# print its output; skips when build.sh skips (exit 77), fails when it fails.
build_image ()
{
  local rc=0
  "$top/container/build.sh" "$@" >"$tmpdir/build.out" 2>&1 || rc=$?
  cat "$tmpdir/build.out"
  [ $rc != 77 ] || skip "$(grep SKIP "$tmpdir/build.out")"
  [ $rc = 0 ] || fail "container/build.sh $* failed (exit $rc)"
}

# run_image [PODMAN-RUN-OPTIONS...] [--] ARGS...: run the image once (removed after) on the
# host's network (unless the options say --network=...), as its own user (107); ARGS go to
# its entrypoint.  Options before "--"
# go to podman run (e.g. -v, --device, -e, --name).
run_image ()
{
  local opts=()
  if [[ " $* " == *" -- "* ]]; then
    while [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
  fi
  [[ " ${opts[*]} " == *" --network="* ]] || opts+=(--network=host)
  podman run --rm --runtime=runc "${opts[@]}" "$image" "$@"
}
