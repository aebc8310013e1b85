#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# build.sh [--vddk]: build ferry's importer image localhost/ferry:latest (make container) or,
# with --vddk, the VDDK init image localhost/ferry-vddk:latest (make vddk-image), with buildah
# and no registry:
#
#  1. the base localhost/ferry-base:bookworm is made here by `debootstrap --variant=minbase
#     bookworm` (the rootfs cached as $FERRY_CACHE/base-KEY/rootfs.tar, KEY a hash of its
#     recipe) and imported with `buildah from scratch` + copy + commit;
#  2. container/Containerfile is built on it (`buildah bud --isolation=chroot --network=host`)
#     from a context holding the git-tracked (and untracked, not ignored) files, minus tests/
#     and bench/.  The image is labelled io.ferry.inputs=HASH, a hash of that context and
#     of the base; when an image with that label exists it is reused, not rebuilt.
#
# Prints the image id and its size.  Environment: FERRY_CACHE (default /var/cache/ferry),
# MIRROR (default http://deb.debian.org/debian), SECURITY_MIRROR, FERRY_IMAGE_REBUILD=1 to
# build even when a cached image matches, without buildah's layer cache (fresh packages).  Needs root, buildah, debootstrap; exit 77 when
# one is missing.
set -euo pipefail

target=ferry
case "${1:-}" in
  --vddk) target=vddk ;;
  "") ;;
  *) echo "usage: container/build.sh [--vddk]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "container: SKIP: root is required (rootful buildah)" >&2; exit 77; }
for cmd in buildah debootstrap podman git; do
  command -v "$cmd" >/dev/null ||
    { echo "container: SKIP: $cmd is not installed (make deps)" >&2; exit 77; }
done

