#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The preflight inspection: ferry validate --inspect and ferry migrate inspect each guest
# at a ferry snapshot through ferry's own read path (NBD exports on localhost, in-process)
# with virt-v2v-inspector, before any copy.
# - The real Debian guest (tests/guest/build-guest.sh, cached), powered on: reported as
#   Debian 12, BIOS, root /dev/sda1, convertible; what the inspector read was fetched
#   (the double's /folder bytes = the reported bytesFetched), far less than the disk.
# - A disk of random data (no OS): validate reports virt-v2v's own "no root" words as a
#   Critical concern, and ferry migrate refuses the VM before copying a byte (the double
#   served no /folder bytes beyond the inspection's, the target was never written).
# - No snapshot is left, also when ferry validate --inspect gets SIGTERM mid-inspection.
# Under TCG each inspection takes minutes: on a shared 2-core machine at load 15-20 the
# whole test took 995 s (noos 220 s per inspection, guestlab 410 s); far less when quiet.
# timeout: 2400
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq virt-v2v-inspector guestfish debugfs
requires_ferry
requires_guest "$tmpdir/guest.img"
# No OS: 32 MiB of random data at the start of a 256 MiB disk.
head -c 32M /dev/urandom >"$tmpdir/noos.img"
truncate -s 256M "$tmpdir/noos.img"

start_double
create_vm guestlab "disks=1G&power=on&cbt=1&cpus=2&memory=1024" >/dev/null
place_disk guestlab 2000 "$tmpdir/guest.img"
create_vm noos "disks=256M&power=on&cbt=1" >/dev/null
place_disk noos 2000 "$tmpdir/noos.img"
make_targets guestlab 1
make_targets noos 1
write_plan "$tmpdir/guestlab.json" '.skipGuestConversion = false | .vms = [{"name": "guestlab"}]'
write_plan "$tmpdir/noos.json" '.skipGuestConversion = false | .vms = [{"name": "noos"}]'
# The inspector's files of validate go to a temporary directory under TMPDIR.
export TMPDIR=$tmpdir

no_ferry_snapshots ()
{
  local vm
  for vm in guestlab noos; do
    [ -z "$(ferry_snapshots "$vm")" ] || fail "$vm: snapshots left: $(ferry_snapshots "$vm")"
  done
}

# 1. SIGTERM while the inspector runs: ferry stops it, removes its snapshot, exits 75 (retryable).
"$ferry" validate "$tmpdir/guestlab.json" --inspect >"$tmpdir/term.out" 2>&1 &
pid=$!
cleanup_fn "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
inspector_running () { pgrep -f "^virt-v2v-inspector .*$tmpdir/ferry-inspect" >/dev/null; }
timeout=300 wait_for inspector_running
[ -n "$(ferry_snapshots guestlab)" ] || fail "no ferry snapshot while inspecting"
kill -TERM $pid
rc=0
wait $pid || rc=$?
[ $rc = 75 ] || fail "validate after SIGTERM: exit $rc: $(cat "$tmpdir/term.out")"
no_ferry_snapshots
inspector_gone () { ! inspector_running; }
timeout=60 wait_for inspector_gone
grep -q 'cancelled' "$tmpdir/term.out" || fail "no word of the cancel: $(cat "$tmpdir/term.out")"

# 2. validate --inspect of the disk without an OS: Critical, in virt-v2v's words.
before=$(double_stat folder_bytes)
start=$SECONDS
rc=0
"$ferry" validate "$tmpdir/noos.json" --inspect --json >"$tmpdir/validate-noos.json" || rc=$?
echo "validate --inspect of noos took $((SECONDS - start)) s"
[ $rc = 1 ] || fail "validate exit $rc (expected 1: noos cannot be converted): $(cat "$tmpdir/validate-noos.json")"
fetched=$(($(double_stat folder_bytes) - before))
jq -c '.inspections.noos | {convertible, bytesRead, bytesFetched, diskBytes, seconds, error}' "$tmpdir/validate-noos.json"
jq -e '.inspections.noos | (.convertible | not) and
  (.error | test("inspection could not detect the source guest"))' "$tmpdir/validate-noos.json" >/dev/null ||
  fail "noos: $(jq -c .inspections.noos "$tmpdir/validate-noos.json")"
jq -e '.concerns | any(.object == "vm noos" and .category == "Critical" and
  (.message | test("virt-v2v cannot convert this guest: .*inspection could not detect")))' \
  "$tmpdir/validate-noos.json" >/dev/null || fail "no noos concern: $(jq -c .concerns "$tmpdir/validate-noos.json")"
[ "$fetched" = "$(jq .inspections.noos.bytesFetched "$tmpdir/validate-noos.json")" ] ||
  fail "the double served $fetched /folder bytes, the inspection says $(jq .inspections.noos.bytesFetched "$tmpdir/validate-noos.json")"
no_ferry_snapshots
left=("$tmpdir"/ferry-inspect.*)
[ ! -e "${left[0]}" ] || fail "validate left its temporary directory ${left[0]}"

