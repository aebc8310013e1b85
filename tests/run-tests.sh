#!/usr/bin/env bash
# ferry test runner: run-tests.sh [UNIT-TEST...] -- [INTEGRATION-TEST...]
#
# Runs the unit tests, then the integration tests (exit 77 = skipped, with the reason the
# test printed), keeps each test's output in tests/logs/NAME.log, and ends with one line:
#   N passed, N failed, N skipped
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

for t in "${unit[@]}"; do
  if [ -n "${FERRY_VALGRIND:-}" ]; then
    run_one "$t" valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite "./$t"
  else
    run_one "$t" "./$t"
  fi
done
for t in "${integ[@]}"; do
  # A test that boots guests under TCG may ask for more with a line "# timeout: SECONDS".
  own=$(sed -n 's/^# timeout: \([0-9][0-9]*\)$/\1/p' "$t" | head -1)
  run_one "$t" timeout "${FERRY_TEST_TIMEOUT:-${own:-900}}" bash "$t"
done

echo "$pass passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
