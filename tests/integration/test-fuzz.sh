#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The libFuzzer targets (fuzz/): build them with ASan and UBSan, replay the open bugs'
# reproducers, and fuzz each target for a few seconds from its committed seeds.  Fails on
# any crash, sanitizer report, leak or broken promise the harnesses check.  Skipped when
# clang's libFuzzer runtime is not installed (Debian: clang, libclang-rt-14-dev).
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires clang

printf 'int LLVMFuzzerTestOneInput (const char *d, unsigned long n) { return 0; }\n' \
  >"$tmpdir/probe.c"
clang -fsanitize=fuzzer,address,undefined -o "$tmpdir/probe" "$tmpdir/probe.c" \
  2>"$tmpdir/probe.err" ||
  skip "clang cannot link libFuzzer ($(head -n1 "$tmpdir/probe.err")); install libclang-rt-14-dev"

cd "$top"
env -u MAKEFLAGS -u MAKELEVEL make -s fuzz-build
FUZZ_OUT=$tmpdir/fuzz fuzz/run.sh --seconds "${FUZZ_SECONDS:-8}" soap vsphere cbt meta vmjson plan