# 3. ferry migrate refuses noos before round 1, in virt-v2v's words; nothing copied.
before=$(double_stat folder_bytes)
rc=0
"$ferry" migrate "$tmpdir/noos.json" --progress=json >"$tmpdir/progress.jsonl" 2>"$tmpdir/migrate.err" || rc=$?
[ $rc = 1 ] || fail "migrate exit $rc: $(cat "$tmpdir/migrate.err")"
results=$tmpdir/state/results.json
jq -c '.vms[0] | {state, error, round, rounds: (.rounds | length)}' "$results"
jq -e '.vms[0] | .state == "failed" and .round == 0 and (.rounds | length) == 0 and
  (.error | test("virt-v2v cannot convert this guest.*inspection could not detect")) and
  (.inspection.convertible | not)' "$results" >/dev/null || fail "results: $(jq -c .vms[0] "$results")"
fetched=$(($(double_stat folder_bytes) - before))
[ "$fetched" = "$(jq '.vms[0].inspection.bytesFetched' "$results")" ] ||
  fail "migrate: the double served $fetched /folder bytes, the inspection says $(jq '.vms[0].inspection.bytesFetched' "$results")"
[ ! -s "$tmpdir/pvc/noos-disk0/disk.img" ] || fail "migrate wrote the target"
jq -se 'map(select(.event == "inspection" and .stage != null)) | length > 1' \
  "$tmpdir/progress.jsonl" >/dev/null || fail "no inspection stages in the progress"
[ -s "$tmpdir/state/noos/inspection.log" ] || fail "no inspection log"
no_ferry_snapshots

# 4. Without the preflight ("preflightInspection": false, or --no-inspect) the same VM
# is copied: a warm round 1 fetches its 32 MiB of data, and nothing is inspected.
for how in plan flag; do
  write_plan "$tmpdir/$how.json" ".skipGuestConversion = false | .warm = true |
    .stateDir = \"$tmpdir/state-$how\" | .vms = [{\"name\": \"noos\"}]"
  args=()
  if [ $how = plan ]; then
    jq '.preflightInspection = false' "$tmpdir/$how.json" >"$tmpdir/p" && mv "$tmpdir/p" "$tmpdir/$how.json"
  else
    args=(--no-inspect)
  fi
  "$ferry" precopy "$tmpdir/$how.json" --progress=none "${args[@]}" || fail "precopy ($how) failed"
  jq -e '.vms[0] | .inspection == null and .rounds[0].bytesFetched == 33554432' \
    "$tmpdir/state-$how/results.json" >/dev/null ||
    fail "precopy ($how): $(jq -c '.vms[0] | {inspection, rounds}' "$tmpdir/state-$how/results.json")"
done
no_ferry_snapshots
# 5. validate --inspect of the real guest: Debian 12, BIOS, root /dev/sda1, convertible;
# what was fetched is what the inspection says, far less than the disk.
before=$(double_stat folder_bytes)
start=$SECONDS
"$ferry" validate "$tmpdir/guestlab.json" --inspect --json >"$tmpdir/validate.json" ||
  fail "validate of guestlab: $(cat "$tmpdir/validate.json")"
echo "validate --inspect of guestlab took $((SECONDS - start)) s"
fetched=$(($(double_stat folder_bytes) - before))
jq -c '.inspections.guestlab | {convertible, full, os, firmware, bytesRead, bytesFetched,
  diskBytes, seconds, warnings}' "$tmpdir/validate.json"
jq -e '.ready and (.inspections.guestlab | .convertible and .os.distro == "debian" and
  .os.major_version == 12 and .os.name == "linux" and .firmware == "bios" and
  .os.root == "/dev/sda1" and .error == null)' "$tmpdir/validate.json" >/dev/null ||
  fail "guestlab: $(jq -c .inspections.guestlab "$tmpdir/validate.json")"
jq -e '.concerns | any(.object == "vm guestlab" and .category == "Information" and
  (.message | test("linux debian 12[.][0-9]+ .*firmware bios, root /dev/sda1: virt-v2v can convert it")))' \
  "$tmpdir/validate.json" >/dev/null || fail "no guestlab concern: $(jq -c .concerns "$tmpdir/validate.json")"
[ "$fetched" = "$(jq .inspections.guestlab.bytesFetched "$tmpdir/validate.json")" ] ||
  fail "the double served $fetched /folder bytes, the inspection says $(jq .inspections.guestlab.bytesFetched "$tmpdir/validate.json")"
jq -e '.inspections.guestlab | .bytesFetched > 0 and .bytesFetched * 8 < .diskBytes and
  .bytesFetched <= .bytesRead' "$tmpdir/validate.json" >/dev/null ||
  fail "guestlab read: $(jq -c '.inspections.guestlab | {bytesRead, bytesFetched, diskBytes}' "$tmpdir/validate.json")"
no_ferry_snapshots
[ ! -e "$tmpdir/pvc/guestlab-disk0/disk.img" ] || fail "validate wrote a target"
echo "$0: OK"
