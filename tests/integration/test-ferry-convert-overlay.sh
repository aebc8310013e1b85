#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Conversion's overlay safety and its accounting, fast: a stand-in for virt-v2v-in-place
# (first in PATH) reads the libvirt XML ferry wrote, writes 192 KiB at 64 KiB into every
# disk through the NBD exports it names, and then fails or succeeds as the test says.
# Everything else is real: the qcow2 overlays, qemu-nbd, the commit.  After the failure
# every target is still the verified copy and the overlays hold the writes; after the
# success (ferry convert) the targets hold exactly the source plus those writes, and each
# disk's changedBlocks is the 3 blocks written.  In between, ferry is stopped while the
# stand-in runs: SIGTERM stops the stand-in and the NBD servers with it; after SIGKILL
# they outlive ferry, and the next run stops them before it starts its own.
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq qemu-img qemu-nbd qemu-io guestfish
start_double

create_vm two "disks=64M,32M&cbt=1&power=on&cpus=2&memory=2048" >/dev/null
make_sparse_disk "$tmpdir/d0" 64M 0:8 300:8
place_disk two 2000 "$tmpdir/d0"
make_sparse_disk "$tmpdir/d1" 32M 1:4
place_disk two 2001 "$tmpdir/d1"
make_targets two 2
write_plan "$tmpdir/plan.json" '.skipGuestConversion = false | .preflightInspection = false |
  .vms = [{"name": "two"}]'

mkdir -p "$tmpdir/bin"
cat >"$tmpdir/bin/virt-v2v-in-place" <<EOF
#!/bin/bash
# The stand-in: -i libvirtxml XML is the last argument.
xml=\${@: -1}
cp "\$xml" "$tmpdir/seen.xml"
echo '{ "message": "Converting the stand-in", "type": "message" }'
for port in \$(grep -o "<host name='localhost' port='[0-9]*'/>" "\$xml" | grep -o '[0-9][0-9]*'); do
  qemu-io -f raw -c 'write -P 0xab 65536 196608' "nbd://localhost:\$port" >/dev/null || exit 3
done
if [ -e "$tmpdir/hold" ]; then
  touch "$tmpdir/holding.\$\$"
  while [ -e "$tmpdir/hold" ]; do sleep 0.05; done
fi
if [ -e "$tmpdir/fail" ]; then
  echo "virt-v2v-in-place: error: the stand-in fails after writing" >&2
  echo "" >&2
  echo "If reporting bugs, run virt-v2v with debugging enabled" >&2
  exit 1
fi
EOF
chmod +x "$tmpdir/bin/virt-v2v-in-place"
touch "$tmpdir/fail"

rc=0
PATH=$tmpdir/bin:$PATH "$ferry" migrate "$tmpdir/plan.json" --progress=json \
  >"$tmpdir/progress.jsonl" 2>"$tmpdir/ferry.err" || rc=$?
results=$tmpdir/state/results.json
[ $rc = 1 ] || fail "ferry migrate exit $rc: $(cat "$tmpdir/ferry.err")"
jq -e '.vms[0].state == "conversion-failed" and .vms[0].error ==
       "virt-v2v-in-place failed (exit 1): virt-v2v-in-place: error: the stand-in fails after writing"' \
  "$results" >/dev/null || fail "$(jq -c '.vms[0] | {state, error}' "$results")"
# The XML named both disks, in order, on localhost, with the NIC's MAC.
[ "$(grep -c "<disk type='network'" "$tmpdir/seen.xml")" = 2 ] || fail "XML: $(cat "$tmpdir/seen.xml")"
mac=$(jq -r '.vms[0].description.nics[0].mac' "$results")
grep -q "<mac address='$mac'/>" "$tmpdir/seen.xml" || fail "XML lacks the MAC $mac"
grep -q "<memory unit='KiB'>2097152</memory>" "$tmpdir/seen.xml" || fail "XML memory"
for i in 0 1; do
  ver=$(jq -r ".vms[0].disks[$i].digest.target" "$results")
  [ "$("$ferry" digest "$tmpdir/pvc/two-disk$i/disk.img" | cut -d' ' -f1)" = "$ver" ] ||
    fail "disk $i: the failed conversion changed the target"
  # The writes are in the kept overlay, not in the target.
  qemu-img map --output=json "$tmpdir/state/two/disk$i.overlay.qcow2" |
    jq -e 'map(select(.depth == 0 and .data)) | map(.length) | add == 196608' >/dev/null ||
    fail "disk $i: the overlay does not hold the writes"
done
[ -z "$(pgrep -f "^qemu-nbd .*$tmpdir/")" ] || fail "qemu-nbd still serves an overlay"

