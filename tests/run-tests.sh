#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry test runner: run-tests.sh [UNIT-TEST...] -- [INTEGRATION-TEST...]
#
# Runs the unit tests, then the integration tests (exit 77 = skipped, with the reason the
# test printed), keeps each test's output in tests/logs/NAME.log, and ends with one line:
#   N passed, N failed, N skipped
#
# FERRY_VALGRIND=1 runs the unit tests under valgrind memcheck, and hands integration
# tests a valgrind command line in FERRY_VALGRIND_CMD that functions.sh puts in front of
# nbdkit (start_ferry) and ferryfs (start_ferryfs).  Every process valgrind watched writes
# tests/logs/valgrind/TEST/PID.log; a test passes only if no log counts an error (invalid
# accesses, uninitialised values, definite leaks), and tests/valgrind.supp holds the
# suppressions of other projects' noise, each with its reason.
set -u
cd "$(dirname "$0")/.." || exit 1
mkdir -p tests/logs

pass=0 failed=0 skipped=0
failures=()

run_one ()
{
  local name=$1 log rc
  shift
  log=tests/logs/$(basename "$name").log
  local start=$SECONDS
  "$@" >"$log" 2>&1
  rc=$?
  case $rc in
    0) pass=$((pass + 1)); printf 'PASS: %s (%ds)\n' "$name" $((SECONDS - start)) ;;
    77) skipped=$((skipped + 1))
        printf 'SKIP: %s: %s\n' "$name" "$(grep -m1 'SKIP' "$log" | sed 's/.*SKIP: //')" ;;
    *) failed=$((failed + 1)); failures+=("$name")
       printf 'FAIL: %s (exit %d, log %s)\n' "$name" "$rc" "$log"
       tail -n 30 "$log" | sed 's/^/    /' ;;
  esac
}

unit=() integ=() seen_sep=0
for arg in "$@"; do
  if [ "$arg" = -- ]; then seen_sep=1; continue; fi
  if [ $seen_sep = 0 ]; then unit+=("$arg"); else integ+=("$arg"); fi
done

valgrind_opts=(--error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
  --show-leak-kinds=definite --keep-debuginfo=yes --num-callers=30
  --suppressions="$PWD/tests/valgrind.supp")

# valgrind_errors DIR: the logs in DIR that count an error, with their first report.
valgrind_errors ()
{
  local log bad=0
  for log in "$1"/*.log; do
    [ -f "$log" ] || continue
    if grep -q 'ERROR SUMMARY: [1-9]' "$log"; then
      bad=1
      echo "valgrind: errors in $log:"
      grep -m 40 '^==[0-9]*== ' "$log" | sed -n '/Invalid\|uninitialised\|definitely lost\|Mismatched\|overlap\|Syscall param/,$p' |
        head -n 30
    fi
  done
  return $bad
}

# run_valgrind_test NAME: an integration test whose nbdkit and ferryfs run under valgrind.
run_valgrind_test ()
{
  local name=$1 dir rc
  dir=$PWD/tests/logs/valgrind/$(basename "$name" .sh)
  rm -rf "$dir"
  mkdir -p "$dir"
  FERRY_VALGRIND_CMD="valgrind ${valgrind_opts[*]} --log-file=$dir/%p.log" NBDKIT_VALGRIND=1 \
    timeout "${FERRY_TEST_TIMEOUT:-900}" bash "$name"
  rc=$?
  if [ $rc = 0 ] || [ $rc = 77 ]; then
    valgrind_errors "$dir" || return 1
    echo "valgrind: $(find "$dir" -name '*.log' | wc -l) processes checked, no errors"
  fi
  return $rc
}

for t in "${unit[@]}"; do
  if [ -n "${FERRY_VALGRIND:-}" ]; then
    run_one "$t" valgrind "${valgrind_opts[@]}" "./$t"
  else
    run_one "$t" "./$t"
  fi
done
for t in "${integ[@]}"; do
  if [ -n "${FERRY_VALGRIND:-}" ]; then
    run_one "$t" run_valgrind_test "$t"
  else
    # A test that boots guests under TCG may ask for more with a line "# timeout: SECONDS".
    own=$(sed -n 's/^# timeout: \([0-9][0-9]*\)$/\1/p' "$t" | head -1)
    run_one "$t" timeout "${FERRY_TEST_TIMEOUT:-${own:-900}}" bash "$t"
  fi
done

echo "$pass passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
