#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Run every bench/bench-*.sh in order, each under a header.  A benchmark prints its own
# numbers, ratios against peers measured in the same run, and "target missed" lines; only a
# benchmark that fails to run makes this exit non-zero (exit 77 = skipped, not a failure).
set -uo pipefail

dir=$(cd "$(dirname "$0")" && pwd)
failed=() skipped=() passed=()
shopt -s nullglob
for bench in "$dir"/bench-*.sh; do
  name=$(basename "$bench" .sh)
  echo
  echo "=== $name $(printf '=%.0s' $(seq 1 $((70 - ${#name}))))"
  start=$SECONDS
  "$bench"
  rc=$?
  case $rc in
    0) passed+=("$name") ;;
    77) skipped+=("$name") ;;
    *) failed+=("$name")
       echo "$name: FAILED to run (exit $rc)" ;;
  esac
  echo "--- $name: $((SECONDS - start)) s"
done

echo
echo "benchmarks: ${#passed[@]} ran, ${#failed[@]} failed, ${#skipped[@]} skipped${failed[*]:+ (failed: ${failed[*]})}${skipped[*]:+ (skipped: ${skipped[*]})}"
[ ${#failed[@]} = 0 ]
