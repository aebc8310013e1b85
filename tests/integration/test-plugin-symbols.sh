#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The plugin exports only nbdkit's entry point and the debug flags -D sets by name: ferry's
# own functions (and the libraries linked into it) can neither clash with nor interpose on
# nbdkit's or a library's symbols.
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nm nbdkit
requires_plugin

nm -D --defined-only "$plugin" | awk '{ print $3 }' | sort >"$tmpdir/exported"
printf '%s\n' ferry_debug_http ferry_debug_soap ferry_debug_stats plugin_init |
  sort >"$tmpdir/expected"
diff -u "$tmpdir/expected" "$tmpdir/exported" ||
  fail "the plugin exports other symbols than plugin_init and ferry_debug_*"

# nbdkit still finds every debug flag (it warns about one it cannot find).
nbdkit -D ferry.soap=1 -D ferry.http=1 -D ferry.stats=1 "$plugin" --dump-plugin \
  >/dev/null 2>"$tmpdir/dump.err"
if grep -q 'ferry_debug' "$tmpdir/dump.err"; then
  cat "$tmpdir/dump.err"
  fail "nbdkit cannot set a debug flag"
fi
