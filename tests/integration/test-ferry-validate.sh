#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry validate: a plan with many problems lists all of them in one run (text and
# --json), changing nothing; an unknown key is refused naming it; a wrong password is
# reported as the server's login failure; enableCBT turns CBT on; the password never
# appears in any output, journal, results, progress or other file ferry writes.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq curl
requires_ferry

export PASSWORD=Sekr1t-XYZZY-4711
wrong=Wr0ng-PLUGH-0815
start_double -password "$PASSWORD"

create_vm good "disks=32M&power=off&cbt=1" >/dev/null
create_vm nocbt "disks=32M&power=on&cbt=0" >/dev/null
create_vm snapped "disks=32M&power=on&cbt=1&snapshots=1" >/dev/null
create_vm unmapped "disks=32M&power=on&cbt=1" >/dev/null
create_vm missing "disks=32M&power=on&cbt=1" >/dev/null
create_vm small "disks=64M&power=on&cbt=1" >/dev/null
create_vm shared "disks=32M,32M&power=on&cbt=1" >/dev/null
good_id=$(vm_json good | jq -r .moref)
mkdir -p "$tmpdir/t/good" "$tmpdir/t/nocbt" "$tmpdir/t/snapped" "$tmpdir/t/shared" "$tmpdir/t/small"

# A too-small target: a 1 MiB filesystem (tmpfs), where this kernel lets us mount one.
small_fs=0
if mount -t tmpfs -o size=1M ferry-test "$tmpdir/t/small" 2>/dev/null; then
  small_fs=1
  cleanup_fn "umount '$tmpdir/t/small'"
else
  echo "note: cannot mount a small tmpfs here; the too-small target is not checked"
fi