cache=${FERRY_CACHE:-/var/cache/ferry}
mirror=${MIRROR:-http://deb.debian.org/debian}
security=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
base_image=localhost/ferry-base:bookworm
if [ "$target" = vddk ]; then image=localhost/ferry-vddk; else image=localhost/ferry; fi
version=$(sed -n 's/^#define FERRY_VERSION "\(.*\)"$/\1/p' orchestrator/main.c)
[ -n "$version" ] || { echo "container: no FERRY_VERSION in orchestrator/main.c" >&2; exit 1; }

mkdir -p "$cache/debs"
exec 9>"$cache/container.lock"
flock 9

label_of ()
{
  buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

# --- 1. the base ------------------------------------------------------------------------
# The recipe: what debootstrap gets and the apt configuration written into the rootfs.
base_recipe="minbase bookworm $mirror $security recipe-1"
base_key=$(printf '%s\n' "$base_recipe" | sha256sum | cut -c1-16)

make_rootfs ()
{
  local dir=$1 R=$1/rootfs start=$SECONDS
  rm -rf --one-file-system "$R"
  echo "container: debootstrap --variant=minbase bookworm (about 2 minutes; cache $cache/debs)"
  debootstrap --variant=minbase --cache-dir="$cache/debs" bookworm "$R" "$mirror" \
    >"$dir/debootstrap.log" 2>&1 || { tail -20 "$dir/debootstrap.log" >&2; exit 1; }
  # The host's archive layout: bookworm, bookworm-updates and bookworm-security, and its
  # apt settings (Release files are not checked against the clock).
  rm -f "$R/etc/apt/sources.list"
  cat >"$R/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$R/etc/apt/apt.conf.d/90ferry" <<'EOF'
Acquire::Check-Valid-Until "false";
Acquire::Check-Date "false";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
  # Images carry no documentation (dpkg skips it from now on).
  cat >"$R/etc/dpkg/dpkg.cfg.d/90ferry-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF
  find "$R/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
  rm -rf "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/var/lib/apt/lists/* \
    "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb "$R"/var/log/*.log
  tar -C "$R" --numeric-owner -cf "$dir/rootfs.tar.tmp" .
  mv "$dir/rootfs.tar.tmp" "$dir/rootfs.tar"
  rm -rf --one-file-system "$R"
  echo "container: base rootfs made in $((SECONDS - start)) s"
}

base_dir=$cache/base-$base_key
if [ "$(label_of "$base_image" io.ferry.base)" != "$base_key" ]; then
  [ -f "$base_dir/rootfs.tar" ] || { mkdir -p "$base_dir"; make_rootfs "$base_dir"; }
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  tar -C "$mnt" --numeric-owner -xpf "$base_dir/rootfs.tar"
  buildah umount "$ctr" >/dev/null
  buildah config --label io.ferry.base="$base_key" --env LANG=C.UTF-8 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$ctr"
  buildah commit --quiet --rm "$ctr" "$base_image" >/dev/null
  echo "container: imported $base_image from $base_dir/rootfs.tar"
fi

# --- 2. the image -----------------------------------------------------------------------
# The context: what git knows of (tracked, or untracked and not ignored), minus what the
# image is not made of (tests, benchmarks, documentation, this script), so that changing
# those rebuilds nothing.
ctx=$(mktemp -d "${TMPDIR:-/tmp}/ferry-ctx.XXXXXX")
trap 'rm -rf --one-file-system "$ctx"' EXIT
git ls-files -z --cached --others --exclude-standard -- . ':!tests' ':!bench' ':!*.md' \
    ':!container/build.sh' ':!container/containers.conf' |
  while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done >"$ctx.list"
tar --null -T "$ctx.list" -cf - | tar -C "$ctx" -xf -
rm -f "$ctx.list"
inputs=$( (cd "$ctx" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
           echo "base $base_key target $target version $version") | sha256sum | cut -c1-16)

# The tagged image only: buildah labels the intermediate stages' images too.  (One line per
# tag: keep the first, without a pipe that could end podman with SIGPIPE.)
found=$(podman images --noheading --quiet --no-trunc --filter "label=io.ferry.inputs=$inputs" \
          --filter "reference=$image" 2>/dev/null || true)
found=${found%%$'\n'*}
if [ -n "$found" ] && [ "${FERRY_IMAGE_REBUILD:-0}" != 1 ]; then
  echo "container: $image is cached (inputs $inputs)"
  id=$found
else
  old=$(buildah images --noheading --quiet --no-trunc "$image:latest" 2>/dev/null || true)
  start=$SECONDS
  source_url=$(git config --get remote.origin.url 2>/dev/null || echo unknown)
  echo "container: building $image (inputs $inputs; from scratch this takes about 15 minutes)"
  log=$cache/build-$target.log
  fresh=()
  [ "${FERRY_IMAGE_REBUILD:-0}" != 1 ] || fresh=(--no-cache)
  buildah bud --isolation=chroot --network=host --layers "${fresh[@]}" \
    --build-arg BASE="$base_image" --build-arg VERSION="$version" \
    --build-arg SOURCE="$source_url" --label io.ferry.inputs="$inputs" \
    --target "$target" -f container/Containerfile \
    -t "$image:latest" -t "$image:$version" "$ctx" >"$log" 2>&1 ||
    { tail -40 "$log" >&2; echo "container: buildah bud failed (log $log)" >&2; exit 1; }
  id=$(buildah images --noheading --quiet --no-trunc "$image:latest")
  echo "container: built in $((SECONDS - start)) s"
  # The image this one replaces, unless another tag still names it.
  if [ -n "$old" ] && [ "$old" != "$id" ]; then buildah rmi "$old" >/dev/null 2>&1 || true; fi
fi
buildah tag "$id" "$image:latest" "$image:$version"
size=$(podman image inspect --format '{{.Size}}' "$id")
echo "container: $image:latest $image:$version"
echo "container: image id ${id#sha256:}"
echo "container: size $size bytes ($(numfmt --to=iec "$size"))"
