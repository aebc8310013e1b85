#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Run libFuzzer targets built by `make fuzz-build`.
#
#   fuzz/run.sh [--seconds N | --runs N] [--jobs N] TARGET... [-- LIBFUZZER-FLAGS...]
#
# Each TARGET (soap, vsphere, cbt, meta, vmjson, plan) starts from its committed seeds in
# fuzz/corpus/TARGET plus every reproducer in fuzz/crashes/TARGET (so a fixed bug stays
# fixed), and grows a working corpus in OUT/work/TARGET.  Crashes are written to
# OUT/crashes/; the log of each run is OUT/logs/TARGET.log.  OUT is $FUZZ_OUT, by default
# fuzz/build/run (give long runs their own so that `make fuzz` leaves them alone).  Prints one
# line per target with libFuzzer's execution count and exits 1 if any target failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

limit=(-max_total_time=60)
targets=() extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) limit=(-max_total_time="$2"); shift 2 ;;
    --runs) limit=(-runs="$2"); shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -*) echo "fuzz/run.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || { echo "usage: fuzz/run.sh [--seconds N | --runs N] TARGET..." >&2; exit 2; }

# -timeout: one input taking 25 s is a hang even on a loaded machine (a starved process
# shows 10 s of wall time for 20 ms of work).  Huge allocations are the code's to refuse
# (they return NULL and the code reports it); libFuzzer's own malloc limit would call each
# one a crash.
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:malloc_context_size=8}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

out=${FUZZ_OUT:-fuzz/build/run}
failed=0
mkdir -p "$out"/logs "$out"/crashes
for t in "${targets[@]}"; do
  bin=fuzz/build/fuzz-$t
  work=$out/work/$t
  log=$out/logs/$t.log
  [ -x "$bin" ] || { echo "fuzz/run.sh: $bin is not built (make fuzz-build)" >&2; exit 2; }
  mkdir -p "$work"
  seeds=(fuzz/corpus/"$t")
  # Open bugs: each reproducer must still fail with the harness's filters off.  One that
  # passes has been fixed: it belongs in the corpus, and its XXX filter must go.
  for r in fuzz/crashes/"$t"/*; do
    [ -f "$r" ] || continue
    seeds=(fuzz/corpus/"$t" fuzz/crashes/"$t")
    if FUZZ_UNFILTERED=1 ASAN_OPTIONS=allocator_may_return_null=0 "$bin" "$r" >"$out/logs/$t.replay.log" 2>&1; then
      failed=1
      printf 'fuzz-%s: %s no longer fails: move it to fuzz/corpus/%s and drop its XXX filter\n' \
        "$t" "$r" "$t"
    else
      printf 'fuzz-%s: open bug (reported) still reproduces: %s\n' "$t" "$r"
    fi
  done
  "$bin" "${limit[@]}" -timeout=25 -malloc_limit_mb=65536 -print_final_stats=1 \
    -artifact_prefix="$out"/crashes/"$t"- "${extra[@]}" "$work" "${seeds[@]}" \
    >"$log" 2>&1
  rc=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n1)
  if [ $rc = 0 ] && [ -n "$done_line" ]; then
    printf 'fuzz-%s: %s\n' "$t" "$(awk '{ sub("#", "", $1)
      print $1 " executions, 0 crashes (cov " $4 ", features " $6 ", corpus " $8 ", " $12 " exec/s)" }' <<<"$done_line")"
  else
    failed=1
    printf 'fuzz-%s: FAILED (exit %d), log %s\n' "$t" "$rc" "$log"
    grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -n 5 | sed 's/^/    /'
  fi
done
exit $failed