# The only storageMap entry is for another datastore: every VM but "unmapped" has its
# targets in vms[].targets.
t=$tmpdir/t
write_plan "$tmpdir/plan.json" "
  .warm = true |
  .storageMap[0].source.name = \"other ds\" |
  .vms = [
    {name: \"good\", targets: {\"2000\": \"$t/good\"}},
    {id: \"$good_id\", targetName: \"good-again\", targets: {\"0\": \"$t/good-again\"}},
    {name: \"ghost\"},
    {name: \"nocbt\", targets: {\"2000\": \"$t/nocbt\"}},
    {name: \"snapped\", targets: {\"0\": \"$t/snapped\"}},
    {name: \"unmapped\"},
    {name: \"missing\", targets: {\"2000\": \"$t/no/such/dir\"}},
    {name: \"small\", targets: {\"2000\": \"$t/small\"}},
    {name: \"shared\", targets: {\"0\": \"$t/shared\", \"1\": \"$t/shared\"}}
  ]"
mkdir -p "$t/good-again"

rc=0
"$ferry" validate "$tmpdir/plan.json" >"$tmpdir/validate.out" 2>"$tmpdir/validate.err" || rc=$?
cat "$tmpdir/validate.out" "$tmpdir/validate.err"
[ $rc = 1 ] || fail "ferry validate of a plan with critical problems exited $rc, not 1"
rc=0
"$ferry" validate "$tmpdir/plan.json" --json >"$tmpdir/validate.json" 2>>"$tmpdir/validate.err" || rc=$?
[ $rc = 1 ] || fail "ferry validate --json exited $rc, not 1"
jq -e '.ready == false' "$tmpdir/validate.json" >/dev/null || fail "--json does not say ready: false"

# expect OBJECT REGEX: a Critical concern about OBJECT whose message matches REGEX, in
# the JSON and in the text output.
expect ()
{
  jq -e --arg o "$1" --arg re "$2" \
    'any(.concerns[]; .object == $o and .category == "Critical" and (.message | test($re; "i")))' \
    "$tmpdir/validate.json" >/dev/null || fail "no Critical concern about '$1' matching /$2/"
  grep -E "^Critical: $1: " "$tmpdir/validate.out" | grep -Eiq "$2" ||
    fail "the text output has no Critical line about '$1' matching /$2/"
}
expect "vm good-again" "same VM as good"
expect "vm ghost" "ghost"
expect "vm nocbt" "changed block tracking.*disabled"
expect "vm snapped" "has snapshots: .*user-snap-1"
expect "vm unmapped" "datastore \"ferry ds 1\", which the storageMap does not map"
expect "target $t/no/such/dir/disk.img" "missing"
expect "vm shared" "target $t/shared/disk.img is used by two disks"
[ $small_fs = 0 ] || expect "target $t/small/disk.img" "too small: the disk needs 67108864 bytes"
n=$(jq '[.concerns[] | select(.category == "Critical")] | length' "$tmpdir/validate.json")
echo "$n critical concerns"
[ "$n" -ge $((7 + small_fs)) ] || fail "expected at least $((7 + small_fs)) critical concerns, got $n"
# Nothing about the good VM, and validate changed nothing.
! jq -e 'any(.concerns[]; .object == "vm good")' "$tmpdir/validate.json" >/dev/null ||
  fail "a concern about the good VM"
[ "$(vm_json nocbt | jq .cbt)" = false ] || fail "validate turned CBT on without enableCBT"
[ "$(vm_json snapped | jq '.snapshots | length')" = 1 ] || fail "validate touched snapped's snapshots"

# An unknown key is refused, naming it (and its place).
write_plan "$tmpdir/typo.json" '.warm = true | .vms = [{name: "good", tragets: {}}] | .precopyIntervall = 60'
rc=0
"$ferry" validate "$tmpdir/typo.json" >"$tmpdir/typo.out" 2>&1 || rc=$?
cat "$tmpdir/typo.out"
[ $rc = 1 ] || fail "validate of a plan with unknown keys exited $rc"
grep -q 'unknown key "precopyIntervall"' "$tmpdir/typo.out" || fail "the unknown key precopyIntervall is not named"
grep -q 'vms\[0\]: unknown key "tragets"' "$tmpdir/typo.out" || fail "the unknown key vms[0].tragets is not named"
rc=0
"$ferry" migrate "$tmpdir/typo.json" >"$tmpdir/typo-migrate.out" 2>&1 || rc=$?
[ $rc != 0 ] || fail "ferry migrate ran a plan with an unknown key"
grep -q 'unknown key "precopyIntervall"' "$tmpdir/typo-migrate.out" || fail "migrate does not name the unknown key"
[ "$(vm_json good | jq '.snapshots | length')" = 0 ] || fail "migrate of a bad plan touched the VM"

# A wrong password: the server's words, never the password.
ferry_secret "$tmpdir/badsecret"
printf '%s' "$wrong" >"$tmpdir/badsecret/password"
write_plan "$tmpdir/badpw.json" ".source.secret = \"$tmpdir/badsecret\" | .vms = [{name: \"good\", targets: {\"0\": \"$t/good\"}}]"
rc=0
"$ferry" validate "$tmpdir/badpw.json" --json >"$tmpdir/badpw.json.out" 2>"$tmpdir/badpw.err" || rc=$?
cat "$tmpdir/badpw.json.out"
[ $rc = 1 ] || fail "validate with a wrong password exited $rc"
jq -e 'any(.concerns[]; .category == "Critical" and (.message | test("incorrect user name or password")))' \
  "$tmpdir/badpw.json.out" >/dev/null || fail "the login failure is not reported in the server's words"

# enableCBT: validate turns CBT on for a warm plan's VM.
create_vm cbtoff "disks=32M&power=on&cbt=0" >/dev/null
mkdir -p "$t/cbtoff"
write_plan "$tmpdir/cbt.json" ".warm = true | .enableCBT = true | .vms = [{name: \"cbtoff\", targets: {\"0\": \"$t/cbtoff\"}}]"
"$ferry" validate "$tmpdir/cbt.json" --json >"$tmpdir/cbt.out" 2>&1 || fail "validate with enableCBT: $(cat "$tmpdir/cbt.out")"
cat "$tmpdir/cbt.out"
[ "$(vm_json cbtoff | jq .cbt)" = true ] || fail "enableCBT did not turn CBT on"

# A verbose migration of the good VM (SOAP calls logged), to look for the password in
# everything ferry wrote.
write_plan "$tmpdir/run.json" ".vms = [{name: \"good\", targets: {\"0\": \"$t/good\"}}]"
head -c 1M /dev/urandom >"$tmpdir/data"
guest_write good 2000 0 "$tmpdir/data"
"$ferry" migrate "$tmpdir/run.json" -v --progress=json >"$tmpdir/run.out" 2>"$tmpdir/run.err" ||
  fail "ferry migrate of good failed: $(tail "$tmpdir/run.err")"
[ "$(jq -r '.vms[0].state' "$tmpdir/state/results.json")" = verified ] || fail "good is not verified"
[ -s "$tmpdir/run.err" ] || fail "no verbose output to look at"
for pw in "$PASSWORD" "$wrong"; do
  for f in "$tmpdir"/*.out "$tmpdir"/*.err "$tmpdir"/run.*; do
    ! grep -qF -- "$pw" "$f" || fail "the password is in $f"
  done
  ! grep -rlF -- "$pw" "$tmpdir/state" "$t" || fail "the password is in a file ferry wrote (above)"
done
# The password is in the Secret and the double's arguments only.
grep -qF -- "$PASSWORD" "$tmpdir/secret/password" || fail "the test did not use the password it looked for"
