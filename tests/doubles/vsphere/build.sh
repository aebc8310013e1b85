#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Build the vSphere test double (govmomi vcsim + our extensions) in GOPATH
# mode from Debian's golang-github-vmware-govmomi-dev.  No network is used.
#
# Usage: tests/doubles/vsphere/build.sh OUT
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT" >&2
    exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
out=$1
case $out in
    /*) ;;
    *) out=$PWD/$out ;;
esac

build=$here/.build
pkg=$build/gopath/src/vspheredouble
mkdir -p "$build/gopath/src" "$build/gocache"
# The package directory is a symlink to the sources, so edits need no copy
# (remade each time in case the checkout moved).
rm -rf "$pkg"
ln -s "$here" "$pkg"

export GOPATH="$build/gopath:/usr/share/gocode"
export GO111MODULE=off GOPROXY=off GOFLAGS='' GOCACHE="$build/gocache"
export CGO_ENABLED=0

cd "$pkg"
go build -o "$out" .
