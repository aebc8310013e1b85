#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry's per-host scheduling: two VMs of one disk each on the double's one host with
# maxInFlightPerHost=1 are copied one after the other — the double's /folder request log
# shows their transfers never overlap in time; then a 3-disk VM with maxInFlightPerHost=2
# completes, at most two of its disks being read at any moment.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq curl cmp python3
requires_ferry

start_double

# span VM: "FIRST-START LAST-END" of the /folder GETs of VM's files.
span ()
{
  control GET /requests |
    jq -r --arg p "/folder/$1/" '[.requests[] | select(.path | startswith($p))] |
      if length == 0 then "0 0 0" else "\(min_by(.start).start) \(max_by(.end).end) \(length)" end'
}

# max_concurrent VM: the most disks of VM with a /folder GET in flight at one time,
# taking each disk's transfer as the span from its first GET's start to its last's end.
max_concurrent ()
{
  control GET /requests | python3 -c '
import json, sys
prefix = "/folder/" + sys.argv[1] + "/"
spans = {}
for r in json.load(sys.stdin)["requests"]:
    if r["path"].startswith(prefix) and r["path"].endswith("-flat.vmdk"):
        s, e = spans.get(r["path"], (r["start"], r["end"]))
        spans[r["path"]] = (min(s, r["start"]), max(e, r["end"]))
events = sorted([(s, 1) for s, e in spans.values()] + [(e, -1) for s, e in spans.values()],
                key=lambda x: (x[0], x[1]))
n = top = 0
for _, d in events:
    n += d
    top = max(top, n)
print(top, len(spans))
' "$1"
}

# Two VMs, one disk each, 48 MiB of data in 1 MiB runs over a 256 MiB disk.
for vm in a b; do
  create_vm "$vm" "disks=256M&power=off&cbt=1" >/dev/null
  mapfile -t areas < <(for i in $(seq 0 47); do echo "$((i * 64)):16"; done)
  make_sparse_disk "$tmpdir/$vm.src" 256M "${areas[@]}"
  place_disk "$vm" 2000 "$tmpdir/$vm.src"
  make_targets "$vm" 1
done
# The verification sample (10%) reads the source too: within the same limits.
write_plan "$tmpdir/plan.json" '. * {"maxInFlightPerHost": 1, "maxInFlightPerDatastore": 4,
  "connectionsPerDisk": 1, "verifySamplePercent": 10, "vms": [{"name": "a"}, {"name": "b"}]}'
control POST /requests/reset >/dev/null
"$ferry" migrate "$tmpdir/plan.json" --progress=none ||
  fail "ferry migrate of a and b failed"
read -r a0 a1 an <<<"$(span a)"
read -r b0 b1 bn <<<"$(span b)"
echo "a: $a0 .. $a1 ($an GETs); b: $b0 .. $b1 ($bn GETs)"
if [ "$an" -le 1 ] || [ "$bn" -le 1 ]; then fail "expected /folder GETs of both VMs in the log"; fi
# No GET of a is in flight while one of b is (fills and verification samples alike).
overlaps=$(control GET /requests | python3 -c '
import json, sys
reqs = json.load(sys.stdin)["requests"]
a = [(r["start"], r["end"]) for r in reqs if r["path"].startswith("/folder/a/")]
b = [(r["start"], r["end"]) for r in reqs if r["path"].startswith("/folder/b/")]
print(sum(1 for s, e in a for t, f in b if s < f and t < e))')
[ "$overlaps" = 0 ] ||
  fail "with maxInFlightPerHost=1, $overlaps GETs of a and b overlap (a $a0..$a1, b $b0..$b1)"
for vm in a b; do
  cmp "$tmpdir/pvc/$vm-disk0/disk.img" "$tmpdir/$vm.src" || fail "$vm: the target differs from the source"
done

# A 3-disk VM with maxInFlightPerHost=2 completes; two disks at a time.
create_vm c "disks=128M,128M,128M&power=off&cbt=1" >/dev/null
for key in 2000 2001 2002; do
  mapfile -t areas < <(for i in $(seq 0 15); do echo "$((i * 128)):16"; done)
  make_sparse_disk "$tmpdir/c.$key" 128M "${areas[@]}"
  place_disk c "$key" "$tmpdir/c.$key"
done
make_targets c 3
write_plan "$tmpdir/plan2.json" ". * {\"maxInFlightPerHost\": 2, \"maxInFlightPerDatastore\": 4,
  \"connectionsPerDisk\": 1, \"verifySamplePercent\": 0, \"stateDir\": \"$tmpdir/state2\",
  \"vms\": [{\"name\": \"c\"}]}"
control POST /requests/reset >/dev/null
"$ferry" migrate "$tmpdir/plan2.json" --progress=none ||
  fail "ferry migrate of the 3-disk VM c with maxInFlightPerHost=2 failed"
[ "$(jq -r '.vms[0].state' "$tmpdir/state2/results.json")" = verified ] ||
  fail "c is not verified: $(cat "$tmpdir/state2/results.json")"
for i in 0 1 2; do
  cmp "$tmpdir/pvc/c-disk$i/disk.img" "$tmpdir/c.$((2000 + i))" || fail "c disk $i differs from the source"
done
read -r top ndisks <<<"$(max_concurrent c)"
echo "c: at most $top of $ndisks disks read at once"
[ "$ndisks" = 3 ] || fail "expected GETs of 3 disks of c, saw $ndisks"
[ "$top" -le 2 ] || fail "with maxInFlightPerHost=2, $top disks of c were read at once"
[ "$top" = 2 ] || fail "with maxInFlightPerHost=2, the disks of c were read one at a time"