# holding: a stand-in has written and now waits.
holding () { compgen -G "$tmpdir/holding.*" >/dev/null; }
# ours: the stand-ins and qemu-nbd servers, not the stand-in's own short-lived forks (a
# fork of bash carries its command line until it execs sleep).
ours () {
  local all pid ppid
  all=" $(pgrep -d ' ' -f "^(qemu-nbd|/bin/bash $tmpdir/bin/virt-v2v-in-place) .*$tmpdir/") "
  for pid in $all; do
    ppid=$(ps -o ppid= -p "$pid") || continue
    [[ $all == *" ${ppid// /} "* ]] || echo "$pid"
  done
}

# SIGTERM to ferry migrate (with its progress display running) while the stand-in runs.
rm "$tmpdir/fail"
touch "$tmpdir/hold"
PATH=$tmpdir/bin:$PATH "$ferry" migrate "$tmpdir/plan.json" --progress=json \
  >"$tmpdir/progress2.jsonl" 2>"$tmpdir/ferry2.err" &
ferry_pid=$!
cleanup_fn "kill -9 $ferry_pid 2>/dev/null"
timeout=120 wait_for holding >/dev/null
kill -TERM "$ferry_pid"
rc=0
wait "$ferry_pid" || rc=$?
[ $rc = 75 ] || fail "ferry migrate after SIGTERM: exit $rc, not 75 (retryable)"
[ -z "$(ours)" ] || fail "left running after SIGTERM: $(ours | xargs ps -o pid,args -p)"
jq -e '.vms.two.state == "converting" and .vms.two.error == "cancelled"' \
  "$tmpdir/state/journal.json" >/dev/null || fail "after SIGTERM: $(jq -c .vms.two "$tmpdir/state/journal.json")"
rm -f "$tmpdir"/holding.*

# SIGKILL: the stand-in and the servers outlive ferry; the next run stops them first.
PATH=$tmpdir/bin:$PATH "$ferry" convert "$tmpdir/plan.json" --vm two --progress=none \
  2>"$tmpdir/killed.err" &
ferry_pid=$!
cleanup_fn "kill -9 $ferry_pid 2>/dev/null"
timeout=120 wait_for holding >/dev/null
old=$(ours | tr '\n' ' ')
kill -KILL "$ferry_pid"
wait "$ferry_pid" 2>/dev/null || true
rm -f "$tmpdir"/holding.*
for pid in $old; do
  cleanup_fn "kill -9 $pid 2>/dev/null"
  kill -0 "$pid" || fail "pid $pid did not outlive ferry"
done
[ "$(wc -w <<<"$old")" = 3 ] || fail "want the stand-in and two qemu-nbd, have: $old"

# Success this time, without copying again.
fetched=$(double_stat folder_bytes)
PATH=$tmpdir/bin:$PATH "$ferry" convert "$tmpdir/plan.json" --vm two --progress=none \
  2>"$tmpdir/convert.err" &
ferry_pid=$!
cleanup_fn "kill -9 $ferry_pid 2>/dev/null"
gone () { local p; for p in $old; do ! kill -0 "$p" 2>/dev/null || return 1; done; }
timeout=120 wait_for gone
rm "$tmpdir/hold"
wait "$ferry_pid" || fail "ferry convert failed: $(cat "$tmpdir/convert.err")"
grep -q 'left by an earlier conversion' "$tmpdir/convert.err" || fail "$(cat "$tmpdir/convert.err")"
[ "$(double_stat folder_bytes)" = "$fetched" ] || fail "ferry convert fetched from the source"
jq -e '.vms[0].state == "converted" and .vms[0].error == null' "$results" >/dev/null ||
  fail "$(jq -c '.vms[0] | {state, error}' "$results")"
head -c 196608 /dev/zero | tr '\0' '\253' >"$tmpdir/writes"
for i in 0 1; do
  disk_view two $((2000 + i)) "$tmpdir/want$i"
  dd if="$tmpdir/writes" of="$tmpdir/want$i" bs=64K seek=1 conv=notrunc status=none
  cmp "$tmpdir/want$i" "$tmpdir/pvc/two-disk$i/disk.img" ||
    fail "disk $i: the target is not the source plus the conversion's writes"
  want=$("$ferry" digest "$tmpdir/want$i" | cut -d' ' -f1)
  jq -e --arg d "$want" ".vms[0].disks[$i] | .digest.afterConversion == \$d and
      .conversion.changedBlocks == 3 and .digest.afterConversion != .digest.target" \
    "$results" >/dev/null || fail "disk $i: $(jq -c ".vms[0].disks[$i]" "$results")"
  [ ! -e "$tmpdir/state/two/disk$i.overlay.qcow2" ] || fail "disk $i: overlay left"
  [ ! -e "$tmpdir/state/two/$((2000 + i)).dcache" ] || fail "disk $i: stale cache metadata"
done
grep -q 'virtio' "$tmpdir/state/two/vm.yaml" || fail "vm.yaml"
echo "$0: OK"
